"""Pacing under a project's per-model quotas: requests per minute and input tokens per minute.

Google enforces both limits per project and per model over a minute, and a request's input
tokens include its cached tokens: with a 100k-token cache a 2M TPM quota admits about 20
requests a minute, whatever the concurrency. A run that only learns this from 429s wastes calls
and time, so the pacer sends each request when the last window has room for it.

Each limit is checked against a log of what this run sent (requests and their tokens): a
request may go when what the log holds, plus itself, fits under the limit. A request counts from
the moment it is sent until a window after its answer came back (``WINDOW_MARGIN`` longer than
the service's): the service counted it at some moment in between, so however long the network
or a busy host delays it, and in whatever order requests arrive, no window of the service holds
more than the pacer admitted at any one moment. A request still in flight always counts; when
only an answer can make room, the next request waits for one. That is the rule the service
applies, and it is also safe against a fixed-minute or a token-bucket quota. Token amounts are
estimates when sent (cache size plus the prompt) and are corrected from each response's
``usageMetadata``; a request answered 429 was not admitted, so it is taken out of the log.

Without given limits the pacer adapts: it sends freely until the first 429, then holds itself
to what the service admitted in the last window, or to the limit the 429's ``QuotaFailure``
names (the service's own ``quotaValue``). A 429 for a request sent after that (the quota is
shared with other shards or clients, or it shrank) cuts by ``ADAPTIVE_CUT`` (multiplicative
decrease). Only a 429 for a request sent after the last change starts a new cut, so one burst
of refusals counts once. Each window without a cut raises the limits by a fixed step, ``PROBE_STEP`` of the
named limit or of the highest rate seen at a cut (additive increase), never above a limit the
service named.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

WINDOW_MARGIN = 0.02  # an answered request stays in the log this much longer than the service's window
ADAPTIVE_CUT = 0.9  # after the first lesson, a 429 sets the limit to this share of what was admitted
PROBE_STEP = 0.05  # each quiet window raises a learned limit by this share
CHARS_PER_TOKEN = 4  # a prompt's token estimate; the response's usage corrects it
FILE_TOKENS = 258  # a fileData part's estimate (one image's worth)


@dataclasses.dataclass(frozen=True)
class QuotaLimits:
    """The quota one run may use; with neither limit set the pacer adapts to 429s.

    :param rpm: requests per window (a minute on Google's service) for this run.
    :param tpm: input tokens per window, cached tokens included when ``counts_cached``.
    :param window_seconds: the quota's window: 60 on Google's service; tests compress it.
    :param counts_cached: whether the cache's tokens count toward ``tpm`` (they do on Google's
        service, as public reports show; configurable because the docs are silent).
    """

    rpm: int | None = None
    tpm: int | None = None
    window_seconds: float = 60.0
    counts_cached: bool = True

    @property
    def given(self) -> bool:
        return bool(self.rpm or self.tpm)

    def describe(self) -> str:
        given = [f"{name} {value:,}" for name, value in (("rpm", self.rpm), ("tpm", self.tpm)) if value]
        per = "minute" if self.window_seconds == 60 else f"{self.window_seconds:g}s window"
        return f"{' and '.join(given)} per {per}" if given else "adaptive (no limits given)"


class _Entry:
    """One request in the log; its token amount is corrected once the response is in."""

    __slots__ = ("alive", "answered", "sent", "tokens")

    def __init__(self, sent: float, tokens: float) -> None:
        self.sent = sent
        self.tokens = tokens
        self.answered: float | None = None  # when its answer came back; None while in flight
        self.alive = True


class _Log:
    """What the service may still be counting: requests in flight, and those answered less than
    ``span`` seconds ago (in the order their answers came)."""

    def __init__(self, span: float) -> None:
        self.span = span
        self.flying: set[_Entry] = set()
        self.landed: deque[_Entry] = deque()
        self.tokens = 0.0

    @property
    def requests(self) -> int:
        return len(self.flying) + len(self.landed)

    def expire(self, now: float) -> None:
        cutoff = now - self.span
        landed = self.landed
        while landed and (landed[0].answered or 0.0) <= cutoff:
            entry = landed.popleft()
            entry.alive = False
            self.tokens -= entry.tokens
        if not landed and not self.flying:
            self.tokens = 0.0  # no drift from float sums

    def add(self, now: float, tokens: float) -> _Entry:
        entry = _Entry(now, tokens)
        self.flying.add(entry)
        self.tokens += tokens
        return entry

    def land(self, entry: _Entry, now: float) -> None:
        """Its answer came back: from now it leaves a window later."""
        if entry.alive and entry.answered is None:
            self.flying.discard(entry)
            entry.answered = now
            self.landed.append(entry)

    def correct(self, entry: _Entry, tokens: float) -> None:
        if entry.alive:
            self.tokens += tokens - entry.tokens
        entry.tokens = tokens

    def remove(self, entry: _Entry) -> None:
        """A refused request: the service did not count it, so neither does the log."""
        if not entry.alive:
            return
        if entry.answered is None:
            self.flying.discard(entry)
        else:
            self.landed.remove(entry)
        entry.alive = False
        self.tokens -= entry.tokens

    def room_at(self, now: float, *, rpm: float | None, tpm: float | None, tokens: float) -> float | None:
        """The earliest time a request of ``tokens`` fits under both limits (``now`` if it does);
        None when requests in flight must be answered first (when is not known)."""
        at = now
        landed = self.landed
        if rpm is not None and self.requests + 1 > rpm:
            # Answered entries leave in the order their answers came; enough of them must.
            leaving = self.requests + 1 - math.floor(rpm)
            if leaving > len(landed):
                return None
            at = max(at, (landed[leaving - 1].answered or 0.0) + self.span)
        if tpm is not None and self.tokens + tokens > tpm:
            excess = self.tokens + tokens - tpm
            for entry in landed:
                excess -= entry.tokens
                if excess <= 0:
                    at = max(at, (entry.answered or 0.0) + self.span)
                    break
            else:
                if self.flying:
                    return None
                # Larger than the whole limit: it can only go alone, once the window is empty.
                if landed:
                    at = max(at, (landed[-1].answered or 0.0) + self.span)
        return at


@dataclasses.dataclass
class Ticket:
    """A request's place in the log, to correct or withdraw once its answer is known."""

    entry: _Entry
    estimated_tokens: float


