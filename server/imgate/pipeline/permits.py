"""How many vendor calls of one backend may be in flight at once.

A fixed cap queues everybody once the vendor is slow: with 8 permits and a 50 ms round
trip a backend makes at most 160 calls/s, whatever the vendor's quota allows (issue 20
measured 145/s against Tencent's 200). By Little's law the calls in flight needed to use
a quota of `rate` calls per second at a round trip of `rtt` seconds are `rate * rtt`; the
default limit is that, doubled for the round trip's spread, between a floor (a few calls
still overlap for a vendor with a tiny quota) and a ceiling (the connections a backend
opens). The round trip is measured: an exponentially weighted mean of the calls' times.

`max_in_flight` in the configuration fixes the limit instead. The quota limiter still
decides how many calls go out per window; this only decides how many may wait for their
answers at once.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

FLOOR = 4
CEILING = 256
"""Most calls in flight per backend (also its connection pool's size)."""
HEADROOM = 2.0
INITIAL_ROUND_TRIP_S = 0.1
_WEIGHT = 0.2  # of each new round trip in the mean: about the last ten calls count


def derived_limit(calls_per_s: float, round_trip_s: float) -> int:
    """Little's law with headroom, between FLOOR and CEILING."""
    wanted = math.ceil(calls_per_s * round_trip_s * HEADROOM)
    return max(FLOOR, min(CEILING, wanted))


class Permits:
    """A semaphore whose size follows `derived_limit` (or stays at `fixed`)."""

    def __init__(self, fixed: int, calls_per_s: float, timeout_s: float) -> None:
        """`fixed` > 0: always that many; 0: derived from `calls_per_s` (the vendor's
        call quota) and the measured round trip, which counts at most `timeout_s`."""
        self.fixed = fixed
        self.calls_per_s = calls_per_s
        self.timeout_s = timeout_s
        self.round_trip_s = INITIAL_ROUND_TRIP_S
        self.limit = fixed or derived_limit(calls_per_s, self.round_trip_s)
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def most(self) -> int:
        """The largest the limit can ever be."""
        return self.fixed or CEILING

    async def acquire(self) -> bool:
        """Take a permit, waiting in turn (first come, first served)."""
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as it was cancelled: give it back
            else:
                self._waiters.remove(waiter)
            raise
        return True

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def observe(self, round_trip_s: float) -> None:
        """A call took `round_trip_s`: update the mean, and the limit if derived."""
        if self.fixed:
            return
        seconds = min(max(round_trip_s, 0.0), self.timeout_s)
        self.round_trip_s += _WEIGHT * (seconds - self.round_trip_s)
        limit = derived_limit(self.calls_per_s, self.round_trip_s)
        if limit != self.limit:
            self.limit = limit
            self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)
