"""The dispatcher: one batch's run, from its chunks to their final answers.

Per batch, `BatchRun` walks the chunks: for each it takes quota, then a permit, writes
the chunk SENDING to the store (before any byte of the request goes out), and starts the
vendor call (pipeline.backend) inside the batch's TaskGroup, so that cancelling the run
cancels every vendor call it started. What a vendor answer leads to is `retry.decide`'s
call; how each chunk ended goes to the batch's sink, which records it:

- DONE: the vendor's per-recipient answer.
- RETRY / RATE_LIMITED / REFRESH_AUTH: not processed; sent again (after backoff, the
  backend pause, or a credential refresh) while attempts and time allow, else FAILED.
- AMBIGUOUS: may have been processed; never resent; UNCERTAIN.
- Never sent (cancelled, send_before passed, shutdown): FAILED / NOT_ATTEMPTED.

Every wait of a run (quota, permit, backoff) also ends on cancel, shutdown and the
batch's send_before, and gives back whatever it obtained meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from imgate.observability.metrics import timer
from imgate.pipeline.backend import Backend
from imgate.pipeline.planner import chunk_size
from imgate.pipeline.retry import Action, decide
from imgate.pipeline.sink import BatchSink, Chunk, EndedEvents, no_events
from imgate.quota.limiter import Grant, Pause, QuotaWaitTooLong
from imgate.store.base import Store
from imgate.store.records import (
    PLANNED,
    RECIPIENT_PAGE,
    BatchCancelling,
    BatchRow,
    ChunkRow,
    Fenced,
)
from imgate.v1 import gateway_pb2 as pb

log = logging.getLogger("imgate.dispatch")

T = TypeVar("T")

# Outcomes must reach a BatchSend caller before its deadline: stop starting calls this early.
DEADLINE_MARGIN_S = 0.25


@dataclass(frozen=True, slots=True)
class Fresh:
    """A batch this process created just now, stored RUNNING, with no chunk yet: its run
    neither commits the state again nor reads back what the creator holds (`ids`, the
    first recipients, and their `indexes`, None for 0, 1, ...). Saves a commit and two
    store reads before a new batch's first call."""

    ids: Sequence[str] = ()
    indexes: Sequence[int] | None = None


