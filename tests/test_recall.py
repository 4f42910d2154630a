"""RecallBatch (CONTRACT §9 rule 27) through a gateway in this process and the sandbox's
recall emulators: a recall batch has one outcome per ACCEPTED or UNCERTAIN recipient of
the original, each delivered message is withdrawn once, a second call returns the same
recall batch, a backend that cannot recall is FAILED_PRECONDITION and sends nothing. On
real processes, with ≥ 2,000 recipients and kill -9: tests/test_lifecycle_processes.py."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import grpc
import pytest

from imgate.sandbox import FaultRule, SandboxServer
from imgate.v1 import gateway_pb2 as pb
from tests.conftest import VENDORS, RunningGateway, StartGateway, spec_of, text_request

RECALLING = tuple(vendor for vendor in VENDORS if spec_of(vendor).recall is not None)
"""The vendors with a recall API (RongCloud's needs a sentTime its publish never returns)."""

ACCEPTED, FAILED, UNSURE = (
    pb.DELIVERY_STATE_ACCEPTED,
    pb.DELIVERY_STATE_FAILED,
    pb.DELIVERY_STATE_UNCERTAIN,
)


def _submit(recipients: list[str], backend: str, **options: bool) -> pb.SubmitBatchRequest:
    send = text_request(recipients, backend, options=pb.SendOptions(**options))
    return pb.SubmitBatchRequest.FromString(send.SerializeToString())


async def _until_ended(gw: RunningGateway, batch_id: str, within_s: float = 30) -> pb.Batch:
    deadline = time.monotonic() + within_s
    while True:
        batch = await gw.stub.GetBatch(pb.GetBatchRequest(batch_id=batch_id))
        if batch.state in (pb.BATCH_STATE_DONE, pb.BATCH_STATE_CANCELLED):
            return batch
        assert time.monotonic() < deadline, batch
        await asyncio.sleep(0.05)


async def _outcomes(gw: RunningGateway, batch_id: str) -> list[pb.RecipientOutcome]:
    request = pb.WatchBatchRequest(batch_id=batch_id)
    return [o async for m in gw.stub.WatchBatch(request) for o in m.outcomes]


async def _recalled(gw: RunningGateway, batch_id: str, **fields: str) -> pb.Batch:
    recall = await gw.stub.RecallBatch(pb.RecallBatchRequest(batch_id=batch_id, **fields))
    assert recall.recall_of == batch_id
    return await _until_ended(gw, recall.batch_id)


@pytest.mark.parametrize("vendor", RECALLING)
async def test_a_recall_withdraws_each_delivered_message_once(
    sandbox: SandboxServer, start_gateway: StartGateway, vendor: str
) -> None:
    gw = await start_gateway({"recallable": True})
    recipients = [f"r{n}" for n in range(250)] + ["ghost1", "ghost2"]
    batch = await gw.stub.SubmitBatch(_submit(recipients, vendor))
    original = await _until_ended(gw, batch.batch_id)
    assert (original.accepted, original.failed) == (250, 2)
    recall = await _recalled(gw, batch.batch_id)
    assert (recall.state, recall.total, recall.accepted) == (pb.BATCH_STATE_DONE, 250, 250)
    assert recall.summary.vendor_calls == 250  # one message to one recipient a call
    outcomes = await _outcomes(gw, recall.batch_id)
    assert Counter(o.recipient_id for o in outcomes) == Counter(recipients[:250])
    assert {o.state for o in outcomes} == {ACCEPTED}
    # Each keeps its index in the original request.
    assert sorted(o.index for o in outcomes) == list(range(250))
    withdrawn = sandbox.state.withdrawals(vendor)
    assert Counter(w.recipient for w in withdrawn) == Counter(recipients[:250])
    stats = sandbox.state.stats(vendor)
    assert (stats.withdrawals, stats.repeated_withdrawals) == (250, 0)
    assert stats.refusals == {}  # never over the recall API's quota
    again = await gw.stub.RecallBatch(pb.RecallBatchRequest(batch_id=batch.batch_id))
    assert again.batch_id == recall.batch_id  # the same recall batch, nothing sent again
    assert sandbox.state.stats(vendor).recall_calls_processed == 250
    shown = await gw.stub.GetBatch(pb.GetBatchRequest(batch_id=batch.batch_id))
    assert shown.recalled_by == recall.batch_id


async def test_a_backend_that_cannot_recall_is_failed_precondition_and_sends_nothing(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway()  # sandbox mode: yunxin_v1 is not recallable by default
    backends = await gw.stub.ListBackends(pb.ListBackendsRequest())
    recallable = {b.name: b.recallable for b in backends.backends}
    # yunxin_v1 by configuration (its ids come only when asked), RongCloud for want of an API.
    expected = {"yunxin_v1": False, "yunxin_v2": True, "tencent": True, "rongcloud": False}
    assert recallable == expected
    batch = await gw.stub.SubmitBatch(_submit(["a", "b"], "yunxin_v1"))
    await _until_ended(gw, batch.batch_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.RecallBatch(pb.RecallBatchRequest(batch_id=batch.batch_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not recallable (set recallable = true" in (caught.value.details() or "")
    assert sandbox.state.stats("yunxin_v1").recall_calls_processed == 0
    shown = await gw.stub.GetBatch(pb.GetBatchRequest(batch_id=batch.batch_id))
    assert shown.recalled_by == ""
    listed = await gw.stub.ListBatches(pb.ListBatchesRequest())
    assert [b.batch_id for b in listed.batches] == [batch.batch_id]  # no recall batch


async def test_a_recall_batch_cannot_be_recalled(start_gateway: StartGateway) -> None:
    gw = await start_gateway()
    batch = await gw.stub.SubmitBatch(_submit(["a"], "tencent"))
    await _until_ended(gw, batch.batch_id)
    recall = await _recalled(gw, batch.batch_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.RecallBatch(pb.RecallBatchRequest(batch_id=recall.batch_id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_recipients_without_a_message_id_are_not_recallable_without_a_call(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway({"recallable": True})
    # The caller turned the ids off: recallable sets returnMsgid only when it is unset.
    batch = await gw.stub.SubmitBatch(
        _submit(["a", "b", "c"], "yunxin_v1", return_message_ids=False)
    )
    await _until_ended(gw, batch.batch_id)
    recall = await _recalled(gw, batch.batch_id)
    assert (recall.total, recall.failed, recall.summary.vendor_calls) == (3, 3, 0)
    outcomes = await _outcomes(gw, recall.batch_id)
    assert {(o.state, o.reason) for o in outcomes} == {(FAILED, pb.FAILURE_REASON_NOT_RECALLABLE)}
    assert "no message id" in outcomes[0].detail
    assert sandbox.state.stats("yunxin_v1").recall_calls_processed == 0


async def test_uncertain_originals_are_not_recallable_and_an_unknown_recall_is_uncertain(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway({"recipients_per_call": 2})
    # The first send call is processed but its answer lost: a, b UNCERTAIN.
    sandbox.state.set_faults("tencent", [FaultRule(kind="error_500", api="send", times=1)])
    batch = await gw.stub.SubmitBatch(_submit(["a", "b", "c", "d"], "tencent"))
    original = await _until_ended(gw, batch.batch_id)
    assert (original.uncertain, original.accepted) == (2, 2)
    # The first recall call is processed but its answer lost: that recipient UNCERTAIN.
    sandbox.state.set_faults("tencent", [FaultRule(kind="error_500", api="recall", times=1)])
    recall = await _recalled(gw, batch.batch_id)
    assert (recall.total, recall.accepted, recall.failed, recall.uncertain) == (4, 1, 2, 1)
    outcomes = {o.recipient_id: o for o in await _outcomes(gw, recall.batch_id)}
    for recipient in ("a", "b"):
        assert (outcomes[recipient].state, outcomes[recipient].reason) == (
            FAILED,
            pb.FAILURE_REASON_NOT_RECALLABLE,
        )
        assert "UNCERTAIN" in outcomes[recipient].detail
    assert (outcomes["c"].state, outcomes["c"].vendor_code) == (UNSURE, "91000")
    assert outcomes["d"].state == ACCEPTED
    # Never sent again: each withdrawn once (c by the call whose answer was lost).
    assert sorted(w.recipient for w in sandbox.state.withdrawals("tencent")) == ["c", "d"]
    assert sandbox.state.stats("tencent").recall_calls_processed == 2


async def test_a_running_batch_is_cancelled_then_recalled(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway({"recipients_per_call": 50, "max_in_flight": 2})
    sandbox.state.set_faults("yunxin_v2", [FaultRule(kind="latency", api="send", delay_s=0.1)])
    recipients = [f"m{n}" for n in range(2000)]
    batch = await gw.stub.SubmitBatch(_submit(recipients, "yunxin_v2"))
    await asyncio.sleep(0.5)
    recall = await gw.stub.RecallBatch(pb.RecallBatchRequest(batch_id=batch.batch_id))
    original = await gw.stub.GetBatch(pb.GetBatchRequest(batch_id=batch.batch_id))
    assert original.state == pb.BATCH_STATE_CANCELLED
    assert 0 < original.accepted < len(recipients)
    assert original.recalled_by == recall.batch_id
    assert recall.total == original.accepted
    ended = await _until_ended(gw, recall.batch_id)
    assert ended.accepted == original.accepted
    delivered = sandbox.state.deliveries("yunxin_v2")
    withdrawn = sandbox.state.withdrawals("yunxin_v2")
    assert Counter(w.recipient for w in withdrawn) == Counter(d.recipient for d in delivered)
    assert max(d.time for d in delivered) <= min(w.time for w in withdrawn)


async def test_a_scheduled_batch_recalled_sends_nothing(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway()
    request = _submit(["a", "b"], "tencent")
    request.send_after.FromSeconds(int(time.time()) + 60)
    batch = await gw.stub.SubmitBatch(request)
    recall = await _recalled(gw, batch.batch_id)
    assert (recall.state, recall.total) == (pb.BATCH_STATE_DONE, 0)
    original = await gw.stub.GetBatch(pb.GetBatchRequest(batch_id=batch.batch_id))
    assert (original.state, original.failed) == (pb.BATCH_STATE_CANCELLED, 2)
    assert sandbox.state.stats("tencent").calls_received == 0


async def test_a_recall_request_id_is_the_recall_batchs_and_is_not_reused(
    start_gateway: StartGateway,
) -> None:
    gw = await start_gateway()
    first = await gw.stub.SubmitBatch(_submit(["a"], "tencent"))
    second = await gw.stub.SubmitBatch(_submit(["b"], "tencent"))
    for batch in (first, second):
        await _until_ended(gw, batch.batch_id)
    recall = await gw.stub.RecallBatch(
        pb.RecallBatchRequest(batch_id=first.batch_id, request_id="undo-1")
    )
    assert recall.request_id == "undo-1"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.RecallBatch(
            pb.RecallBatchRequest(batch_id=second.batch_id, request_id="undo-1")
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in (caught.value.details() or "") or caught.value.trailing_metadata()
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await gw.stub.RecallBatch(pb.RecallBatchRequest(batch_id="nope"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
