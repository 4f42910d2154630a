"""The batch store: where batches, their recipients, chunks and outcomes live.

A small vocabulary shared by every implementation (memory, SQLite, PostgreSQL) and
checked by one test suite (tests/test_store.py):

    create_batch   a batch, its recipients in pages; idempotent on (caller, request_id)
    write_ahead    a chunk is about to be sent: committed before any byte goes out
    record         a chunk's outcomes (one serialized page) and the batch's counts
    recover        at start-up: claimed chunks back to planned; sending ones returned
    set_state / request_cancel / read_outcomes / list_batches / purge

A `shared` store (PostgreSQL) is used by several replicas at once. Each batch has an
owner, the replica that sends it; replicas `heartbeat`, and `adopt` takes over the
batches of replicas whose heartbeat is older than the lease, with the same result as
`recover` (claimed chunks back to planned, sending ones handed over to end UNCERTAIN).

Recipient lists (UploadRecipients, CONTRACT.md §4) have five more:

    create_list    an upload begins (the list is its caller's, invisible until finished)
    add_to_list    one page of ids: duplicates dropped by the store's unique index
    finish_list    the upload is complete; idempotent on (caller, request_id)
    get_list / delete_list
    create_batch_from_list   create_batch with the list's pages as its recipients

A list's unique ids are kept in pages of RECIPIENT_PAGE, the layout of a batch's
recipients, and a batch made from a list reads the list's pages (nothing is copied, no id
passes through the gateway). Purge removes lists by age like ended batches, but keeps a
list while a stored batch reads it.

Chunks go planned -> claimed -> sending -> done | uncertain | failed. Every change after
a claim is fenced by (batch, chunk, attempt, owner): a writer that is no longer the
owner (of the chunk, or in a shared store of the batch) gets `Fenced` and changes
nothing. Outcomes are kept as one record per vendor call, in the order recorded; `seq`
is the position a watcher resumes from.
"""

from __future__ import annotations

import abc
import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imgate.v1 import gateway_pb2 as pb

# Recipients are stored in pages of this many unique ids, read back one page at a time.
RECIPIENT_PAGE = 10_000

ENDED_STATES = frozenset({pb.BATCH_STATE_DONE, pb.BATCH_STATE_CANCELLED})
UNFINISHED_STATES = frozenset(
    {pb.BATCH_STATE_QUEUED, pb.BATCH_STATE_RUNNING, pb.BATCH_STATE_CANCELLING}
)

PLANNED, CLAIMED, SENDING = "planned", "claimed", "sending"
DONE, UNCERTAIN, FAILED = "done", "uncertain", "failed"
CHUNK_STATES = (PLANNED, CLAIMED, SENDING, DONE, UNCERTAIN, FAILED)
FINAL_CHUNK_STATES = frozenset({DONE, UNCERTAIN, FAILED})


class StoreError(Exception):
    """The store cannot be opened or used; the message names the config key."""


class Fenced(StoreError):
    """The writer no longer owns the chunk (another owner decided it)."""


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

    @property
    def pending(self) -> int:
        return self.total - self.accepted - self.failed - self.uncertain

    @property
    def ended(self) -> bool:
        return self.state in ENDED_STATES


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


@dataclass(slots=True)
class Recovered:
    """What start-up recovery found: chunks that were being sent when a gateway died."""

    sending: list[ChunkRow] = field(default_factory=list)
    reclaimed: int = 0


