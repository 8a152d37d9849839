"""Named failures of the Gemini caching API, mapped once from the SDK's ``APIError``.

Operators, sensors and the fan-out engine catch these names instead of re-reading HTTP codes,
so a Developer-API 403 and a Vertex 404 for a vanished cache are the same case everywhere.
Messages carry what a user needs to act (names, counts, delays) and never a credential.
"""

from __future__ import annotations

import re
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class CtxCacheError(AirflowException):
    """Base of every failure this provider raises on purpose."""


class CtxCacheConfigError(AirflowFailException, CtxCacheError):
    """Bad input or a bad connection: retrying cannot help, so the task fails at once."""


class CacheNotFoundError(CtxCacheError):
    """The cache is missing, expired, deleted, or not visible with these credentials."""

    def __init__(self, cache_name: str | None, detail: str = "") -> None:
        self.cache_name = cache_name
        what = f"cache {cache_name!r}" if cache_name else "the cache"
        suffix = f" ({detail})" if detail else ""
        super().__init__(
            f"{what} was not found: it expired, was deleted, or these credentials cannot see it{suffix}. "
            "Create it again, or extend its TTL earlier next time."
        )


class CacheTooSmallError(CtxCacheConfigError):
    """The content is below the model's minimum token count for an explicit cache."""

    def __init__(self, token_count: int | None, minimum: int | None, model: str | None = None) -> None:
        self.token_count = token_count
        self.minimum = minimum
        self.model = model
        for_model = f" for model {model!r}" if model else ""
        super().__init__(
            f"contents: the cached content is {token_count} tokens but the minimum{for_model} is {minimum}. "
            "Add more content, or send it inline with each request instead of caching it."
        )


class ForbiddenWithCacheError(CtxCacheConfigError):
    """A request set system_instruction, tools or tool_config next to cachedContent."""

    def __init__(self, fields: list[str] | None = None, detail: str = "") -> None:
        self.fields = fields or ["system_instruction", "tools", "tool_config"]
        listed = ", ".join(self.fields)
        suffix = f" ({detail})" if detail else ""
        super().__init__(
            f"{listed}: a request that uses a cache cannot also set these fields{suffix}. "
            "Move them into the cache (CreateCacheOperator's system_instruction, tools, tool_config)."
        )


class QuotaExceededError(CtxCacheError):
    """429 RESOURCE_EXHAUSTED; ``retry_delay`` keeps the server's RetryInfo hint (the SDK drops it)."""

    def __init__(self, message: str, retry_delay: float | None) -> None:
        self.retry_delay = retry_delay
        hint = f" The server asks to retry after {retry_delay:g}s." if retry_delay is not None else ""
        super().__init__(f"quota exhausted: {message}.{hint}")


class ModelNotFoundError(CtxCacheConfigError):
    """The backend does not serve this model (404): a name to fix, not a call to retry."""

    def __init__(self, model: str | None, detail: str) -> None:
        self.model = model
        super().__init__(
            f"model: {model!r} is not a model this backend serves ({detail}); "
            "check the name, e.g. 'gemini-2.5-flash', and that it is available in your project and region."
        )


class CtxCacheApiError(CtxCacheError):
    """Any other API failure, with the code and status kept for callers that branch on them."""

    def __init__(self, code: int | None, status: str | None, message: str) -> None:
        self.code = code
        self.status = status
        super().__init__(f"Gemini API error {code} {status}: {message}")


_TOO_SMALL = re.compile(r"is of (\d+) tokens.*minimum token count to start caching is (\d+)", re.I | re.S)
_FORBIDDEN = re.compile(r"can ?not be used with GenerateContent request setting", re.I)
_BAD_CACHE_STATE = re.compile(r"invalid resource state for cache", re.I)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


def _error_details(error: Any) -> list[dict[str, Any]]:
    body = getattr(error, "details", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        details = inner.get("details") if isinstance(inner, dict) else None
        if isinstance(details, list):
            return [d for d in details if isinstance(d, dict)]
    return []


def retry_delay_of(error: Any) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail, if the server sent one."""
    for detail in _error_details(error):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _names_the_cache(code: int, message: str) -> bool:
    """A 403 is about the cache only when it says so; a 404 is, unless it names a model instead."""
    text = message.lower()
    if "cache" in text.replace(" ", ""):
        return True
    return code == 404 and "model" not in text


def translate_api_error(
    error: Exception, *, cache_name: str | None = None, model: str | None = None
) -> Exception:
    """The named case for an SDK ``APIError``; anything that is not one is returned unchanged.

    ``cache_name`` says the call addressed a cache, which is what turns a 403/404 into
    "cache missing" rather than "model not found" or "permission denied on the project".
    """
    from google.genai import errors as genai_errors

    if not isinstance(error, genai_errors.APIError):
        return error
    code = error.code
    status = error.status
    message = str(error.message or "")
    if code == 429:
        return QuotaExceededError(message or "RESOURCE_EXHAUSTED", retry_delay_of(error))
    if code == 400:
        too_small = _TOO_SMALL.search(message)
        if too_small:
            return CacheTooSmallError(int(too_small.group(1)), int(too_small.group(2)), model)
        if _FORBIDDEN.search(message):
            return ForbiddenWithCacheError(detail=message)
        if cache_name and _BAD_CACHE_STATE.search(message):
            return CacheNotFoundError(cache_name, message)
    if cache_name and code in (403, 404) and _names_the_cache(code, message):
        return CacheNotFoundError(cache_name, message)
    if code == 404 and model and "model" in message.lower():
        return ModelNotFoundError(model, message)
    return CtxCacheApiError(code, status, message)
