"""Batches as durable resources: submit, resume, cancel, watch, purge (CONTRACT.md §4).

`BatchService` is what the servicer talks to. It keeps one `BatchRun` per batch being
sent by this process and nothing else in memory: batches, recipients and outcomes live
in the store, and a watcher reads them from there at its own pace. Here: its life cycle,
the purge loop, submit and watch; running a batch is pipeline.running's part of it,
cancel and recall pipeline.cancel's.

Each backend runs at most `max_running_batches` batches at once here; the others wait
QUEUED in the store (pipeline.queue). A BatchSend that fits one vendor call takes a short
path (`send_small`): quota and permit first, then the batch is stored with its chunk
already SENDING (one commit), sent, and recorded and ended in one more commit; its caller
gets the outcome without a watch loop over the store.

At start-up it recovers what a previous process left: chunks found SENDING may have
reached the vendor, so they end UNCERTAIN (never resent); CLAIMED ones go back to
PLANNED; unfinished batches are resumed, except those bound to a caller that is gone
(BatchSend without request_id), which end with their unsent recipients NOT_ATTEMPTED.

With a shared store (PostgreSQL, CONTRACT.md §5) the gateway is one replica of several
(pipeline.replicas): a start-up recovers only dead replicas' batches, never a live one's.

With `[[webhooks]]`, a batch's end writes its events to the store's outbox in the same
transaction (the sink's), and the delivery loops (pipeline.webhooks) run from start to
stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from imgate.clock import SteadyClock
from imgate.observability.metrics import Metrics
from imgate.observability.tracing import Tracing
from imgate.pipeline.backend import Backend
from imgate.pipeline.cancel import Cancelling
from imgate.pipeline.dispatch import BatchRun, Fresh
from imgate.pipeline.failures import log_failure
from imgate.pipeline.queue import BatchQueue
from imgate.pipeline.replicas import ReplicaLoops
from imgate.pipeline.schedule import Scheduler
from imgate.pipeline.sink import Chunk, EndedEvents, no_events
from imgate.pipeline.watch import GatewayStopping, watch
from imgate.pipeline.webhooks import Webhooks
from imgate.store.base import Store
from imgate.store.records import (
    PLANNED,
    RECIPIENT_PAGE,
    BatchRow,
    ChunkRow,
    OutcomePage,
)
from imgate.v1 import gateway_pb2 as pb

log = logging.getLogger("imgate.batches")

# Batches closed at once after a restart (bound to a caller that is gone, or cancelled).
_CLOSING_AT_ONCE = 16
_PURGE_EVERY_S = 300.0
# A wall clock that moves this far from the steady clock is worth a log line.
_DRIFT_WORTH_A_LINE_S = 60.0


class BatchService(Cancelling):
    """The batches of one gateway process."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        store: Store,
        retention_s: float,
        clock: Callable[[], float] | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        lease_s: float = 30.0,
        webhooks: Webhooks | None = None,
    ) -> None:
        """`clock` is the wall clock of create times, deadlines and purge (default: the
        process's SteadyClock, which wall-clock jumps do not move; tests scale it);
        `lease_s`: a replica silent this long is presumed dead (shared stores);
        `webhooks`: the [[webhooks]] told when batches end."""
        self.backends = backends
        self.metrics = metrics or Metrics()
        self.tracing = tracing or Tracing()
        self._trace_parents: dict[str, Any] = {}  # batch id -> its RPC's trace context
        self.store = store
        self.retention_s = retention_s
        self.clock = clock or SteadyClock()
        self.lease_s = lease_s
        self.owner = uuid.uuid4().hex
        """This process's replica id: owner of its batches and chunks (new at each start)."""
        self.webhooks = webhooks
        self.ended_events: EndedEvents = webhooks.events_for if webhooks else no_events
        """What a batch's end writes to the webhook outbox."""
        self.stopping = asyncio.Event()
        self.stopped = asyncio.Event()
        self._runs: dict[str, tuple[BatchRun, asyncio.Task[None]]] = {}
        self.queue = BatchQueue(
            backends,
            store,
            self.owner,
            self.metrics,
            lambda row: self._launch(row, slot_taken=True),
            self.may_run,
        )
        self.scheduler = Scheduler(store, self.owner, self.queue.waiting, self.metrics, self.clock)
        self.replica = ReplicaLoops(self)
        store.cancelled_elsewhere = self._cancelled_elsewhere
        self.store_answers = True
        """False while the store cannot be written (a full disk) or does not answer."""
        self.store_reachable: Callable[[bool], Awaitable[None]] | None = None
        """Told when the store stops (False) or starts again (True) answering."""
        self._stalled: dict[str, asyncio.Task[None]] = {}
        """Batches whose run stopped on a store error, by their retry (one process)."""
        self._probe: asyncio.Task[None] | None = None
        self._drift_seen = 0.0
        self._loops: list[asyncio.Task[None]] = []
        self.orphans: set[str] = set()
        """Shared store: batches of this replica whose run stopped on an error, to be
        released (and adopted again by a sweep) rather than left owned and idle."""

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, recover what a dead process left (with a shared store: what
        dead replicas left), close what is not to be sent, start the queue and the
        background loops. Queued batches stay in the store until a slot takes them."""
        store = self.store
        await store.open()
        if store.shared:
            await store.heartbeat(self.owner)
            _, recovered = await store.adopt(self.owner, self.lease_s)
        else:
            recovered = await store.recover(self.owner)
        await self.end_in_flight(recovered)
        await self.close_all(recovered.to_close)
        await self.queue.find_waiting()
        self._loops.append(asyncio.create_task(self._purge_loop()))
        self._loops.append(self.scheduler.start())
        if store.shared:
            self.replica.start()
            self._loops += self.replica.tasks
        if self.webhooks is not None:
            await self.webhooks.start()

    async def close_all(self, batch_ids: Sequence[str]) -> None:
        """Close these batches (their unsent recipients NOT_ATTEMPTED), a few at a time."""
        for start in range(0, len(batch_ids), _CLOSING_AT_ONCE):
            launched = []
            for batch_id in batch_ids[start : start + _CLOSING_AT_ONCE]:
                row = await self.store.get_batch(batch_id)
                if row is not None and not row.ended and self.may_run(row):
                    launched.append(self._launch(row, send=False))
            await asyncio.gather(*launched, return_exceptions=True)
        if batch_ids:
            log.info("closed %d batches left unfinished and not to be sent", len(batch_ids))

    async def stop(self, grace_s: float) -> None:
        """No new vendor call; calls in flight get `grace_s`, then are cut. Batches that
        cannot be resumed later (bound to a caller, or a memory store) end here."""
        self.stopping.set()
        await self.queue.stop()
        runs = list(self._runs.values())
        if runs:
            _, late = await asyncio.wait([task for _, task in runs], timeout=grace_s)
            for task in late:
                task.cancel()
            if late:
                log.warning("%d batches still had calls in flight after the grace", len(late))
                await asyncio.wait(late)
                for run, task in runs:
                    if task in late:
                        # Its SENDING chunks are UNCERTAIN now (or at the next start).
                        with contextlib.suppress(Exception):
                            await run.close()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self.webhooks is not None:
            await self.webhooks.stop()
        if self.store.shared:
            # What stays queued here is taken over by the other replicas now, not after
            # the lease (a rolling deploy restarts every replica in turn).
            try:
                await self.store.retire(self.owner)
            except Exception as exc:
                log_failure(
                    log, "could not tell the store this replica stops", exc, self.store.is_outage
                )
        self.stopped.set()
        self.store.notifier.notify_all()

    async def close(self) -> None:
        await self.store.close()

    def tracked(self) -> dict[str, int]:
        """Sizes of what is held per batch, stream or caller (see Store.tracked)."""
        return {
            **self.store.tracked(),
            **self.queue.tracked(),
            "batch_runs": len(self._runs),
            "orphans": len(self.orphans),
        }

    # -- background loops ---------------------------------------------------------------

    def _check_drift(self) -> None:
        """Say once when the wall clock has moved from the steady clock (retention keeps
        the steady one: a jump forgets no request_id and purges nothing early)."""
        clock = self.clock
        if not isinstance(clock, SteadyClock):
            return
        drift = clock.drift()
        if abs(drift - self._drift_seen) >= _DRIFT_WORTH_A_LINE_S:
            self._drift_seen = drift
            log.warning(
                "the wall clock is %+.0fs from the gateway's steady clock; batch times and"
                " retention keep the steady clock",
                drift,
            )

    async def _purge_loop(self) -> None:
        every = min(_PURGE_EVERY_S, max(1.0, self.retention_s / 10))
        while True:
            try:
                now = await self.store.now() or self.clock()
                self._check_drift()
                purged = await self.store.purge(now - self.retention_s)
                if purged:
                    log.info("purged %d batches and lists over %.0fs old", purged, self.retention_s)
            except Exception as exc:
                self.metrics.store_errors.labels("purge").inc()
                log_failure(log, "purging ended batches failed", exc, self.store.is_outage)
            self.queue.fill_all()  # a filler that failed on a store error tries again
            await asyncio.sleep(every)

    # -- what the servicer asks ---------------------------------------------------------

    async def submit(
        self,
        row: BatchRow,
        ids: Sequence[str],
        indexes: Sequence[int] | None,
        call_deadline: float | None = None,
        prepared: Any = None,
    ) -> tuple[BatchRow, bool]:
        """Store a batch and start sending it, or leave it QUEUED when the backend's
        slots are taken; an existing one (same caller and request_id) is returned as it
        is, with False. Raises Backlogged past max_queued_batches."""

        def launch(stored: BatchRow) -> None:
            first = slice(0, RECIPIENT_PAGE)
            fresh = Fresh(ids[first], None if indexes is None else indexes[first])
            self._launch(
                stored, call_deadline=call_deadline, fresh=fresh, prepared=prepared, slot_taken=True
            )

        return await self._submit(
            row,
            lambda: self.store.create_batch(row, ids, indexes, owner=self.owner),
            launch,
        )

    async def submit_from_list(self, row: BatchRow, list_id: str) -> tuple[BatchRow, bool]:
        """`submit` with a stored recipient list's ids (LookupError when it is gone)."""
        return await self._submit(
            row,
            lambda: self.store.create_batch_from_list(row, list_id, owner=self.owner),
            lambda stored: self._launch(stored, fresh=Fresh(), slot_taken=True),
        )

    async def send_small(
        self,
        row: BatchRow,
        ids: Sequence[str],
        indexes: Sequence[int] | None,
        prepared: Any,
        call_deadline: float | None,
    ) -> tuple[BatchRow, bool, tuple[BatchRun, asyncio.Task[None]] | None]:
        """A BatchSend that fits one vendor call (issue 20's short path): wait for quota
        and a permit, store the batch with its chunk SENDING in one commit, send it in a
        task; returns (row, created, (run, task)). Without quota before the deadline it is
        submitted as any batch (its run ends it NOT_ATTEMPTED)."""
        if self.stopping.is_set():
            raise GatewayStopping
        backend = self.backends[row.backend]
        row.state = pb.BATCH_STATE_RUNNING
        chunk = Chunk(
            ChunkRow(row.batch_id, 0, 0, len(ids), PLANNED, attempts=1),
            ids,
            range(len(ids)) if indexes is None else indexes,
        )
        run = BatchRun(
            backend,
            self.store,
            row,
            self.owner,
            self.stopping,
            call_deadline,
            None,
            prepared,
            self.clock,
            self.ended_events,
        )
        grant = await run.wait_for_quota(chunk)
        permit = None
        if grant is not None:
            permit = await run.wait_for_permit()
            if permit is None:
                grant.release()
        if grant is None or permit is None:
            stored, created = await self.submit(row, ids, indexes, call_deadline, prepared)
            return stored, created, None
        try:
            stored, created = await self.store.create_batch(
                row, ids, indexes, owner=self.owner, first_chunk=chunk.row
            )
        except BaseException:
            grant.release()
            backend.permits.release()
            raise
        if not created:
            grant.release()
            backend.permits.release()
            return stored, False, None
        run.sink.row = stored
        self._keep_trace_parent(stored.batch_id)
        task = self._start(run, run.run_one(chunk, grant))
        return stored, True, (run, task)

    async def find_waiting(self) -> None:
        """After an adoption: the adopted batches that wait, queued or scheduled."""
        await self.queue.find_waiting()
        self.scheduler.wake()

    async def watch(
        self, batch_id: str, after_seq: int
    ) -> AsyncIterator[tuple[list[OutcomePage], BatchRow | None]]:
        """See pipeline.watch.watch (a batch running here ends here: no store poll)."""
        async for item in watch(
            self.store, batch_id, after_seq, self._live, self.stopped, self._is_stalled
        ):
            yield item

    def _live(self, batch_id: str) -> bool:
        """Running here and not ended: it ends here, and its end wakes its watchers."""
        running = self._runs.get(batch_id)
        return running is not None and not running[0].sink.ended
