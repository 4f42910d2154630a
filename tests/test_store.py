"""One test suite for every store implementation (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from imgate.store.base import Store
from imgate.store.memory import MemoryStore
from imgate.store.open import STORE_KINDS, StoreKind, open_store
from imgate.store.pages import decode_recipients, encode_recipients
from imgate.store.postgres import PostgresStore
from imgate.store.records import (
    CLAIMED,
    DONE,
    PLANNED,
    RECIPIENT_PAGE,
    SENDING,
    UNCERTAIN,
    BatchRow,
    ChunkRow,
    Counts,
    Fenced,
    ListRow,
    Recovered,
    StoreError,
    WebhookEvent,
)
from imgate.store.sqlite import SCHEMA_VERSION, SQLiteStore
from imgate.v1 import gateway_pb2 as pb
from tests import _postgres

MakeStore = Callable[[], Store]


@pytest.fixture(params=[kind.name for kind in STORE_KINDS])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """A factory over every registered store kind (imgate.store.open.STORE_KINDS): stores
    made by it share one URL (a file, a schema of this test's on a server), so a second
    one is a restart; a store that keeps nothing across instances is made once."""
    kind: StoreKind = next(k for k in STORE_KINDS if k.name == request.param)
    async with _store_url(kind, tmp_path) as url:
        if kind.durable:
            yield lambda: kind.open(url, tmp_path, 30.0)
        else:
            only = kind.open(url, tmp_path, 30.0)
            yield lambda: only


@contextlib.asynccontextmanager
async def _store_url(kind: StoreKind, tmp_path: Path) -> AsyncIterator[str]:
    """A URL of `kind` for one test: a file under tmp_path, or a fresh schema on the test
    server (skipped when none is reachable)."""
    if not kind.needs_server:
        yield kind.schemes[0] if not kind.durable else f"{kind.schemes[0]}imgate.db"
        return
    base = await _postgres.reachable_or_skip()
    schema = _postgres.new_schema()
    try:
        yield _postgres.with_schema(base, schema)
    finally:
        await _postgres.drop_schema(base, schema)


@pytest.fixture
async def store(make_store: MakeStore) -> AsyncIterator[Store]:
    opened = make_store()
    await opened.open()
    yield opened
    await opened.close()


def _row(batch_id: str = "b1", total: int = 3, request_id: str = "", **fields: object) -> BatchRow:
    return BatchRow(
        batch_id=batch_id,
        caller=str(fields.pop("caller", "")),
        request_id=request_id,
        fingerprint=b"fp",
        backend="tx",
        spec=b"spec",
        bound=False,
        total=total,
        duplicates_removed=0,
        create_time=float(fields.pop("create_time", 1000.0)),  # type: ignore[arg-type]
    )


def _page(count: int) -> bytes:
    response = pb.BatchSendResponse()
    for n in range(count):
        response.outcomes.add(recipient_id=f"r{n}", index=n)
    return response.SerializeToString()


async def test_create_and_read_back(store: Store) -> None:
    ids = [f"user{n}" for n in range(RECIPIENT_PAGE + 7)]
    row, created = await store.create_batch(_row(total=len(ids)), ids, None)
    assert created
    assert row.state == pb.BATCH_STATE_QUEUED
    assert row.pending == len(ids)
    # A range across a page boundary, with positions as indexes.
    got_ids, got_indexes = await store.read_recipients("b1", RECIPIENT_PAGE - 2, RECIPIENT_PAGE + 3)
    assert got_ids == ids[RECIPIENT_PAGE - 2 : RECIPIENT_PAGE + 3]
    assert got_indexes == list(range(RECIPIENT_PAGE - 2, RECIPIENT_PAGE + 3))
    fetched = await store.get_batch("b1")
    assert fetched is not None
    assert fetched.total == len(ids)
    assert fetched.spec == b"spec"
    assert await store.get_batch("nope") is None


async def test_ids_keep_any_character_and_their_indexes(store: Store) -> None:
    ids = ['a"b', "new\nline", "日本", "x\\y"]
    await store.create_batch(_row(total=4), ids, [0, 2, 5, 9])
    assert await store.read_recipients("b1", 0, 4) == (ids, [0, 2, 5, 9])


async def test_ids_that_look_like_json_or_separators_read_back(store: Store) -> None:
    # Pages are "\n"-joined unless an id holds "\n": ids that look like the JSON form,
    # or are empty-looking around the separator, must not be mistaken for it.
    ids = ["[", '["x"]', "a b", "日本", "", "]"]
    await store.create_batch(_row(total=6), ids, None)
    assert await store.read_recipients("b1", 0, 6) == (ids, list(range(6)))
    assert await store.read_recipients("b1", 2, 5) == (ids[2:5], [2, 3, 4])


def test_recipient_pages_written_as_json_by_earlier_versions_still_decode() -> None:
    assert decode_recipients('["a", "b\\n"]', "", 10) == (["a", "b\n"], [10, 11])
    assert decode_recipients('["a"]', "[7]", 0) == (["a"], [7])
    text, indexes = encode_recipients(["a", "b"], None)
    assert (text, indexes) == ("\na\nb", "")
    assert decode_recipients(text, indexes, 3) == (["a", "b"], [3, 4])


async def test_request_id_is_idempotent_per_caller(store: Store) -> None:
    _first, created = await store.create_batch(_row("b1", request_id="r"), ["a", "b", "c"], None)
    again, created_again = await store.create_batch(_row("b2", request_id="r"), ["x"], None)
    assert created
    assert not created_again
    assert again.batch_id == "b1"
    assert await store.get_batch("b2") is None
    other, created_other = await store.create_batch(
        _row("b3", request_id="r", caller="someone-else"), ["a"], None
    )
    assert created_other
    assert other.batch_id == "b3"


async def test_chunk_life_and_outcome_pages_in_order(store: Store) -> None:
    await store.create_batch(_row(total=5), list("abcde"), None)
    first = ChunkRow("b1", 0, 0, 2, PLANNED, attempts=1)
    await store.write_ahead(first, "me")
    assert [(c.number, c.state) for c in await store.chunks("b1")] == [(0, SENDING)]
    second = ChunkRow("b1", 1, 2, 5, PLANNED, attempts=2)
    seq2 = await store.record(second, DONE, _page(3), Counts(accepted=3, vendor_calls=2), "me")
    seq1 = await store.record(first, UNCERTAIN, _page(2), Counts(uncertain=2, vendor_calls=1), "me")
    assert (seq2, seq1) == (1, 2)
    row = await store.get_batch("b1")
    assert row is not None
    assert (row.accepted, row.uncertain, row.pending, row.vendor_calls) == (3, 2, 0, 3)
    assert (row.chunk_count, row.planned_to) == (2, 5)
    pages = await store.read_outcomes("b1", 0)
    assert [(p.seq, p.count) for p in pages] == [(1, 3), (2, 2)]
    assert [p.seq for p in await store.read_outcomes("b1", 1)] == [2]
    # At most max_bytes, but at least one page.
    assert [p.seq for p in await store.read_outcomes("b1", 0, max_bytes=1)] == [1]
    assert pb.BatchSendResponse.FromString(pages[0].data).outcomes[2].recipient_id == "r2"


async def test_chunks_must_follow_each_other(store: Store) -> None:
    await store.create_batch(_row(total=5), list("abcde"), None)
    with pytest.raises(Fenced):
        await store.write_ahead(ChunkRow("b1", 1, 2, 5, PLANNED), "me")  # chunk 0 missing
    with pytest.raises(Fenced):
        await store.write_ahead(ChunkRow("b1", 0, 1, 5, PLANNED), "me")  # gap before it
    assert await store.chunks("b1") == []


async def test_fencing_another_owner_changes_nothing(store: Store) -> None:
    await store.create_batch(_row(total=2), ["a", "b"], None)
    chunk = ChunkRow("b1", 0, 0, 2, PLANNED, attempts=1)
    await store.write_ahead(chunk, "owner-a")
    with pytest.raises(Fenced):
        await store.record(chunk, DONE, _page(2), Counts(accepted=2), "owner-b")
    await store.record(chunk, DONE, _page(2), Counts(accepted=2), "owner-a")
    with pytest.raises(Fenced):  # a decided chunk is never decided again
        await store.record(chunk, DONE, _page(2), Counts(accepted=2), "owner-a")
    row = await store.get_batch("b1")
    assert row is not None
    assert row.accepted == 2
    assert len(await store.read_outcomes("b1", 0)) == 1


async def test_states_and_cancelling_sticks(store: Store) -> None:
    await store.create_batch(_row(), ["a", "b", "c"], None)
    row = await store.set_state("b1", pb.BATCH_STATE_CANCELLING)
    assert row is not None
    assert row.state == pb.BATCH_STATE_CANCELLING
    row = await store.set_state("b1", pb.BATCH_STATE_RUNNING)
    assert row is not None
    assert row.state == pb.BATCH_STATE_CANCELLING
    row = await store.set_state("b1", pb.BATCH_STATE_CANCELLED)
    assert row is not None
    assert row.ended
    assert row.end_time is not None
    row = await store.set_state("b1", pb.BATCH_STATE_RUNNING)  # an ended batch stays ended
    assert row is not None
    assert row.state == pb.BATCH_STATE_CANCELLED
    assert await store.unfinished_batches() == []


async def test_recover_after_a_restart(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    await store.create_batch(_row(total=6), list("abcdef"), None)
    await store.write_ahead(ChunkRow("b1", 0, 0, 2, PLANNED, attempts=1), "dead")
    await store.record(
        ChunkRow("b1", 1, 2, 4, PLANNED, attempts=1), DONE, _page(2), Counts(2), "dead"
    )
    await store.close()
    store = make_store()  # the same file, as after kill -9 and a restart
    await store.open()
    try:
        recovered = await store.recover("new")
        assert [(c.number, c.state, c.owner) for c in recovered.sending] == [(0, SENDING, "new")]
        # The new owner may now decide the chunk; the dead one may not.
        chunk = recovered.sending[0]
        with pytest.raises(Fenced):
            await store.record(chunk, UNCERTAIN, _page(2), Counts(uncertain=2), "dead")
        await store.record(chunk, UNCERTAIN, _page(2), Counts(uncertain=2), "new")
        unfinished = await store.unfinished_batches()
        assert [(r.batch_id, r.planned_to, r.pending) for r in unfinished] == [("b1", 4, 2)]
    finally:
        await store.close()


async def test_claimed_chunks_go_back_to_planned(store: Store) -> None:
    await store.create_batch(_row(total=2), ["a", "b"], None)
    if isinstance(store, MemoryStore):
        store._batches["b1"].chunks[0] = ChunkRow("b1", 0, 0, 2, CLAIMED, owner="dead")
    elif isinstance(store, PostgresStore):
        await store.pool.execute("INSERT INTO chunks VALUES ('b1', 0, 0, 2, 'claimed', 0, 'dead')")
        await store.pool.execute("UPDATE batches SET chunk_count = 1, planned_to = 2")
    else:
        assert isinstance(store, SQLiteStore)

        def claim(conn: object) -> None:
            conn.execute("INSERT INTO chunks VALUES ('b1', 0, 0, 2, 'claimed', 0, 'dead')")  # type: ignore[attr-defined]
            conn.execute("UPDATE batches SET chunk_count = 1, planned_to = 2")  # type: ignore[attr-defined]

        await store._write(claim)
    recovered = await store.recover("new")
    assert recovered.reclaimed == 1
    assert recovered.sending == []
    assert [c.state for c in await store.chunks("b1")] == [PLANNED]


async def test_list_newest_first_with_pages(store: Store) -> None:
    for n in range(5):
        await store.create_batch(_row(f"b{n}", create_time=1000.0 + n), ["a"], None)
    await store.create_batch(_row("other", caller="x", create_time=2000.0), ["a"], None)
    first = await store.list_batches("", 2, None)
    assert [r.batch_id for r in first] == ["b4", "b3"]
    rest = await store.list_batches("", 10, (first[-1].create_time, first[-1].batch_id))
    assert [r.batch_id for r in rest] == ["b2", "b1", "b0"]


async def test_purge_removes_only_old_ended_batches(store: Store) -> None:
    await store.create_batch(_row("old", request_id="r1"), ["a"], None)
    await store.create_batch(_row("live", request_id="r2"), ["a"], None)
    await store.set_state("old", pb.BATCH_STATE_DONE)
    assert await store.purge(ended_before=0.0) == 0
    assert await store.purge(ended_before=1e12) == 1
    assert await store.get_batch("old") is None
    assert await store.get_batch("live") is not None
    # Its request_id is free again after retention.
    _, created = await store.create_batch(_row("new", request_id="r1"), ["a"], None)
    assert created


def _events(event_id: str, *urls: str) -> list[WebhookEvent]:
    return [WebhookEvent(event_id, url, "batch.ended") for url in urls]


async def test_a_batchs_end_writes_its_webhook_events_in_the_same_transaction(
    make_store: MakeStore,
) -> None:
    store = make_store()
    await store.open()
    await store.create_batch(_row("last", total=2), ["a", "b"], None)
    await store.create_batch(_row("cancelled"), ["a", "b", "c"], None)
    await store.create_batch(_row("running"), ["a", "b", "c"], None)
    chunk = ChunkRow("last", 0, 0, 2, PLANNED, attempts=1)
    _, ended = await store.record_last(
        chunk, DONE, _page(2), Counts(2), "me", _events("e1", "http://a/", "http://b/")
    )
    assert ended.end_time is not None
    await store.set_state("cancelled", pb.BATCH_STATE_CANCELLED, _events("e2", "http://a/"))
    # Only a change that ends a batch writes events: not RUNNING, not an ended batch again.
    await store.set_state("running", pb.BATCH_STATE_RUNNING, _events("e3", "http://a/"))
    await store.set_state("cancelled", pb.BATCH_STATE_DONE, _events("e4", "http://a/"))
    assert await store.pending_webhook_events() == 3
    await store.close()
    store = make_store()  # a restart (kill -9 keeps the same: they were one commit)
    await store.open()
    try:
        claimed = await store.claim_webhook_events("http://a/", 10, lease_s=60)
        assert [(e.event_id, e.batch_id, e.type, e.attempts, e.body) for e in claimed] == [
            ("e1", "last", "batch.ended", 1, None),
            ("e2", "cancelled", "batch.ended", 1, None),
        ]
        assert claimed[0].create_time == pytest.approx(ended.end_time)
        # Leased: nobody else gets them until the lease ends; other endpoints are apart.
        assert await store.claim_webhook_events("http://a/", 10, lease_s=60) == []
        assert [e.event_id for e in await store.claim_webhook_events("http://b/", 10, 60)] == ["e1"]
    finally:
        await store.close()


async def test_webhook_attempts_are_fenced_and_bodies_fixed_once(store: Store) -> None:
    await store.create_batch(_row(total=1), ["a"], None)
    await store.set_state("b1", pb.BATCH_STATE_DONE, _events("e1", "http://a/", "http://b/"))
    (first,) = await store.claim_webhook_events("http://a/", 10, lease_s=0)
    assert await store.fix_webhook_body("e1", b"one") == b"one"
    assert await store.fix_webhook_body("e1", b"two") == b"one"  # fixed: retries send it
    (second,) = await store.claim_webhook_events("http://a/", 10, lease_s=60)  # lease over
    assert (second.attempts, second.body) == (2, b"one")
    # The first attempt's late failure does not put the claimed event back.
    await store.retry_webhook_event(first, delay_s=0)
    assert await store.claim_webhook_events("http://a/", 10, lease_s=60) == []
    await store.retry_webhook_event(second, delay_s=0)
    (third,) = await store.claim_webhook_events("http://a/", 10, lease_s=60)
    assert third.attempts == 3
    await store.delete_webhook_event(third)
    assert await store.pending_webhook_events() == 1  # http://b/'s
    (other,) = await store.claim_webhook_events("http://b/", 10, lease_s=60)
    assert other.body == b"one"
    await store.delete_webhook_event(other)
    assert await store.pending_webhook_events() == 0


async def test_purge_removes_the_webhook_events_of_purged_batches(store: Store) -> None:
    await store.create_batch(_row(total=1), ["a"], None)
    await store.set_state("b1", pb.BATCH_STATE_DONE, _events("e1", "http://gone/"))
    await store.purge(ended_before=0.0)
    assert await store.pending_webhook_events() == 1
    await store.purge(ended_before=1e12)
    assert await store.pending_webhook_events() == 0


async def test_notifier_wakes_watchers(store: Store) -> None:
    await store.create_batch(_row(total=1), ["a"], None)
    with store.notifier.watching("b1") as event:
        assert not event.is_set()
        await store.record(
            ChunkRow("b1", 0, 0, 1, PLANNED, attempts=1), DONE, _page(1), Counts(1), "me"
        )
        assert event.is_set()
    # Nothing is kept for a batch nobody watches (one Event per BatchSend leaked: issue 20).
    assert len(store.notifier) == 0
    with store.notifier.watching("ended") as event:
        pass
    assert len(store.notifier) == 0


async def _upload(store: Store, list_id: str, pages: list[list[str]], **fields: object) -> int:
    """Upload `pages` as list `list_id` of caller "" (not finished); how many were new."""
    await store.create_list(ListRow(list_id, str(fields.get("caller", "")), 1000.0))
    added = 0
    for page in pages:
        added += await store.add_to_list(list_id, page)
    return added


async def _finish(store: Store, list_id: str, **fields: object) -> tuple[ListRow, bool]:
    row = await store.get_list(list_id)
    assert row is not None
    row.request_id = str(fields.get("request_id", ""))
    row.fingerprint = bytes(fields.get("fingerprint", b"fp"))  # type: ignore[call-overload]
    row.ready_time = 1001.0
    return await store.finish_list(row)


async def test_list_drops_duplicates_across_pages_first_index_wins(store: Store) -> None:
    # Pages that straddle RECIPIENT_PAGE, with duplicates within and across pages.
    first = [f"u{n}" for n in range(RECIPIENT_PAGE - 3)] + ["u0", "u1"]
    second = ["u5", "x", "x", "y", *[f"v{n}" for n in range(5)], 'q"\\日本']
    assert await _upload(store, "L1", [first, second]) == RECIPIENT_PAGE - 3 + 8
    assert await store.get_list("L1") is not None
    with pytest.raises(LookupError):  # not finished: no batch may use it yet
        await store.create_batch_from_list(_row("b1", total=1), "L1")
    finished, created = await _finish(store, "L1")
    assert created
    assert finished.ready_time == 1001.0
    assert (finished.count, finished.received) == (RECIPIENT_PAGE + 5, RECIPIENT_PAGE + 9)
    assert finished.duplicates_removed == 4
    with pytest.raises(LookupError):  # finished: nothing more may be added
        await store.add_to_list("L1", ["late"])
    batch, created = await store.create_batch_from_list(_row("b1", total=finished.count), "L1")
    assert created
    assert batch.total == RECIPIENT_PAGE + 5
    ids, indexes = await store.read_recipients("b1", RECIPIENT_PAGE - 4, RECIPIENT_PAGE + 5)
    base = RECIPIENT_PAGE - 1  # the index of "u5" in the second page
    assert ids == [f"u{RECIPIENT_PAGE - 4}", "x", "y", *[f"v{n}" for n in range(5)], 'q"\\日本']
    assert indexes == [RECIPIENT_PAGE - 4, base + 1, base + 3, *range(base + 4, base + 9), base + 9]


async def test_list_reused_by_two_batches(store: Store) -> None:
    await _upload(store, "L1", [["a", "b"], ["c"]])
    await _finish(store, "L1")
    for batch_id in ("b1", "b2"):
        await store.create_batch_from_list(_row(batch_id, total=3), "L1")
        assert await store.read_recipients(batch_id, 0, 3) == (["a", "b", "c"], [0, 1, 2])


async def test_list_request_id_is_idempotent_per_caller(store: Store) -> None:
    await _upload(store, "L1", [["a", "b"]])
    _first, created = await _finish(store, "L1", request_id="r")
    await _upload(store, "L2", [["a", "b"]])
    again, created_again = await _finish(store, "L2", request_id="r")
    assert created
    assert not created_again
    assert again.list_id == "L1"
    assert await store.get_list("L2") is None  # the second upload is not kept
    await _upload(store, "L3", [["a"]], caller="other")
    row = await store.get_list("L3")
    assert row is not None
    row.request_id, row.ready_time = "r", 1.0
    assert (await store.finish_list(row))[1]


async def test_deleted_list_leaves_nothing(store: Store) -> None:
    await _upload(store, "L1", [["a", "b", "a"]])
    await store.delete_list("L1")
    await store.delete_list("L1")  # twice is fine
    assert await store.get_list("L1") is None
    with pytest.raises(LookupError):
        await store.add_to_list("L1", ["c"])
    # The same ids in a new list are new again: the old list's index is gone too.
    assert await _upload(store, "L2", [["a", "b"]]) == 2


async def test_purge_removes_old_lists(store: Store) -> None:
    await _upload(store, "L1", [["a"]])
    await _finish(store, "L1")
    await _upload(store, "abandoned", [["a"]])
    assert await store.purge(ended_before=1000.0) == 0  # created at 1000.0
    assert await store.purge(ended_before=1000.5) == 2
    assert await store.get_list("L1") is None
    assert await store.get_list("abandoned") is None


async def test_a_list_a_stored_batch_reads_is_kept_until_the_batch_is_purged(
    store: Store,
) -> None:
    await _upload(store, "L1", [["a", "b"]])
    await _finish(store, "L1")
    await store.create_batch_from_list(_row("b1", total=2), "L1")
    assert await store.purge(ended_before=1e12) == 0  # the batch has not ended
    assert await store.read_recipients("b1", 0, 2) == (["a", "b"], [0, 1])
    await store.set_state("b1", pb.BATCH_STATE_DONE)
    assert await store.purge(ended_before=1e12) == 2  # the batch, then its list
    assert await store.get_list("L1") is None


def _try_open(path: str, queue: multiprocessing.Queue[str]) -> None:
    import asyncio

    async def attempt() -> str:
        try:
            await SQLiteStore(Path(path)).open()
        except StoreError as exc:
            return str(exc)
        return "opened"

    queue.put(asyncio.run(attempt()))


async def test_sqlite_second_gateway_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "imgate.db"
    first = SQLiteStore(path)
    await first.open()
    try:
        queue: multiprocessing.Queue[str] = multiprocessing.get_context("spawn").Queue()
        process = multiprocessing.get_context("spawn").Process(
            target=_try_open, args=(str(path), queue)
        )
        process.start()
        process.join(30)
        answer = queue.get(timeout=5)
        assert "in use by another imgate gateway" in answer
        assert "store.url" in answer
    finally:
        await first.close()
    reopened = SQLiteStore(path)  # free again once the first one closed
    await reopened.open()
    await reopened.close()


async def test_sqlite_is_wal_and_synchronous_full(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "imgate.db")
    await store.open()
    try:
        modes = await store._read(
            lambda conn: (
                conn.execute("PRAGMA journal_mode").fetchone()[0],
                conn.execute("PRAGMA synchronous").fetchone()[0],
                conn.execute("PRAGMA user_version").fetchone()[0],
            )
        )
        assert modes == ("wal", 2, SCHEMA_VERSION)  # synchronous 2 = FULL
    finally:
        await store.close()


async def test_sqlite_checkpoints_in_the_background_not_in_commits(tmp_path: Path) -> None:
    # Issue 15: a commit never copies the WAL into the file (that cost 5-15 ms inside a
    # batch's first commits); a background thread does, soon after writes, even below
    # SQLite's own 1,000-page threshold.
    path = tmp_path / "imgate.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        assert store._writer is not None
        autocheckpoint = await store._write(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        assert autocheckpoint == 0
        before = path.stat().st_size
        ids = [f"user{n:06d}" for n in range(20_000)]  # ~60 pages: far below 1,000
        await store.create_batch(_row(total=len(ids)), ids, None)
        for _ in range(100):  # the file grows only when the WAL is copied into it
            if path.stat().st_size > before:
                break
            await asyncio.sleep(0.05)
        assert path.stat().st_size > before
        assert await store.read_recipients("b1", 19_998, 20_000) == (ids[-2:], [19_998, 19_999])
    finally:
        await store.close()


def test_open_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_store("memory", tmp_path), MemoryStore)
    relative = open_store("sqlite:imgate.db", tmp_path)
    assert isinstance(relative, SQLiteStore)
    assert relative.path == tmp_path / "imgate.db"
    absolute = open_store(f"sqlite://{tmp_path}/x.db", Path("/elsewhere"))
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == tmp_path / "x.db"
    with pytest.raises(StoreError, match=r"store\.url"):
        open_store("mysql://db/imgate", tmp_path)


async def test_adopt_takes_only_dead_replicas_batches_and_fences_them(
    make_store: MakeStore,
) -> None:
    """A replica whose heartbeat is older than the lease loses its batches to an adopter,
    and, should it wake up, changes nothing: no new chunk, no planned chunk, no outcome."""
    zombie = make_store()
    await zombie.open()
    try:
        if not zombie.shared:  # one process: nobody else to adopt from
            assert await zombie.adopt("me", 0.0) == (0, Recovered())
            return
        adopter = make_store()
        await adopter.open()
        try:
            await zombie.heartbeat("zombie")
            await adopter.heartbeat("adopter")
            await zombie.create_batch(_row(total=6), list("abcdef"), None, owner="zombie")
            in_flight = ChunkRow("b1", 0, 0, 2, PLANNED, attempts=1)
            await zombie.write_ahead(in_flight, "zombie")
            assert await adopter.adopt("adopter", lease_s=60.0) == (0, Recovered())
            await asyncio.sleep(0.2)  # the zombie's heartbeat is now older than the lease
            adopted, recovered = await adopter.adopt("adopter", lease_s=0.1)
            assert adopted == 1
            assert [(c.number, c.state, c.owner) for c in recovered.sending] == [
                (0, SENDING, "adopter")
            ]
            with pytest.raises(Fenced):  # the outcome of its call in flight
                await zombie.record(in_flight, DONE, _page(2), Counts(accepted=2), "zombie")
            with pytest.raises(Fenced):  # a new chunk of a batch it no longer owns
                await zombie.write_ahead(ChunkRow("b1", 1, 2, 4, PLANNED, attempts=1), "zombie")
            await adopter.record(
                recovered.sending[0], UNCERTAIN, _page(2), Counts(uncertain=2), "adopter"
            )
            await adopter.write_ahead(ChunkRow("b1", 1, 2, 4, PLANNED, attempts=1), "adopter")
            row = await adopter.get_batch("b1")
            assert row is not None
            assert (row.accepted, row.uncertain, row.chunk_count) == (0, 2, 2)
            assert [(c.state, c.owner) for c in await adopter.chunks("b1")] == [
                (UNCERTAIN, "adopter"),
                (SENDING, "adopter"),
            ]
            # Adopted once: nothing left for another sweep.
            assert await adopter.adopt("third", lease_s=60.0) == (0, Recovered())
        finally:
            await adopter.close()
    finally:
        await zombie.close()


async def test_a_retired_replicas_batches_are_adopted_at_once(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    try:
        await store.heartbeat("leaving")
        await store.create_batch(_row(total=1), ["a"], None, owner="leaving")
        await store.retire("leaving")
        adopted, _ = await store.adopt("other", lease_s=3600.0)
        assert adopted == (1 if store.shared else 0)
        if store.shared:  # adopted: "other"'s now, waiting in the queue for a slot
            assert await store.claim_queued("tx", "", "other", 1) != []
    finally:
        await store.close()


async def test_new_chunks_written_ahead_at_once_are_stored_in_order(store: Store) -> None:
    # A run starts a chunk's write-ahead before the previous one has committed.
    await store.create_batch(_row(total=40), [f"u{n}" for n in range(40)], None)
    await asyncio.gather(
        *(
            store.write_ahead(ChunkRow("b1", n, 2 * n, 2 * n + 2, PLANNED, attempts=1), "me")
            for n in range(20)
        )
    )
    assert [(c.number, c.state) for c in await store.chunks("b1")] == [
        (n, SENDING) for n in range(20)
    ]


async def test_a_released_batch_is_adopted_even_from_a_live_owner(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    try:
        await store.heartbeat("alive")
        await store.create_batch(_row(total=1), ["a"], None, owner="alive")
        await store.release("b1", "someone-else")  # not theirs to release: no change
        assert await store.adopt("other", lease_s=3600.0) == (0, Recovered())
        await store.release("b1", "alive")
        adopted, _ = await store.adopt("other", lease_s=3600.0)
        assert adopted == (1 if store.shared else 0)
        if store.shared:  # adopted: "other"'s now, waiting in the queue for a slot
            assert await store.claim_queued("tx", "", "other", 1) != []
    finally:
        await store.close()


async def test_sqlite_schema_1_file_gains_lists_and_keeps_its_batches(tmp_path: Path) -> None:
    import sqlite3

    from tests import _schemas

    path = tmp_path / "imgate.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in filter(str.strip, _schemas.SQLITE_1.split(";")):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    store = SQLiteStore(path)
    await store.open()  # written before lists existed: migrated in place
    try:
        await store.create_batch(_row(total=1), ["a"], None)
        await _upload(store, "L1", [["b"]])
        assert (await _finish(store, "L1"))[1]
        assert await store.read_recipients("b1", 0, 1) == (["a"], [0])
        version = await store._read(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
        assert version == SCHEMA_VERSION
    finally:
        await store.close()


async def test_sqlite_finished_list_drops_its_index_in_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import imgate.store.sqlite_lists

    monkeypatch.setattr(imgate.store.sqlite_lists, "_MEMBERS_PER_DELETE", 4)
    store = SQLiteStore(tmp_path / "imgate.db")
    await store.open()
    try:
        ids = [f"id{n:02d}" for n in range(11)]
        # A page with a duplicate of an earlier page, and one with a duplicate in itself.
        pages = [ids[:6], [ids[2], *ids[6:9]], [ids[9], ids[9], ids[10]]]
        assert await _upload(store, "L1", pages) == 11

        def members(conn: object) -> int:
            found: int = conn.execute("SELECT count(*) FROM list_members").fetchone()[0]  # type: ignore[attr-defined]
            return found

        assert await store._read(members) == 11
        await _finish(store, "L1")
        assert await store._read(members) == 0  # deleted 4 at a time, all of them
        await store.create_batch_from_list(_row("b1", total=11), "L1")
        got, indexes = await store.read_recipients("b1", 0, 11)
        assert got == ids
        assert indexes == [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 12]
    finally:
        await store.close()


async def test_sqlite_write_whose_waiter_is_cancelled_leaves_the_writer_running(
    tmp_path: Path,
) -> None:
    """A caller cancelled while its write waits in the writer's queue (a client gone
    during create_batch, say): the write still runs, its result goes nowhere, and the
    writer keeps serving later writes (it used to die on the cancelled future, so that
    every later write hung)."""
    store = SQLiteStore(tmp_path / "imgate.db")
    await store.open()
    try:
        holding, release, ran = threading.Event(), threading.Event(), threading.Event()

        def hold(conn: sqlite3.Connection) -> str:
            holding.set()
            release.wait(10)
            return "held"

        def mark(conn: sqlite3.Connection) -> None:
            ran.set()

        first = asyncio.ensure_future(store._write(hold))
        await asyncio.to_thread(holding.wait, 10)
        queued = asyncio.ensure_future(store._write(mark))
        await asyncio.sleep(0)  # queued behind `hold`
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued  # the cancellation has gone all the way down
        release.set()
        assert await first == "held"
        assert await asyncio.wait_for(store._write(lambda conn: 2), 30) == 2
        assert ran.is_set()
    finally:
        await store.close()