class Pacer:
    """Decides when each request of one run may be sent; shared by all of its workers."""

    def __init__(
        self,
        limits: QuotaLimits,
        *,
        cache_tokens: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.window = float(limits.window_seconds)
        self.clock = clock
        # Tokens every request carries besides its prompt: the cache, unless the quota skips it.
        # Unknown until the first answer says, when the caller could not tell.
        self.base_tokens: float | None = cache_tokens if limits.counts_cached else 0
        self.log = _Log(self.window * (1 + WINDOW_MARGIN))
        self.adaptive = not limits.given
        self.rpm: float | None = float(limits.rpm) if limits.rpm else None
        self.tpm: float | None = float(limits.tpm) if limits.tpm else None
        self.named_rpm: float | None = None  # limits a 429's QuotaFailure named
        self.named_tpm: float | None = None
        self.step_rpm = 0.0  # additive increase per quiet window
        self.step_tpm = 0.0
        self.cuts = 0
        self.episode_share = 1.0  # of what was admitted: 1 for the first lesson, then ADAPTIVE_CUT
        self.last_cut = -math.inf  # when the last lesson began
        self.last_change = -math.inf  # the last lesson or probe
        self.started = clock()
        self.waited = 0.0  # seconds requests spent waiting for room
        self._lock: asyncio.Lock | None = None
        self._answer: asyncio.Event | None = None  # set when an answer (or a refusal) frees room

    # -- sending ----------------------------------------------------------------------------------

    def estimate(self, contents: Any) -> float:
        """Input tokens a request will be billed for: the cache plus the prompt."""
        return (self.base_tokens or 0) + estimate_prompt_tokens(contents)

    async def acquire(self, contents: Any) -> Ticket:
        """Wait until the request fits under the limits, then log it as sent now."""
        tokens = self.estimate(contents)
        if self.rpm is None and self.tpm is None:
            now = self.clock()
            self.log.expire(now)
            return Ticket(self.log.add(now, tokens), tokens)
        if self._lock is None:
            self._lock = asyncio.Lock()
            self._answer = asyncio.Event()
        assert self._answer is not None
        async with self._lock:  # first come, first served: a waiting request keeps its turn
            while True:
                now = self.clock()
                self.log.expire(now)
                self._probe(now)
                at = self.log.room_at(now, rpm=self.rpm, tpm=self.tpm, tokens=tokens)
                if at is None:  # only an answer can make room
                    self._answer.clear()
                    await self._answer.wait()
                    self.waited += self.clock() - now
                    continue
                if at <= now:
                    return Ticket(self.log.add(now, tokens), tokens)
                self.waited += at - now
                await asyncio.sleep(at - now)

    def answered(self, ticket: Ticket) -> None:
        """The call returned (an answer, a 429 or an error): from now on the request leaves the
        log a window later. A refused request has left it already."""
        self.log.land(ticket.entry, self.clock())
        if self._answer is not None:
            self._answer.set()

    def settle(self, ticket: Ticket, input_tokens: int, cached_tokens: int = 0) -> None:
        """The input tokens ``usageMetadata`` reports replace the estimate."""
        counted = float(input_tokens if self.limits.counts_cached else input_tokens - cached_tokens)
        if self.base_tokens is None:
            self.base_tokens = max(0.0, counted - ticket.estimated_tokens)
        self.log.correct(ticket.entry, max(counted, 0.0))

    def refused(self, ticket: Ticket, *, quota_id: str | None = None, quota_value: int | None = None) -> None:
        """A 429: the request was not admitted; an adaptive pacer may lower its limits to what was.

        A 429 that names its limit (a ``QuotaFailure`` with a metric and a ``quotaValue``) is a
        lesson at once. One that names none may be a passing refusal (capacity, not quota), so
        it teaches only once the run has sent for a whole window: then what the log holds for
        the last window is what the service admitted. The first lesson sets the limit to that
        (the service's window was full); a later one, at most once a window, to
        ``ADAPTIVE_CUT`` of it. Requests that were in flight when a lesson began come back
        refused too; each leaves the log and lowers the limit to the same share of what is
        left, so a burst of refusals settles on what the service admitted and counts once.
        """
        self.log.remove(ticket.entry)
        if self._answer is not None:
            self._answer.set()
        if not self.adaptive:
            return
        now = self.clock()
        self.log.expire(now)
        kind = _quota_kind(quota_id)
        if quota_value and kind == "tpm":
            self.named_tpm = float(quota_value)
        elif quota_value and kind == "rpm":
            self.named_rpm = float(quota_value)
        named = bool(quota_value) and kind is not None
        in_flight_at_lesson = ticket.entry.sent < self.last_cut
        if not in_flight_at_lesson:
            if now - self.last_cut < self.window:
                return  # one lesson a window: the pause for retryDelay handles the rest
            if not named and now - self.started < self.window:
                return  # too early to tell a quota from a passing refusal
            self.episode_share = 1.0 if self.cuts == 0 else ADAPTIVE_CUT
            self.cuts += 1
            self.last_cut = self.last_change = now
        share = self.episode_share
        # With the refused request: the service's window was full at this amount.
        seen_rpm = _lowest(self.log.requests + 1, self.named_rpm)
        seen_tpm = _lowest(self.log.tokens + ticket.estimated_tokens, self.named_tpm)
        if kind != "tpm":
            current = self.rpm if self.rpm is not None else math.inf
            self.rpm = max(1.0, min(current, seen_rpm * share))
            self.step_rpm = max(self.step_rpm, PROBE_STEP * (self.named_rpm or seen_rpm))
        if kind != "rpm":
            current = self.tpm if self.tpm is not None else math.inf
            self.tpm = max(ticket.estimated_tokens, min(current, seen_tpm * share))
            self.step_tpm = max(self.step_tpm, PROBE_STEP * (self.named_tpm or seen_tpm))

    def _probe(self, now: float) -> None:
        """Additive increase: each window without a refusal raises a learned limit a step."""
        if not self.adaptive or now - self.last_change < self.window:
            return
        if self.rpm is not None:
            self.rpm = _lowest(self.rpm + self.step_rpm, self.named_rpm)
        if self.tpm is not None:
            self.tpm = _lowest(self.tpm + self.step_tpm, self.named_tpm)
        self.last_change = now

    # -- reporting --------------------------------------------------------------------------------

    def rates(self) -> tuple[float, float]:
        """Requests and input tokens per window over the last window (or the run, if shorter)."""
        now = self.clock()
        self.log.expire(now)
        seen = min(max(now - self.started, 1e-9), self.log.span)
        scale = self.window / max(seen, self.window * 0.1)
        return self.log.requests * scale, self.log.tokens * scale

    def binding(self) -> str | None:
        """``rpm`` or ``tpm``: the limit the run is closest to, or None when unlimited."""
        used = {
            name: value / limit
            for name, value, limit in zip(("rpm", "tpm"), self.rates(), (self.rpm, self.tpm), strict=True)
            if limit
        }
        return max(used, key=lambda name: used[name]) if used else None

    def describe(self) -> str:
        """For progress lines: the achieved rate against the binding limit."""
        requests, tokens = self.rates()
        per = "min" if self.window == 60 else f"{self.window:g}s"
        achieved = f"{requests:,.0f} req/{per}, {tokens:,.0f} input tok/{per}"
        binding = self.binding()
        if binding is None:
            return f"pace {achieved}, no limit" + (" yet (adaptive)" if self.adaptive else "")
        limit = self.rpm if binding == "rpm" else self.tpm
        how = "learned from 429s" if self.adaptive else "given"
        return f"pace {achieved}; binding {binding} limit {limit:,.0f} ({how})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": "adaptive" if self.adaptive else "given",
            "rpm_limit": None if self.rpm is None else round(self.rpm),
            "tpm_limit": None if self.tpm is None else round(self.tpm),
            "window_seconds": self.window,
            "binding": self.binding(),
            "adaptive_cuts": self.cuts,
            "waited_seconds": round(self.waited, 3),
        }