class Notifier:
    """Wakes watchers of a batch when something was recorded for it (in this process)."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, batch_id: str) -> asyncio.Event:
        """The event the next change of `batch_id` sets; take it *before* reading."""
        event = self._events.get(batch_id)
        if event is None:
            event = self._events[batch_id] = asyncio.Event()
        return event

    def notify(self, batch_id: str) -> None:
        event = self._events.pop(batch_id, None)
        if event is not None:
            event.set()

    def notify_all(self) -> None:
        events, self._events = self._events, {}
        for event in events.values():
            event.set()


# A page of ids as text: "\n" then the ids joined by "\n" (validated ids hold no control
# character, and joining is ten times faster than JSON, on the way to the first call);
# a page whose ids do hold one is JSON, which never starts with "\n". Pages written as
# JSON by earlier versions read back unchanged.
_ID_SEPARATOR = "\n"


def encode_recipients(ids: Sequence[str], indexes: Sequence[int] | None) -> tuple[str, str]:
    """A page of recipients as text (see _ID_SEPARATOR); indexes "" when implied."""
    joined = _ID_SEPARATOR.join(ids)
    if ids and joined.count(_ID_SEPARATOR) == len(ids) - 1:
        text = _ID_SEPARATOR + joined
    else:  # empty, or an id holds the separator
        text = json.dumps(list(ids))
    return text, "" if indexes is None else json.dumps(list(indexes))


def encode_list_page(ids: Sequence[str], indexes: Sequence[int], start: int) -> tuple[str, str]:
    """encode_recipients for a list page: indexes left out when they are start, start+1, ..."""
    # Indexes only grow, so first and last at their positions means every one is.
    identity = bool(indexes) and indexes[0] == start and indexes[-1] == start + len(indexes) - 1
    return encode_recipients(ids, None if identity else indexes)


def decode_recipients(ids: str, indexes: str, start: int) -> tuple[list[str], list[int]]:
    decoded: list[str] = (
        ids[1:].split(_ID_SEPARATOR) if ids.startswith(_ID_SEPARATOR) else json.loads(ids)
    )
    if indexes:
        return decoded, json.loads(indexes)
    return decoded, list(range(start, start + len(decoded)))


class Store(abc.ABC):
    """The store interface (see the module docstring). All methods are coroutines."""

    durable: bool
    """Whether what is stored survives a restart (memory: no)."""
    shared: bool = False
    """Whether several gateway processes use the store at once (PostgreSQL)."""

    def __init__(self) -> None:
        self.notifier = Notifier()

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect, lock, create or migrate the schema."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything open() took."""

    @abc.abstractmethod
    async def create_batch(
        self,
        row: BatchRow,
        ids: Sequence[str],
        indexes: Sequence[int] | None,
        owner: str = "",
    ) -> tuple[BatchRow, bool]:
        """Store a new batch and its unique recipients (`indexes` None = 0, 1, 2, ...),
        owned by `owner` (a shared store; "" = its first writer takes it).

        When `row.request_id` is set and the caller already has a batch with it, nothing
        is stored and that batch is returned with False.
        """

    @abc.abstractmethod
    async def get_batch(self, batch_id: str) -> BatchRow | None: ...

    @abc.abstractmethod
    async def list_batches(
        self, caller: str, limit: int, before: tuple[float, str] | None
    ) -> list[BatchRow]:
        """The caller's batches, newest first, older than `before` (create_time, id)."""

    @abc.abstractmethod
    async def unfinished_batches(self) -> list[BatchRow]:
        """Batches QUEUED, RUNNING or CANCELLING, oldest first."""

    @abc.abstractmethod
    async def read_recipients(
        self, batch_id: str, start: int, end: int
    ) -> tuple[list[str], list[int]]:
        """Unique recipients [start, end) with the index of their first occurrence."""

    @abc.abstractmethod
    async def chunks(self, batch_id: str) -> list[ChunkRow]:
        """The batch's chunk rows, by number."""

    @abc.abstractmethod
    async def write_ahead(self, chunk: ChunkRow, owner: str) -> None:
        """Mark `chunk` SENDING (inserting the row when it is new), durably, before it is
        sent. An existing row must be PLANNED or CLAIMED, or SENDING by `owner`."""

    @abc.abstractmethod
    async def record(
        self,
        chunk: ChunkRow,
        final_state: str,
        page: bytes,
        counts: Counts,
        owner: str,
    ) -> int:
        """Record a chunk's outcomes: the chunk row ends in `final_state` (inserted when
        new), the page gets the batch's next seq (returned), the counts are added."""

    @abc.abstractmethod
    async def set_state(self, batch_id: str, state: int) -> BatchRow | None:
        """Move the batch to `state` (an ended state sets end_time); CANCELLING is kept
        when RUNNING is asked. Returns the updated row."""

    @abc.abstractmethod
    async def recover(self, owner: str) -> Recovered:
        """Start-up: every CLAIMED chunk goes back to PLANNED; SENDING chunks of
        unfinished batches are handed to `owner` and returned (they end UNCERTAIN)."""

    async def heartbeat(self, owner: str) -> None:  # noqa: B027 - shared stores only
        """Replica `owner` is alive now (by the store's clock)."""

    async def retire(self, owner: str) -> None:  # noqa: B027 - shared stores only
        """Replica `owner` stops: others may adopt its batches at once."""

    async def release(self, batch_id: str, owner: str) -> None:  # noqa: B027 - shared only
        """`owner` gives up an unfinished batch it no longer runs (its run stopped on an
        error): the next sweep of any replica adopts it."""

    async def adopt(self, owner: str, lease_s: float) -> tuple[list[BatchRow], Recovered]:
        """Shared stores: take over the unfinished batches of replicas whose heartbeat is
        older than `lease_s` (one adopter at a time), as `recover` does for a restart.
        Returns the adopted batches, oldest first, and their chunks that were SENDING
        (now `owner`'s, to end UNCERTAIN). A store of one process adopts nothing."""
        return [], Recovered()

    @abc.abstractmethod
    async def read_outcomes(self, batch_id: str, after_seq: int, limit: int) -> list[OutcomePage]:
        """At most `limit` outcome pages with seq > `after_seq`, in order."""

    def known_live(self, batch_id: str) -> bool:
        """True when this process knows, without a read, that the batch has not ended
        (a shortcut for watchers; False means "read it")."""
        return False

    @abc.abstractmethod
    async def purge(self, ended_before: float) -> int:
        """Delete batches that ended before `ended_before` (wall clock), and recipient lists
        created before it (finished or abandoned) that no stored batch reads; return how
        many of both."""

    # -- recipient lists ----------------------------------------------------------------

    @abc.abstractmethod
    async def create_list(self, row: ListRow) -> None:
        """An upload begins: store `row` (not finished, empty)."""

    @abc.abstractmethod
    async def add_to_list(self, list_id: str, ids: Sequence[str]) -> int:
        """Append one page of ids to an unfinished list; ids already in it (or earlier in
        the page) are dropped, the others get the index `received + position in page`.
        Returns how many were new. Raises LookupError for an unknown or finished list."""

    @abc.abstractmethod
    async def finish_list(self, row: ListRow) -> tuple[ListRow, bool]:
        """Finish the upload of `row.list_id`, setting its request_id, fingerprint, widest
        id and ready_time from `row`. When the caller already has a finished list with
        `row.request_id`, this upload is deleted and that list returned with False."""

    @abc.abstractmethod
    async def get_list(self, list_id: str) -> ListRow | None: ...

    @abc.abstractmethod
    async def delete_list(self, list_id: str) -> None:
        """Forget a list and its ids (an upload that failed); unknown ids are ignored."""

    @abc.abstractmethod
    async def create_batch_from_list(
        self, row: BatchRow, list_id: str, owner: str = ""
    ) -> tuple[BatchRow, bool]:
        """create_batch with the finished list's unique ids and indexes as recipients
        (`row.total` is the list's count), read from the list's own pages (read_recipients
        works as for any batch). Raises LookupError when the list is gone."""


def open_store(url: str, state_dir: Path, lease_s: float = 30.0) -> Store:
    """The store for `url`: "memory", "sqlite:///PATH" (PATH absolute), "sqlite:NAME" or
    "postgresql://..." (`lease_s`: how stale a replica is before its batches are taken)."""
    if url.startswith(("postgresql://", "postgres://")):
        from imgate._store_postgres import PostgresStore

        return PostgresStore(url, lease_s=lease_s)
    if url == "memory":
        from imgate._store_memory import MemoryStore

        return MemoryStore()
    if url.startswith("sqlite:"):
        from imgate._store_sqlite import SQLiteStore

        path = url.removeprefix("sqlite:")
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise StoreError("store.url: sqlite URL without a path")
        file = Path(path)
        if not file.is_absolute():
            file = state_dir / file
        return SQLiteStore(file)
    scheme = url.partition(":")[0]
    raise StoreError(f"store.url: unsupported store {scheme!r} (memory, sqlite, postgresql)")
