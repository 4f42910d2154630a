"""The batch sink: the one owner of a batch's outcomes.

The dispatcher tells the sink how each chunk ended; the sink builds the outcome messages,
records them in the store (one page per chunk) with the batch's counts, and at the end is
the only place that makes sure every recipient has exactly one outcome: whatever was
never sent ends FAILED/NOT_ATTEMPTED, whatever may have been in flight UNCERTAIN. The
store call that ends the batch also writes its webhook events (`ended_events`: the
gateway's [[webhooks]] that want it, pipeline/webhooks.py), in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from imgate.observability.metrics import Metrics
from imgate.store.base import Store
from imgate.store.records import (
    DONE,
    FAILED,
    FINAL_CHUNK_STATES,
    PLANNED,
    SENDING,
    UNCERTAIN,
    BatchRow,
    ChunkRow,
    Counts,
    WebhookEvent,
)
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.translator import (
    AcceptedAlike,
    CallResult,
    Reason,
    count_states,
    fill_outcome,
)

log = logging.getLogger("imgate.sink")

# Unsent recipients are recorded in pages of at most this many outcomes.
UNSENT_PAGE = 2000

EndedEvents = Callable[[BatchRow], Sequence[WebhookEvent]]
"""The webhook events a batch's end writes (pipeline.webhooks.Webhooks.events_for)."""


def no_events(row: BatchRow) -> Sequence[WebhookEvent]:
    """No [[webhooks]]: a batch's end writes no event."""
    return ()


@dataclass(slots=True)
class Chunk:
    """A chunk being sent: its row plus the recipients and what the last call said."""

    row: ChunkRow
    ids: Sequence[str]
    indexes: Sequence[int]
    last: CallResult | None = None
    refreshed_auth: bool = False
    target: object = None
    """What this chunk's call is built from when it is the chunk's own rather than the
    batch's prepared message (a recall call's RecallTarget)."""
    without_call: tuple[Reason, str] | None = None
    """(reason, detail) when no vendor call can do anything for these recipients: they
    end FAILED with it at once (a recall of recipients with no vendor message id)."""

    @property
    def attempts(self) -> int:
        return self.row.attempts


def _same_for_all(
    chunk: Chunk,
    state: pb.DeliveryState.ValueType,
    reason: Reason,
    vendor_code: str,
    detail: str,
) -> pb.BatchSendResponse:
    # Filled field by field: with upb, add() then attribute sets costs under half of
    # add(**fields) (0.36 vs 0.84 µs per outcome, measured).
    response = pb.BatchSendResponse()
    add = response.outcomes.add
    attempts = chunk.attempts
    for index, recipient in zip(chunk.indexes, chunk.ids, strict=True):
        outcome = add()
        outcome.recipient_id = recipient
        outcome.index = index
        outcome.state = state
        outcome.reason = reason
        outcome.vendor_code = vendor_code
        outcome.detail = detail
        outcome.attempts = attempts
    return response


def _vendor_results(chunk: Chunk, result: CallResult) -> pb.BatchSendResponse:
    results = result.results
    if isinstance(results, AcceptedAlike):
        return _accepted_alike(chunk, results)
    response = pb.BatchSendResponse()
    add = response.outcomes.add
    attempts = chunk.attempts
    for index, item in zip(chunk.indexes, results, strict=True):
        outcome = add()
        outcome.recipient_id = item.recipient_id
        outcome.index = index
        outcome.attempts = attempts
        fill_outcome(outcome, item)
    return response


def _accepted_alike(chunk: Chunk, results: AcceptedAlike) -> pb.BatchSendResponse:
    """_vendor_results without a RecipientResult or a function call per recipient: the
    shared fields are set from locals, only the exceptions go through fill_outcome."""
    if len(results) != len(chunk.ids):
        raise ValueError(f"{len(results)} results for a chunk of {len(chunk.ids)}")
    response = pb.BatchSendResponse()
    add = response.outcomes.add
    attempts = chunk.attempts
    shared = results.accepted
    exceptions = results.exceptions
    accepted = pb.DELIVERY_STATE_ACCEPTED
    message_id, time_ms, detail = shared.vendor_message_id, shared.vendor_time_ms, shared.detail
    for position, (index, recipient) in enumerate(zip(chunk.indexes, chunk.ids, strict=True)):
        outcome = add()
        outcome.recipient_id = recipient
        outcome.index = index
        outcome.attempts = attempts
        if position in exceptions:
            fill_outcome(outcome, exceptions[position])
            continue
        outcome.state = accepted
        # Unset fields stay absent, as fill_outcome leaves them (empty is the default).
        if message_id:
            outcome.vendor_message_id = message_id
        if time_ms:
            outcome.vendor_time_ms = time_ms
        if detail:
            outcome.detail = detail
    return response


