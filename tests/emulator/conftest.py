"""Clients for the emulator, built only with google-genai, exactly as API_FACTS.md sets them up.

The ``backend`` fixture runs a test once per backend where the behaviour is shared; it bundles
the client with what differs between the backends (the missing-cache error, name forms).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import google.oauth2.credentials
import pytest
from google import genai
from google.genai import types

from airflow_provider_ctxcache.emulator.process import EmulatorProcess
from airflow_provider_ctxcache.emulator.tokens import text_of_tokens

MODEL = "gemini-2.5-flash"
MIN_TOKENS = 2048  # MODEL's minimum cache size on both backends
CACHE_TOKENS = MIN_TOKENS + 52  # a cache just above the minimum
PROJECT = "p"
LOCATION = "us-central1"


def developer_client(
    url: str, api_version: str = "v1beta", api_key: str = "k", *, timeout_ms: int | None = None
) -> genai.Client:
    """The offline Developer-API client of API_FACTS.md (``timeout_ms``: the SDK's request timeout)."""
    return genai.Client(
        api_key=api_key,
        http_options=types.HttpOptions(base_url=url, api_version=api_version, timeout=timeout_ms),
    )


def vertex_client(
    url: str,
    *,
    project: str = PROJECT,
    location: str = LOCATION,
    api_version: str | None = None,
    credentials: Any = None,
    timeout_ms: int | None = None,
) -> genai.Client:
    """The offline Vertex client of API_FACTS.md (default API version: the SDK's /v1beta1)."""
    options = types.HttpOptions(base_url=url, timeout=timeout_ms)
    if api_version:
        options = types.HttpOptions(base_url=url, api_version=api_version, timeout=timeout_ms)
    return genai.Client(
        vertexai=True,
        project=project,
        location=location,
        credentials=credentials or google.oauth2.credentials.Credentials(token="emulator"),
        http_options=options,
    )


def contents_of(tokens: int, text: str = "") -> list[types.Content]:
    """User contents of exactly ``tokens`` tokens under the emulator's rule (optionally led by ``text``)."""
    if text:
        body = text + " " + text_of_tokens(tokens)
        body = body[: tokens * 4]
    else:
        body = text_of_tokens(tokens)
    return [types.Content(role="user", parts=[types.Part(text=body)])]


@dataclass(frozen=True)
class Backend:
    """One backend under test: its client and what is specific to it."""

    name: str
    client: genai.Client
    missing_code: int
    missing_status: str

    @property
    def is_vertex(self) -> bool:
        return self.name == "vertex_ai"

    def full_model(self, model: str = MODEL) -> str:
        if self.is_vertex:
            return f"projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/{model}"
        return f"models/{model}"

    def cache_prefix(self) -> str:
        return (
            f"projects/{PROJECT}/locations/{LOCATION}/cachedContents/"
            if self.is_vertex
            else "cachedContents/"
        )

    def create_cache(
        self, tokens: int = CACHE_TOKENS, model: str = MODEL, **config: Any
    ) -> types.CachedContent:
        """A cache of ``tokens`` tokens (the default is just above MODEL's minimum)."""
        config.setdefault("contents", contents_of(tokens))
        return self.client.caches.create(model=model, config=types.CreateCachedContentConfig(**config))


def make_backend(name: str, url: str) -> Backend:
    if name == "vertex_ai":
        return Backend(name, vertex_client(url), 404, "NOT_FOUND")
    return Backend(name, developer_client(url), 403, "PERMISSION_DENIED")


@pytest.fixture(params=["gemini_api", "vertex_ai"])
def backend(request: pytest.FixtureRequest, emulator: EmulatorProcess) -> Backend:
    """Each backend in turn, on a freshly reset emulator."""
    return make_backend(str(request.param), emulator.url)


@pytest.fixture
def developer(emulator: EmulatorProcess) -> Backend:
    """The Developer API (``/v1beta``)."""
    return make_backend("gemini_api", emulator.url)


@pytest.fixture
def vertex(emulator: EmulatorProcess) -> Backend:
    """Vertex AI, project ``p``, location ``us-central1`` (``/v1beta1``)."""
    return make_backend("vertex_ai", emulator.url)


@pytest.fixture
def raw_headers() -> Callable[[str], dict[str, str]]:
    """Auth headers for plain-httpx calls that the SDK would not send as-is."""

    def headers(backend: str) -> dict[str, str]:
        if backend == "vertex_ai":
            return {"Authorization": "Bearer emulator"}
        return {"x-goog-api-key": "k"}

    return headers
