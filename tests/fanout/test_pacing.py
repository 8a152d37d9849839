"""The pacer's rules, on a clock the test moves: when a request may go, and what a 429 teaches it.

The pacer is pure arithmetic over a log of sends, so these tests drive it with a manual clock
and ``asyncio.sleep`` patched to advance that clock: no wall time, no race between timers.
The engine-level behaviour against the emulator's real quotas is in test_quota_pacing.py.
"""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_ctxcache.fanout import pacing
from airflow_provider_ctxcache.fanout.pacing import Pacer, QuotaLimits, estimate_prompt_tokens

WINDOW = 60.0
SPAN = WINDOW + max(WINDOW * pacing.WINDOW_MARGIN, pacing.MIN_MARGIN_SECONDS)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A clock that only moves when the pacer sleeps (or the test says so)."""
    manual = Clock()
    real_sleep = asyncio.sleep

    async def advance(delay: float) -> None:
        manual.now += delay
        await real_sleep(0)

    monkeypatch.setattr(pacing.asyncio, "sleep", advance)
    return manual


def send_times(pacer: Pacer, clock: Clock, n: int, prompt: str = "q") -> list[float]:
    async def go() -> list[float]:
        times = []
        for _ in range(n):
            await pacer.acquire(prompt)
            times.append(clock.now)
        return times

    return asyncio.run(go())


def test_requests_beyond_the_rpm_limit_wait_for_the_oldest_to_leave_the_window(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(rpm=3), clock=clock)
    times = send_times(pacer, clock, 5)
    start = times[0]
    assert times[:3] == [start] * 3
    assert times[3] == pytest.approx(start + SPAN)
    assert times[4] == pytest.approx(start + SPAN)


def test_no_window_of_the_service_ever_holds_more_than_the_rpm_limit(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(rpm=7), clock=clock)
    times = send_times(pacer, clock, 50)
    for t in times:
        assert sum(1 for u in times if t - WINDOW < u <= t) <= 7


def test_tokens_per_minute_count_the_cache_with_every_request(clock: Clock) -> None:
    # 100k-token cache, 2M TPM: about 20 requests a minute, whatever the concurrency.
    pacer = Pacer(QuotaLimits(tpm=2_000_000), cache_tokens=100_000, clock=clock)
    times = send_times(pacer, clock, 45, prompt="x" * 40)
    first_window = [t for t in times if t < times[0] + WINDOW]
    assert len(first_window) == 19  # 19 x 100,010 fits under 2M; the 20th would not
    assert times[-1] - times[0] == pytest.approx(2 * SPAN)


def test_cached_tokens_are_left_out_when_the_quota_does_not_count_them(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(tpm=1000, counts_cached=False), cache_tokens=100_000, clock=clock)
    times = send_times(pacer, clock, 10, prompt="x" * 400)  # 100 tokens of prompt each
    assert times == [times[0]] * 10


def test_the_billed_tokens_replace_the_estimate(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(tpm=1000), cache_tokens=0, clock=clock)

    async def go() -> float:
        ticket = await pacer.acquire("x" * 40)  # estimated 10 tokens
        pacer.settle(ticket, input_tokens=990)
        await pacer.acquire("x" * 40)  # 990 + 10 = 1000: fits
        await pacer.acquire("x" * 40)  # would pass 1000: waits for the first to leave
        return clock.now

    start = clock.now
    assert asyncio.run(go()) == pytest.approx(start + SPAN)


def test_a_refused_request_leaves_the_log(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(rpm=2), clock=clock)

    async def go() -> float:
        first = await pacer.acquire("q")
        await pacer.acquire("q")
        pacer.refused(first)  # not admitted: the service did not count it, neither does the pacer
        await pacer.acquire("q")
        return clock.now

    start = clock.now
    assert asyncio.run(go()) == start


def test_a_given_limit_is_never_changed_by_a_429(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(rpm=100), clock=clock)

    async def go() -> None:
        ticket = await pacer.acquire("q")
        pacer.refused(ticket, quota_id="GenerateRequestsPerMinutePerProjectPerModel", quota_value=10)

    asyncio.run(go())
    assert pacer.rpm == 100
    assert pacer.cuts == 0


def test_adaptive_sends_freely_until_the_first_429(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(), clock=clock)
    times = send_times(pacer, clock, 500)
    assert times == [times[0]] * 500
    assert pacer.rpm is None
    assert pacer.tpm is None


def test_adaptive_learns_the_limit_the_quota_failure_names(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(), cache_tokens=1000, clock=clock)

    async def go() -> None:
        for _ in range(50):
            await pacer.acquire("q")
        refused = await pacer.acquire("q")
        pacer.refused(
            refused, quota_id="GenerateContentPaidTierInputTokensPerModelPerMinute", quota_value=40_000
        )

    asyncio.run(go())
    assert pacer.rpm is None  # the 429 named the token quota, so requests stay free
    assert pacer.tpm == 40_000
    assert pacer.cuts == 1


def test_adaptive_counts_one_cut_for_a_burst_of_refusals(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(), clock=clock)

    async def go() -> None:
        clock.now += WINDOW  # a whole window into the run: a bare 429 now says something
        for _ in range(100):
            await pacer.acquire("q")  # admitted
        in_flight = [await pacer.acquire("q") for _ in range(20)]
        clock.now += 0.25
        for ticket in in_flight:  # all come back 429, one after another
            pacer.refused(ticket)

    asyncio.run(go())
    assert pacer.cuts == 1
    # Settles on what the service admitted, not on what was sent.
    assert pacer.rpm == pytest.approx(100, abs=1)


def test_adaptive_cuts_by_a_share_when_a_429_follows_a_learned_limit(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(), clock=clock)
    named = {"quota_id": "GenerateRequestsPerMinutePerProjectPerModel", "quota_value": 100}

    async def go() -> None:
        for _ in range(90):
            await pacer.acquire("q")
        pacer.refused(await pacer.acquire("q"), **named)  # first lesson: the 90 admitted and this one
        assert pacer.rpm == 91
        ticket = await pacer.acquire("q")
        clock.now += 1
        pacer.refused(ticket, **named)  # within the same window: no second lesson
        assert pacer.cuts == 1
        clock.now += 2 * WINDOW  # later, others share the quota: 50 admitted, then a 429
        for _ in range(50):
            await pacer.acquire("q")
        pacer.refused(await pacer.acquire("q"), **named)

    asyncio.run(go())
    assert pacer.cuts == 2
    assert pacer.rpm == pytest.approx(51 * pacing.ADAPTIVE_CUT)


def test_adaptive_ignores_a_bare_429_in_the_runs_first_window(clock: Clock) -> None:
    # No QuotaFailure limit and too little history: a passing refusal, not a quota to learn.
    pacer = Pacer(QuotaLimits(), clock=clock)

    async def go() -> None:
        for _ in range(3):
            await pacer.acquire("q")
        pacer.refused(await pacer.acquire("q"))

    asyncio.run(go())
    assert pacer.cuts == 0
    assert pacer.rpm is None


def test_adaptive_probes_upward_each_quiet_window_but_not_past_a_named_limit(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(), clock=clock)
    limits = []

    async def go() -> None:
        ticket = await pacer.acquire("q")  # others use the quota: only this one was in the window
        pacer.refused(ticket, quota_id="GenerateRequestsPerMinutePerProjectPerModel", quota_value=10)
        for _ in range(30):
            clock.now += WINDOW  # a quiet window
            await pacer.acquire("q")
            limits.append(pacer.rpm)

    asyncio.run(go())
    assert limits[0] == pytest.approx(1 + 10 * pacing.PROBE_STEP)  # 1 admitted, then one step of 5% of 10
    assert limits == sorted(limits)
    assert limits[-1] == 10  # raised step by step, capped at the limit the service named


def test_progress_names_the_binding_limit_and_the_achieved_rate(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(rpm=1000, tpm=200_000), cache_tokens=10_000, clock=clock)
    send_times(pacer, clock, 20)
    clock.now += 30
    assert pacer.binding() == "tpm"
    text = pacer.describe()
    assert "binding tpm limit 200,000 (given)" in text
    assert "req/min" in text


def test_prompt_estimate_counts_characters_over_four() -> None:
    assert estimate_prompt_tokens("x" * 41) == 11
    assert estimate_prompt_tokens(["x" * 8, "y" * 4]) == 3
