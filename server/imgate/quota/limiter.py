"""Per-backend quota tracking that matches how the vendors count.

Vendors count calls (Yunxin: 120 in any 60 s) or recipients (Tencent: 12,000 in any 60 s)
over a sliding window, by when each request reached them. A token bucket that starts full
can put twice the limit into one sliding window, so this is a sliding log instead: every
grant holds its slot while its call is in flight and for one full window after the call
ended. The vendor saw the call somewhere between our send and its answer, so two calls we
keep a window apart (end of the first, start of the next) are a window apart for the
vendor too, whatever the network did in between. No start-up or post-block burst can
exceed a window.

Two parts, one owner each:

- `QuotaWindows`: the window accounting of one vendor app (what is held, what fits now,
  how long until it may fit, the pause after a refusal). `LocalWindows` counts in this
  process; `imgate.quota.redis.RedisWindows` counts in Redis, shared by every replica.
- `Limiter`: who goes next, start-time fair queueing between callers (CONTRACT §6 rule
  19), always in process, in front of the windows. Each waiter gets a tag,
  `max(now_tag, caller's last finish)`, and finishing costs the caller `cost / weight`
  (cost = recipients where the backend counts them, else 1 call). The smallest tag asks
  the windows for room; everyone else waits behind it. A caller that was idle starts at
  the current tag, so it is next however much another caller has queued, and nobody banks
  credit by idling. Within one caller tags only grow, so its waiters are first come, first
  served; since each batch keeps at most one request waiting, a caller's batches take turns
  (round-robin) and a small batch is never stuck behind a large one.

`BackendLimiter` is the in-process default: a `Limiter` over `LocalWindows`.

`Pauses` says why a backend is not sending (CONTRACT §11 rule 32): the vendor's block after
a rate refusal, or the gateway's own pauses (the shared quota's Redis unreachable or
without state). Each pause logs a line when it starts and one when it ends.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("imgate.quota")


class QuotaWaitTooLong(Exception):
    """The quota would not allow the call before the caller's deadline."""


VENDOR_BLOCK = "vendor_block"
"""The kind of pause the vendor imposes after a rate refusal (ListBackends: BLOCKED)."""
QUOTA_UNREACHABLE = "quota_unreachable"
"""The shared quota's Redis does not answer: nothing is sent until it does (fail closed)."""
QUOTA_STATE_LOST = "quota_state_lost"
"""The shared quota's Redis holds no state for the app: one window + lease_s."""
# When several hold at once, the one ListBackends and outcomes name: the one that will
# last longest first (an unreachable Redis has no known end).
_PRECEDENCE = (QUOTA_UNREACHABLE, QUOTA_STATE_LOST, VENDOR_BLOCK)


@dataclass(frozen=True, slots=True)
class Pause:
    """Why a backend is not sending now, and until when."""

    kind: str
    """VENDOR_BLOCK, QUOTA_UNREACHABLE or QUOTA_STATE_LOST."""
    reason: str
    """For people: ListBackends' pause_reason, the log lines, outcomes' detail."""
    until: float | None
    """time.monotonic() at which it ends; None: not known (until a condition clears)."""
    started: float

    @property
    def vendor(self) -> bool:
        """The vendor's own block (BLOCKED), not the gateway's (PAUSED)."""
        return self.kind == VENDOR_BLOCK


