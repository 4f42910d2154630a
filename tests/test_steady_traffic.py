"""Weeks of small sends (issue 20), in one process: nothing is kept per batch or per
stream once it ended, queued batches wait in the store, small sends take two commits.

The soak, queue and watcher tests on real processes (RSS, WAL size) are in
test_soak.py; these check the same rules structure by structure, on every store.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from imgate.observability.metrics import Metrics
from imgate.pipeline.queue import BatchQueue
from imgate.sandbox import FaultRule, SandboxServer
from imgate.store.base import Store
from imgate.store.memory import MemoryStore
from imgate.store.postgres import PostgresStore
from imgate.store.records import BatchRow
from imgate.store.sqlite import SQLiteStore
from imgate.v1 import gateway_pb2 as pb
from tests import _postgres
from tests.conftest import StartGateway, text_request
from tests.test_store import _row


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        yield SQLiteStore(tmp_path / "imgate.db")
    else:
        base = await _postgres.reachable_or_skip()
        schema = _postgres.new_schema()
        yield PostgresStore(_postgres.with_schema(base, schema))
        await _postgres.drop_schema(base, schema)


async def test_nothing_is_kept_per_batch_or_stream_once_they_ended(
    any_store: Store, start_gateway: StartGateway
) -> None:
    # Issue 20: each BatchSend on SQLite left one asyncio.Event behind (2,646 for 2,646
    # requests); look for every sibling too: tails, reads, runs, slots, writer locks.
    gateway = await start_gateway(store=any_store)
    stub = gateway.stub

    async def small(n: int) -> None:
        request = text_request([f"u{n}", f"v{n}"], "tencent")
        if n % 3 == 0:
            request.request_id = f"req-{n}"
        await gateway.send(request)
        if n % 3 == 0:  # the same request again attaches to the ended batch
            await gateway.send(request)

    async def large(n: int) -> None:
        await gateway.send(text_request([f"l{n}-{i}" for i in range(1200)], "yunxin_v2"))

    async def watched(n: int) -> None:
        batch = await stub.SubmitBatch(
            pb.SubmitBatchRequest(
                backend="tencent",
                recipient_ids=[f"w{n}-{i}" for i in range(700)],
                message=pb.Message(text=pb.TextContent(text="hi")),
            )
        )
        stream = stub.WatchBatch(pb.WatchBatchRequest(batch_id=batch.batch_id))
        if n % 2:
            async for _ in stream:
                pass
        else:
            await stream.read()
            stream.cancel()  # a watcher that goes away

    async def cancelled(n: int) -> None:
        call = stub.BatchSend(text_request([f"c{n}-{i}" for i in range(900)], "yunxin_v1"))
        await call.read()
        call.cancel()  # the caller goes away: its bound batch goes with it

    await asyncio.gather(
        *(small(n) for n in range(60)),
        *(large(n) for n in range(4)),
        *(watched(n) for n in range(8)),
        *(cancelled(n) for n in range(4)),
    )
    tracked: dict[str, int] = {}
    for _ in range(100):  # cancels and fillers run in tasks of their own
        tracked = gateway.gateway.tracked()
        if not any(tracked.values()):
            break
        await asyncio.sleep(0.05)
    assert tracked
    assert not any(tracked.values()), tracked


async def test_a_send_that_fits_one_call_answers_in_one_message_with_two_commits(
    tmp_path: Path, start_gateway: StartGateway
) -> None:
    store = SQLiteStore(tmp_path / "imgate.db")
    gateway = await start_gateway(store=store)
    await gateway.send(text_request(["warm"], "tencent"))
    before = store.stats()
    messages, outcomes, summary = await gateway.send(text_request(["a", "b", "ghost1"], "tencent"))
    after = store.stats()
    assert len(messages) == 1  # outcomes, summary, batch id and cursor in one message
    assert messages[0].batch_id
    assert messages[0].cursor
    assert [o.recipient_id for o in outcomes] == ["a", "b", "ghost1"]
    assert (summary.accepted, summary.failed) == (2, 1)
    # Stored with its chunk SENDING, then recorded and ended: two commits (issue 20).
    assert after.commits - before.commits == 2
    # The stream's cursor resumes after everything: nothing more to watch.
    watch = gateway.stub.WatchBatch(
        pb.WatchBatchRequest(batch_id=messages[0].batch_id, cursor=messages[0].cursor)
    )
    rest = [m async for m in watch]
    assert [len(m.outcomes) for m in rest] == [0]
    assert rest[-1].summary.total == 3
    row = await store.get_batch(messages[0].batch_id)
    assert row is not None
    assert row.state == pb.BATCH_STATE_DONE


async def test_queued_batches_wait_in_the_store_and_run_when_a_slot_frees(
    sandbox: SandboxServer, tmp_path: Path, start_gateway: StartGateway
) -> None:
    store = SQLiteStore(tmp_path / "imgate.db")
    gateway = await start_gateway({"max_running_batches": 2}, store=store)
    sandbox.state.set_faults("tencent", [FaultRule(kind="latency", delay_s=0.3)])
    batches = []
    for n in range(12):
        batches.append(
            await gateway.stub.SubmitBatch(
                pb.SubmitBatchRequest(
                    backend="tencent",
                    recipient_ids=[f"q{n}"],
                    message=pb.Message(text=pb.TextContent(text="queued")),
                )
            )
        )
    states = [b.state for b in batches]
    assert states[:2] == [pb.BATCH_STATE_RUNNING] * 2
    assert states[2:] == [pb.BATCH_STATE_QUEUED] * 10
    assert gateway.gateway.batches.tracked()["batch_runs"] <= 2
    assert await store.queued_count("tencent") >= 8
    for batch in batches:
        async for _ in gateway.stub.WatchBatch(pb.WatchBatchRequest(batch_id=batch.batch_id)):
            pass
    delivered = [d.recipient for d in sandbox.state.deliveries("tencent")]
    assert sorted(delivered) == sorted(f"q{n}" for n in range(12))
    assert delivered[:2] == ["q0", "q1"] or set(delivered[:2]) == {"q0", "q1"}


async def test_a_full_backlog_refuses_submits_and_stores_nothing(
    sandbox: SandboxServer, tmp_path: Path, start_gateway: StartGateway
) -> None:
    store = SQLiteStore(tmp_path / "imgate.db")
    gateway = await start_gateway({"max_running_batches": 1, "max_queued_batches": 3}, store=store)
    sandbox.state.set_faults("tencent", [FaultRule(kind="latency", delay_s=1.0)])

    def request(n: int) -> pb.SubmitBatchRequest:
        return pb.SubmitBatchRequest(
            backend="tencent",
            request_id=f"r{n}",
            recipient_ids=[f"b{n}"],
            message=pb.Message(text=pb.TextContent(text="x")),
        )

    for n in range(4):  # one running, three queued
        await gateway.stub.SubmitBatch(request(n))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.stub.SubmitBatch(request(4))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_queued_batches" in (refused.value.details() or "")
    listed = await gateway.stub.ListBatches(pb.ListBatchesRequest())
    assert sorted(b.request_id for b in listed.batches) == ["r0", "r1", "r2", "r3"]


class _CountingStore(SQLiteStore):
    """SQLite, counting how often the backlog is counted."""

    counts = 0

    async def queued_count(self, backend: str) -> int:
        self.counts += 1
        return await super().queued_count(backend)


async def test_a_growing_backlog_is_not_counted_again_for_each_submit(
    sandbox: SandboxServer, tmp_path: Path, start_gateway: StartGateway
) -> None:
    """Counting the QUEUED batches is a scan of them: once per submit, a backlog of
    20,000 cost its submits 200 million index steps (the soak's backlog spent 30 of its
    80 CPU seconds there). A process counts at most once a second while under the limit
    (its own submits added), and exactly before it refuses."""
    store = _CountingStore(tmp_path / "imgate.db")
    gateway = await start_gateway(
        {"max_running_batches": 1, "max_queued_batches": 100}, store=store
    )
    sandbox.state.set_faults("tencent", [FaultRule(kind="latency", delay_s=5.0)])

    def request(n: int) -> pb.SubmitBatchRequest:
        return pb.SubmitBatchRequest(
            backend="tencent",
            recipient_ids=[f"c{n}"],
            message=pb.Message(text=pb.TextContent(text="x")),
        )

    for n in range(101):  # one running, a hundred queued
        await gateway.stub.SubmitBatch(request(n))
    assert store.counts <= 10, store.counts  # 100 before
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.stub.SubmitBatch(request(101))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    listed = await gateway.stub.ListBatches(pb.ListBatchesRequest(page_size=200))
    assert len(listed.batches) == 101


class _ClaimsCounted:
    """A store that counts its claims of queued batches (each a write transaction: with
    SQLite a commit and its fsync)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.claims = 0

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if not name.startswith("claim"):
            return found

        async def counted(*args: Any) -> Any:
            self.claims += 1
            return await found(*args)

        return counted


