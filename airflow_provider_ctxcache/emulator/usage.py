"""``usageMetadata`` of generateContent, shaped like today's service (both backends).

- ``promptTokenCount``: every input token, the cached ones included;
  ``cachedContentTokenCount``: the cached ones (only when a cache is used);
- ``promptTokensDetails`` / ``cacheTokensDetails``: the same two counts by modality
  (``TEXT``, ``IMAGE``, ``AUDIO``, ``VIDEO``, ``DOCUMENT``, by the parts' MIME types);
- ``candidatesTokenCount`` and ``candidatesTokensDetails`` (the answer is TEXT);
- ``thoughtsTokenCount``: only when the model thought (see :mod:`.thinking`);
- ``toolUsePromptTokenCount`` and ``toolUsePromptTokensDetails``: only when the cache or the
  request declares a built-in tool (``googleSearch``, ``codeExecution``, ``urlContext``, ...):
  each such tool adds ``64 + 2 * Q`` tokens, Q being the tokens of the request's last turn
  (the question). They are billed as input and count towards the input-token quota;
- ``totalTokenCount`` = prompt + candidates + thoughts + tool use;
- ``serviceTier: "standard"`` on the Developer API, ``trafficType: "ON_DEMAND"`` on Vertex.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .model_facts import GEMINI_API
from .tokens import TEXT, modality_details

# Built-in (server-side) tools, by their camelCase name, with their snake_case spelling.
BUILTIN_TOOLS: dict[str, str] = {
    "googleSearch": "google_search",
    "googleSearchRetrieval": "google_search_retrieval",
    "codeExecution": "code_execution",
    "urlContext": "url_context",
    "googleMaps": "google_maps",
    "enterpriseWebSearch": "enterprise_web_search",
    "fileSearch": "file_search",
    "computerUse": "computer_use",
}
TOOL_USE_BASE_TOKENS = 64
TOOL_USE_TOKENS_PER_QUESTION_TOKEN = 2


def builtin_tools(tools: Any) -> tuple[str, ...]:
    """The built-in tools a ``tools`` list declares (camelCase names, first-seen order, no repeats)."""
    found: list[str] = []
    if not isinstance(tools, list):
        return ()
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        for camel, snake in BUILTIN_TOOLS.items():
            if (camel in tool or snake in tool) and camel not in found:
                found.append(camel)
    return tuple(found)


def tool_use_tokens(tools: tuple[str, ...], question_tokens: int) -> int:
    """The tool-use prompt tokens of a request whose built-in tools are ``tools``."""
    return len(tools) * (TOOL_USE_BASE_TOKENS + TOOL_USE_TOKENS_PER_QUESTION_TOKEN * question_tokens)


@dataclass(frozen=True)
class Usage:
    """The token counts of one answered request."""

    prompt: Mapping[str, int]
    """Prompt tokens by modality, the cached ones included."""
    cached: Mapping[str, int] | None
    """Cached tokens by modality; None without a cache."""
    candidates: int
    thoughts: int
    tool_use: int

    @property
    def prompt_tokens(self) -> int:
        """``promptTokenCount``."""
        return sum(self.prompt.values())

    @property
    def input_tokens(self) -> int:
        """What the input-token quota counts: the prompt (cache included) and the tool use."""
        return self.prompt_tokens + self.tool_use

    def to_json(self, backend: str) -> dict[str, Any]:
        """The ``usageMetadata`` object of the backend."""
        body: dict[str, Any] = {"promptTokenCount": self.prompt_tokens}
        if self.cached is not None:
            body["cachedContentTokenCount"] = sum(self.cached.values())
        body["candidatesTokenCount"] = self.candidates
        if self.thoughts:
            body["thoughtsTokenCount"] = self.thoughts
        if self.tool_use:
            body["toolUsePromptTokenCount"] = self.tool_use
        body["totalTokenCount"] = self.prompt_tokens + self.candidates + self.thoughts + self.tool_use
        body["promptTokensDetails"] = modality_details(self.prompt)
        if self.cached is not None:
            body["cacheTokensDetails"] = modality_details(self.cached)
        body["candidatesTokensDetails"] = modality_details({TEXT: self.candidates})
        if self.tool_use:
            body["toolUsePromptTokensDetails"] = modality_details({TEXT: self.tool_use})
        if backend == GEMINI_API:
            body["serviceTier"] = "standard"
        else:
            body["trafficType"] = "ON_DEMAND"
        return body
