"""Shared pieces of the benchmarks: the connection, the prompts, the cache, and two in-process clients.

``engine_rps`` (the engine through ``run_fanout``, prompts in memory) and ``raw_sdk_rps`` (a
semaphore around google-genai's async client) drive the quota-bound case
(:mod:`benchmarks.quota`); the latency- and CPU-bound cases run the operator's real path and a
worker pool in child processes instead (:mod:`benchmarks.cpu`).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

MODEL = "gemini-2.5-flash"


def connection(url: str) -> str:
    return json.dumps({"conn_type": "ctxcache", "password": "bench-key", "extra": {"base_url": url}})


def prompts(n: int) -> list[str]:
    return [f"What does record {i} of the context say?" for i in range(n)]


def create_cache(url: str) -> str:
    """A 20,000-token cache on the emulator at ``url``, which becomes the default connection."""
    from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
    from airflow_provider_ctxcache.hooks import ContextCacheHook

    os.environ["AIRFLOW_CONN_CTXCACHE_DEFAULT"] = connection(url)
    hook = ContextCacheHook()
    try:
        name = hook.create_cache(model=MODEL, contents=[text_of_tokens(20_000)], ttl="2h").name
    finally:
        hook.close()
    assert name
    return name


def engine_rps(cache: str, n: int, concurrency: int, quota: Any = None) -> float:
    """The engine's requests/s; ``quota`` (a ``QuotaLimits``) paces it, else it adapts."""
    from airflow_provider_ctxcache.fanout import FanoutOptions, run_fanout
    from airflow_provider_ctxcache.fanout.pacing import QuotaLimits
    from airflow_provider_ctxcache.hooks import ContextCacheHook
    from airflow_provider_ctxcache.prompts import normalize_prompts

    requests = normalize_prompts(prompts(n), cache_name=cache)
    options = FanoutOptions(
        keep_results=False, progress_interval=0, keep_alive=False, quota=quota or QuotaLimits()
    )
    started = time.perf_counter()
    result = asyncio.run(
        run_fanout(
            ContextCacheHook(),
            model=MODEL,
            cache_name=cache,
            requests=requests,
            max_concurrency=concurrency,
            options=options,
            on_result=lambda r: None,
        )
    )
    elapsed = time.perf_counter() - started
    assert result.summary.succeeded == n, result.summary
    return n / elapsed


def raw_sdk_rps(url: str, cache: str, n: int, concurrency: int, retry_attempts: int | None = None) -> float:
    """What a team would write by hand with google-genai: a semaphore around client.aio.

    ``retry_attempts`` turns on the SDK's own retries (429s and 5xx, exponential backoff).
    """
    from google import genai
    from google.genai import types

    async def run() -> float:
        retries = types.HttpRetryOptions(attempts=retry_attempts) if retry_attempts else None
        client = genai.Client(
            api_key="bench-key",
            http_options=types.HttpOptions(base_url=url, api_version="v1beta", retry_options=retries),
        )
        gate = asyncio.Semaphore(concurrency)
        config = types.GenerateContentConfig(cached_content=cache)

        async def one(prompt: str) -> None:
            async with gate:
                await client.aio.models.generate_content(model=MODEL, contents=prompt, config=config)

        started = time.perf_counter()
        await asyncio.gather(*(one(p) for p in prompts(n)))
        elapsed = time.perf_counter() - started
        await client.aio.aclose()
        return n / elapsed

    return asyncio.run(run())