def _lowest(first: float, *others: float | None) -> float:
    return min([first, *(o for o in others if o is not None)])


def _quota_kind(quota_id: str | None) -> str | None:
    """``tpm`` or ``rpm`` from a QuotaFailure's metric or id; None when the 429 names neither."""
    if not quota_id:
        return None
    text = quota_id.lower()
    if "token" in text:
        return "tpm"
    if "request" in text:
        return "rpm"
    return None


def estimate_prompt_tokens(contents: Any) -> int:
    """A cheap upper-ish estimate of a prompt's tokens: characters / 4, files as one image.

    Contents come as the SDK takes them: strings, ``types.Content``/``types.Part``, or the batch
    format's dicts (camelCase or snake_case), which the fan-out sends unconverted.
    """
    if isinstance(contents, str):
        return math.ceil(len(contents) / CHARS_PER_TOKEN)
    total = 0
    items: Iterable[Any] = contents if isinstance(contents, (list, tuple)) else [contents]
    for item in items:
        if isinstance(item, str):
            total += math.ceil(len(item) / CHARS_PER_TOKEN)
            continue
        parts = _field(item, "parts", "parts")
        for part in parts if parts is not None else [item]:
            total += _part_tokens(part)
    return total


def _part_tokens(part: Any) -> int:
    text = _field(part, "text", "text")
    if text:
        return math.ceil(len(text) / CHARS_PER_TOKEN)
    inline = _field(part, "inline_data", "inlineData")
    data = _field(inline, "data", "data") if inline is not None else None
    if data:
        return math.ceil(len(data) / CHARS_PER_TOKEN)
    if _field(part, "file_data", "fileData") is not None:
        return FILE_TOKENS
    return 0


def _field(item: Any, name: str, camel: str) -> Any:
    if isinstance(item, Mapping):
        value = item.get(name)
        return item.get(camel) if value is None else value
    return getattr(item, name, None)
