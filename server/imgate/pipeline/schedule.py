"""Scheduled batches (CONTRACT §9 rule 26): they wait SCHEDULED in the store, never in
memory, until their `send_after`; then they are QUEUED like any batch and a slot takes
them.

One timer per process, set to the earliest `send_after` the store holds for this replica
(all of them for a store of one process): when it fires, every batch that is due goes to
QUEUED at once and the timer is set again. A submit with an earlier time wakes it
(`armed`); so does an adoption of a dead replica's batches (`wake`), whose scheduled ones
are this replica's from then on. Memory holds one time, whatever the number of batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from imgate.observability.metrics import Metrics
from imgate.pipeline.failures import log_failure
from imgate.store.base import Store

log = logging.getLogger("imgate.batches")

# The timer never sleeps longer than this: a wall clock that jumped, or a wake-up lost to
# a store error, costs at most this much delay.
_MAX_SLEEP_S = 30.0
# After a store error, the store is asked again this soon.
_RETRY_S = 1.0


class Scheduler:
    """The timer of one process's scheduled batches; `start()` once, cancel its task."""

    def __init__(
        self,
        store: Store,
        owner: str,
        due: Callable[[str, str], None],
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`due(backend, caller)`: a batch of that caller on that backend is QUEUED now."""
        self._store = store
        self._owner = owner
        self._due = due
        self._metrics = metrics
        self._clock = clock
        self._wake = asyncio.Event()
        self._wake_at: float | None = None
        """When the timer fires next (wall clock); None = nothing is scheduled."""

    def start(self) -> asyncio.Task[None]:
        return asyncio.create_task(self._loop(), name="scheduled batches")

    def armed(self, send_after: float) -> None:
        """A batch was stored SCHEDULED until `send_after`: fire earlier if need be."""
        if self._wake_at is None or send_after < self._wake_at:
            self._wake.set()

    def wake(self) -> None:
        """Look at the store again (adopted batches may be scheduled)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            # Cleared before the store is read: a batch armed meanwhile wakes the wait.
            self._wake.clear()
            try:
                for backend, caller in await self._store.promote_due(self._owner, self._clock()):
                    self._due(backend, caller)
                self._wake_at = await self._store.next_scheduled(self._owner)
            except Exception as exc:
                self._metrics.store_errors.labels("schedule").inc()
                log_failure(
                    log,
                    "starting scheduled batches failed; trying again",
                    exc,
                    self._store.is_outage,
                )
                self._wake_at = self._clock() + _RETRY_S
            sleep_s = _MAX_SLEEP_S
            if self._wake_at is not None:
                sleep_s = min(sleep_s, max(0.0, self._wake_at - self._clock()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sleep_s):  # not wait_for: see dispatch
                    await self._wake.wait()
