"""Batches as durable resources (CONTRACT.md §4): the RPCs, resume, idempotency, defects."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import grpc
import pytest

from imgate.sandbox import FaultRule, SandboxServer
from imgate.store.sqlite import SQLiteStore
from imgate.v1 import gateway_pb2 as pb
from tests.conftest import RunningGateway, StartGateway, text_request


def _ids(count: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}{n:05d}" for n in range(count)]


def _submit(
    recipients: list[str], backend: str = "tencent", **fields: object
) -> pb.SubmitBatchRequest:
    return pb.SubmitBatchRequest.FromString(
        text_request(recipients, backend, **fields).SerializeToString()  # type: ignore[arg-type]
    )


async def _watch(
    gateway: RunningGateway, batch_id: str, cursor: str = ""
) -> tuple[list[pb.WatchBatchResponse], list[pb.RecipientOutcome]]:
    request = pb.WatchBatchRequest(batch_id=batch_id, cursor=cursor)
    messages = [m async for m in gateway.stub.WatchBatch(request, timeout=60)]
    return messages, [o for m in messages for o in m.outcomes]


async def test_submit_then_watch_get_and_list(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway({"recipients_per_call": 50})
    recipients = [*_ids(480), "ghost1", "user00003"]
    batch = await gateway.stub.SubmitBatch(_submit(recipients))
    assert batch.batch_id
    assert batch.state in (pb.BATCH_STATE_QUEUED, pb.BATCH_STATE_RUNNING)
    assert batch.total == 481
    messages, outcomes = await _watch(gateway, batch.batch_id)
    assert sorted(o.recipient_id for o in outcomes) == sorted(set(recipients))
    assert messages[-1].HasField("summary")
    assert not any(m.HasField("summary") for m in messages[:-1])
    summary = messages[-1].summary
    assert (summary.total, summary.accepted, summary.failed) == (481, 480, 1)
    assert summary.duplicates_removed == 1
    assert all(m.cursor for m in messages)
    done = await gateway.stub.GetBatch(pb.GetBatchRequest(batch_id=batch.batch_id))
    assert done.state == pb.BATCH_STATE_DONE
    assert (done.accepted, done.failed, done.uncertain, done.pending) == (480, 1, 0, 0)
    assert done.summary == summary
    delivered = [d.recipient for d in sandbox.state.deliveries("tencent")]
    assert sorted(delivered) == _ids(480)

    for _ in range(4):
        await gateway.stub.SubmitBatch(_submit(["a"], "yunxin_v2"))
    first = await gateway.stub.ListBatches(pb.ListBatchesRequest(page_size=3))
    assert len(first.batches) == 3
    assert first.next_page_token
    rest = await gateway.stub.ListBatches(
        pb.ListBatchesRequest(page_size=3, page_token=first.next_page_token)
    )
    listed = [b.batch_id for b in [*first.batches, *rest.batches]]
    assert len(listed) == len(set(listed)) == 5
    assert listed[-1] == batch.batch_id  # newest first: the first one submitted is last
    assert not rest.next_page_token


async def test_unknown_batch_is_not_found(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    for call in (
        gateway.stub.GetBatch(pb.GetBatchRequest(batch_id="nope")),
        gateway.stub.CancelBatch(pb.CancelBatchRequest(batch_id="nope")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _watch(gateway, "x" * 100_000)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(error.value.details() or "") < 200  # the id is not echoed whole


@pytest.mark.parametrize(
    "request_id", ["r" * 129, "has space", "new\nline", "tab\tid", "nul\x00id"]
)
async def test_bad_request_ids_are_refused(
    request_id: str, sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.stub.SubmitBatch(_submit(["a"], request_id=request_id))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in (error.value.details() or "")
    assert sandbox.state.stats("tencent").calls_received == 0


async def test_watch_resumes_from_any_cursor_exactly_once_in_order(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway({"recipients_per_call": 20, "max_in_flight": 2})
    sandbox.state.set_faults("yunxin_v2", [FaultRule(kind="latency", delay_s=0.01)])
    recipients = _ids(2000)
    batch = await gateway.stub.SubmitBatch(_submit(recipients, "yunxin_v2"))
    rng = random.Random(7)
    collected: list[pb.RecipientOutcome] = []
    cursor = ""
    summary = None
    reconnects = 0
    while summary is None:
        # Read a few messages, then drop the stream: a client that keeps disconnecting.
        call = gateway.stub.WatchBatch(pb.WatchBatchRequest(batch_id=batch.batch_id, cursor=cursor))
        budget = rng.randint(1, 4)
        async for message in call:
            collected.extend(message.outcomes)
            cursor = message.cursor
            if message.HasField("summary"):
                summary = message.summary
                break
            budget -= 1
            if budget == 0:
                call.cancel()
                reconnects += 1
                break
        await asyncio.sleep(rng.random() * 0.05)
    assert reconnects >= 3
    _, whole = await _watch(gateway, batch.batch_id)
    assert [o.recipient_id for o in collected] == [o.recipient_id for o in whole]
    assert sorted(o.recipient_id for o in collected) == recipients
    assert summary.accepted == 2000


async def test_bad_cursor_is_invalid(start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    batch = await gateway.stub.SubmitBatch(_submit(["a"]))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await _watch(gateway, batch.batch_id, cursor="abc")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_cancel_batch(sandbox: SandboxServer, start_gateway: StartGateway) -> None:
    gateway = await start_gateway({"recipients_per_call": 10, "max_in_flight": 2})
    sandbox.state.set_faults("tencent", [FaultRule(kind="latency", delay_s=0.1)])
    batch = await gateway.stub.SubmitBatch(_submit(_ids(1000)))
    await asyncio.sleep(0.35)
    cancelling = await gateway.stub.CancelBatch(pb.CancelBatchRequest(batch_id=batch.batch_id))
    assert cancelling.state in (pb.BATCH_STATE_CANCELLING, pb.BATCH_STATE_CANCELLED)
    _, outcomes = await _watch(gateway, batch.batch_id)
    calls = sandbox.state.stats("tencent").calls_received
    assert sorted(o.recipient_id for o in outcomes) == _ids(1000)
    delivered = {d.recipient for d in sandbox.state.deliveries("tencent")}
    accepted = {o.recipient_id for o in outcomes if o.state == pb.DELIVERY_STATE_ACCEPTED}
    not_sent = {o.recipient_id for o in outcomes if o.reason == pb.FAILURE_REASON_NOT_ATTEMPTED}
    assert accepted == delivered  # calls in flight ended with their real outcome
    assert len(not_sent) >= 800
    assert not not_sent & delivered
    ended = await gateway.stub.GetBatch(pb.GetBatchRequest(batch_id=batch.batch_id))
    assert ended.state == pb.BATCH_STATE_CANCELLED
    assert ended.pending == 0
    again = await gateway.stub.CancelBatch(pb.CancelBatchRequest(batch_id=batch.batch_id))
    assert again.state == pb.BATCH_STATE_CANCELLED
    assert (again.accepted, again.failed) == (ended.accepted, ended.failed)
    await asyncio.sleep(0.3)
    assert sandbox.state.stats("tencent").calls_received == calls


async def test_submit_is_idempotent_and_batch_send_attaches(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway({"recipients_per_call": 10})
    request = _submit(_ids(100), "yunxin_v2", request_id="rid-1")
    first = await gateway.stub.SubmitBatch(request)
    second = await gateway.stub.SubmitBatch(request)
    assert first.batch_id == second.batch_id
    # BatchSend with the same payload and id is the same batch: it attaches.
    same = text_request(_ids(100), "yunxin_v2", request_id="rid-1")
    messages, outcomes, summary = await gateway.send(same)
    assert messages[0].batch_id == first.batch_id
    assert sorted(o.recipient_id for o in outcomes) == _ids(100)
    assert summary.accepted == 100
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.stub.SubmitBatch(
            _submit(_ids(100), "yunxin_v2", request_id="rid-1", text="x")
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in (error.value.details() or "")
    assert sandbox.state.stats("yunxin_v2").calls_received == 10
    assert sandbox.state.stats("yunxin_v2").duplicate_deliveries == 0


async def test_send_before_in_the_past_sends_nothing(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway()
    request = _submit(_ids(30))
    request.send_before.FromSeconds(int(time.time()) - 10)
    batch = await gateway.stub.SubmitBatch(request)
    _, outcomes = await _watch(gateway, batch.batch_id)
    assert {(o.state, o.reason) for o in outcomes} == {
        (pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_NOT_ATTEMPTED)
    }
    assert sandbox.state.stats("tencent").calls_received == 0


async def test_retention_purges_ended_batches(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(batch_retention_s=0.5)
    batch = await gateway.stub.SubmitBatch(_submit(["a"], request_id="short-lived"))
    await _watch(gateway, batch.batch_id)
    code = grpc.StatusCode.OK
    for _ in range(50):
        await asyncio.sleep(0.1)
        try:
            await gateway.stub.GetBatch(pb.GetBatchRequest(batch_id=batch.batch_id))
        except grpc.aio.AioRpcError as error:
            code = error.code()
            break
    assert code == grpc.StatusCode.NOT_FOUND, "the ended batch was never purged"


# -- defects fixed with the batch pipeline (each failed before) --------------------------


async def test_cancel_during_quota_wait_does_not_leak_the_slot(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    # With a limit of 1, a batch cancelled while it waited for quota used to keep the slot
    # for ever: the backend never sent again.
    gateway = await start_gateway(
        {"recipients_per_call": 1, "call_limit": 1, "call_window_s": 0.5, "max_in_flight": 1}
    )
    call = gateway.stub.BatchSend(text_request(_ids(5), "tencent"), timeout=30)
    async for message in call:
        if message.outcomes:
            break
    call.cancel()  # the second chunk is waiting for quota now
    await asyncio.sleep(1.5)
    _, outcomes, _ = await gateway.send(text_request(["after"], "tencent"), timeout=5)
    assert [o.state for o in outcomes] == [pb.DELIVERY_STATE_ACCEPTED]


async def test_deadline_while_waiting_for_a_permit_gives_every_outcome(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    # A caller whose deadline passed while waiting for an in-flight permit got
    # DEADLINE_EXCEEDED with 0 of 1,000 outcomes although nothing had been sent.
    gateway = await start_gateway({"max_in_flight": 1, "request_timeout_s": 5.0})
    sandbox.state.set_faults("tencent", [FaultRule(kind="latency", delay_s=3.0, times=1)])
    blocker = asyncio.create_task(gateway.send(text_request(["slow"], "tencent"), timeout=10))
    await asyncio.sleep(0.3)
    _, outcomes, summary = await gateway.send(text_request(_ids(1000), "tencent"), timeout=1.0)
    assert len(outcomes) == summary.total == 1000
    assert {(o.state, o.reason) for o in outcomes} == {
        (pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_NOT_ATTEMPTED)
    }
    await blocker


async def test_no_call_starts_after_shutdown_began(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    # Waiting for a permit ignored shutdown: calls started after SIGTERM.
    gateway = await start_gateway({"max_in_flight": 1, "recipients_per_call": 10})
    sandbox.state.set_faults("tencent", [FaultRule(kind="latency", delay_s=2.0)])
    first = asyncio.create_task(gateway.send(text_request(_ids(10, "a"), "tencent")))
    second = asyncio.create_task(gateway.send(text_request(_ids(100, "b"), "tencent")))
    # One call in flight (its answer 2 s away), the other batch waiting for the permit:
    # waited for, not slept for (a loaded machine took longer than a fixed 0.2 s).
    deadline = time.monotonic() + 20
    while sandbox.state.stats("tencent").calls_received < 1:
        assert time.monotonic() < deadline, "no call started"
        await asyncio.sleep(0.01)
    await gateway.gateway.stop(grace_s=5)
    results = await asyncio.gather(first, second, return_exceptions=True)
    # Whichever batch got the one permit finished that call; nothing else was sent. A
    # one-call send still waiting for its permit was not stored yet: it is refused
    # UNAVAILABLE (nothing stored, a retry is safe); a stored one ends NOT_ATTEMPTED.
    outcomes = []
    for result in results:
        if isinstance(result, grpc.aio.AioRpcError):
            assert result.code() == grpc.StatusCode.UNAVAILABLE
            continue
        assert not isinstance(result, BaseException), result
        outcomes += result[1]
    assert len(outcomes) in (100, 110)
    accepted = [o for o in outcomes if o.state == pb.DELIVERY_STATE_ACCEPTED]
    assert len(accepted) == 10
    assert {o.reason for o in outcomes if o not in accepted} == {pb.FAILURE_REASON_NOT_ATTEMPTED}
    assert sandbox.state.stats("tencent").calls_received == 1


async def test_calls_outlasting_the_grace_end_uncertain_not_cut(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    # In-flight calls outlasting shutdown_grace_s cut the streams with UNAVAILABLE and no
    # outcome, though the vendor had delivered. A bound batch now ends with every outcome.
    gateway = await start_gateway({"max_in_flight": 2, "recipients_per_call": 10})
    sandbox.state.set_faults("tencent", [FaultRule(kind="hang", delay_s=5.0)])
    call = asyncio.create_task(gateway.send(text_request(_ids(100), "tencent"), timeout=30))
    await asyncio.sleep(0.3)
    await gateway.gateway.stop(grace_s=0.3)
    _, outcomes, summary = await call
    assert len(outcomes) == 100
    uncertain = {o.recipient_id for o in outcomes if o.state == pb.DELIVERY_STATE_UNCERTAIN}
    delivered = {d.recipient for d in sandbox.state.deliveries("tencent")}
    assert delivered <= uncertain
    assert len(uncertain) == 20  # the two calls in flight
    assert summary.failed == 80


async def test_durable_batch_survives_a_stop_and_resumes(
    tmp_path: Path, sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    # Rule 12: with a durable store, a request_id batch is not ended by a shutdown: its
    # stream ends UNAVAILABLE, the next start resumes it, in-flight chunks UNCERTAIN.
    db = tmp_path / "imgate.db"
    overrides = {"max_in_flight": 2, "recipients_per_call": 10}
    gateway = await start_gateway(overrides, store=SQLiteStore(db))
    sandbox.state.set_faults("tencent", [FaultRule(kind="hang", delay_s=2.0, times=2)])
    request = text_request(_ids(200), "tencent", request_id="durable-1")
    call = asyncio.create_task(gateway.send(request, timeout=30))
    await asyncio.sleep(0.3)
    await gateway.gateway.stop(grace_s=0.2)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    restarted = await start_gateway(overrides, store=SQLiteStore(db))
    _, outcomes, summary = await restarted.send(request, timeout=30)
    assert sorted(o.recipient_id for o in outcomes) == _ids(200)
    uncertain = {o.recipient_id for o in outcomes if o.state == pb.DELIVERY_STATE_UNCERTAIN}
    assert len(uncertain) == 20  # the two hung calls: never resent
    assert summary.accepted == 180
    delivered = [d.recipient for d in sandbox.state.deliveries("tencent")]
    assert len(delivered) == len(set(delivered)) == 200


async def test_a_thousand_retries_over_a_day_and_restarts_send_once(
    tmp_path: Path, sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    now = [1_000_000.0]

    def clock() -> float:
        return now[0]

    db = tmp_path / "imgate.db"
    request = text_request(_ids(20), "yunxin_v2", request_id="daily-1")
    gateway = await start_gateway(store=SQLiteStore(db, clock=clock), clock=clock)
    batch_ids = set()
    for attempt in range(1000):
        now[0] += 86_400 / 1000  # a day's worth of retries
        if attempt and attempt % 250 == 0:
            await gateway.gateway.stop(grace_s=0.5)
            gateway = await start_gateway(store=SQLiteStore(db, clock=clock), clock=clock)
        messages, outcomes, _ = await gateway.send(request, timeout=10)
        batch_ids.add(messages[0].batch_id)
        assert len(outcomes) == 20
    assert len(batch_ids) == 1
    assert sandbox.state.stats("yunxin_v2").calls_received == 1
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.send(text_request(_ids(21), "yunxin_v2", request_id="daily-1"))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_new_batch_goes_from_its_creation_to_its_first_call_in_one_commit(
    sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    # Issue 15: between storing a new batch and its first vendor call the run neither
    # commits its state again nor reads back the recipients its creator holds.
    from imgate.store.memory import MemoryStore

    seen: list[str] = []

    class Recording(MemoryStore):
        pass

    for name in ("create_batch", "set_state", "chunks", "read_recipients", "write_ahead"):
        original = getattr(MemoryStore, name)

        def recorded(self: MemoryStore, *args: object, _o=original, _n=name, **kw: object):  # type: ignore[no-untyped-def]
            seen.append(_n)
            return _o(self, *args, **kw)

        setattr(Recording, name, recorded)
    gateway = await start_gateway(store=Recording())
    # More than one recipient page (10,000), within Tencent's 12,000 a minute.
    batch = await gateway.stub.SubmitBatch(_submit(_ids(10_500)))
    assert batch.state == pb.BATCH_STATE_RUNNING
    _, outcomes = await _watch(gateway, batch.batch_id)
    assert len(outcomes) == 10_500
    assert seen[:2] == ["create_batch", "write_ahead"]
    # Past the first page the run reads the store as before: memory stays flat.
    assert "read_recipients" in seen
    assert "set_state" in seen  # the end (DONE) is still committed


@pytest.mark.parametrize("steps_before_cancel", [0, 1, 2, 3])
async def test_a_watch_wait_never_swallows_its_cancel(steps_before_cancel: int) -> None:
    # Python 3.11's asyncio.wait_for returns normally when its task is cancelled just
    # after the awaited event was set: a cancelled BatchSend's stream then went on, and
    # its bound batch kept sending (seen about one run in four on SQLite; issue 15).
    from imgate.pipeline.watch import woken

    event = asyncio.Event()
    rounds = 0

    async def watcher() -> None:
        nonlocal rounds
        while True:
            await woken(event, 5.0)
            event.clear()  # as the watch loop does: it waits on a new event each round
            rounds += 1

    task = asyncio.create_task(watcher())
    for _ in range(3):
        await asyncio.sleep(0)
    event.set()
    for _ in range(steps_before_cancel):
        await asyncio.sleep(0)
    task.cancel()
    for _ in range(10):
        await asyncio.sleep(0)
    assert task.cancelled(), "the cancel was swallowed"
