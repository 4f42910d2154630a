"""The batches that run in this process: `BatchRunning`, the part of BatchService that
starts, runs and ends them.

A batch is stored and started in a slot of its backend, or left QUEUED or SCHEDULED
(`_submit`). Its run (a dispatch.BatchRun, or a recall.RecallRun) is a task with the
batch's log context, metrics and trace span (its parent is the RPC that made the batch);
when it ends, its slot goes to the next queued batch and, if the batch ended, the audit
log gets one line. Chunks found SENDING (after a crash, or a run stopped by the store)
may have reached the vendor, so they end UNCERTAIN (never resent).

A store that cannot be written (issue 22) turns health NOT_SERVING until it answers
again; a batch whose run stopped on it is resumed here once the store can be written
(with a shared store, released for a sweep to take over instead).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from imgate.observability.logs import set_log_context
from imgate.observability.metrics import BATCH_STATE_NAMES, Metrics
from imgate.observability.tracing import AttributeValue, Tracing
from imgate.pipeline.backend import Backend
from imgate.pipeline.dispatch import BatchRun, Fresh
from imgate.pipeline.queue import BatchQueue
from imgate.pipeline.recall import RecallRun
from imgate.pipeline.schedule import Scheduler
from imgate.pipeline.sink import BatchSink, Chunk, EndedEvents
from imgate.pipeline.watch import GatewayStopping
from imgate.pipeline.webhooks import Webhooks
from imgate.store.base import Store
from imgate.store.records import (
    SENDING,
    BatchRow,
    Fenced,
    Recovered,
    StoreError,
)
from imgate.v1 import gateway_pb2 as pb

log = logging.getLogger("imgate.batches")
# One line per batch that ended here: who sent what through which backend, and how it went.
audit_log = logging.getLogger("imgate.audit")

# A store that cannot be written is tried again after 0.5 s, 1 s, 2 s ... at most this.
_STALLED_RETRY_MAX_S = 30.0
_MAX_TRACE_PARENTS = 10_000


class BatchRunning:
    """The batches that run in this process (the part of BatchService that runs them)."""

    backends: Mapping[str, Backend]
    store: Store
    owner: str
    clock: Callable[[], float]
    metrics: Metrics
    tracing: Tracing
    stopping: asyncio.Event
    ended_events: EndedEvents
    queue: BatchQueue
    scheduler: Scheduler
    webhooks: Webhooks | None
    orphans: set[str]
    store_answers: bool
    store_reachable: Callable[[bool], Awaitable[None]] | None
    _runs: dict[str, tuple[BatchRun, asyncio.Task[None]]]
    _trace_parents: dict[str, Any]
    _stalled: dict[str, asyncio.Task[None]]
    _probe: asyncio.Task[None] | None

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

    def running(self, batch_id: str) -> asyncio.Task[None] | None:
        """The task that runs `batch_id` here, if any."""
        found = self._runs.get(batch_id)
        return None if found is None else found[1]


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
