"""The SQLite store's disk use stays bounded (issue 20): the WAL file goes back to ~0 when
the writer is idle and has a hard bound under continuous writes; purge gives space back to
the file system; files of schema version 2 are converted to incremental auto-vacuum."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

import pytest

import imgate.store.sqlite_threads
from imgate.store.records import DONE, PLANNED, BatchRow, ChunkRow, Counts, StoreError
from imgate.store.sqlite import SCHEMA_VERSION, SQLiteStore
from imgate.v1 import gateway_pb2 as pb
from tests import _schemas

MB = 1024 * 1024
# 10,000 ids of 25 characters per recipient page, 10 pages a batch: ~2.5 MB of ids.
_IDS_PER_BATCH = 100_000
_PAGE = b"o" * 20_000  # one outcome page
_PAGES_PER_BATCH = 20


def _row(batch_id: str, total: int) -> BatchRow:
    return BatchRow(
        batch_id=batch_id,
        caller="caller",
        request_id="",
        fingerprint=b"fp",
        backend="tx",
        spec=b"spec",
        bound=False,
        total=total,
        duplicates_removed=0,
        create_time=1000.0,
    )


async def _write_batch(store: SQLiteStore, number: int, ids: int = _IDS_PER_BATCH) -> str:
    """One batch through the store API: its recipients, outcome pages, then ended."""
    batch_id = f"b{number}"
    recipients = [f"recipient-{number:05d}-{n:09d}" for n in range(ids)]
    await store.create_batch(_row(batch_id, ids), recipients, None)
    size = ids // _PAGES_PER_BATCH
    for chunk in range(_PAGES_PER_BATCH):
        await store.record(
            ChunkRow(batch_id, chunk, chunk * size, (chunk + 1) * size, PLANNED, attempts=1),
            DONE,
            _PAGE,
            Counts(accepted=size, vendor_calls=1),
            "me",
        )
    await store.set_state(batch_id, pb.BATCH_STATE_DONE)
    return batch_id


def _size(file: Path) -> int:
    try:
        return file.stat().st_size
    except FileNotFoundError:
        return 0


async def _wait_until_at_most(file: Path, limit: int, within_s: float) -> int:
    """The file's size once it is <= limit, or its size after within_s."""
    deadline = time.monotonic() + within_s
    while True:
        size = _size(file)
        if size <= limit or time.monotonic() >= deadline:
            return size
        await asyncio.sleep(0.1)


async def test_wal_goes_back_to_nearly_nothing_when_the_writer_is_idle(tmp_path: Path) -> None:
    path = tmp_path / "imgate.db"
    wal = Path(f"{path}-wal")
    store = SQLiteStore(path)
    await store.open()
    # A reader that holds its snapshot through the burst, as a long ListBatches would: no
    # checkpoint can restart the WAL past it, so the burst surely grows the WAL (without
    # it, how far the WAL grew depended on how busy the machine was).
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM batches").fetchone()
        peak = 0
        for number in range(8):  # a burst of ~25 MB, back to back
            await _write_batch(store, number)
            peak = max(peak, _size(wal))
        reader.execute("COMMIT")
        reader.close()
        assert peak > 8 * MB, f"the burst should have grown the WAL; it peaked at {peak}"
        # Idle, store open: the checkpointer truncates the WAL within ~1.25 s.
        after = await _wait_until_at_most(wal, 4 * MB, within_s=5.0)
        assert after <= 4 * MB, f"WAL still {after} bytes after 5 s idle (peak {peak})"
        # Everything is still there.
        got, _ = await store.read_recipients("b7", _IDS_PER_BATCH - 1, _IDS_PER_BATCH)
        assert got == [f"recipient-00007-{_IDS_PER_BATCH - 1:09d}"]
        assert len(await store.read_outcomes("b7", 0, 1 << 30)) == _PAGES_PER_BATCH
    finally:
        reader.close()  # again, if the burst failed
        await store.close()
    assert _size(wal) == 0  # a clean close leaves no WAL behind


