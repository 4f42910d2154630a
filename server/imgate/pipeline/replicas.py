"""One replica of several on a shared store (PostgreSQL, CONTRACT.md §5).

Three loops, each every `lease_s / 3`: the heartbeat (a replica silent for `lease_s` is
presumed dead; a failed heartbeat means the store does not answer: health NOT_SERVING);
the sweep, which releases this replica's batches whose run stopped on an error and
adopts the batches of dead replicas exactly as a start-up recovers them; and the cancel
poll, which notices cancels asked on other replicas of this replica's batches. A replica
never closes a batch that another one owns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from imgate.observability.metrics import Metrics
from imgate.pipeline.failures import log_failure
from imgate.pipeline.watch import woken
from imgate.store.base import Store
from imgate.store.records import BatchRow, Recovered

log = logging.getLogger("imgate.batches")

# The owner of a batch cancelled on another replica notices within this.
CANCEL_POLL_S = 1.0


class Replica(Protocol):
    """What the loops need of the batch service (pipeline.batches.BatchService)."""

    store: Store
    owner: str
    lease_s: float
    metrics: Metrics
    stopping: asyncio.Event
    orphans: set[str]

    def cancel_here(self, row: BatchRow) -> None:
        """A cancel asked elsewhere: stop the batch's run here, or close it."""

    async def store_answered(self, ok: bool) -> None:
        """Whether the store answers (False: health NOT_SERVING)."""

    async def end_in_flight(self, recovered: Recovered) -> None: ...

    async def close_all(self, batch_ids: Sequence[str]) -> None: ...

    async def find_waiting(self) -> None: ...


class ReplicaLoops:
    """The background loops of a replica; `start()` once, `tasks` to cancel at stop."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        self.tasks: list[asyncio.Task[None]] = []
        self._poked = asyncio.Event()

    def poke(self) -> None:
        """Look for cancelled batches now (a notification said one was cancelled)."""
        self._poked.set()

    def start(self) -> None:
        self.tasks = [
            asyncio.create_task(self._heartbeat_loop()),
            asyncio.create_task(self._sweep_loop()),
            asyncio.create_task(self._cancel_poll_loop()),
        ]

    async def _heartbeat_loop(self) -> None:
        replica = self._replica
        every = replica.lease_s / 3
        while True:
            await asyncio.sleep(every)
            try:
                # Bounded: a database that stopped answering (no reset) is noticed too.
                async with asyncio.timeout(max(1.0, every)):  # not wait_for: see woken
                    await replica.store.heartbeat(replica.owner)
            except Exception as exc:
                replica.metrics.store_errors.labels("heartbeat").inc()
                log.warning("store heartbeat failed: %s", exc or type(exc).__name__)
                await replica.store_answered(False)
            else:
                await replica.store_answered(True)

    async def _sweep_loop(self) -> None:
        replica = self._replica
        store, owner, lease_s = replica.store, replica.owner, replica.lease_s
        while True:
            await asyncio.sleep(lease_s / 3)
            for batch_id in list(replica.orphans):
                try:
                    await store.release(batch_id, owner)
                except Exception:
                    break  # the store is still away: next time
                replica.orphans.discard(batch_id)
                log.warning("batch %s released, to be adopted again by a sweep", batch_id)
            try:
                adopted, recovered = await store.adopt(owner, lease_s)
            except Exception as exc:
                replica.metrics.store_errors.labels("sweep").inc()
                log_failure(log, "adopting dead replicas' batches failed", exc, store.is_outage)
                continue
            if adopted:
                log.warning(
                    "adopted %d batches of replicas silent for over %.1fs", adopted, lease_s
                )
            try:
                await replica.end_in_flight(recovered)
            except Exception as exc:
                # Resumed all the same: the run's close ends what is still SENDING
                # UNCERTAIN. Not resumed, they would stay this replica's and idle.
                replica.metrics.store_errors.labels("sweep").inc()
                log_failure(
                    log,
                    "ending adopted in-flight chunks failed; left to the runs",
                    exc,
                    store.is_outage,
                )
            if replica.stopping.is_set():
                continue
            try:
                await replica.close_all(recovered.to_close)
                if adopted:
                    await replica.find_waiting()
            except Exception as exc:
                replica.metrics.store_errors.labels("sweep").inc()
                log_failure(
                    log,
                    "resuming adopted batches failed; the next sweep tries again",
                    exc,
                    store.is_outage,
                )

    async def _cancel_poll_loop(self) -> None:
        """A cancel asked on another replica only changes the store: notice it here, for
        batches running here and for this replica's queued ones."""
        replica = self._replica
        while True:
            await woken(self._poked, min(CANCEL_POLL_S, replica.lease_s / 3))
            self._poked.clear()
            try:
                cancelled = await replica.store.cancelling(replica.owner, 100)
            except Exception:  # noqa: S112 - the heartbeat loop reports the store's trouble
                continue
            for row in cancelled:
                replica.cancel_here(row)
