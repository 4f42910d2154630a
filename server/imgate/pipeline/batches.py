"""Batches as durable resources: submit, resume, cancel, watch, purge (CONTRACT.md §4).

`BatchService` is what the servicer talks to. It keeps one `BatchRun` per batch being
sent by this process and nothing else in memory: batches, recipients and outcomes live
in the store, and a watcher reads them from there at its own pace.

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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

from imgate.clock import SteadyClock
from imgate.observability.logs import set_log_context
from imgate.observability.metrics import BATCH_STATE_NAMES, Metrics
from imgate.observability.tracing import AttributeValue, Tracing
from imgate.pipeline.dispatch import Backend, BatchRun, Fresh
from imgate.pipeline.failures import log_failure
from imgate.pipeline.queue import BatchQueue
from imgate.pipeline.recall import (
    NotRecallable,
    RecallRun,
    end_wait_s,
    recall_row,
    until_ended,
    why_not_recallable,
)
from imgate.pipeline.replicas import ReplicaLoops
from imgate.pipeline.schedule import Scheduler
from imgate.pipeline.sink import BatchSink, Chunk, EndedEvents, no_events
from imgate.pipeline.watch import GatewayStopping, watch
from imgate.pipeline.webhooks import Webhooks
from imgate.store.base import Store
from imgate.store.records import (
    PLANNED,
    RECIPIENT_PAGE,
    SENDING,
    BatchRow,
    ChunkRow,
    Fenced,
    OutcomePage,
    Recovered,
    StoreError,
)
from imgate.v1 import gateway_pb2 as pb

log = logging.getLogger("imgate.batches")
# One line per batch that ended here: who sent what through which backend, and how it went.
audit_log = logging.getLogger("imgate.audit")

# Batches closed at once after a restart (bound to a caller that is gone, or cancelled).
_CLOSING_AT_ONCE = 16
_PURGE_EVERY_S = 300.0
# A wall clock that moves this far from the steady clock is worth a log line.
_DRIFT_WORTH_A_LINE_S = 60.0
# A store that cannot be written is tried again after 0.5 s, 1 s, 2 s ... at most this.
_STALLED_RETRY_MAX_S = 30.0
_MAX_TRACE_PARENTS = 10_000


class BatchService:
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

    async def end_in_flight(self, recovered: Recovered) -> None:
        """Chunks found SENDING may have reached the vendor: they end UNCERTAIN."""
        for stored in recovered.sending:
            row = await self.store.get_batch(stored.batch_id)
            assert row is not None
            ids, indexes = await self.store.read_recipients(row.batch_id, stored.start, stored.end)
            await BatchSink(self.store, row, self.owner, self.metrics, self.ended_events).same(
                Chunk(stored, ids, indexes),
                pb.DELIVERY_STATE_UNCERTAIN,
                pb.FAILURE_REASON_TIMEOUT,
                "",
                "the gateway stopped while this call was in flight",
            )
        if recovered.sending:
            log.warning(
                "recovered %d chunks that were in flight when their gateway stopped: UNCERTAIN",
                len(recovered.sending),
            )

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

    def may_run(self, row: BatchRow) -> bool:
        """Whether `row` can run here now: not running already, backend configured."""
        if row.batch_id in self._runs:
            return False
        if row.backend not in self.backends:
            log.error(
                "batch %s: backend %r is no longer configured; left as it is",
                row.batch_id,
                row.backend,
            )
            return False
        return True

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

    # -- running batches ----------------------------------------------------------------

    def _launch(
        self,
        row: BatchRow,
        send: bool = True,
        call_deadline: float | None = None,
        fresh: Fresh | None = None,
        prepared: Any = None,
        slot_taken: bool = False,
    ) -> asyncio.Task[None]:
        """Run `row` in a task, in one of its backend's slots (`slot_taken`: the caller
        took it); `fresh`: it was created just now, with these recipients first (see
        BatchRun). A recall batch runs through its backend's recall lane (one whose
        backend is no longer recallable is closed, its recipients NOT_ATTEMPTED)."""
        backend = self.backends[row.backend]
        kind = BatchRun
        if row.recall_of:
            kind = RecallRun
            if backend.recall is None:
                log.error(
                    "recall batch %s: backend %s cannot recall now", row.batch_id, row.backend
                )
                send = False
            else:
                backend = backend.recall
        run = kind(
            backend,
            self.store,
            row,
            self.owner,
            self.stopping,
            call_deadline,
            fresh,
            prepared,
            self.clock,
            self.ended_events,
        )
        return self._start(run, run.run(send), slot_taken)

    def _start(
        self, run: BatchRun, work: Coroutine[Any, Any, None], slot_taken: bool = False
    ) -> asyncio.Task[None]:
        row = run.row
        if not slot_taken:
            self.queue.slots(row.backend).take(row.caller)
        # The span's parent is the RPC that made the batch, never whatever task (a queue
        # filler) starts it; none for a batch resumed or taken over (a root).
        parent = self._trace_parents.pop(row.batch_id, None)
        task = asyncio.create_task(self._run(run, work, parent), name=f"batch {row.batch_id}")
        self._runs[row.batch_id] = (run, task)
        return task

    async def _run(
        self, run: BatchRun, work: Coroutine[Any, Any, None], trace_parent: Any = None
    ) -> None:
        row = run.row
        set_log_context(
            backend=row.backend,
            request_id=row.request_id,
            batch_id=row.batch_id,
            caller=row.caller,  # "" without [callers]: logged as "-"
        )
        self.metrics.batch_started(row.backend)
        attributes: dict[str, AttributeValue] = {
            "imgate.backend": row.backend,
            "imgate.batch_id": row.batch_id,
            "imgate.vendor": run.backend.config.vendor,
            "imgate.recipients": row.total,
            "imgate.resumed": not run.fresh and row.state != pb.BATCH_STATE_QUEUED,
        }
        try:
            with self.tracing.span("batch", attributes, parent=trace_parent) as span:
                try:
                    await work
                finally:
                    ended = run.sink.row  # the sink holds the row as last written
                    span.set(
                        {
                            "imgate.state": BATCH_STATE_NAMES.get(ended.state, "UNKNOWN"),
                            "imgate.accepted": ended.accepted,
                            "imgate.failed": ended.failed,
                            "imgate.uncertain": ended.uncertain,
                        }
                    )
        except Exception as exc:
            if _only(exc, Fenced):
                log.warning("batch %s was taken over by another replica: %s", row.batch_id, exc)
                return
            self.metrics.batch_errors.labels(row.backend).inc()
            outage = _first(exc, self.store.is_outage)
            if outage is not None:
                self.metrics.store_errors.labels("batch").inc()
                # One line, no traceback: the store's trouble, not a bug (issue 22).
                log.error(
                    "batch %s stopped: the store: %s",
                    row.batch_id,
                    str(outage) or type(outage).__name__,
                )
                if not self.stopping.is_set():
                    if self.store.shared:
                        self.orphans.add(row.batch_id)  # a sweep takes it over (rule 9)
                    else:
                        self._stall(row.batch_id)
                    await self.store_answered(False)
            else:
                log.exception("batch %s stopped on an unexpected error", run.row.batch_id)
                if self.store.shared and not self.stopping.is_set():
                    self.orphans.add(row.batch_id)  # a sweep takes it over (rule 9 holds)
        finally:
            self._runs.pop(row.batch_id, None)
            self.store.forget(row.batch_id)
            self.queue.slots(row.backend).give_back(row.caller)
            ended_state = run.sink.row.state if run.sink.row.ended else None
            self.metrics.batch_finished(row.backend, ended_state)
            self.queue.fill(row.backend)
        if run.sink.row.ended:
            self._audit(run.sink.row)
            if self.webhooks is not None:
                self.webhooks.ended()
        self.store.notifier.notify(row.batch_id)  # its watchers look again (stalled?)

    # -- a store that cannot be written (issue 22) ---------------------------------------

    async def store_answered(self, ok: bool) -> None:
        """The store answered (or failed to): health follows (NOT_SERVING while not)."""
        if ok == self.store_answers:
            return
        self.store_answers = ok
        if ok:
            log.info("the store answers again")
        else:
            log.error("the store cannot be used: health is NOT_SERVING until it can")
            if not self.store.shared and self._probe is None:
                self._probe = asyncio.create_task(self._probe_store())
        if self.store_reachable is not None:
            await self.store_reachable(ok)

    async def _probe_store(self) -> None:
        """Try a write now and then until one succeeds (nothing else may write meanwhile:
        a failed submit leaves nothing to retry)."""
        delay = 0.5
        try:
            while not self.stopping.is_set():
                await asyncio.sleep(delay)
                try:
                    await self.store.probe_write()
                except StoreError:
                    delay = min(delay * 2, _STALLED_RETRY_MAX_S)
                    continue
                await self.store_answered(True)
                return
        finally:
            self._probe = None

    def _stall(self, batch_id: str) -> None:
        """The batch's run stopped on a store error: resume it here once the store can
        be written, as a restart would (chunks that were SENDING end UNCERTAIN)."""
        if batch_id in self._stalled:
            return
        task = asyncio.create_task(self._resume_stalled(batch_id))
        self._stalled[batch_id] = task
        task.add_done_callback(lambda _: self._stalled.pop(batch_id, None))

    async def _resume_stalled(self, batch_id: str) -> None:
        delay = 0.5
        while not self.stopping.is_set():
            await asyncio.sleep(delay)
            try:
                row = await self.store.get_batch(batch_id)
                if row is None or row.ended:
                    return
                sending = [c for c in await self.store.chunks(batch_id) if c.state == SENDING]
                await self.end_in_flight(Recovered(sending=sending))
                row = await self.store.get_batch(batch_id)
            except StoreError:
                delay = min(delay * 2, _STALLED_RETRY_MAX_S)
                continue
            await self.store_answered(True)
            if row is not None and not row.ended and self.may_run(row):
                # A bound batch's caller was told UNAVAILABLE: its run only closes it.
                self._launch(row, send=not row.bound)
            return

    def _is_stalled(self, batch_id: str) -> bool:
        return batch_id in self._stalled

    def _audit(self, row: BatchRow) -> None:
        # One line per batch, written by the process that ended it (issue 20: once).
        audit_log.info(
            "batch ended: caller=%s backend=%s batch_id=%s recipients=%d state=%s"
            " accepted=%d failed=%d uncertain=%d vendor_calls=%d",
            row.caller or "-",
            row.backend,
            row.batch_id,
            row.total,
            pb.BatchState.Name(pb.BatchState.ValueType(row.state)),
            row.accepted,
            row.failed,
            row.uncertain,
            row.vendor_calls,
        )

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

    async def _submit(
        self,
        row: BatchRow,
        create: Callable[[], Awaitable[tuple[BatchRow, bool]]],
        launch: Callable[[BatchRow], object],
    ) -> tuple[BatchRow, bool]:
        if self.stopping.is_set():
            raise GatewayStopping
        slots = self.queue.slots(row.backend)
        # Not before its send_after: it waits SCHEDULED in the store, not for a slot.
        scheduled = row.send_after is not None and row.send_after > self.clock()
        # A batch bound to its caller never waits in the store: its memory is its RPC's.
        runs_now = not scheduled and (slots.free or row.bound)
        if runs_now:
            slots.take(row.caller)  # held from now: submits racing for the last slot
        elif not scheduled:
            await self.queue.check_backlog(row.backend)
        # Stored RUNNING (CONTRACT §4: QUEUED or RUNNING) when it runs at once: its run
        # need not commit the state again before the first call.
        if scheduled:
            row.state = pb.BATCH_STATE_SCHEDULED
        else:
            row.state = pb.BATCH_STATE_RUNNING if runs_now else pb.BATCH_STATE_QUEUED
        created = False
        try:
            stored, created = await create()
        except StoreError:
            await self.store_answered(False)
            raise
        finally:
            if runs_now and not created:
                slots.give_back(row.caller)
        if created:
            self._keep_trace_parent(stored.batch_id)
            if runs_now:
                launch(stored)  # in the slot taken above
            elif stored.state == pb.BATCH_STATE_SCHEDULED and stored.send_after is not None:
                self.scheduler.armed(stored.send_after)
            else:
                self.queue.queued(stored)
        return stored, created

    def _keep_trace_parent(self, batch_id: str) -> None:
        """The RPC's trace context, for the batch's run: the caller's trace is its parent
        (rule 33) even when the run starts later, from the queue. Bounded: queued batches
        that another replica takes over never start here."""
        parent = self.tracing.current()
        if parent is None:
            return  # tracing off
        if len(self._trace_parents) >= _MAX_TRACE_PARENTS:
            del self._trace_parents[next(iter(self._trace_parents))]
        self._trace_parents[batch_id] = parent

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

    def _cancelled_elsewhere(self, batch_id: str) -> None:
        """A shared store's notification: `batch_id` was just cancelled. Its run here
        stops starting calls at once (its write-ahead would be refused anyway); a queued
        one of this replica is closed by the poll, now."""
        running = self._runs.get(batch_id)
        if running is not None:
            running[0].cancelled.set()
        else:
            self.replica.poke()

    def cancel_here(self, row: BatchRow) -> None:
        """A cancel asked on another replica (or found at adoption): stop the batch's run
        here, or close it when it is not running."""
        running = self._runs.get(row.batch_id)
        if running is not None:
            running[0].cancelled.set()
        elif self.may_run(row) and not self.stopping.is_set():
            self._launch(row, send=False)

    def running(self, batch_id: str) -> asyncio.Task[None] | None:
        """The task that runs `batch_id` here, if any."""
        found = self._runs.get(batch_id)
        return None if found is None else found[1]

    async def cancel(self, batch_id: str) -> BatchRow | None:
        row = await self.store.get_batch(batch_id)
        if row is None or row.ended:
            return row
        row = await self.store.set_state(batch_id, pb.BATCH_STATE_CANCELLING)
        running = self._runs.get(batch_id)
        if running is not None:
            running[0].cancelled.set()
        elif row is not None and not (row.ended or self.stopping.is_set() or self.store.shared):
            self._launch(row, send=False)  # not running here: close it now
        # A shared store's batch not running here is closed by its owner, which polls for
        # cancelled batches (_cancel_poll_loop), or, if the owner is dead, by its adopter.
        return row

    async def recall(
        self, original: BatchRow, request_id: str, wait_s: float | None = None
    ) -> tuple[BatchRow, bool]:
        """The recall batch of `original` (see pipeline.recall): (row, True) when made
        now; (row, False) when it had one, or the caller's `request_id` names another
        batch (that batch). Cancels `original` first if it has not ended, and waits up to
        `wait_s` (default: the backend's request timeout and a margin) for it to end.
        Raises NotRecallable, StillEnding, GatewayStopping, Backlogged."""
        if original.recalled_by:
            found = await self.store.get_batch(original.recalled_by)
            if found is not None:
                return found, False
        backend = self.backends.get(original.backend)
        why = why_not_recallable(original, backend)
        if why is not None:
            raise NotRecallable(why)
        assert backend is not None
        if not original.ended:
            await self.cancel(original.batch_id)
            wait_s = end_wait_s(backend) if wait_s is None else wait_s
            original = await until_ended(self.store, original.batch_id, wait_s)
        row = recall_row(original, request_id, self.clock())
        original_id = original.batch_id

        def launch(stored: BatchRow) -> None:
            self._launch(stored, slot_taken=True)

        return await self._submit(
            row, lambda: self.store.create_recall(row, original_id, owner=self.owner), launch
        )

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


def _only(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `exc` is a `kind`, or a group of nothing else (a batch's TaskGroup)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only(e, kind) for e in exc.exceptions)
    return isinstance(exc, kind)


def _first(exc: BaseException, matches: Callable[[BaseException], bool]) -> BaseException | None:
    """`exc`, or the first exception of its group, that `matches`."""
    if isinstance(exc, BaseExceptionGroup):
        found = (_first(e, matches) for e in exc.exceptions)
        return next((e for e in found if e is not None), None)
    return exc if matches(exc) else None