async def test_free_slots_are_filled_with_one_claim_per_caller() -> None:
    """Free slots are shared out between the waiting callers as one at a time would
    (the fewest running for their weight first), then each caller's share is claimed at
    once. Claimed one slot at a time, 20,000 queued batches took 27 s and 25 CPU-s of a
    gateway to drain, its claims waiting on each other's commits; 14 s and 13 CPU-s
    claimed so."""
    store = MemoryStore()
    for caller, count in (("a", 20), ("b", 20), ("c", 1)):
        for n in range(count):
            row = dataclasses.replace(
                _row(f"{caller}{n:02}", total=1, caller=caller, create_time=1000.0 + n),
                state=pb.BATCH_STATE_QUEUED,
            )
            await store.create_batch(row, ["r"], None)
    counted = _ClaimsCounted(store)
    backend = SimpleNamespace(
        config=SimpleNamespace(max_running_batches=9, max_queued_batches=100),
        caller_weights={"a": 2},
    )
    launched: list[BatchRow] = []
    queue = BatchQueue(
        {"tx": backend},  # type: ignore[dict-item]
        counted,  # type: ignore[arg-type]
        "me",
        Metrics(),
        launched.append,
        lambda row: True,
    )
    await queue.find_waiting()
    while queue._fillers:
        await asyncio.gather(*queue._fillers)
    # One at a time: a, b, c, a, a, b, (c has no more), a, a, b.
    assert Counter(row.caller for row in launched) == {"a": 5, "b": 3, "c": 1}
    assert [row.batch_id for row in launched if row.caller == "a"] == [
        f"a{n:02}" for n in range(5)
    ]  # each caller's oldest first
    assert {row.state for row in launched} == {pb.BATCH_STATE_RUNNING}
    assert counted.claims <= 4, counted.claims  # a, b and c, then b's last slot
    assert queue.slots("tx").total == 9
    assert queue.slots("tx").waiting == {"a", "b"}


async def test_derived_in_flight_follows_the_round_trip() -> None:
    from imgate.pipeline.permits import CEILING, FLOOR, Permits, derived_limit

    assert derived_limit(200, 0.05) == 20  # Tencent at 50 ms: 200 calls/s x 0.05 s x 2
    assert derived_limit(2, 0.05) == FLOOR  # Yunxin legacy's 120 calls a minute
    assert derived_limit(10_000, 1.0) == CEILING
    permits = Permits(0, calls_per_s=200, timeout_s=10)
    for _ in range(50):
        permits.observe(0.5)
    assert permits.limit == derived_limit(200, permits.round_trip_s) > 100
    held = [await permits.acquire() for _ in range(permits.limit)]
    waiter = asyncio.ensure_future(permits.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()  # full
    for _ in range(60):
        permits.observe(2.0)  # slower: more may wait for answers at once
    await asyncio.sleep(0)
    assert waiter.done()
    assert len(held) + 1 <= permits.limit
    fixed = Permits(3, calls_per_s=200, timeout_s=10)
    fixed.observe(5.0)
    assert fixed.limit == 3