class BatchRun:
    """Sends one batch from where the store says it is, to the end or until stopped."""

    def __init__(
        self,
        backend: Backend,
        store: Store,
        row: BatchRow,
        owner: str,
        stopping: asyncio.Event,
        call_deadline: float | None = None,
        fresh: Fresh | None = None,
        prepared: Any = None,
        clock: Callable[[], float] = time.time,
        ended_events: EndedEvents = no_events,
    ) -> None:
        """`call_deadline` (monotonic): calls in flight end by then (a BatchSend caller's
        deadline); `stopping` is the gateway's shutdown; `fresh`: see Fresh; `prepared`:
        the translator's `prepare` of the batch's spec, when the creator made it;
        `ended_events`: what the batch's end writes to the webhook outbox."""
        self.clock = clock
        """The clock of `row.send_before` (the batch service's steady clock)."""
        self.fresh = fresh is not None
        self._fresh = fresh  # dropped once its first page is in the chunk buffer
        self.backend = backend
        self.store = store
        self.row = row
        self.ended_events = ended_events
        self.sink = BatchSink(store, row, owner, backend.metrics, ended_events)
        self.stopping = stopping
        self.call_deadline = call_deadline
        self.cancelled = asyncio.Event()
        self.taken_over = False
        """A write was Fenced: another owner has the batch now; this run changes nothing."""
        self._prepared: Any = prepared
        self._quota_too_late = False  # the quota would allow the next call after send_before
        self._pause: Pause | None = None  # the backend's pause when a quota wait gave up

    # -- stopping -----------------------------------------------------------------------

    def time_left(self) -> float | None:
        """Seconds until no new call may start (None: no limit)."""
        if self.row.send_before is None:
            return None
        return self.row.send_before - self.clock()

    def stop_reason(self) -> str | None:
        """Why no new call may start now, or None."""
        if self.taken_over:
            return "another replica took the batch over"
        if self.cancelled.is_set():
            return "cancelled before it was sent"
        if self.stopping.is_set():
            return "the gateway shut down before it was sent"
        left = self.time_left()
        if left is not None and left <= 0:
            return "send_before (the caller's deadline) came first" + self._paused_note()
        if self._quota_too_late:
            return (
                "send_before (the caller's deadline) comes before the quota allows the call"
                + self._paused_note()
            )
        return None

    def _paused_note(self) -> str:
        # CONTRACT §11 rule 32: outcomes a pause caused say which pause (the one a quota
        # wait gave up on, else the one in force now).
        pause = self._pause or self.backend.limiter.pause()
        if pause is None:
            return ""
        return f"; the backend was paused: {pause.reason}"

    async def _until_stopped(
        self, waiting: Awaitable[T], give_back: Callable[[T], None]
    ) -> T | None:
        """`waiting`'s result, or None when cancel, shutdown or send_before comes first.

        Whatever `waiting` obtains after it was given up is handed to `give_back`, so an
        abandoned permit or quota slot is never leaked.
        """
        task = asyncio.ensure_future(waiting)
        stops = [
            asyncio.ensure_future(self.cancelled.wait()),
            asyncio.ensure_future(self.stopping.wait()),
        ]
        try:
            done, _ = await asyncio.wait(
                {task, *stops}, timeout=self.time_left(), return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:
            _abandon(task, give_back)
            raise
        finally:
            for stop in stops:
                stop.cancel()
        if task in done:
            try:
                return task.result()
            except QuotaWaitTooLong:
                return None
        _abandon(task, give_back)
        return None

    # -- the run ------------------------------------------------------------------------

    async def run(self, send: bool = True) -> None:
        """Send what is left (unless `send` is False), then close the batch if it ended."""
        store, backend = self.store, self.backend
        if not self.fresh:
            latest = await store.set_state(self.row.batch_id, pb.BATCH_STATE_RUNNING)
            assert latest is not None
            # A sink over the row as it is now: its count of recorded outcomes starts there.
            self.row = latest
            self.sink = BatchSink(
                store, latest, self.sink.owner, backend.metrics, self.ended_events
            )
            if latest.state == pb.BATCH_STATE_CANCELLING:
                self.cancelled.set()
        # Fresh: created RUNNING with nothing recorded; a cancel since has set `cancelled`.
        row = self.row
        if send:
            translator = backend.translator
            if self._prepared is None:
                self._prepared = translator.prepare(pb.BatchSendRequest.FromString(row.spec))
            await self._send_all(backend.per_call(self._prepared))
        if self.taken_over:
            raise Fenced(f"batch {row.batch_id} is another replica's now")
        await self.close()

    async def run_one(self, chunk: Chunk, grant: Grant) -> None:
        """A batch of one vendor call, created with `chunk` already SENDING and holding
        its quota `grant` and one permit (issue 20's short path): send it, then close."""
        await self._send(chunk, grant, written=True)
        if self.taken_over:
            raise Fenced(f"batch {self.row.batch_id} is another replica's now")
        await self.close()

    async def close(self) -> None:
        """End the batch unless it is to be resumed by a later start (durable store)."""
        if self.sink.ended:
            return  # its last record ended it
        latest = await self.store.get_batch(self.row.batch_id)
        assert latest is not None
        cancelled = self.cancelled.is_set() or latest.state == pb.BATCH_STATE_CANCELLING
        resumable = self.store.durable and not self.row.bound
        if self.stopping.is_set() and resumable and not cancelled and latest.pending:
            return  # stays queued in the store; the next start resumes it
        why_unsent = self.stop_reason() or "not sent"
        if self.stopping.is_set():
            why_in_flight = "the gateway shut down while the call was in flight"
        else:
            why_in_flight = "cancelled while the call was in flight"
        await self.sink.close_unfinished(why_unsent, why_in_flight)
        await self.sink.end(pb.BATCH_STATE_CANCELLED if cancelled else pb.BATCH_STATE_DONE)

    async def _send_all(self, per_call: int) -> None:
        async with asyncio.TaskGroup() as group:
            async for chunk in self._chunks(per_call):
                if self.stop_reason() is not None:
                    break
                if chunk.without_call is not None:
                    # In a task too: chunks are recorded in the order they were cut.
                    group.create_task(self._record_without_call(chunk))
                    continue
                # Quota first, then the in-flight permit: the quota's queue is the fair
                # one (callers by weight, rule 19). A permit held while waiting for quota
                # would let one caller's batches hold every permit, and a small batch of
                # another caller would queue behind them before it even reached the quota.
                grant = await self.wait_for_quota(chunk)
                if grant is None:
                    break
                try:
                    permit = await self.wait_for_permit()
                except BaseException:
                    grant.release()
                    raise
                if permit is None:
                    grant.release()
                    break
                group.create_task(self._send(chunk, grant))

    async def _chunks(self, per_call: int) -> AsyncIterator[Chunk]:
        """The chunks still to send: planned rows first, then new ones cut as they go."""
        store, row, fresh = self.store, self.row, self._fresh
        self._fresh = None  # its first page is the buffer's now, not held twice
        if fresh is None:
            for stored in await store.chunks(row.batch_id):
                if stored.state == PLANNED:
                    ids, indexes = await store.read_recipients(
                        row.batch_id, stored.start, stored.end
                    )
                    yield Chunk(stored, ids, indexes)
        # Recipients are read a page at a time: memory stays flat whatever the audience.
        number, position = row.chunk_count, row.planned_to
        buffered_from, ids, indexes = position, [], []
        if fresh is not None and fresh.ids:
            ids = list(fresh.ids)
            indexes = list(range(len(ids)) if fresh.indexes is None else fresh.indexes)
        while position < row.total:
            available = buffered_from + len(ids)
            if available < min(row.total, position + per_call):
                del ids[: position - buffered_from], indexes[: position - buffered_from]
                buffered_from = position
                end = min(row.total, available + max(RECIPIENT_PAGE, per_call))
                more_ids, more_indexes = await store.read_recipients(row.batch_id, available, end)
                ids.extend(more_ids)
                indexes.extend(more_indexes)
            offset = position - buffered_from
            window = ids[offset : offset + per_call]
            size = chunk_size(self.backend.translator, self._prepared, window)
            end = position + size
            yield Chunk(
                ChunkRow(row.batch_id, number, position, end, PLANNED),
                window[:size],
                indexes[offset : offset + size],
            )
            number, position = number + 1, end

    async def wait_for_permit(self) -> bool | None:
        """One of the backend's in-flight permits, or None when the run stops first."""
        permits = self.backend.permits
        return await self._until_stopped(permits.acquire(), lambda _: permits.release())

    async def wait_for_quota(self, chunk: Chunk) -> Grant | None:
        """Quota for `chunk`'s call, or None when the run stops first (or send_before
        would come before the quota allows it)."""
        limiter = self.backend.limiter
        left = self.time_left()
        deadline = None if left is None else time.monotonic() + left
        waited = timer()
        grant = await self._until_stopped(
            limiter.acquire(
                len(chunk.ids),
                deadline,
                caller=self.row.caller,
                weight=self.backend.caller_weights.get(self.row.caller, 1),
            ),
            lambda grant: grant.release(),
        )
        # No grant and no cancel or shutdown: send_before would come first (QuotaWaitTooLong).
        too_long = grant is None and not (self.cancelled.is_set() or self.stopping.is_set())
        if too_long:
            self._quota_too_late = True
            self._pause = limiter.pause() or self._pause
        self.backend.metrics.quota_waited(self.backend.config.name, waited(), too_long)
        return grant

    async def _record_without_call(self, chunk: Chunk) -> None:
        assert chunk.without_call is not None
        reason, detail = chunk.without_call
        try:
            await self.sink.same(chunk, pb.DELIVERY_STATE_FAILED, reason, "", detail)
        except Fenced:
            self.taken_over = True

    async def _send(self, chunk: Chunk, grant: Grant, written: bool = False) -> None:
        """Call the vendor for `chunk` until it has a final answer; holds one permit.
        `written`: the chunk is SENDING already (stored so with its batch)."""
        backend, sink = self.backend, self.sink
        config = backend.config
        key = f"{chunk.row.batch_id}:{chunk.row.number}"
        try:
            if not written:
                chunk.row.attempts += 1
                try:
                    await self.store.write_ahead(chunk.row, sink.owner)
                except BatchCancelling:
                    grant.release()
                    self.cancelled.set()  # cancelled on a replica: its close says so
                    return
                except Fenced:
                    grant.release()
                    self.taken_over = True  # another owner has it: send nothing more
                    return
                except BaseException:
                    grant.release()
                    raise
            if self.cancelled.is_set():
                # Cancelled while the chunk was written ahead: it was never sent, and this
                # process, its owner, knows it (no need to leave it UNCERTAIN).
                grant.release()
                await sink.given_up(chunk, "cancelled before it was sent")
                return
            while True:
                timeout = config.request_timeout_s
                if self.call_deadline is not None:
                    until = self.call_deadline - DEADLINE_MARGIN_S - time.monotonic()
                    timeout = max(0.05, min(timeout, until))
                prepared = self._prepared if chunk.target is None else chunk.target
                try:
                    result = await backend.call(prepared, chunk.ids, key, timeout, chunk.attempts)
                finally:
                    grant.release()
                backend.endpoints.observe(result)
                chunk.last = result
                left = self.time_left()
                decision = decide(
                    result.disposition,
                    attempts=chunk.attempts,
                    max_attempts=config.max_attempts,
                    refreshed_auth=chunk.refreshed_auth,
                    time_left_s=left,
                    jitter=backend.rng.random(),
                    rate_refused=result.rate_refused,
                )
                if decision.pause_backend:
                    # The vendor pauses the whole app: pause the whole backend (the pause
                    # logs its start and end).
                    backend.limiter.block(
                        config.block_s,
                        f"the vendor refused a call for rate (code {result.vendor_code}):"
                        f" the app is paused for block_s ({config.block_s:g}s)",
                    )
                    backend.metrics.blocks.labels(config.name).inc()
                    log.info(
                        "backend %s: vendor refused for rate (code %s)",
                        config.name,
                        result.vendor_code,
                    )
                if decision.action is Action.RECORD:
                    await sink.results(chunk, result)
                    return
                if decision.action is Action.UNCERTAIN:
                    await sink.same(
                        chunk,
                        pb.DELIVERY_STATE_UNCERTAIN,
                        result.reason,
                        result.vendor_code,
                        result.detail,
                    )
                    return
                if decision.action is Action.GIVE_UP:
                    await sink.given_up(chunk, "")
                    return
                if decision.action is Action.REFRESH:
                    chunk.refreshed_auth = True
                    backend.translator.invalidate_credentials()
                    log.warning(
                        "backend %s: credentials refreshed after vendor code %s",
                        config.name,
                        result.vendor_code,
                    )
                if decision.delay_s > 0:
                    await self._until_stopped(asyncio.sleep(decision.delay_s), lambda _: None)
                next_grant = None
                if self.stop_reason() is None:
                    next_grant = await self.wait_for_quota(chunk)
                if next_grant is None:
                    await sink.given_up(chunk, "")
                    return
                grant = next_grant
                chunk.row.attempts += 1
        except Fenced:
            self.taken_over = True  # its new owner decides it (UNCERTAIN if it was sent)
        finally:
            backend.permits.release()


def _abandon(task: asyncio.Future[T], give_back: Callable[[T], None]) -> None:
    """Cancel a wait we no longer want; if it still obtains something, give it back."""

    def done(finished: asyncio.Future[T]) -> None:
        if not finished.cancelled() and finished.exception() is None:
            give_back(finished.result())

    task.cancel()
    task.add_done_callback(done)