async def test_wal_stays_bounded_under_continuous_writes_and_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bounds smaller than the defaults, so that a few seconds of writes cross them many
    # times (raising=False: the test runs, and fails, on code without them too).
    monkeypatch.setattr(imgate.store.sqlite_threads, "_WAL_HARD_LIMIT", 8 * MB, raising=False)
    monkeypatch.setattr(imgate.store.sqlite_threads, "_JOURNAL_SIZE_LIMIT", 4 * MB, raising=False)
    path = tmp_path / "imgate.db"
    wal = Path(f"{path}-wal")
    store = SQLiteStore(path)
    await store.open()
    stop = asyncio.Event()
    sizes: list[int] = []

    async def read_all_the_time() -> None:  # readers hold WAL snapshots too
        while not stop.is_set():
            await store.read_outcomes("b0", 0, 1 << 30)
            await store.read_recipients("b0", 0, 20_000)

    async def watch() -> None:
        while not stop.is_set():
            sizes.append(_size(wal))
            await asyncio.sleep(0.02)

    try:
        await _write_batch(store, 0)
        tasks = [asyncio.ensure_future(read_all_the_time()), asyncio.ensure_future(watch())]
        written = 0
        for number in range(1, 31):  # ~95 MB, never idle
            await _write_batch(store, number)
            written += 1
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        await store.close()
    # What is written between two looks of the checkpointer (0.05 s) can come on top of
    # the bound, and a transaction (a batch's 2.5 MB of ids) is never split.
    margin = 8 * MB
    assert max(sizes) <= 8 * MB + margin, f"WAL reached {max(sizes)} bytes (bound 8 MiB)"
    assert written == 30


async def test_purge_gives_the_space_back(tmp_path: Path) -> None:
    path = tmp_path / "imgate.db"
    store = SQLiteStore(path)
    await store.open()

    async def read_pragma(name: str) -> int:
        found: int = await store._read(lambda conn: conn.execute(f"PRAGMA {name}").fetchone()[0])
        return found

    try:
        assert await read_pragma("auto_vacuum") == 2  # INCREMENTAL, from its creation
        for number in range(6):
            await _write_batch(store, number)
        kept = await _write_batch(store, 99, ids=1_000)
        # Let the checkpointer copy everything into the file, then measure it.
        await _wait_until_at_most(Path(f"{path}-wal"), 0, within_s=5.0)
        full = _size(path)
        assert full > 10 * MB
        # Only b99 is kept: it ends after the purge's cut-off.
        await store._write(
            lambda conn: conn.execute(
                "UPDATE batches SET end_time = 2e12 WHERE batch_id = ?", (kept,)
            )
        )
        assert await store.purge(ended_before=1e12) == 6
        assert await read_pragma("freelist_count") <= 16
        after = await _wait_until_at_most(path, full // 4, within_s=5.0)
        assert after <= full // 4, f"file {full} bytes before purge, {after} after"
        got, _ = await store.read_recipients(kept, 0, 1)
        assert got == ["recipient-00099-000000000"]
    finally:
        await store.close()


async def test_a_schema_2_file_is_converted_once_and_keeps_its_batches(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "imgate.db"
    # A file as an earlier gateway left it: schema 2, WAL, no auto-vacuum, with space that
    # deletes freed.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN")
    for statement in filter(str.strip, (_schemas.SQLITE_1 + ";" + _schemas.SQLITE_2).split(";")):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.execute("COMMIT")
    columns = (
        "batch_id, caller, request_id, fingerprint, backend, spec, bound, total, "
        "duplicates_removed, create_time, state, update_time"
    )
    for number in range(3):
        conn.execute(
            f"INSERT INTO batches ({columns}) VALUES (?, 'c', '', x'00', 'tx', x'00', 0, 2, 0, "
            "1000.0, 3, 1000.0)",
            (f"b{number}",),
        )
        conn.execute(
            "INSERT INTO recipient_pages VALUES (?, 0, ?, '')",
            (f"b{number}", "\na\nb" if number == 0 else "\n" + "x" * 200_000),
        )
    conn.execute("DELETE FROM recipient_pages WHERE batch_id != 'b0'")
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    assert conn.execute("PRAGMA freelist_count").fetchone()[0] > 50
    conn.close()

    caplog.set_level(logging.INFO, logger="imgate.store")
    for opening in range(2):
        store = SQLiteStore(path)
        await store.open()
        try:
            version, auto_vacuum, free = await store._read(
                lambda c: tuple(
                    c.execute(f"PRAGMA {name}").fetchone()[0]
                    for name in ("user_version", "auto_vacuum", "freelist_count")
                )
            )
            assert (version, auto_vacuum, free) == (SCHEMA_VERSION, 2, 0), opening
            assert await store.read_recipients("b0", 0, 2) == (["a", "b"], [0, 1])
            row = await store.get_batch("b2")
            assert row is not None
            assert row.state == pb.BATCH_STATE_DONE
        finally:
            await store.close()
    converted = [r for r in caplog.records if "incremental auto-vacuum" in r.getMessage()]
    assert len(converted) == 1  # once, at the upgrade; not at the next start


async def test_a_newer_schema_is_refused_and_the_file_left_free(tmp_path: Path) -> None:
    path = tmp_path / "imgate.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    store = SQLiteStore(path)
    with pytest.raises(StoreError, match=r"store\.url: .* newer than this gateway's"):
        await store.open()
    # The refusal released the lock and the connection: a second open gets the same
    # answer (it used to be told the file was in use by another gateway).
    with pytest.raises(StoreError, match=r"newer than this gateway's"):
        await SQLiteStore(path).open()
