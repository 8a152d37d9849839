"""``make demo``: the cache lifecycle against the embedded emulator, with no Google account.

Starts the emulator, points the ``ctxcache_default`` connection at it, caches a sample
contract, asks questions that reference the cache, prints the answers and the cached-token
counts, deletes the cache, shows that nothing is left, and stops the emulator.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from importlib import resources

MODEL = "gemini-2.5-flash"
QUESTIONS = (
    "How many days does the Customer have to pay an undisputed invoice?",
    "What notice period applies to termination for convenience?",
    "Where may the Supplier keep personal data?",
    "What is the cap on service credits?",
)
SYSTEM_INSTRUCTION = "You answer questions about the contract below, quoting the clause you rely on."


def sample_contract() -> str:
    return resources.files("airflow_provider_ctxcache").joinpath("data/sample_contract.txt").read_text()


def main() -> int:
    # Airflow writes its config under AIRFLOW_HOME on import: keep the demo out of ~/airflow.
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="ctxcache-demo-"))
    for noisy in ("httpx", "httpx2"):  # one INFO line per request would bury the answers
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from airflow_provider_ctxcache.emulator import EmulatorProcess
    from airflow_provider_ctxcache.hooks import ContextCacheHook

    with EmulatorProcess() as emulator:
        print(f"emulator: {emulator.url}")
        os.environ["AIRFLOW_CONN_CTXCACHE_DEFAULT"] = json.dumps(
            {
                "conn_type": "ctxcache",
                "password": "demo-key",
                "extra": {"backend": "gemini_api", "base_url": emulator.url},
            }
        )
        hook = ContextCacheHook()
        contract = sample_contract()
        tokens = hook.count_tokens(model=MODEL, contents=[contract], system_instruction=SYSTEM_INSTRUCTION)
        cache = hook.create_cache(
            model=MODEL,
            contents=[contract],
            system_instruction=SYSTEM_INSTRUCTION,
            ttl="15m",
            display_name="ctxcache-demo",
        )
        assert cache.name
        print(f"created {cache.name}: {tokens} tokens, expires {cache.expire_time:%H:%M:%S} UTC\n")

        cached_total = prompt_total = 0
        for question in QUESTIONS:
            response = hook.generate(model=MODEL, contents=question, cache_name=cache.name)
            usage = response.usage_metadata
            cached = (usage.cached_content_token_count or 0) if usage else 0
            prompt = (usage.prompt_token_count or 0) if usage else 0
            cached_total += cached
            prompt_total += prompt
            print(f"Q: {question}\nA: {response.text}\n   prompt tokens {prompt}, of which cached {cached}\n")

        share = cached_total / prompt_total if prompt_total else 0.0
        print(
            f"cached tokens: {cached_total} of {prompt_total} prompt tokens ({share:.0%}) "
            "billed at the cached rate"
        )
        hook.delete_cache(cache.name)
        left = emulator.admin.state()["caches"]
        print(f"deleted {cache.name}; caches left on the emulator: {len(left)}")
        hook.close()
        return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