class BatchSink:
    """Records one batch's outcomes; `owner` fences every write. Each recorded outcome is
    counted in `metrics` (imgate_recipients_total) here, where it is decided, once."""

    def __init__(
        self,
        store: Store,
        row: BatchRow,
        owner: str,
        metrics: Metrics,
        ended_events: EndedEvents = no_events,
    ) -> None:
        self.store = store
        self.row = row
        self.owner = owner
        self.metrics = metrics
        self.ended_events = ended_events
        self.recorded = row.accepted + row.failed + row.uncertain
        self.last_page = b""
        """The page this sink recorded last (a batch of one call answers with it)."""
        self.last_seq = 0
        self.pages = 0
        """Pages this sink recorded."""

    async def results(self, chunk: Chunk, result: CallResult) -> None:
        """The vendor's per-recipient answer."""
        accepted, failed, uncertain = count_states(result.results)
        counts = Counts(accepted=accepted, failed=failed, uncertain=uncertain)
        await self._record(chunk, DONE, _vendor_results(chunk, result), counts)
        self.metrics.recipients_results(self.row.backend, result.results, accepted)

    async def same(
        self,
        chunk: Chunk,
        state: pb.DeliveryState.ValueType,
        reason: Reason,
        vendor_code: str,
        detail: str,
    ) -> None:
        """Every recipient of the chunk with one outcome."""
        count = len(chunk.ids)
        if state == pb.DELIVERY_STATE_UNCERTAIN:
            chunk_state, counts = UNCERTAIN, Counts(uncertain=count)
        elif state == pb.DELIVERY_STATE_FAILED:
            chunk_state, counts = FAILED, Counts(failed=count)
        else:
            raise ValueError("same() records FAILED or UNCERTAIN outcomes")
        response = _same_for_all(chunk, state, reason, vendor_code, detail)
        await self._record(chunk, chunk_state, response, counts)
        self.metrics.recipients_same(self.row.backend, state, reason, count)

    async def given_up(self, chunk: Chunk, why: str) -> None:
        """A chunk that will not be (re)sent: its last failure, or NOT_ATTEMPTED."""
        last = chunk.last
        if last is None:
            await self.same(
                chunk, pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_NOT_ATTEMPTED, "", why
            )
        else:
            await self.same(
                chunk, pb.DELIVERY_STATE_FAILED, last.reason, last.vendor_code, last.detail
            )

    async def _record(
        self, chunk: Chunk, state: str, response: pb.BatchSendResponse, counts: Counts
    ) -> None:
        counts = Counts(
            counts.accepted, counts.failed, counts.uncertain, vendor_calls=chunk.attempts
        )
        page = response.SerializeToString()
        if self.recorded + len(chunk.ids) >= self.row.total:
            # The batch's last outcomes: recorded and the batch ended in one commit.
            seq, ended = await self.store.record_last(
                chunk.row, state, page, counts, self.owner, self.ended_events(self.row)
            )
            self._ended(ended)
        else:
            seq = await self.store.record(chunk.row, state, page, counts, self.owner)
        self.last_page, self.last_seq = page, seq
        self.pages += 1
        chunk.row.state = state
        self.recorded += len(chunk.ids)

    async def close_unfinished(self, why_unsent: str, why_in_flight: str) -> None:
        """Give every recipient still without an outcome one: chunks that may have been
        sent (SENDING) end UNCERTAIN, all the rest FAILED/NOT_ATTEMPTED."""
        row = self.row
        if self.recorded >= row.total:
            return  # the usual end: nothing to read back
        for stored in await self.store.chunks(row.batch_id):
            if stored.state in FINAL_CHUNK_STATES:
                continue
            ids, indexes = await self.store.read_recipients(row.batch_id, stored.start, stored.end)
            chunk = Chunk(stored, ids, indexes)
            if stored.state == SENDING:
                await self.same(
                    chunk,
                    pb.DELIVERY_STATE_UNCERTAIN,
                    pb.FAILURE_REASON_TIMEOUT,
                    "",
                    why_in_flight,
                )
            else:
                await self.given_up(chunk, why_unsent)
        latest = await self.store.get_batch(row.batch_id)
        assert latest is not None
        number, position = latest.chunk_count, latest.planned_to
        while position < row.total:
            end = min(row.total, position + UNSENT_PAGE)
            ids, indexes = await self.store.read_recipients(row.batch_id, position, end)
            chunk = Chunk(ChunkRow(row.batch_id, number, position, end, PLANNED), ids, indexes)
            await self.given_up(chunk, why_unsent)
            number, position = number + 1, end

    @property
    def ended(self) -> bool:
        """Whether the batch has ended (through this sink)."""
        return self.row.ended

    async def end(self, state: int) -> BatchRow:
        """Mark the batch ended; every recipient has an outcome by now."""
        if self.row.ended:
            return self.row  # its last record ended it
        ended = await self.store.set_state(self.row.batch_id, state, self.ended_events(self.row))
        assert ended is not None
        self._ended(ended)
        return ended

    def _ended(self, ended: BatchRow) -> None:
        if ended.pending != 0:
            # The one guarantee this class exists for; a breach is a bug worth shouting.
            log.error("batch %s ended with %d recipients pending", ended.batch_id, ended.pending)
        self.row = ended
