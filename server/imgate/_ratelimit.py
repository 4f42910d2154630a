"""Per-backend quota tracking that matches how the vendors count.

Vendors count calls (Yunxin: 120 in any 60 s) or recipients (Tencent: 12,000 in any 60 s)
over a sliding window, by when each request reached them. A token bucket that starts full
can put twice the limit into one sliding window, so this is a sliding log instead: every
grant holds its slot while its call is in flight and for one full window after the call
ended. The vendor saw the call somewhere between our send and its answer, so two calls we
keep a window apart (end of the first, start of the next) are a window apart for the
vendor too, whatever the network did in between. No start-up or post-block burst can
exceed a window.

Who goes next is start-time fair queueing between callers (CONTRACT §6 rule 19): each
waiter gets a tag, `max(now_tag, caller's last finish)`, and finishing costs the caller
`cost / weight` (cost = recipients where the backend counts them, else 1 call). The
smallest tag waits for room; everyone else waits behind it. A caller that was idle starts
at the current tag, so it is next however much another caller has queued, and nobody
banks credit by idling. Within one caller tags only grow, so its waiters are first come,
first served; since each batch keeps at most one request waiting, a caller's batches take
turns (round-robin) and a small batch is never stuck behind a large one.

A shared (Redis) limiter will keep this interface: `acquire(recipients, deadline,
caller=, weight=)` returning a `Grant` to `release()` when the call ends, plus
`block`/`is_blocked`/`blocked_until`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


class QuotaWaitTooLong(Exception):
    """The quota would not allow the call before the caller's deadline."""


class _Window:
    """Amounts granted within the trailing `window_s` (in-flight ones count until they end)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self.in_flight = 0
        self._ended: deque[tuple[float, int]] = deque()  # (expiry, amount), expiry ascending
        self.ended_total = 0

    def expire(self, now: float) -> None:
        while self._ended and self._ended[0][0] <= now:
            self.ended_total -= self._ended.popleft()[1]

    def wait_for(self, amount: int, now: float) -> float | None:
        """Seconds until `amount` fits; None when only an in-flight call ending can free room."""
        self.expire(now)
        # One amount larger than the whole limit would wait forever; it is let through alone.
        amount = min(amount, self.limit)
        excess = self.in_flight + self.ended_total + amount - self.limit
        if excess <= 0:
            return 0.0
        freed = 0
        for expiry, ended_amount in self._ended:
            freed += ended_amount
            if freed >= excess:
                return expiry - now
        return None

    def end(self, amount: int, ended_at: float) -> None:
        self.in_flight -= amount
        # Calls end in any order, but each expiry is its end + the same window, and ends
        # arrive in time order, so appending keeps the deque sorted.
        self._ended.append((ended_at + self.window_s, amount))
        self.ended_total += amount


class Grant:
    """Permission for one vendor call; `release()` when the call has ended."""

    def __init__(self, limiter: BackendLimiter, recipients: int) -> None:
        self._limiter = limiter
        self.recipients = recipients
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter._end(self)


@dataclass(order=True, slots=True)
class _Waiter:
    tag: float
    arrival: int
    wake: asyncio.Event = field(compare=False, default_factory=asyncio.Event)


class BackendLimiter:
    """Call and recipient quotas of one backend, plus the pause after a vendor refusal."""

    def __init__(
        self,
        call_limit: int,
        call_window_s: float,
        recipient_limit: int,
        recipient_window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._windows: list[tuple[_Window, bool]] = [(_Window(call_limit, call_window_s), False)]
        if recipient_limit > 0:
            self._windows.append((_Window(recipient_limit, recipient_window_s), True))
        self.blocked_until = 0.0
        self._waiting: list[_Waiter] = []  # a heap: the smallest tag waits for room
        self._arrivals = itertools.count()
        self._now_tag = 0.0  # the tag of the last waiter granted
        self._finish: dict[str, float] = {}  # per caller: one entry per configured caller

    def block(self, seconds: float) -> None:
        """The vendor refused for rate: send nothing more for `seconds` from now."""
        self.blocked_until = max(self.blocked_until, self._clock() + seconds)

    def usage(self) -> list[tuple[str, int, int]]:
        """(window, held, limit) per window ("calls", "recipients"), for the metrics."""
        now = self._clock()
        usage = []
        for window, counts_recipients in self._windows:
            window.expire(now)
            held = window.in_flight + window.ended_total
            usage.append(("recipients" if counts_recipients else "calls", held, window.limit))
        return usage

    def is_blocked(self) -> bool:
        return self._clock() < self.blocked_until

    def _wait_time(self, recipients: int, now: float) -> float | None:
        waits = [max(0.0, self.blocked_until - now)]
        for window, counts_recipients in self._windows:
            wait = window.wait_for(recipients if counts_recipients else 1, now)
            if wait is None:
                return None
            waits.append(wait)
        return max(waits)

    async def acquire(
        self,
        recipients: int,
        deadline: float | None = None,
        *,
        caller: str = "",
        weight: int = 1,
    ) -> Grant:
        """Wait until a call for `recipients` fits every window and it is `caller`'s turn
        (shares by `weight`); raise QuotaWaitTooLong if not by `deadline`.

        `deadline` is on this limiter's clock.
        """
        counts_recipients = len(self._windows) > 1
        cost = (recipients if counts_recipients else 1) / weight
        tag = max(self._now_tag, self._finish.get(caller, 0.0))
        self._finish[caller] = tag + cost
        waiter = _Waiter(tag, next(self._arrivals))
        heapq.heappush(self._waiting, waiter)
        granted = False
        try:
            while True:
                now = self._clock()
                wait: float | None = None
                if self._waiting[0] is waiter:
                    wait = self._wait_time(recipients, now)
                    if wait == 0.0:
                        for window, counts in self._windows:
                            window.in_flight += min(recipients if counts else 1, window.limit)
                        granted = True
                        self._now_tag = waiter.tag
                        return Grant(self, recipients)
                    if deadline is not None and wait is not None and now + wait > deadline:
                        raise QuotaWaitTooLong
                if deadline is not None and now >= deadline:
                    raise QuotaWaitTooLong
                timeout = wait
                if deadline is not None:
                    until_deadline = deadline - now
                    timeout = until_deadline if timeout is None else min(timeout, until_deadline)
                waiter.wake.clear()
                # Room comes with time or when an in-flight call ends; the turn comes when
                # the waiter ahead is granted or gives up, or one with a smaller tag arrives.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wake.wait(), timeout)
        finally:
            was_first = self._waiting[0] is waiter
            if was_first:
                heapq.heappop(self._waiting)
            else:
                self._waiting.remove(waiter)
                heapq.heapify(self._waiting)
            if not granted:
                # A waiter that gave up (deadline, cancel) was never served: no charge.
                self._finish[caller] = max(self._now_tag, self._finish[caller] - cost)
            if was_first or not granted:
                self._wake_first()

    def _wake_first(self) -> None:
        if self._waiting:
            self._waiting[0].wake.set()

    def _end(self, grant: Grant) -> None:
        now = self._clock()
        for window, counts_recipients in self._windows:
            window.end(min(grant.recipients if counts_recipients else 1, window.limit), now)
        self._wake_first()
