"""The memory store keeps at most so many ended batches, and so many bytes of them: it
forgets the oldest-ended first, never an unfinished batch (issue 20)."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest

from imgate.store.memory import (
    DEFAULT_MAX_ENDED_BATCHES,
    DEFAULT_MAX_ENDED_BYTES,
    MemoryStore,
)
from imgate.store.records import DONE, PLANNED, BatchRow, ChunkRow, Counts, ListRow
from imgate.v1 import gateway_pb2 as pb

ROOT = Path(__file__).resolve().parent.parent


def _row(batch_id: str, total: int, request_id: str = "") -> BatchRow:
    return BatchRow(
        batch_id=batch_id,
        caller="caller",
        request_id=request_id,
        fingerprint=b"fp",
        backend="tx",
        spec=b"spec",
        bound=False,
        total=total,
        duplicates_removed=0,
        create_time=1000.0,
    )


def _page(start: int, count: int) -> bytes:
    response = pb.BatchSendResponse()
    for index in range(start, start + count):
        response.outcomes.add(recipient_id=f"user-{index:08d}", index=index)
    return response.SerializeToString()


async def _batch(
    store: MemoryStore, name: str, ids: int = 4, pages: int = 1, end: bool = True
) -> None:
    """A batch of `ids` recipients with `pages` outcome pages, ended unless `end` is False."""
    await store.create_batch(
        _row(name, ids, request_id=f"req-{name}"), [f"user-{n:08d}" for n in range(ids)], None
    )
    size = ids // pages if pages else 0
    for number in range(pages):
        chunk = ChunkRow(name, number, number * size, (number + 1) * size, PLANNED, attempts=1)
        await store.record(chunk, DONE, _page(number * size, size), Counts(accepted=size), "me")
    if end:
        await store.set_state(name, pb.BATCH_STATE_DONE)


def _kept(store: MemoryStore) -> tuple[int, int]:
    """(ended batches kept, their estimated bytes)."""
    return len(store._ended), store._ended_bytes


async def test_at_most_max_ended_batches_are_kept_oldest_ended_forgotten_first() -> None:
    store = MemoryStore(max_ended_batches=50)
    for n in range(500):
        await _batch(store, f"b{n}")
        assert _kept(store)[0] <= 50
    assert len(store._batches) == 50
    assert await store.get_batch("b449") is None
    assert await store.get_batch("b450") is not None
    assert await store.read_outcomes("b0", 0, 1 << 30) == []  # watchers learn it is gone
    # Its request_id went with it: the same id makes a new batch (and is counted again).
    _, created = await store.create_batch(_row("again", 4, request_id="req-b0"), ["x"], None)
    assert created
    # Nothing of a forgotten batch is left behind.
    assert set(store._by_request.values()) == set(store._batches)


async def test_ended_bytes_stay_within_the_bound() -> None:
    bound = 1024 * 1024
    store = MemoryStore(max_ended_bytes=bound)
    for n in range(30):  # ~0.45 MB each, estimated
        await _batch(store, f"b{n}", ids=5_000, pages=5)
        count, used = _kept(store)
        assert used <= bound
        assert count >= 1
    assert sum(batch.cost() for batch in store._batches.values()) == _kept(store)[1]
    assert await store.get_batch("b0") is None
    assert await store.get_batch("b29") is not None


async def test_unfinished_batches_are_never_forgotten() -> None:
    store = MemoryStore(max_ended_batches=3, max_ended_bytes=10_000)
    # Created first (the oldest), far over both bounds, never ended.
    for n in range(5):
        await _batch(store, f"open{n}", ids=5_000, pages=2, end=False)
    await store.set_state("open4", pb.BATCH_STATE_CANCELLING)
    for n in range(100):
        await _batch(store, f"b{n}")
    for n in range(5):
        row = await store.get_batch(f"open{n}")
        assert row is not None
        assert not row.ended
        assert len(await store.read_outcomes(f"open{n}", 0, 1 << 30)) == 2
    assert len(await store.unfinished_batches()) == 5
    # Once ended, they are counted and may go as the others.
    await store.set_state("open0", pb.BATCH_STATE_DONE)
    assert await store.get_batch("open0") is not None  # the newest ended is always kept
    await _batch(store, "later")
    assert await store.get_batch("open0") is None  # 80 kB over a 10 kB bound


async def test_the_order_is_by_end_not_by_creation() -> None:
    store = MemoryStore(max_ended_batches=2)
    for name in ("first", "second", "third"):
        await _batch(store, name, end=False)
    for name in ("second", "first", "third"):  # "second" ends first
        await store.set_state(name, pb.BATCH_STATE_DONE)
    assert await store.get_batch("second") is None
    assert await store.get_batch("first") is not None
    assert await store.get_batch("third") is not None


async def test_a_batch_over_the_byte_bound_alone_stays_until_another_ends() -> None:
    store = MemoryStore(max_ended_bytes=1_000)
    await _batch(store, "huge", ids=10_000, pages=4)
    assert len(await store.read_outcomes("huge", 0, 1 << 30)) == 4  # its watchers read it all
    await _batch(store, "next")
    assert await store.get_batch("huge") is None


async def test_a_batch_made_from_a_list_leaves_the_list_alone() -> None:
    store = MemoryStore(max_ended_batches=1)
    await store.create_list(ListRow("L1", "caller", 1000.0))
    await store.add_to_list("L1", [f"id{n}" for n in range(100)])
    await store.finish_list(ListRow("L1", "caller", 1000.0, ready_time=1000.0))
    await store.create_batch_from_list(_row("from-list", 100), "L1")
    await store.set_state("from-list", pb.BATCH_STATE_DONE)
    await _batch(store, "other")
    assert await store.get_batch("from-list") is None
    assert await store.get_list("L1") is not None  # reusable until purged by age
    await store.create_batch_from_list(_row("again", 100), "L1")
    assert (await store.read_recipients("again", 98, 100))[0] == ["id98", "id99"]


async def test_purge_keeps_the_count_right() -> None:
    store = MemoryStore(max_ended_batches=10)
    for n in range(5):
        await _batch(store, f"b{n}")
    assert await store.purge(ended_before=1e12) == 5
    assert _kept(store) == (0, 0)


async def test_the_byte_estimate_is_close_to_the_memory_really_used() -> None:
    store = MemoryStore(max_ended_batches=1_000, max_ended_bytes=1 << 40)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(3):
            await _batch(store, f"b{n}", ids=10_000, pages=10)
        for n in range(100):
            await _batch(store, f"small{n}", ids=10)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    estimated = _kept(store)[1]
    assert 0.7 * used <= estimated <= 1.5 * used, (estimated, used)  # 1.00-1.04 measured


def test_the_defaults_are_the_documented_ones() -> None:
    store = MemoryStore()
    assert store._max_ended_batches == DEFAULT_MAX_ENDED_BATCHES == 10_000
    assert store._max_ended_bytes == DEFAULT_MAX_ENDED_BYTES == 256 * 1024 * 1024
    for doc in ("docs/configuration.md", "docs/sandbox.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert "10,000 ended batches" in text, doc
        assert "256 MiB" in text, doc


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="max_ended_batches"):
        MemoryStore(max_ended_batches=0)
    with pytest.raises(ValueError, match="max_ended_bytes"):
        MemoryStore(max_ended_bytes=-1)
