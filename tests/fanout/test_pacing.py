"""The pacer's rules, on a clock the test moves: when a request may go, and what a 429 teaches it.

The pacer is pure arithmetic over a log of sends, so these tests drive it with a manual clock
and ``asyncio.sleep`` patched to advance that clock: no wall time, no race between timers.
The engine-level behaviour against the emulator's real quotas is in test_quota_pacing.py.
"""

from __future__ import annotations

import asyncio
import heapq
import random

import pytest
from google.genai import types

from airflow_provider_ctxcache.fanout import pacing
from airflow_provider_ctxcache.fanout.pacing import (
    FILE_TOKENS,
    Pacer,
    QuotaLimits,
    Ticket,
    estimate_prompt_tokens,
)

WINDOW = 60.0
SPAN = WINDOW * (1 + pacing.WINDOW_MARGIN)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


REAL_SLEEP = asyncio.sleep


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


async def send(pacer: Pacer, prompt: str = "q") -> Ticket:
    """One request, sent and answered at once (the engine reports every answer, 429s too)."""
    ticket = await pacer.acquire(prompt)
    pacer.answered(ticket)
    return ticket


def send_times(pacer: Pacer, clock: Clock, n: int, prompt: str = "q") -> list[float]:
    """When each of ``n`` requests went, each answered at once."""

    async def go() -> list[float]:
        times = []
        for _ in range(n):
            pacer.answered(await pacer.acquire(prompt))
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


def test_a_request_in_flight_counts_until_its_answer_however_long_that_takes(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(rpm=1), clock=clock)

    async def go() -> tuple[float, float]:
        slow = await pacer.acquire("q")
        second = asyncio.ensure_future(pacer.acquire("q"))
        clock.now += 10 * WINDOW
        for _ in range(5):
            await REAL_SLEEP(0)
        assert not second.done()  # ten windows on, the slow one still counts: it is in flight
        answered_at = clock.now
        pacer.answered(slow)  # the service may have counted it just now
        await second
        return answered_at, clock.now

    answered_at, sent_at = asyncio.run(go())
    assert sent_at == pytest.approx(answered_at + SPAN)


def test_an_answered_request_leaves_a_window_after_its_answer_not_after_it_was_sent(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(rpm=1), clock=clock)

    async def go() -> float:
        ticket = await pacer.acquire("q")
        clock.now += 30.0  # a 30 s answer
        pacer.answered(ticket)
        await pacer.acquire("q")
        return clock.now

    start = clock.now
    assert asyncio.run(go()) == pytest.approx(start + 30.0 + SPAN)


async def _simulate(pacer: Pacer, clock: Clock, n: int, concurrency: int, seed: int) -> list[float]:
    """``n`` requests by ``concurrency`` workers over a network whose delays vary from 0 to 30 s:
    each reaches the service at a random moment between its send and its answer, so they arrive
    out of order. Returns when each reached the service."""
    rng = random.Random(seed)
    flying: list[tuple[float, int, Ticket]] = []  # (answer time, seq, ticket)
    arrivals = []

    def land() -> None:
        answered_at, _, ticket = heapq.heappop(flying)
        clock.now = max(clock.now, answered_at)
        pacer.answered(ticket)

    for seq in range(n):
        while len(flying) >= concurrency:
            land()
        acquiring = asyncio.ensure_future(pacer.acquire("q"))
        while not acquiring.done():
            for _ in range(5):
                await REAL_SLEEP(0)
            if not acquiring.done():  # waiting for an answer to make room
                land()
        sent = clock.now
        answered_at = sent + rng.uniform(0.0, 30.0)
        arrivals.append(rng.uniform(sent, answered_at))
        heapq.heappush(flying, (answered_at, seq, acquiring.result()))
    return arrivals


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("limits", [QuotaLimits(rpm=7), QuotaLimits(tpm=7_000)], ids=["rpm", "tpm"])
def test_no_window_of_the_service_holds_more_than_the_limit_whatever_the_network_delays(
    clock: Clock, limits: QuotaLimits, seed: int
) -> None:
    pacer = Pacer(limits, cache_tokens=1000 - estimate_prompt_tokens("q"), clock=clock)

    arrivals = asyncio.run(_simulate(pacer, clock, n=300, concurrency=5, seed=seed))

    busiest = max(sum(1 for b in arrivals if a - WINDOW < b <= a) for a in arrivals)
    assert busiest <= 7


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
        ticket = await send(pacer, "x" * 40)  # estimated 10 tokens
        pacer.settle(ticket, input_tokens=990)
        await send(pacer, "x" * 40)  # 990 + 10 = 1000: fits
        await send(pacer, "x" * 40)  # would pass 1000: waits for the first to leave
        return clock.now

    start = clock.now
    assert asyncio.run(go()) == pytest.approx(start + SPAN)