class Pauses:
    """The pauses of one backend in force now; logs each one's start and end (rule 32)."""

    def __init__(self, backend: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self._clock = clock
        self._active: dict[str, Pause] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def start(self, kind: str, reason: str, seconds: float | None) -> None:
        """A pause of `kind` for `seconds` from now (None: until `end`). A pause of that
        kind already in force is extended, not logged again."""
        now = self._clock()
        until = None if seconds is None else now + seconds
        current = self._active.get(kind)
        if current is not None and self._over(current, now):
            self.end(kind)
            current = None
        if current is not None:
            if current.until is None or (until is not None and until <= current.until):
                return
            self._active[kind] = Pause(kind, current.reason, until, current.started)
        else:
            self._active[kind] = Pause(kind, reason, until, now)
            if until is None:
                log.warning("backend %s paused: %s", self.backend, reason)
            else:
                log.warning(
                    "backend %s paused for %.1fs (until %s): %s",
                    self.backend,
                    until - now,
                    _wall_clock(until - now),
                    reason,
                )
        self._end_at(kind, until, now)

    def end(self, kind: str) -> None:
        """The pause of `kind` is over (nothing when none is in force)."""
        timer = self._timers.pop(kind, None)
        if timer is not None:
            timer.cancel()
        pause = self._active.pop(kind, None)
        if pause is not None:
            log.warning(
                "backend %s sends again after %.1fs: over: %s",
                self.backend,
                max(0.0, self._clock() - pause.started),
                pause.reason,
            )

    def current(self) -> Pause | None:
        """The pause that keeps the backend from sending now, or None."""
        now = self._clock()
        for kind in _PRECEDENCE:
            pause = self._active.get(kind)
            if pause is not None and self._over(pause, now):
                self.end(kind)
                pause = None
            if pause is not None:
                return pause
        return None

    @staticmethod
    def _over(pause: Pause, now: float) -> bool:
        return pause.until is not None and pause.until <= now

    def _end_at(self, kind: str, until: float | None, now: float) -> None:
        # The end is logged when it comes, whether or not anything is waiting to send.
        timer = self._timers.pop(kind, None)
        if timer is not None:
            timer.cancel()
        if until is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a test's fake clock): logged when next looked at
        self._timers[kind] = loop.call_later(max(0.0, until - now), self.current)


def _wall_clock(in_s: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(time.time() + in_s))


@dataclass(frozen=True, slots=True)
class Take:
    """What the windows answered to one request for room."""

    token: Any = None
    """Set when granted: handed back to `give_back` when the call ends."""
    wait_s: float | None = None
    """Not granted: seconds until it may fit (None: not before an in-flight call ends)."""
    exact: bool = True
    """Whether `wait_s` is certain (False: room may come earlier or later; do not give up
    on a deadline because of it)."""

    @property
    def granted(self) -> bool:
        return self.token is not None


class QuotaWindows(Protocol):
    """The call and recipient windows of one vendor app, plus the pause after a refusal."""

    counts_recipients: bool
    """Whether the vendor counts recipients (then the fair queue charges recipients)."""
    blocked_until: float
    """time.monotonic() at which the current pause ends (as last known)."""
    pauses: Pauses
    """Why it is paused now (the vendor's block and, with Redis, the gateway's own)."""

    async def take(self, recipients: int) -> Take:
        """Hold room for one call of `recipients` now, or say how long until it may fit."""
        ...

    def give_back(self, token: Any) -> None:
        """The call of a granted `take` has ended (its slot now lasts one more window)."""
        ...

    def block(self, seconds: float) -> None:
        """The vendor refused for rate: nothing more for `seconds` from now."""
        ...

    def usage(self) -> list[tuple[str, int, int]]:
        """(window, held, limit) per window ("calls", "recipients"), as last known."""
        ...


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


def counted(amount: int, limit: int) -> int:
    """What one call counts in a window: one amount larger than the whole limit would wait
    forever, so it is let through alone, counted as the whole limit."""
    return min(amount, limit)


class LocalWindows:
    """Window accounting in this process only (the default without `[quota] url`)."""

    def __init__(
        self,
        call_limit: int,
        call_window_s: float,
        recipient_limit: int,
        recipient_window_s: float,
        clock: Callable[[], float] = time.monotonic,
        backend: str = "",
    ) -> None:
        self._clock = clock
        self.pauses = Pauses(backend, clock)
        self._windows: list[tuple[_Window, bool]] = [(_Window(call_limit, call_window_s), False)]
        if recipient_limit > 0:
            self._windows.append((_Window(recipient_limit, recipient_window_s), True))
        self.counts_recipients = recipient_limit > 0
        self.blocked_until = 0.0

    def _amounts(self, recipients: int) -> list[int]:
        return [
            counted(recipients if counts else 1, window.limit) for window, counts in self._windows
        ]

    async def take(self, recipients: int) -> Take:
        return self.take_now(recipients)

    def take_now(self, recipients: int) -> Take:
        """`take` without the coroutine (the property test drives it on a fake clock)."""
        now = self._clock()
        waits = [max(0.0, self.blocked_until - now)]
        for (window, _), amount in zip(self._windows, self._amounts(recipients), strict=True):
            wait = window.wait_for(amount, now)
            if wait is None:
                return Take(wait_s=None, exact=False)
            waits.append(wait)
        wait = max(waits)
        if wait > 0:
            return Take(wait_s=wait)
        amounts = self._amounts(recipients)
        for (window, _), amount in zip(self._windows, amounts, strict=True):
            window.in_flight += amount
        return Take(token=amounts)

    def give_back(self, token: Any) -> None:
        now = self._clock()
        for (window, _), amount in zip(self._windows, token, strict=True):
            window.end(amount, now)

    def block(self, seconds: float) -> None:
        self.blocked_until = max(self.blocked_until, self._clock() + seconds)

    def usage(self) -> list[tuple[str, int, int]]:
        now = self._clock()
        usage = []
        for window, counts_recipients in self._windows:
            window.expire(now)
            held = window.in_flight + window.ended_total
            usage.append(("recipients" if counts_recipients else "calls", held, window.limit))
        return usage


class Grant:
    """Permission for one vendor call; `release()` when the call has ended."""

    def __init__(self, limiter: Limiter, recipients: int, token: Any) -> None:
        self._limiter = limiter
        self.recipients = recipients
        self._token = token
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter._end(self._token)


@dataclass(order=True, slots=True)
class _Waiter:
    tag: float
    arrival: int
    _woken: asyncio.Future[None] | None = field(compare=False, default=None)

    def wake(self) -> None:
        """End the current `sleep`. A wake while not asleep is not kept (as with the event
        cleared before each wait it replaces): a waiter asks the windows before it sleeps."""
        if self._woken is not None and not self._woken.done():
            self._woken.set_result(None)

    async def sleep(self, seconds: float | None) -> None:
        """Until `wake` or for `seconds` (None: until `wake`), whichever comes first.

        One future, resolved by either: the waiter runs on the loop pass right after its
        timer or its wake. `asyncio.wait_for(event.wait(), timeout)` took two (wake) to
        about four (timer) more passes (the inner task, its cancel, the wait_for's own
        waiter), each queued behind whatever else was ready, and the slot that had just
        freed stayed unused meanwhile.
        """
        loop = asyncio.get_running_loop()
        self._woken = woken = loop.create_future()
        timer = None if seconds is None else loop.call_later(seconds, self.wake)
        try:
            await woken
        finally:
            self._woken = None
            if timer is not None:
                timer.cancel()


class Limiter:
    """A backend's quota: the fair queue between callers in front of `windows`."""

    def __init__(self, windows: QuotaWindows, clock: Callable[[], float] = time.monotonic) -> None:
        self.windows = windows
        self._clock = clock
        self._waiting: list[_Waiter] = []  # a heap: the smallest tag waits for room
        self._arrivals = itertools.count()
        self._now_tag = 0.0  # the tag of the last waiter granted
        self._finish: dict[str, float] = {}  # per caller: one entry per configured caller

    @property
    def blocked_until(self) -> float:
        """time.monotonic() at which the current pause ends."""
        return self.windows.blocked_until

    def block(self, seconds: float, reason: str = "the vendor refused for rate") -> None:
        """The vendor refused for rate: send nothing more for `seconds` from now."""
        self.windows.block(seconds)
        self.windows.pauses.start(VENDOR_BLOCK, reason, seconds)
        self._wake_first()

    def pause(self) -> Pause | None:
        """Why the backend is not sending now (None: it is, as far as the quota knows)."""
        return self.windows.pauses.current()

    def usage(self) -> list[tuple[str, int, int]]:
        """(window, held, limit) per window ("calls", "recipients"), for the metrics."""
        return self.windows.usage()

    def is_blocked(self) -> bool:
        return self._clock() < self.windows.blocked_until

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
        cost = (recipients if self.windows.counts_recipients else 1) / weight
        tag = max(self._now_tag, self._finish.get(caller, 0.0))
        self._finish[caller] = tag + cost
        waiter = _Waiter(tag, next(self._arrivals))
        heapq.heappush(self._waiting, waiter)
        granted = False
        try:
            while True:
                wait: float | None = None
                if self._waiting[0] is waiter:
                    take = await self.windows.take(recipients)
                    if take.granted:
                        granted = True
                        self._now_tag = waiter.tag
                        return Grant(self, recipients, take.token)
                    wait = take.wait_s
                    now = self._clock()
                    certain = take.exact and wait is not None
                    if deadline is not None and certain and now + (wait or 0.0) > deadline:
                        raise QuotaWaitTooLong
                now = self._clock()
                if deadline is not None and now >= deadline:
                    raise QuotaWaitTooLong
                timeout = wait
                if deadline is not None:
                    until_deadline = deadline - now
                    timeout = until_deadline if timeout is None else min(timeout, until_deadline)
                # Room comes with time or when an in-flight call ends; the turn comes when
                # the waiter ahead is granted or gives up, or one with a smaller tag arrives.
                await waiter.sleep(timeout)
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
            self._waiting[0].wake()

    def _end(self, token: Any) -> None:
        self.windows.give_back(token)
        self._wake_first()


class BackendLimiter(Limiter):
    """Call and recipient quotas of one backend counted in this process."""

    def __init__(
        self,
        call_limit: int,
        call_window_s: float,
        recipient_limit: int,
        recipient_window_s: float,
        clock: Callable[[], float] = time.monotonic,
        backend: str = "",
    ) -> None:
        super().__init__(
            LocalWindows(
                call_limit, call_window_s, recipient_limit, recipient_window_s, clock, backend
            ),
            clock,
        )
