"""Per-model quotas on generateContent: requests and input tokens per sliding window.

Configured through ``POST /_emulator/faults`` (``rpm_limit``, ``tpm_limit``, ``quota_window_s``;
0 means no limit). Each (backend scope, model) has its own window, as the real quotas are per
project and per model. A request's input tokens are its ``promptTokenCount`` (cached tokens
included) plus its ``toolUsePromptTokenCount``. Both limits are checked before answering; only
admitted requests enter the window, so refused ones never use up quota. A refusal is a 429
RESOURCE_EXHAUSTED whose ``google.rpc.QuotaFailure`` names the metric(s) exceeded and whose
``google.rpc.RetryInfo`` says when the window frees enough room: whole seconds (rounded up)
for a window of 60 s or more, milliseconds for a shorter one, so compressed windows stay
precise. A request bigger than ``tpm_limit`` on its own can never pass: its delay is the
whole window. Time is the emulator clock, so ``POST /_emulator/clock`` frees quota too.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from .clock import NANOS
from .errors import ApiError, format_duration, retry_info
from .model_facts import GEMINI_API

REQUESTS = "requests"
INPUT_TOKENS = "input_tokens"

QUOTA_MESSAGE = {
    "gemini_api": (
        "You exceeded your current quota, please check your plan and billing details. "
        "For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits."
    ),
    "vertex_ai": "Resource exhausted. Please try again later.",
}

# (quotaMetric, quotaId) per backend and limit.
QUOTA_IDS: dict[str, dict[str, tuple[str, str]]] = {
    "gemini_api": {
        REQUESTS: (
            "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
            "GenerateRequestsPerMinutePerProjectPerModel-PaidTier",
        ),
        INPUT_TOKENS: (
            "generativelanguage.googleapis.com/generate_content_paid_tier_input_token_count",
            "GenerateContentPaidTierInputTokensPerModelPerMinute",
        ),
    },
    "vertex_ai": {
        REQUESTS: (
            "aiplatform.googleapis.com/generate_content_requests_per_minute_per_project_per_base_model",
            "GenerateContentRequestsPerMinutePerProjectPerBaseModel",
        ),
        INPUT_TOKENS: (
            "aiplatform.googleapis.com/generate_content_input_tokens_per_minute_per_base_model",
            "GenerateContentInputTokensPerMinutePerBaseModel",
        ),
    },
}
VERTEX_QUOTA_HELP = "https://cloud.google.com/vertex-ai/generative-ai/docs/quotas"


@dataclass(frozen=True)
class QuotaLimits:
    """The limits in force; 0 means none."""

    rpm_limit: int = 0
    tpm_limit: int = 0
    window_s: float = 60.0

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return bool(self.rpm_limit or self.tpm_limit)


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused: the limits it would exceed and how long until it would fit."""

    exceeded: tuple[str, ...]
    delay_s: float


class QuotaWindows:
    """The sliding windows of admitted requests, one per key (scope and model)."""

    def __init__(self) -> None:
        self._windows: dict[Hashable, deque[tuple[int, int]]] = {}

    def clear(self) -> None:
        """Forget every admitted request."""
        self._windows.clear()

    def admit(self, key: Hashable, tokens: int, now_ns: int, limits: QuotaLimits) -> Refusal | None:
        """Admit a request of ``tokens`` input tokens at ``now_ns``, or say why not.

        Synchronous on purpose: check and admit happen with no await between them, so
        concurrent requests on the event loop can never both take the last slot.
        """
        if not limits.active:
            return None
        window_ns = int(limits.window_s * NANOS)
        entries = self._windows.setdefault(key, deque())
        while entries and entries[0][0] <= now_ns - window_ns:
            entries.popleft()
        exceeded: list[str] = []
        free_at = now_ns
        if limits.rpm_limit and len(entries) >= limits.rpm_limit:
            exceeded.append(REQUESTS)
            free_at = max(free_at, entries[len(entries) - limits.rpm_limit][0] + window_ns)
        if limits.tpm_limit:
            used = sum(t for _, t in entries)
            if tokens > limits.tpm_limit:
                exceeded.append(INPUT_TOKENS)
                free_at = max(free_at, now_ns + window_ns)
            elif used + tokens > limits.tpm_limit:
                exceeded.append(INPUT_TOKENS)
                free_at = max(free_at, _tokens_free_at(entries, used + tokens - limits.tpm_limit) + window_ns)
        if exceeded:
            return Refusal(tuple(exceeded), retry_delay_s((free_at - now_ns) / NANOS, limits.window_s))
        entries.append((now_ns, tokens))
        return None


def _tokens_free_at(entries: deque[tuple[int, int]], excess: int) -> int:
    """The admission time of the entry whose expiry frees ``excess`` tokens (oldest first)."""
    freed = 0
    for admitted_ns, tokens in entries:
        freed += tokens
        if freed >= excess:
            return admitted_ns
    raise AssertionError("excess larger than the window holds")  # pragma: no cover


def retry_delay_s(wait_s: float, window_s: float) -> float:
    """The RetryInfo delay: whole seconds up for a minute-long window, else milliseconds up."""
    if window_s >= 60:
        return float(max(1, math.ceil(wait_s - 1e-9)))
    return max(1, math.ceil(wait_s * 1000 - 1e-6)) / 1000


def quota_error(
    *, backend: str, model: str, location: str, refusal: Refusal, limits: QuotaLimits
) -> ApiError:
    """The 429 of a refused request, shaped like the backend's."""
    values = {REQUESTS: limits.rpm_limit, INPUT_TOKENS: limits.tpm_limit}
    violations: list[dict[str, Any]] = []
    for limit in refusal.exceeded:
        metric, quota_id = QUOTA_IDS[backend][limit]
        violations.append(
            {
                "quotaMetric": metric,
                "quotaId": quota_id,
                "quotaDimensions": {"model": model, "location": location},
                "quotaValue": str(values[limit]),
            }
        )
    first_metric = violations[0]["quotaMetric"]
    if backend == GEMINI_API:
        lines = [QUOTA_MESSAGE[backend]]
        lines += [
            f"* Quota exceeded for metric: {v['quotaMetric']}, limit: {v['quotaValue']}, model: {model}"
            for v in violations
        ]
        lines.append(f"Please retry in {format_duration(refusal.delay_s)}.")
        message = "\n".join(lines)
    else:
        message = (
            f"Quota exceeded for {first_metric} with base model: {model}. "
            f"Please submit a quota increase request. {VERTEX_QUOTA_HELP}"
        )
    quota_failure = {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": violations}
    return ApiError(429, message, details=[quota_failure, retry_info(refusal.delay_s)])
