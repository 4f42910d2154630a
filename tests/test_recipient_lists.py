"""Recipient lists (CONTRACT.md §4 UploadRecipients, SubmitBatch.recipient_list): the RPCs.

Each test runs on every store where what is kept matters (a failed upload must leave
nothing behind in either).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imgate.api.callers import token_sha256
from imgate.api.validate import LIST_ID_RULE
from imgate.config.model import CallerConfig
from imgate.sandbox import SandboxServer
from imgate.store.base import Store
from imgate.store.memory import MemoryStore
from imgate.store.postgres import PostgresStore
from imgate.store.sqlite import SQLiteStore
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.spec import IdRule
from imgate.vendors.registry import VENDORS
from tests import _postgres
from tests.conftest import RunningGateway, StartGateway, text_request


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        yield SQLiteStore(tmp_path / "imgate.db")
    else:
        base = await _postgres.reachable_or_skip()
        schema = _postgres.new_schema()
        yield PostgresStore(_postgres.with_schema(base, schema))
        await _postgres.drop_schema(base, schema)


def _pages(*pages: list[str], request_id: str = "") -> Iterator[pb.UploadRecipientsRequest]:
    for number, page in enumerate(pages):
        yield pb.UploadRecipientsRequest(
            request_id=request_id if number == 0 else "", recipient_ids=page
        )


def _submit_list(list_id: str, backend: str = "tencent", **fields: Any) -> pb.SubmitBatchRequest:
    request = pb.SubmitBatchRequest.FromString(
        text_request([], backend, **fields).SerializeToString()
    )
    request.recipient_list = list_id
    return request


async def _outcomes(gateway: RunningGateway, batch_id: str) -> list[pb.WatchBatchResponse]:
    request = pb.WatchBatchRequest(batch_id=batch_id)
    return [m async for m in gateway.stub.WatchBatch(request, timeout=60)]


async def _invalid(call: Any) -> list[str]:
    """The BadRequest fields of an INVALID_ARGUMENT error."""
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error.value)  # type: ignore[arg-type]
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return [f"{v.field}: {v.description}" for v in bad.field_violations]


async def _lists_kept(store: Store) -> int:
    """Rows of any list table (SQLite, PostgreSQL) or lists (memory): what a failed upload
    leaves."""
    tables = ("recipient_lists", "list_members", "list_pages")
    if isinstance(store, MemoryStore):
        return len(store._lists)
    if isinstance(store, PostgresStore):
        return sum([await store.pool.fetchval(f"SELECT count(*) FROM {t}") for t in tables])
    assert isinstance(store, SQLiteStore)

    def count(conn: Any) -> int:
        return sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables)

    kept: int = await store._read(count)
    return kept


async def test_upload_dedupes_across_pages_and_two_batches_reuse_it(
    sandbox: SandboxServer, start_gateway: StartGateway, store: Store
) -> None:
    gateway = await start_gateway({"recipients_per_call": 50}, store=store)
    first = [f"user{n:04d}" for n in range(300)]
    second = ["user0007", "ghost1", "user0299", *[f"more{n}" for n in range(100)], "ghost1"]
    uploaded = await gateway.stub.UploadRecipients(_pages(first, [], second))
    assert (uploaded.count, uploaded.duplicates_removed) == (401, 3)
    batch_ids = []
    for backend in ("tencent", "yunxin_v1"):
        batch = await gateway.stub.SubmitBatch(_submit_list(uploaded.recipient_list, backend))
        assert batch.total == 401
        batch_ids.append(batch.batch_id)
    for batch_id, vendor in zip(batch_ids, ("tencent", "yunxin_v1"), strict=True):
        messages = await _outcomes(gateway, batch_id)
        outcomes = {o.recipient_id: o for m in messages for o in m.outcomes}
        assert sum(len(m.outcomes) for m in messages) == 401 == len(outcomes)
        # The first occurrence keeps its index across pages.
        assert outcomes["ghost1"].index == 301
        assert outcomes["more0"].index == 303
        assert outcomes["ghost1"].state == pb.DELIVERY_STATE_FAILED
        assert outcomes["ghost1"].reason == pb.FAILURE_REASON_RECIPIENT_NOT_FOUND
        summary = messages[-1].summary
        assert (summary.total, summary.accepted, summary.failed) == (401, 400, 1)
        assert summary.duplicates_removed == 3
        delivered = sorted(d.recipient for d in sandbox.state.deliveries(vendor))
        assert delivered == sorted(set(first + second) - {"ghost1"})


async def test_bad_id_names_page_and_position_and_nothing_is_kept(
    start_gateway: StartGateway, store: Store
) -> None:
    gateway = await start_gateway(store=store)
    bad_page = ["fine", "also fine ", "ok"]
    fields = await _invalid(gateway.stub.UploadRecipients(_pages(["a", "b"], ["c"], bad_page)))
    assert fields == ["pages[2].recipient_ids[1]: must not start or end with whitespace"]
    assert await _lists_kept(store) == 0
    # Longer than any registered vendor takes, whichever vendors are registered.
    too_long = "x" * (LIST_ID_RULE.max_length + 1)
    fields = await _invalid(gateway.stub.UploadRecipients(_pages(["a"], [too_long])))
    assert fields[0].startswith("pages[1].recipient_ids[0]: longer than any configured vendor")
    assert await _invalid(gateway.stub.UploadRecipients(_pages([], []))) == [
        "recipient_ids: at least one recipient is required"
    ]
    assert await _lists_kept(store) == 0


async def test_more_than_max_recipients_per_list_fails_and_keeps_nothing(
    start_gateway: StartGateway, store: Store
) -> None:
    gateway = await start_gateway(store=store, max_recipients_per_list=5)
    # Duplicates do not count: five unique ids fit.
    fits = await gateway.stub.UploadRecipients(_pages(["a", "b", "a"], ["c", "d", "e", "b"]))
    assert fits.count == 5
    kept = await _lists_kept(store)
    fields = await _invalid(gateway.stub.UploadRecipients(_pages(["a", "b", "c"], ["d", "e", "f"])))
    assert len(fields) == 1
    assert fields[0].startswith("pages[1].recipient_ids: over 5 unique recipients")
    assert "max_recipients_per_list" in fields[0]
    assert await _lists_kept(store) == kept  # only the list that fitted


async def test_another_callers_list_is_not_found(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    callers = (
        CallerConfig("billing", bytes.fromhex(token_sha256("billing-token"))),
        CallerConfig("ops", bytes.fromhex(token_sha256("ops-token"))),
    )
    gateway = await start_gateway(callers=callers)
    billing = (("authorization", "Bearer billing-token"),)
    ops = (("authorization", "Bearer ops-token"),)
    uploaded = await gateway.stub.UploadRecipients(_pages(["a", "b"]), metadata=billing)
    for list_id, metadata in ((uploaded.recipient_list, ops), ("no-such-list", billing)):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await gateway.stub.SubmitBatch(_submit_list(list_id), metadata=metadata)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    batch = await gateway.stub.SubmitBatch(_submit_list(uploaded.recipient_list), metadata=billing)
    assert batch.total == 2
    assert sandbox.state.stats("tencent").calls_received <= 1  # only billing's batch


async def test_upload_request_id_is_idempotent(start_gateway: StartGateway, store: Store) -> None:
    gateway = await start_gateway(store=store)
    first = await gateway.stub.UploadRecipients(_pages(["a", "b"], ["c"], request_id="audience"))
    again = await gateway.stub.UploadRecipients(_pages(["a", "b"], ["c"], request_id="audience"))
    assert again == first
    fields = await _invalid(gateway.stub.UploadRecipients(_pages(["a"], request_id="audience")))
    assert fields == ["request_id: already used for a different recipient list"]
    fields = await _invalid(gateway.stub.UploadRecipients(_pages(["a"], request_id="has space")))
    assert fields[0].startswith("request_id:")


async def test_list_validated_for_the_vendor_and_exclusive_with_ids(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway()
    # 11 CJK characters: within 32 characters, but 33 UTF-8 bytes, over Tencent's 32.
    wide = "用" * 11
    uploaded = await gateway.stub.UploadRecipients(_pages(["a", "b"], ["c", wide]))
    fields = await _invalid(gateway.stub.SubmitBatch(_submit_list(uploaded.recipient_list)))
    assert fields == ["recipient_list: recipient 3 of the list: at most 32 UTF-8 bytes"]
    both = _submit_list(uploaded.recipient_list, "yunxin_v2")
    both.recipient_ids.append("d")
    fields = await _invalid(gateway.stub.SubmitBatch(both))
    assert fields == ["recipient_list: give recipient_ids or recipient_list, not both"]
    assert sandbox.state.stats("tencent").calls_received == 0
    # Yunxin counts characters: the same list is fine there.
    batch = await gateway.stub.SubmitBatch(_submit_list(uploaded.recipient_list, "yunxin_v2"))
    assert batch.total == 4


async def test_retention_purges_lists_after_the_batches_reading_them(
    start_gateway: StartGateway, store: Store
) -> None:
    gateway = await start_gateway(store=store, batch_retention_s=0.5)
    uploaded = await gateway.stub.UploadRecipients(_pages(["a"]))
    batch = await gateway.stub.SubmitBatch(_submit_list(uploaded.recipient_list))
    await _outcomes(gateway, batch.batch_id)
    for _ in range(100):  # the purge runs every second here
        if await _lists_kept(store) == 0 and await store.get_batch(batch.batch_id) is None:
            break
        await asyncio.sleep(0.1)
    assert await store.get_batch(batch.batch_id) is None, "the batch was never purged"
    assert await _lists_kept(store) == 0, "the list was never purged"
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.stub.SubmitBatch(_submit_list(uploaded.recipient_list))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_fingerprint_leaves_the_request_as_it_was_and_matches_a_copy() -> None:
    import copy
    import hashlib

    from imgate.api.requests import fingerprint as _fingerprint

    request = pb.SubmitBatchRequest.FromString(
        text_request(["a", "b"], "", request_id="r1").SerializeToString()
    )
    request.send_before.FromSeconds(2_000_000_000)
    before = request.SerializeToString(deterministic=True)
    expected = copy.copy(request)
    expected.request_id, expected.backend = "", "tencent"
    expected.ClearField("send_before")
    digest = hashlib.sha256(expected.SerializeToString(deterministic=True)).digest()
    assert _fingerprint(request, "tencent") == digest
    assert request.SerializeToString(deterministic=True) == before


async def test_tencent_byte_planning_holds_for_lists(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    # A long text leaves room for about a hundred 32-character ids under Tencent's 12 KB
    # body cap: chunks are planned by bytes from the list's pages, and the strict sandbox
    # refuses any body over the cap.
    gateway = await start_gateway()
    ids = [f"{n:032d}" for n in range(1000)]
    uploaded = await gateway.stub.UploadRecipients(_pages(ids[:400], ids[400:]))
    request = _submit_list(uploaded.recipient_list, text="x" * 8000)
    batch = await gateway.stub.SubmitBatch(request)
    summary = (await _outcomes(gateway, batch.batch_id))[-1].summary
    assert (summary.total, summary.accepted) == (1000, 1000)
    assert summary.vendor_calls >= 1000 // 120  # far more calls than 500 per call would make
    assert sandbox.state.stats("tencent").calls_received == summary.vendor_calls


def _id_between(fits: IdRule, breaks: IdRule) -> str | None:
    """An id that `fits` takes and `breaks` refuses (ASCII, then CJK), if there is one."""
    for char in ("x", "鲍"):
        for length in range(1, 200):
            candidate = char * length
            if fits.fits(candidate) and not breaks.fits(candidate):
                return candidate
    return None


_RULE_PAIRS = [
    (a.vendor, b.vendor, found)
    for a in VENDORS
    for b in VENDORS
    if (found := _id_between(a.spec.id_rule, b.spec.id_rule)) is not None
]


@pytest.mark.parametrize(("fits", "breaks", "recipient"), _RULE_PAIRS)
async def test_a_list_id_one_vendor_takes_is_held_to_the_backends_rule_at_submit(
    start_gateway: StartGateway, fits: str, breaks: str, recipient: str
) -> None:
    # An uploaded list is bound to no backend: an id some vendor takes is kept, and the
    # backend it is sent with decides at submit (its longest id in the backend's unit).
    gateway = await start_gateway()
    uploaded = await gateway.stub.UploadRecipients(_pages(["short", recipient]))
    sender = {"sender_id": "imgate_sender"}
    fields = await _invalid(
        gateway.stub.SubmitBatch(_submit_list(uploaded.recipient_list, breaks, **sender))
    )
    assert any(f.startswith("recipient_list: recipient 1 of the list: at most") for f in fields)
    batch = await gateway.stub.SubmitBatch(_submit_list(uploaded.recipient_list, fits, **sender))
    assert batch.total == 2
