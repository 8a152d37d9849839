"""Per-model facts the provider checks before billable calls. The server stays the authority.

Minimum cache sizes vary by model and over time; unknown models get the smallest documented
minimum, so this check never refuses content the service would take.
"""

from __future__ import annotations

import re

DEFAULT_MIN_CACHE_TOKENS = 1024

MIN_CACHE_TOKENS: dict[str, int] = {
    "gemini-2.5-flash": 1024,
    "gemini-2.5-flash-lite": 1024,
    "gemini-2.5-pro": 4096,
    "gemini-2.0-flash": 4096,
    "gemini-3-flash-preview": 1024,
    "gemini-3-pro-preview": 4096,
    "gemini-1.5-flash": 32769,
    "gemini-1.5-pro": 32769,
}

_PREFIX = re.compile(r"^(?:projects/[^/]+/locations/[^/]+/)?(?:publishers/google/)?(?:models/)?")
_VERSION_SUFFIX = re.compile(r"-\d{3}$")


def model_id(model: str) -> str:
    """``gemini-2.5-flash`` from any of the forms the two backends use for the same model."""
    return _PREFIX.sub("", model.strip())


def min_cache_tokens(model: str) -> int:
    base = _VERSION_SUFFIX.sub("", model_id(model))
    return MIN_CACHE_TOKENS.get(base, DEFAULT_MIN_CACHE_TOKENS)
