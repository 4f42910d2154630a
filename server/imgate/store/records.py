"""What the store interface (store/base.py) speaks in: the rows of batches, chunks and
recipient lists, outcome pages, outbox events, what recovery found, the batch and chunk
states, and the errors a store raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from imgate.v1 import gateway_pb2 as pb

# Recipients are stored in pages of this many unique ids, read back one page at a time.
RECIPIENT_PAGE = 10_000

ENDED_STATES = frozenset({pb.BATCH_STATE_DONE, pb.BATCH_STATE_CANCELLED})
UNFINISHED_STATES = frozenset(
    {
        pb.BATCH_STATE_QUEUED,
        pb.BATCH_STATE_RUNNING,
        pb.BATCH_STATE_CANCELLING,
        pb.BATCH_STATE_SCHEDULED,
    }
)

PLANNED, CLAIMED, SENDING = "planned", "claimed", "sending"
DONE, UNCERTAIN, FAILED = "done", "uncertain", "failed"
CHUNK_STATES = (PLANNED, CLAIMED, SENDING, DONE, UNCERTAIN, FAILED)
FINAL_CHUNK_STATES = frozenset({DONE, UNCERTAIN, FAILED})


class StoreError(Exception):
    """The store cannot be opened or used; the message names the config key."""


class Fenced(StoreError):
    """The writer no longer owns the chunk (another owner decided it)."""


class BatchCancelling(StoreError):
    """write_ahead refused: the batch is cancelled (CANCELLING or ended). A cancel is final
    the moment CancelBatch returns, whichever replica runs the batch (issue 22)."""


SENDABLE_STATES = frozenset({pb.BATCH_STATE_QUEUED, pb.BATCH_STATE_RUNNING})
"""Batch states in which a chunk may be written ahead (and so sent)."""


@dataclass(slots=True)
class BatchRow:
    """One batch as stored."""

    batch_id: str
    caller: str
    request_id: str
    fingerprint: bytes
    backend: str
    spec: bytes
    """BatchSendRequest without recipient ids: sender, message, options."""
    bound: bool
    """Bound to its caller (BatchSend without request_id): never resumed after a crash."""
    total: int
    duplicates_removed: int
    create_time: float
    send_before: float | None = None
    """Wall-clock time after which no vendor call starts."""
    state: int = pb.BATCH_STATE_QUEUED
    accepted: int = 0
    failed: int = 0
    uncertain: int = 0
    vendor_calls: int = 0
    update_time: float = 0.0
    end_time: float | None = None
    planned_to: int = 0
    """Recipients covered by chunk rows so far (chunks are consecutive from 0)."""
    chunk_count: int = 0
    next_seq: int = 1
    send_after: float | None = None
    """Wall-clock time before which no vendor call starts (the batch waits SCHEDULED)."""
    recall_of: str = ""
    """A recall batch: the batch whose messages it withdraws."""
    recalled_by: str = ""
    """The recall batch of this batch, once there is one."""

    @property
    def pending(self) -> int:
        return self.total - self.accepted - self.failed - self.uncertain

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES


def batch_order(row: BatchRow) -> tuple[float, str]:
    """The order of batches in lists and in the queue: oldest first, then by id (the
    SQL's `ORDER BY create_time, batch_id`)."""
    return (row.create_time, row.batch_id)


class RecallKey(NamedTuple):
    """What the vendor's recall API needs of one recipient of a recall batch, from the
    original's outcome: its state there, the vendor's message id ("" when the gateway
    holds none) and time."""

    state: int
    """The original outcome's DeliveryState (ACCEPTED or UNCERTAIN)."""
    message_id: str
    time_ms: int


@dataclass(slots=True)
class ListRow:
    """One recipient list (UploadRecipients) as stored."""

    list_id: str
    caller: str
    create_time: float
    request_id: str = ""
    fingerprint: bytes = b""
    """Digest of every id received, in order: the same request_id with other ids is refused."""
    count: int = 0
    """Unique ids so far."""
    received: int = 0
    """Ids received so far, duplicates included: the index the next id gets."""
    widest_id: str = ""
    """The id that takes the most bytes in a vendor body: what vendor checks need to see."""
    widest_index: int = 0
    ready_time: float | None = None
    """When the upload finished; None while uploading (nobody may use it yet)."""
    longest: str = ""
    """{unit name: [length, index]} of its longest id in each unit vendors count ids in
    (JSON), so that a backend's id rule holds at submit; "" in lists older than it."""

    @property
    def duplicates_removed(self) -> int:
        return self.received - self.count


@dataclass(slots=True)
class ChunkRow:
    """One planned vendor call: recipients [start, end) of the batch's unique list."""

    batch_id: str
    number: int
    start: int
    end: int
    state: str
    attempts: int = 0
    owner: str = ""


@dataclass(frozen=True, slots=True)
class Counts:
    """What one record adds to its batch."""

    accepted: int = 0
    failed: int = 0
    uncertain: int = 0
    vendor_calls: int = 0


@dataclass(slots=True)
class OutcomePage:
    """The outcomes of one record: a serialized BatchSendResponse with only `outcomes`."""

    seq: int
    data: bytes
    count: int


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """An event a batch's end writes to the outbox, for one endpoint."""

    event_id: str
    """The `webhook-id` header: the same on every attempt."""
    url: str
    """The endpoint ([[webhooks]] url): each endpoint's delivery is a row of its own."""
    type: str
    """"batch.ended" or "recall.ended"."""


@dataclass(slots=True)
class OutboxEvent:
    """One event for one endpoint, as claimed from the outbox for an attempt."""

    event_id: str
    url: str
    type: str
    batch_id: str
    create_time: float
    """When the batch ended (wall clock; PostgreSQL: the database's): retried until
    `retry_for_s` after it."""
    attempts: int
    """Attempts so far, this one included: what fences this attempt's later writes."""
    body: bytes | None
    """The body, once fixed by the first attempt."""
    now: float
    """The store's clock when it was claimed."""


@dataclass(slots=True)
class Recovered:
    """What start-up recovery (or an adoption) found: chunks that were being sent when a
    gateway died, and batches that are to be closed rather than sent."""

    sending: list[ChunkRow] = field(default_factory=list)
    reclaimed: int = 0
    to_close: list[str] = field(default_factory=list)
    """Unfinished batches bound to a caller that is gone (never resumed, rule 10) or
    CANCELLING: their unsent recipients end NOT_ATTEMPTED."""


@dataclass(slots=True)
class StoreStats:
    """What a store did, for /metrics and the benchmark (commits and statements per
    request are issue 20's measures of a small send's cost)."""

    commits: int = 0
    """Transactions committed (with SQLite's synchronous=FULL, one fsync each)."""
    statements: int = 0
    """SQL statements sent, transaction control included."""
