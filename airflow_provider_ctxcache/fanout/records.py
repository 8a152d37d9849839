"""One response, three shapes, made here only: a key's result, a batch-output line, an XCom answer.

The engine turns each SDK response into a :class:`KeyResult` (text, finish reason, token
:class:`Usage`); the output writer stores it as a Gemini batch-output line (``{"key",
"response"}`` with the response as REST JSON, or ``{"key", "error"}``); the operator reads those
lines back into the small answers it pushes to XCom. The answer text never includes thought
parts, and usage fields keep the API's names, so the three shapes agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from google.genai import types

# The field of a batch-output line that holds the fingerprint of the request it answers.
REQUEST_HASH = "requestHash"
# Fields of the SDK's response object that are its own bookkeeping, not part of the API's answer.
_SDK_BOOKKEEPING = {"sdk_http_response", "automatic_function_calling_history", "parsed"}


@dataclass
class Usage:
    """Token counts of one response (``usage_metadata``), or their sum over many."""

    prompt_token_count: int = 0
    cached_content_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0
    total_token_count: int = 0

    @classmethod
    def of(cls, metadata: types.GenerateContentResponseUsageMetadata | None) -> Usage:
        if metadata is None:
            return cls()
        return cls(*(int(getattr(metadata, name, None) or 0) for name in _USAGE_FIELDS))

    @classmethod
    def from_rest(cls, metadata: dict[str, Any]) -> Usage:
        """From ``usageMetadata`` as the REST API (and a batch-output line) spells it."""

        def camel(name: str) -> str:
            head, *rest = name.split("_")
            return head + "".join(word.title() for word in rest)

        return cls(**{f.name: int(metadata.get(camel(f.name)) or 0) for f in fields(cls)})

    def add(self, other: Usage) -> None:
        """Called once per response: the fields spelled out, no reflection."""
        self.prompt_token_count += other.prompt_token_count
        self.cached_content_token_count += other.cached_content_token_count
        self.candidates_token_count += other.candidates_token_count
        self.thoughts_token_count += other.thoughts_token_count
        self.tool_use_prompt_token_count += other.tool_use_prompt_token_count
        self.total_token_count += other.total_token_count

    def to_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}

    @property
    def input_tokens(self) -> int:
        """What the quota and the bill count as input: the prompt (cache included) and tool-use tokens."""
        return self.prompt_token_count + self.tool_use_prompt_token_count


_USAGE_FIELDS = tuple(f.name for f in fields(Usage))  # in the order Usage takes them


@dataclass(frozen=True)
class KeyResult:
    """The outcome for one key: an answer (text, finish reason, usage) or an error.

    ``response`` is the whole response as REST JSON (for batch-shaped output files); it is
    only set when the run was asked to keep it.
    """

    key: str
    text: str | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    error: str | None = None
    error_code: int | None = None
    error_status: str | None = None
    response: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    attempts: int = 1
    fingerprint: str | None = None  # of the request, stored with the answer for resumes

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: ``{"text", "finish_reason", "usage"}`` or ``{"error"}``."""
        if self.error is not None:
            return {"error": self.error}
        return {
            "text": self.text,
            "finish_reason": self.finish_reason,
            "usage": (self.usage or Usage()).to_dict(),
        }

    def to_batch_line(self) -> dict[str, Any]:
        """The Gemini batch-output record: ``{"key", "response"}`` or ``{"key", "error"}``."""
        if self.error is not None:
            return error_record(self.key, code=self.error_code, status=self.error_status, message=self.error)
        record = response_record(self.key, self.response if self.response is not None else {})
        if self.fingerprint:
            record[REQUEST_HASH] = self.fingerprint
        return record


def answer_of(
    key: str,
    response: types.GenerateContentResponse,
    *,
    keep_response: bool = False,
    attempts: int = 1,
    fingerprint: str | None = None,
) -> KeyResult:
    """Text, finish reason and usage of a response; text None when there is no text part."""
    candidate = response.candidates[0] if response.candidates else None
    reason = candidate.finish_reason if candidate is not None else None
    parts = (candidate.content.parts if candidate and candidate.content else None) or []
    return KeyResult(
        key=key,
        text=_answer_text((part.text, part.thought) for part in parts),
        finish_reason=None if reason is None else str(getattr(reason, "value", reason)),
        usage=Usage.of(response.usage_metadata),
        response=response_json(response) if keep_response else None,
        attempts=attempts,
        fingerprint=fingerprint or None,
    )


def response_json(response: types.GenerateContentResponse) -> dict[str, Any]:
    """The response as the REST API shows it (camelCase), minus the SDK's own bookkeeping."""
    return response.model_dump(mode="json", exclude_none=True, by_alias=True, exclude=_SDK_BOOKKEEPING)


def response_record(key: str, response: Any) -> dict[str, Any]:
    """``{"key", "response"}``; ``response`` is a REST-JSON dict or a ``GenerateContentResponse``."""
    if isinstance(response, types.GenerateContentResponse):
        response = response_json(response)
    return {"key": key, "response": response}


def error_record(key: str, *, code: int | None, status: str | None, message: str) -> dict[str, Any]:
    """``{"key", "error": {"code", "status", "message"}}`` as a batch job reports a failed request."""
    return {"key": key, "error": {"code": code, "status": status, "message": message}}


def xcom_answer(record: dict[str, Any]) -> dict[str, Any]:
    """A batch-output line as an XCom answer: ``{"text", "finish_reason", "usage"}`` or ``{"error"}``."""
    if "error" in record:
        error = record["error"]
        return {"error": error.get("message") if isinstance(error, dict) else error}
    response = record.get("response") or {}
    candidate = (response.get("candidates") or [{}])[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    return {
        "text": _answer_text((part.get("text"), part.get("thought")) for part in parts),
        "finish_reason": candidate.get("finishReason"),
        "usage": Usage.from_rest(response.get("usageMetadata") or {}).to_dict(),
    }


def _answer_text(parts: Iterable[tuple[Any, Any]]) -> str | None:
    """The answer: every text part that is not a thought, joined; None when there is none."""
    texts = [text for text, thought in parts if isinstance(text, str) and not thought]
    return "".join(texts) if texts else None
