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

Webhooks (CONTRACT.md rule 28) have an outbox: `record_last` and `set_state`, when they end
a batch, write the `WebhookEvent`s they are given in the same transaction (a kill -9 loses
none); the delivery loop (pipeline/webhooks.py) works through them with five more:

    claim_webhook_events   due events of one endpoint, leased (one replica at a time)
    fix_webhook_body       the body, fixed at the first attempt (retries send the same)
    retry_webhook_event / delete_webhook_event / pending_webhook_events

Recipient lists (UploadRecipients, CONTRACT.md §4) have five more:

    create_list    an upload begins (the list is its caller's, invisible until finished)
    add_to_list    one page of ids: duplicates dropped by the store's unique index
    finish_list    the upload is complete; idempotent on (caller, request_id)
    get_list / delete_list
    create_batch_from_list   create_batch with the list's pages as its recipients

A batch submitted with `send_after` waits SCHEDULED (never claimed) until the scheduler
asks `promote_due` to move it to QUEUED; `next_scheduled` says when to ask. A recall
batch (`create_recall`) has its original's ACCEPTED and UNCERTAIN recipients as its own,
and beside each page of them a page of what the vendor's recall API needs
(`read_recall_keys`).

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
import dataclasses
from collections.abc import Callable, Sequence

from imgate.store.records import (
    BatchRow,
    ChunkRow,
    Counts,
    ListRow,
    OutboxEvent,
    OutcomePage,
    RecallKey,
    Recovered,
    StoreError,
    StoreStats,
    WebhookEvent,
)
from imgate.store.watch import Notifier, Tails


class Store(abc.ABC):
    """The store interface (see the module docstring). All methods are coroutines."""

    durable: bool
    """Whether what is stored survives a restart (memory: no)."""
    shared: bool = False
    """Whether several gateway processes use the store at once (PostgreSQL)."""

    def __init__(self) -> None:
        self.notifier = Notifier()
        self.tails: Tails[OutcomePage] = Tails()
        self._stats = StoreStats()
        self.cancelled_elsewhere: Callable[[str], None] | None = None
        """A shared store calls it with a batch that another replica (or this one) has
        just cancelled, so that its owner stops at once rather than at its next poll."""
        # Watchers asking for the same pages at once share one read (and its bytes).
        self._reads: dict[tuple[str, int, int], asyncio.Future[list[OutcomePage]]] = {}

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
        first_chunk: ChunkRow | None = None,
    ) -> tuple[BatchRow, bool]:
        """Store a new batch and its unique recipients (`indexes` None = 0, 1, 2, ...),
        owned by `owner` (a shared store; "" = its first writer takes it).

        `first_chunk`: chunk 0, written ahead (SENDING by `owner`) in the same
        transaction, as `write_ahead` would: a batch that fits one vendor call is stored
        and marked being sent in one commit (issue 20's short path).

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
        sent. An existing row must be PLANNED or CLAIMED, or SENDING by `owner`; the batch
        must be QUEUED or RUNNING (else BatchCancelling: nothing is written)."""

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
    async def record_last(
        self,
        chunk: ChunkRow,
        final_state: str,
        page: bytes,
        counts: Counts,
        owner: str,
        events: Sequence[WebhookEvent] = (),
    ) -> tuple[int, BatchRow]:
        """`record` for the chunk that gives the batch's last recipients their outcomes,
        ending the batch in the same transaction: DONE, or CANCELLED when it was
        CANCELLING (one commit where `record` and `set_state` took two), and writing
        `events` to the outbox in it too. Returns the seq and the ended row."""

    @abc.abstractmethod
    async def set_state(
        self, batch_id: str, state: int, events: Sequence[WebhookEvent] = ()
    ) -> BatchRow | None:
        """Move the batch to `state` (an ended state sets end_time); CANCELLING is kept
        when RUNNING is asked; an ended batch stays as it is. When this ends the batch,
        `events` are written to the outbox in the same transaction. Returns the updated
        row."""

    @abc.abstractmethod
    async def recover(self, owner: str) -> Recovered:
        """Start-up: every CLAIMED chunk goes back to PLANNED; SENDING chunks of
        unfinished batches are handed to `owner` and returned (they end UNCERTAIN);
        every RUNNING batch not bound to a caller goes back to QUEUED (it waits for a
        slot like any other); bound and CANCELLING ones are listed in `to_close`."""

    def is_outage(self, exc: BaseException) -> bool:
        """Whether `exc` says the store cannot be used now (a full disk, a lost
        connection), as opposed to a bug: logged as one line, retried."""
        return isinstance(exc, StoreError | ConnectionError | TimeoutError | OSError)

    async def now(self) -> float | None:
        """The store's own clock (a shared store: the database's), or None to use the
        gateway's: what retention is counted on."""
        return None

    async def probe_write(self) -> None:  # noqa: B027 - stores that can fail to write
        """Write something harmless; raise StoreError when the store cannot be written
        (how a gateway notices that a full disk has space again)."""

    async def heartbeat(self, owner: str) -> None:  # noqa: B027 - shared stores only
        """Replica `owner` is alive now (by the store's clock)."""

    async def retire(self, owner: str) -> None:  # noqa: B027 - shared stores only
        """Replica `owner` stops: others may adopt its batches at once."""

    async def release(self, batch_id: str, owner: str) -> None:  # noqa: B027 - shared only
        """`owner` gives up an unfinished batch it no longer runs (its run stopped on an
        error): the next sweep of any replica adopts it."""

    async def adopt(self, owner: str, lease_s: float) -> tuple[int, Recovered]:
        """Shared stores: take over the unfinished batches of replicas whose heartbeat is
        older than `lease_s` (one adopter at a time), as `recover` does for a restart
        (RUNNING ones back to QUEUED). Returns how many batches were adopted and their
        chunks that were SENDING (now `owner`'s, to end UNCERTAIN); the batches stay in
        the store, so an adopter's memory does not grow with a dead replica's backlog.
        A store of one process adopts nothing."""
        return 0, Recovered()

    async def read_outcomes(
        self, batch_id: str, after_seq: int, max_bytes: int = 1 << 20
    ) -> list[OutcomePage]:
        """Outcome pages with seq > `after_seq`, in order: at least one when there is
        one, and no more than fit in `max_bytes` (a watcher's memory is bounded in bytes,
        whatever the pages hold). Pages this process recorded lately come from `tails`;
        identical reads in flight at once are made once."""
        found = self.tails.read(batch_id, after_seq, max_bytes)
        if found is not None:
            return found
        key = (batch_id, after_seq, max_bytes)
        shared = self._reads.get(key)
        if shared is not None:
            return await asyncio.shield(shared)
        read = asyncio.ensure_future(self._read_outcomes(batch_id, after_seq, max_bytes))
        self._reads[key] = read
        read.add_done_callback(lambda _: self._reads.pop(key, None))
        return await asyncio.shield(read)

    @abc.abstractmethod
    async def _read_outcomes(
        self, batch_id: str, after_seq: int, max_bytes: int
    ) -> list[OutcomePage]:
        """read_outcomes from the store itself."""

    def stats(self) -> StoreStats:
        """What the store did so far (a copy)."""
        return dataclasses.replace(self._stats)

    def forget(self, batch_id: str) -> None:
        """This process stops running `batch_id` (it ended, or its run stopped): release
        what is held in memory for it. Watchers read the store from now on."""
        self.tails.drop(batch_id)

    def tracked(self) -> dict[str, int]:
        """Sizes of what this process holds per batch or per watcher (the soak test and
        `imgate_tracked_entries` check that each returns to zero)."""
        return {
            "store_watched_batches": len(self.notifier),
            "store_tails": len(self.tails),
            "store_reads": len(self._reads),
        }

    # -- the queue of batches waiting to run (issue 20) ----------------------------------

    @abc.abstractmethod
    async def claim_queued(
        self, backend: str, caller: str, owner: str, limit: int
    ) -> list[BatchRow]:
        """The `limit` oldest QUEUED batches of `caller` on `backend` (owned by `owner` in
        a shared store), moved to RUNNING in one write, oldest first; fewer when fewer
        wait."""

    @abc.abstractmethod
    async def queued_callers(self, backend: str, owner: str) -> set[str]:
        """The callers with QUEUED batches on `backend` (owned by `owner`)."""

    @abc.abstractmethod
    async def queued_count(self, backend: str) -> int:
        """How many batches wait QUEUED on `backend` (all owners)."""

    @abc.abstractmethod
    async def cancelling(self, owner: str, limit: int) -> list[BatchRow]:
        """Up to `limit` CANCELLING batches (owned by `owner` in a shared store), oldest
        first: a cancel asked on another replica of a batch its owner has not started."""

    @abc.abstractmethod
    async def purge(self, ended_before: float) -> int:
        """Delete batches that ended before `ended_before` (wall clock), their webhook
        events with them (delivered or not: an endpoint no longer configured leaves its
        events behind), and recipient lists created before it (finished or abandoned)
        that no stored batch reads; return how many batches and lists."""

    # -- the webhook outbox -------------------------------------------------------------

    @abc.abstractmethod
    async def claim_webhook_events(self, url: str, limit: int, lease_s: float) -> list[OutboxEvent]:
        """Up to `limit` events for endpoint `url` that are due, oldest due first, each
        not due again for `lease_s` (another replica's claim passes them by) and its
        attempts counted."""

    @abc.abstractmethod
    async def fix_webhook_body(self, event_id: str, body: bytes) -> bytes:
        """Keep `body` as the event's body (for every endpoint) unless it has one already;
        return the one it has."""

    @abc.abstractmethod
    async def retry_webhook_event(self, event: OutboxEvent, delay_s: float) -> None:
        """The attempt failed: the event is due again in `delay_s` (by the store's
        clock), unless another attempt claimed it since (then nothing changes)."""

    @abc.abstractmethod
    async def delete_webhook_event(self, event: OutboxEvent) -> None:
        """Delivered, or given up: the event leaves the outbox."""

    @abc.abstractmethod
    async def pending_webhook_events(self) -> int:
        """Events in the outbox, every endpoint's (imgate_webhook_pending)."""

    # -- scheduled batches --------------------------------------------------------------

    @abc.abstractmethod
    async def promote_due(self, owner: str, now: float) -> list[tuple[str, str]]:
        """Move the SCHEDULED batches (owned by `owner` in a shared store) whose
        send_after is not after `now` to QUEUED; their (backend, caller)s."""

    @abc.abstractmethod
    async def next_scheduled(self, owner: str) -> float | None:
        """The earliest send_after of a SCHEDULED batch (owned by `owner`), or None."""

    # -- recall -------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_recall(
        self, row: BatchRow, original_id: str, owner: str = ""
    ) -> tuple[BatchRow, bool]:
        """Store `row`, the recall batch of the ended batch `original_id` (`row.recall_of`),
        with the original's ACCEPTED and UNCERTAIN recipients in the order their outcomes
        were recorded (each keeping its index), their RecallKeys, and `row.total` their
        count; mark the original `recalled_by` it, in the same transaction. Returns the
        stored row and True; or, when the original has a recall batch already or the
        caller a batch with `row.request_id`, that batch and False (nothing stored).
        Memory stays flat: the original's outcomes are read a page at a time."""

    @abc.abstractmethod
    async def read_recall_keys(self, batch_id: str, start: int, end: int) -> list[RecallKey]:
        """The RecallKeys of a recall batch's recipients [start, end)."""

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
