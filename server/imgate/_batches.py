"""Batches as durable resources: submit, resume, cancel, watch, purge (CONTRACT.md §4).

`BatchService` is what the servicer talks to. It keeps one `BatchRun` per batch being
sent by this process and nothing else in memory: batches, recipients and outcomes live
in the store, and a watcher reads them from there at its own pace.

At start-up it recovers what a previous process left: chunks found SENDING may have
reached the vendor, so they end UNCERTAIN (never resent); CLAIMED ones go back to
PLANNED; unfinished batches are resumed, except those bound to a caller that is gone
(BatchSend without request_id), which end with their unsent recipients NOT_ATTEMPTED.

With a shared store (PostgreSQL, CONTRACT.md §5) the gateway is one replica of several:
it heartbeats every lease_s / 3, and a sweep adopts the batches of replicas whose
heartbeat is older than `lease_s` and takes them over exactly as a start-up recovers
(so a start-up recovers only dead replicas' batches, never a live one's). A cancel
asked on any replica reaches the owner, which polls the state of the batches it runs;
a replica never closes a batch that another one owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

from imgate._dispatch import Backend, BatchRun, Fresh
from imgate._logging import set_log_context
from imgate._metrics import BATCH_STATE_NAMES, Metrics
from imgate._sink import BatchSink, Chunk
from imgate._store import (
    RECIPIENT_PAGE,
    BatchRow,
    Fenced,
    OutcomePage,
    Recovered,
    Store,
    StoreError,
)
from imgate._tracing import AttributeValue, Tracing
from imgate.v1 import gateway_pb2 as pb

log = logging.getLogger("imgate.batches")
# One line per batch that ended here: who sent what through which backend, and how it went.
audit_log = logging.getLogger("imgate.audit")

# A watcher with nothing new checks the store this often even without a notification
# (another process may have written; a notification may have been lost).
WATCH_POLL_S = 1.0
WATCH_PAGES = 64
_PURGE_EVERY_S = 300.0
# The owner of a batch cancelled on another replica notices within this.
CANCEL_POLL_S = 1.0


class GatewayStopping(Exception):
    """This gateway is shutting down and the batch will not end here."""


class BatchService:
    """The batches of one gateway process."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        store: Store,
        retention_s: float,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        lease_s: float = 30.0,
    ) -> None:
        """`clock` is the wall clock of create and purge times (tests scale it);
        `lease_s`: a replica silent this long is presumed dead (shared stores)."""
        self.backends = backends
        self.metrics = metrics or Metrics()
        self.tracing = tracing or Tracing()
        self.store = store
        self.retention_s = retention_s
        self.clock = clock
        self.lease_s = lease_s
        self.owner = uuid.uuid4().hex
        """This process's replica id: owner of its batches and chunks (new at each start)."""
        self.store_reachable: Callable[[bool], Awaitable[None]] | None = None
        """Told when a shared store stops (False) or starts again (True) answering."""
        self.store_answers = True
        """False from a failed heartbeat of a shared store until one succeeds."""
        self.stopping = asyncio.Event()
        self.stopped = asyncio.Event()
        self._runs: dict[str, tuple[BatchRun, asyncio.Task[None]]] = {}
        self._loops: list[asyncio.Task[None]] = []
        # Shared store: batches of this replica whose run stopped on an error, to be
        # released (and adopted again by a sweep) rather than left owned and idle.
        self._orphans: set[str] = set()

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, recover what a dead process left, resume unfinished batches
        (with a shared store: those of dead replicas), start the background loops."""
        store = self.store
        await store.open()
        if store.shared:
            await store.heartbeat(self.owner)
            rows, recovered = await store.adopt(self.owner, self.lease_s)
            await self._end_in_flight(recovered)
        else:
            await self._end_in_flight(await store.recover(self.owner))
            rows = await store.unfinished_batches()
        self._resume(rows)
        self._loops.append(asyncio.create_task(self._purge_loop()))
        if store.shared:
            self._loops += [
                asyncio.create_task(self._heartbeat_loop()),
                asyncio.create_task(self._sweep_loop()),
                asyncio.create_task(self._cancel_poll_loop()),
            ]

    async def _end_in_flight(self, recovered: Recovered) -> None:
        """Chunks found SENDING may have reached the vendor: they end UNCERTAIN."""
        for stored in recovered.sending:
            row = await self.store.get_batch(stored.batch_id)
            assert row is not None
            ids, indexes = await self.store.read_recipients(row.batch_id, stored.start, stored.end)
            await BatchSink(self.store, row, self.owner, self.metrics).same(
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

    def _resume(self, unfinished: Sequence[BatchRow]) -> None:
        """Run each batch again: bound ones only to close them (their caller is gone)."""
        for row in unfinished:
            if row.batch_id in self._runs:
                continue
            if row.backend not in self.backends:
                log.error(
                    "batch %s: backend %r is no longer configured; left as it is",
                    row.batch_id,
                    row.backend,
                )
                continue
            self._launch(row, send=not row.bound)
        if unfinished:
            log.info("resuming %d unfinished batches", len(unfinished))

    async def stop(self, grace_s: float) -> None:
        """No new vendor call; calls in flight get `grace_s`, then are cut. Batches that
        cannot be resumed later (bound to a caller, or a memory store) end here."""
        self.stopping.set()
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
        if self.store.shared:
            # What stays queued here is taken over by the other replicas now, not after
            # the lease (a rolling deploy restarts every replica in turn).
            try:
                await self.store.retire(self.owner)
            except Exception:
                log.warning("could not tell the store this replica stops", exc_info=True)
        self.stopped.set()
        self.store.notifier.notify_all()

    async def close(self) -> None:
        await self.store.close()

    def _launch(
        self,
        row: BatchRow,
        send: bool = True,
        call_deadline: float | None = None,
        fresh: Fresh | None = None,
    ) -> None:
        """Run `row` in a task; `fresh`: it was created just now, with these recipients
        first (see BatchRun)."""
        run = BatchRun(
            self.backends[row.backend],
            self.store,
            row,
            self.owner,
            self.stopping,
            call_deadline,
            fresh,
        )
        task = asyncio.create_task(self._run(run, send), name=f"batch {row.batch_id}")
        self._runs[row.batch_id] = (run, task)

    async def _run(self, run: BatchRun, send: bool) -> None:
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
            "imgate.vendor": run.backend.config.vendor,
            "imgate.recipients": row.total,
            "imgate.resumed": not run.fresh and row.state != pb.BATCH_STATE_QUEUED,
        }
        try:
            with self.tracing.span("batch", attributes) as span:
                try:
                    await run.run(send)
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
            if _only_fenced(exc):
                log.warning("batch %s was taken over by another replica: %s", row.batch_id, exc)
                return
            self.metrics.batch_errors.labels(row.backend).inc()
            if isinstance(exc, StoreError):
                self.metrics.store_errors.labels("batch").inc()
            log.exception("batch %s stopped on an unexpected error", run.row.batch_id)
            if self.store.shared and not self.stopping.is_set():
                self._orphans.add(row.batch_id)  # a sweep takes it over (rule 9 holds)
        finally:
            self._runs.pop(run.row.batch_id, None)
            ended_state = run.sink.row.state if run.sink.row.ended else None
            self.metrics.batch_finished(row.backend, ended_state)
        with contextlib.suppress(Exception):
            await self._audit(row.batch_id)

    async def _audit(self, batch_id: str) -> None:
        row = await self.store.get_batch(batch_id)
        if row is None or not row.ended:
            return  # not ended here: the process that ends it writes the line
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

    async def _purge_loop(self) -> None:
        every = min(_PURGE_EVERY_S, max(1.0, self.retention_s / 10))
        while True:
            try:
                purged = await self.store.purge(self.clock() - self.retention_s)
                if purged:
                    log.info("purged %d batches and lists over %.0fs old", purged, self.retention_s)
            except Exception:
                self.metrics.store_errors.labels("purge").inc()
                log.exception("purging ended batches failed")
            await asyncio.sleep(every)

    # -- replicas (shared store) --------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        every = self.lease_s / 3
        while True:
            await asyncio.sleep(every)
            try:
                # Bounded: a database that stopped answering (no reset) is noticed too.
                async with asyncio.timeout(max(1.0, every)):  # not wait_for: see woken
                    await self.store.heartbeat(self.owner)
            except Exception as exc:
                self.metrics.store_errors.labels("heartbeat").inc()
                log.warning("store heartbeat failed: %s", exc or type(exc).__name__)
                await self._set_reachable(False)
            else:
                await self._set_reachable(True)

    async def _set_reachable(self, reachable: bool) -> None:
        if reachable == self.store_answers:
            return
        self.store_answers = reachable
        if reachable:
            log.info("the store answers again")
        if self.store_reachable is not None:
            await self.store_reachable(reachable)

    async def _sweep_loop(self) -> None:
        every = self.lease_s / 3
        while True:
            await asyncio.sleep(every)
            for batch_id in list(self._orphans):
                try:
                    await self.store.release(batch_id, self.owner)
                except Exception:
                    break  # the store is still away: next time
                self._orphans.discard(batch_id)
                log.warning("batch %s released, to be adopted again by a sweep", batch_id)
            try:
                rows, recovered = await self.store.adopt(self.owner, self.lease_s)
            except Exception:
                self.metrics.store_errors.labels("sweep").inc()
                log.exception("adopting dead replicas' batches failed")
                continue
            if rows:
                log.warning(
                    "adopted %d batches of replicas silent for over %.1fs",
                    len(rows),
                    self.lease_s,
                )
            try:
                await self._end_in_flight(recovered)
            except Exception:
                # Resumed all the same: the run's close ends what is still SENDING
                # UNCERTAIN. Not resumed, they would stay this replica's and idle.
                self.metrics.store_errors.labels("sweep").inc()
                log.exception("ending adopted in-flight chunks failed; left to the runs")
            if not self.stopping.is_set():
                self._resume(rows)

    async def _cancel_poll_loop(self) -> None:
        """A cancel asked on another replica only changes the store: notice it here."""
        while True:
            await asyncio.sleep(min(CANCEL_POLL_S, self.lease_s / 3))
            for batch_id, (run, _) in list(self._runs.items()):
                if run.cancelled.is_set():
                    continue
                try:
                    row = await self.store.get_batch(batch_id)
                except Exception:
                    break  # the heartbeat loop reports the store's trouble
                if row is not None and row.state == pb.BATCH_STATE_CANCELLING:
                    run.cancelled.set()

    # -- what the servicer asks ---------------------------------------------------------

    async def submit(
        self,
        row: BatchRow,
        ids: Sequence[str],
        indexes: Sequence[int] | None,
        call_deadline: float | None = None,
    ) -> tuple[BatchRow, bool]:
        """Store a batch and start sending it; an existing one (same caller and
        request_id) is returned as it is, with False."""
        if self.stopping.is_set():
            raise GatewayStopping
        # Stored RUNNING (CONTRACT §4: QUEUED or RUNNING): its run starts at once, and
        # need not commit the state again before the first call.
        row.state = pb.BATCH_STATE_RUNNING
        stored, created = await self.store.create_batch(row, ids, indexes, owner=self.owner)
        if created:
            first = slice(0, RECIPIENT_PAGE)
            fresh = Fresh(ids[first], None if indexes is None else indexes[first])
            self._launch(stored, call_deadline=call_deadline, fresh=fresh)
        return stored, created

    async def submit_from_list(self, row: BatchRow, list_id: str) -> tuple[BatchRow, bool]:
        """`submit` with a stored recipient list's ids (LookupError when it is gone)."""
        if self.stopping.is_set():
            raise GatewayStopping
        row.state = pb.BATCH_STATE_RUNNING  # as in submit
        stored, created = await self.store.create_batch_from_list(row, list_id, owner=self.owner)
        if created:
            self._launch(stored, fresh=Fresh())
        return stored, created

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
        # A shared store's batch not running here is another replica's: its owner notices
        # the cancel (_cancel_poll_loop), or, if the owner is dead, its adopter closes it.
        return row

    async def watch(
        self, batch_id: str, after_seq: int
    ) -> AsyncIterator[tuple[list[OutcomePage], BatchRow | None]]:
        """(pages, None) for outcomes after `after_seq` as they are recorded, then
        ([], row) once the batch has ended. Raises GatewayStopping when this gateway stops
        before the batch ends."""
        store = self.store
        while True:
            changed = store.notifier.event(batch_id)
            pages = await store.read_outcomes(batch_id, after_seq, WATCH_PAGES)
            if pages:
                after_seq = pages[-1].seq
                yield pages, None
                continue
            if store.known_live(batch_id) and not self.stopped.is_set():
                await woken(changed, WATCH_POLL_S)
                continue
            row = await store.get_batch(batch_id)
            if row is None:
                raise GatewayStopping  # purged while watched
            if row.ended:
                # Every page was recorded before the batch ended: read what came meanwhile.
                pages = await store.read_outcomes(batch_id, after_seq, WATCH_PAGES)
                if pages:
                    after_seq = pages[-1].seq
                    yield pages, None
                    continue
                yield [], row
                return
            if self.stopped.is_set():
                raise GatewayStopping
            await woken(changed, WATCH_POLL_S)


async def woken(event: asyncio.Event, timeout_s: float) -> None:
    """Until `event` is set or `timeout_s` has passed, whichever comes first.

    Not asyncio.wait_for: on Python 3.11 it returns normally when the waiting task is
    cancelled just after the event was set, so a cancelled BatchSend's stream went on
    and its bound batch kept sending (rule 10; issue 15). asyncio.timeout does not.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()


def _only_fenced(exc: BaseException) -> bool:
    """Whether `exc` is Fenced, or a group of nothing else (a batch's TaskGroup)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_fenced(e) for e in exc.exceptions)
    return isinstance(exc, Fenced)
