"""Scheduled sends (CONTRACT §9 rule 26) through a gateway in this process: a batch with a
future send_after waits SCHEDULED and sends nothing until then, then everything once; the
time window is validated; cancel sends nothing; GetBatch and ListBatches show it. Across
kill -9 and restarts: tests/test_lifecycle_processes.py."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imgate.sandbox import SandboxServer
from imgate.v1 import gateway_pb2 as pb
from tests.conftest import StartGateway, text_request


def _stamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _submit(
    recipients: list[str], backend: str = "tencent", **fields: object
) -> pb.SubmitBatchRequest:
    send = text_request(recipients, backend)
    request = pb.SubmitBatchRequest.FromString(send.SerializeToString())
    for name, value in fields.items():
        getattr(request, name).CopyFrom(value)
    return request


async def _until_state(stub: object, batch_id: str, state: int, within_s: float = 10) -> pb.Batch:
    deadline = time.monotonic() + within_s
    while True:
        batch = await stub.GetBatch(pb.GetBatchRequest(batch_id=batch_id))  # type: ignore[attr-defined]
        if batch.state == state or time.monotonic() > deadline:
            return batch
        await asyncio.sleep(0.05)


async def test_a_scheduled_batch_sends_nothing_before_its_time_then_everything_once(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway()
    recipients = [f"s{n}" for n in range(1200)]
    at = time.time() + 1.5
    batch = await gw.stub.SubmitBatch(_submit(recipients, send_after=_stamp(at)))
    assert batch.state == pb.BATCH_STATE_SCHEDULED
    assert abs(batch.send_after.ToNanoseconds() / 1e9 - at) < 1e-3
    listed = await gw.stub.ListBatches(pb.ListBatchesRequest())
    assert [(b.batch_id, b.state) for b in listed.batches] == [
        (batch.batch_id, pb.BATCH_STATE_SCHEDULED)
    ]
    await asyncio.sleep(1.0)
    assert sandbox.state.deliveries("tencent") == []
    done = await _until_state(gw.stub, batch.batch_id, pb.BATCH_STATE_DONE)
    assert (done.state, done.accepted) == (pb.BATCH_STATE_DONE, len(recipients))
    delivered = sandbox.state.deliveries("tencent")
    assert sorted(d.recipient for d in delivered) == sorted(recipients)
    first = min(d.time for d in delivered)
    assert at <= first < at + 2  # started within 2 s after its time
    assert done.HasField("send_after")


async def test_a_cancelled_scheduled_batch_sends_nothing(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway()
    batch = await gw.stub.SubmitBatch(
        _submit(["a", "b", "c"], send_after=_stamp(time.time() + 0.5))
    )
    cancelled = await gw.stub.CancelBatch(pb.CancelBatchRequest(batch_id=batch.batch_id))
    assert cancelled.state in (pb.BATCH_STATE_CANCELLING, pb.BATCH_STATE_CANCELLED)
    ended = await _until_state(gw.stub, batch.batch_id, pb.BATCH_STATE_CANCELLED)
    assert (ended.state, ended.failed, ended.pending) == (pb.BATCH_STATE_CANCELLED, 3, 0)
    outcomes = [
        o
        async for m in gw.stub.WatchBatch(pb.WatchBatchRequest(batch_id=batch.batch_id))
        for o in m.outcomes
    ]
    assert {(o.state, o.reason) for o in outcomes} == {
        (pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_NOT_ATTEMPTED)
    }
    await asyncio.sleep(1.0)  # past its time: still nothing
    assert sandbox.state.deliveries("tencent") == []


async def test_send_after_in_the_past_sends_at_once(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway()
    batch = await gw.stub.SubmitBatch(_submit(["a"], send_after=_stamp(time.time() - 60)))
    assert batch.state in (pb.BATCH_STATE_QUEUED, pb.BATCH_STATE_RUNNING)
    done = await _until_state(gw.stub, batch.batch_id, pb.BATCH_STATE_DONE)
    assert done.accepted == 1


@pytest.mark.parametrize(
    ("after_s", "before_s", "why"),
    [
        (31 * 86400, None, "max_schedule_ahead_s"),
        (60, 30, "before send_before"),
        (60, 60, "before send_before"),
    ],
)
async def test_a_time_outside_the_window_is_invalid_and_stores_nothing(
    start_gateway: StartGateway, after_s: float, before_s: float | None, why: str
) -> None:
    gw = await start_gateway()
    now = time.time()
    fields = {"send_after": _stamp(now + after_s)}
    if before_s is not None:
        fields["send_before"] = _stamp(now + before_s)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.SubmitBatch(_submit(["a"], **fields))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["send_after"]
    assert why in bad.field_violations[0].description
    assert (await gw.stub.ListBatches(pb.ListBatchesRequest())).batches == []


async def test_max_schedule_ahead_is_configurable(start_gateway: StartGateway) -> None:
    gw = await start_gateway(max_schedule_ahead_s=10.0)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.SubmitBatch(_submit(["a"], send_after=_stamp(time.time() + 20)))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    batch = await gw.stub.SubmitBatch(_submit(["a"], send_after=_stamp(time.time() + 5)))
    assert batch.state == pb.BATCH_STATE_SCHEDULED


async def test_scheduled_batches_run_in_time_order_and_a_submit_rearms_the_timer(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gw = await start_gateway()
    now = time.time()
    late = await gw.stub.SubmitBatch(_submit(["late"], send_after=_stamp(now + 20)))
    # Submitted after a later one: the timer is set earlier again.
    early = await gw.stub.SubmitBatch(_submit(["early"], send_after=_stamp(now + 0.5)))
    done = await _until_state(gw.stub, early.batch_id, pb.BATCH_STATE_DONE, within_s=5)
    assert done.state == pb.BATCH_STATE_DONE
    waiting = await gw.stub.GetBatch(pb.GetBatchRequest(batch_id=late.batch_id))
    assert waiting.state == pb.BATCH_STATE_SCHEDULED
    assert [d.recipient for d in sandbox.state.deliveries("tencent")] == ["early"]


async def test_a_retry_with_another_time_is_the_same_batch(start_gateway: StartGateway) -> None:
    # `imgate batch submit --at 10m --request-id X` run again names another time.
    gw = await start_gateway()
    first = _submit(["a"], send_after=_stamp(time.time() + 600))
    first.request_id = "at-retry"
    batch = await gw.stub.SubmitBatch(first)
    again = _submit(["a"], send_after=_stamp(time.time() + 900))
    again.request_id = "at-retry"
    same = await gw.stub.SubmitBatch(again)
    assert same.batch_id == batch.batch_id
    assert same.send_after == batch.send_after  # the first one's time
    other = _submit(["b"], send_after=_stamp(time.time() + 600))
    other.request_id = "at-retry"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.SubmitBatch(other)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
