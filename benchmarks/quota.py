"""Quota-bound fan-out: how close each client gets to the binding limit, and how many 429s it collects.

A 100,000-token cache and 2,000 prompts against the emulator with 250 ms latency and a quota
on the model: first input tokens per window bind (cached tokens count, as on Google's
service), then requests per window. The window is compressed from Google's minute to
``WINDOW_SECONDS`` so a run takes under a minute; the pacer and the emulator are told the same
window, and every figure is per window. Three clients each run once per scenario:

- the engine with the limits given (what a user with a known quota configures);
- the engine with no limits (adaptive: it learns them from the 429s it gets);
- a competent hand-written loop: google-genai's asyncio client behind a semaphore, with the
  SDK's own retries on 429 (exponential backoff with jitter; the SDK ignores ``retryDelay``).

Achieved rate over the binding limit is (requests answered / elapsed) x window / limit, the
limit in requests (for the token quota: the limit over the tokens one request carries).
A client bursting into an empty window at the start can exceed 1.0 over a short run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow_provider_ctxcache.fanout.pacing import QuotaLimits
from benchmarks.loops import MODEL, engine_rps, prompts, raw_sdk_rps

CACHE_TOKENS = 100_000
WINDOW_SECONDS = 10.0
REQUESTS_PER_WINDOW = 400  # the binding limit, as requests (the token scenario converts it)
SDK_ATTEMPTS = 20  # a patient hand-written loop: enough tries that no prompt is given up


def scenario_limits(tokens_per_request: int) -> dict[str, dict[str, int]]:
    return {
        "tpm": {"tpm_limit": REQUESTS_PER_WINDOW * tokens_per_request},
        "rpm": {"rpm_limit": REQUESTS_PER_WINDOW},
    }


def create_big_cache(n: int) -> tuple[str, int]:
    from airflow_provider_ctxcache.emulator.tokens import text_of_tokens
    from airflow_provider_ctxcache.hooks import ContextCacheHook

    hook = ContextCacheHook()
    cache = hook.create_cache(model=MODEL, contents=[text_of_tokens(CACHE_TOKENS)], ttl="2h")
    assert cache.name
    assert cache.usage_metadata
    # One call tells what a request carries: the cache plus its prompt (the longest, so the
    # binding limit admits exactly REQUESTS_PER_WINDOW of any of them).
    longest = max(prompts(n), key=len)
    response = hook.generate(model=MODEL, contents=longest, cache_name=cache.name)
    assert response.usage_metadata
    assert response.usage_metadata.prompt_token_count
    return cache.name, response.usage_metadata.prompt_token_count


def generate_calls(emulator: Any) -> tuple[int, int]:
    """(all generateContent answers, 429 answers) the emulator has given so far."""
    counts = emulator.admin.state()["status_counts"]["generate_content"]
    return sum(counts.values()), int(counts.get("429", 0))


def run(emulator: Any, n: int, concurrency: int, latency_ms: int) -> dict[str, Any]:
    """Both scenarios, three clients each; returns the figures for bench-results.json."""
    emulator.admin.faults(latency_ms=latency_ms, ops=["generate_content"])
    cache, tokens_per_request = create_big_cache(n)
    figures: dict[str, Any] = {
        "quota_n": n,
        "quota_window_seconds": WINDOW_SECONDS,
        "quota_requests_per_window": REQUESTS_PER_WINDOW,
        "quota_tokens_per_request": tokens_per_request,
    }

    def paced(limits: dict[str, int]) -> float:
        given = QuotaLimits(
            rpm=limits.get("rpm_limit"), tpm=limits.get("tpm_limit"), window_seconds=WINDOW_SECONDS
        )
        return n / engine_rps(cache, n, concurrency, given)

    def adaptive(limits: dict[str, int]) -> float:
        return n / engine_rps(cache, n, concurrency, QuotaLimits(window_seconds=WINDOW_SECONDS))

    def raw_sdk(limits: dict[str, int]) -> float:
        return n / raw_sdk_rps(emulator.url, cache, n, concurrency, retry_attempts=SDK_ATTEMPTS)

    clients: dict[str, Callable[[dict[str, int]], float]] = {
        "paced": paced,
        "adaptive": adaptive,
        "raw_sdk": raw_sdk,
    }
    for scenario, limits in scenario_limits(tokens_per_request).items():
        for client, go in clients.items():
            # A fresh quota window for each client: no one inherits another's spent window.
            emulator.admin.faults(
                latency_ms=latency_ms, ops=["generate_content"], quota_window_s=WINDOW_SECONDS, **limits
            )
            calls_before, refused_before = generate_calls(emulator)
            elapsed = go(limits)
            calls, refused = generate_calls(emulator)
            calls, refused = calls - calls_before, refused - refused_before
            achieved = n / elapsed * WINDOW_SECONDS / REQUESTS_PER_WINDOW
            figures[f"quota_{scenario}_{client}_seconds"] = round(elapsed, 2)
            figures[f"quota_{scenario}_{client}_ratio"] = round(achieved, 3)
            figures[f"quota_{scenario}_{client}_429_share"] = round(refused / calls, 4) if calls else 0.0
    # The headline figures the issue asks for: the token quota binding.
    for client in clients:
        figures[f"quota_{client}_ratio"] = figures[f"quota_tpm_{client}_ratio"]
        figures[f"quota_{client}_429_share"] = figures[f"quota_tpm_{client}_429_share"]
    emulator.admin.faults()
    return figures


def print_table(f: dict[str, Any]) -> None:
    window = f"{f['quota_window_seconds']:g} s window"
    print(
        f"\nquota-bound fan-out: N={f['quota_n']}, cache {CACHE_TOKENS:,} tokens "
        f"({f['quota_tokens_per_request']:,} input tokens a request), latency 250 ms, {window}; "
        f"binding limit {f['quota_requests_per_window']} requests per window\n"
    )
    print(f"{'':34}{'achieved/limit':>15}{'429 share':>11}{'seconds':>9}")
    labels = {
        "paced": "engine, limits given",
        "adaptive": "engine, adaptive (no limits)",
        "raw_sdk": "raw google-genai + SDK retries",
    }
    for scenario, title in (("tpm", "input tokens/window bind"), ("rpm", "requests/window bind")):
        print(title)
        for client, label in labels.items():
            key = f"quota_{scenario}_{client}"
            print(
                f"  {label:32}{f[key + '_ratio']:14.2f}x{f[key + '_429_share']:10.1%}"
                f"{f[key + '_seconds']:9.1f}"
            )
    print("targets: paced >= 0.95x with <= 1% 429s; adaptive >= 0.85x with <= 10%; both faster than raw")