def test_a_refused_request_leaves_the_log(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(rpm=2), clock=clock)

    async def go() -> float:
        first = await send(pacer)
        await send(pacer)
        pacer.refused(first)  # not admitted: the service did not count it, neither does the pacer
        await send(pacer)
        return clock.now

    start = clock.now
    assert asyncio.run(go()) == start


def test_a_given_limit_is_never_changed_by_a_429(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(rpm=100), clock=clock)

    async def go() -> None:
        ticket = await send(pacer)
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
            await send(pacer)
        refused = await send(pacer)
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
            await send(pacer)  # admitted
        in_flight = [await send(pacer) for _ in range(20)]
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
            await send(pacer)
        pacer.refused(await send(pacer), **named)  # first lesson: the 90 admitted and this one
        assert pacer.rpm == 91
        ticket = await send(pacer)
        clock.now += 1
        pacer.refused(ticket, **named)  # within the same window: no second lesson
        assert pacer.cuts == 1
        clock.now += 2 * WINDOW  # later, others share the quota: 50 admitted, then a 429
        for _ in range(50):
            await send(pacer)
        pacer.refused(await send(pacer), **named)

    asyncio.run(go())
    assert pacer.cuts == 2
    assert pacer.rpm == pytest.approx(51 * pacing.ADAPTIVE_CUT)


def test_adaptive_ignores_a_bare_429_in_the_runs_first_window(clock: Clock) -> None:
    # No QuotaFailure limit and too little history: a passing refusal, not a quota to learn.
    pacer = Pacer(QuotaLimits(), clock=clock)

    async def go() -> None:
        for _ in range(3):
            await send(pacer)
        pacer.refused(await send(pacer))

    asyncio.run(go())
    assert pacer.cuts == 0
    assert pacer.rpm is None


def test_adaptive_probes_upward_each_quiet_window_but_not_past_a_named_limit(clock: Clock) -> None:
    pacer = Pacer(QuotaLimits(), clock=clock)
    limits = []

    async def go() -> None:
        ticket = await send(pacer)  # others use the quota: only this one was in the window
        pacer.refused(ticket, quota_id="GenerateRequestsPerMinutePerProjectPerModel", quota_value=10)
        for _ in range(30):
            clock.now += WINDOW  # a quiet window
            await send(pacer)
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


def test_prompt_estimate_reads_batch_format_dicts_as_the_fan_out_sends_them() -> None:
    camel = [{"role": "user", "parts": [{"text": "x" * 40}, {"fileData": {"fileUri": "gs://b/f.pdf"}}]}]
    snake = [{"role": "user", "parts": [{"text": "x" * 40}, {"file_data": {"file_uri": "gs://b/f.pdf"}}]}]
    models = [types.Content.model_validate(camel[0])]
    assert estimate_prompt_tokens(camel) == estimate_prompt_tokens(snake) == estimate_prompt_tokens(models)
    assert estimate_prompt_tokens(camel) == 10 + FILE_TOKENS
    assert estimate_prompt_tokens([{"inlineData": {"mimeType": "text/plain", "data": "eHh4eA=="}}]) == 2
