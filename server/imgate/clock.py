"""The gateway's clock of record: wall-clock seconds that never jump within a process.

Timestamps that decide something later (a batch's create and end time, retention, a
caller's send_before) are read from a SteadyClock: the wall clock read once, at start,
advanced by the monotonic clock. An operator or NTP moving the wall clock (issue 22: a
forward jump past retention forgot a request_id and 800 recipients were sent twice; a
backward jump let the next purge delete batches that had just ended) moves nothing
here; `drift()` says by how much the wall clock has moved since, for a log line. A
shared store keeps its own times by the database's clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class SteadyClock:
    """time.time() as it was at start-up, advanced by time.monotonic()."""

    def __init__(self, wall: Clock = time.time, monotonic: Clock = time.monotonic) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._offset = wall() - monotonic()

    def __call__(self) -> float:
        return self._offset + self._monotonic()

    def drift(self) -> float:
        """Seconds the wall clock is ahead of this clock (negative: behind)."""
        return self._wall() - self()
