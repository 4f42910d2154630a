"""The Python client (sync and asyncio) against the fake gateway in conftest."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

import imgate_client
from imgate.v1 import gateway_pb2
from imgate_client import (
    ACCEPTED,
    FAILED,
    UNCERTAIN,
    AsyncGatewayClient,
    FieldViolation,
    GatewayClient,
    GatewayError,
    InvalidRequestError,
    custom,
    reason_name,
    state_name,
    text,
)

from .conftest import ELAPSED_MS, FakeServer

RECIPIENTS = ["alice", "ghost1", "bob", "alice", "slow1"]


def _check_outcomes(outcomes: list[gateway_pb2.RecipientOutcome]) -> None:
    # Five ids with one duplicate: four outcomes, streamed over two responses.
    assert [(o.recipient_id, o.index, o.state) for o in outcomes] == [
        ("alice", 0, ACCEPTED),
        ("ghost1", 1, FAILED),
        ("bob", 2, ACCEPTED),
        ("slow1", 4, UNCERTAIN),
    ]


def _check_summary(summary: gateway_pb2.BatchSummary) -> None:
    assert (summary.total, summary.accepted, summary.failed, summary.uncertain) == (4, 2, 1, 1)
    assert summary.duplicates_removed == 1
    assert summary.elapsed_ms == ELAPSED_MS


async def test_async_client_streams_every_outcome_then_the_summary(
    fake_server: FakeServer,
) -> None:
    async with AsyncGatewayClient(fake_server.target) as client:
        stream = client.batch_send(
            iter(RECIPIENTS),
            text("hi", extension={"k": "v"}),
            backend="tencent",
            sender_id="ops",
            request_id="req-1",
            options=gateway_pb2.SendOptions(push_title="title", push_enabled=True),
            push_enabled=False,
            metadata=[("x-team", "growth")],
            timeout=5,
        )
        with pytest.raises(RuntimeError, match="exhausted"):
            _ = stream.summary
        outcomes = [outcome async for outcome in stream]

    _check_outcomes(outcomes)
    _check_summary(stream.summary)
    request = fake_server.gateway.requests[0]
    assert list(request.recipient_ids) == RECIPIENTS
    assert (request.backend, request.sender_id, request.request_id) == ("tencent", "ops", "req-1")
    assert request.message.text.text == "hi"
    assert json.loads(request.message.extension) == {"k": "v"}
    # Keyword options win over the options object; fields given nowhere stay unset.
    assert request.options.push_enabled is False
    assert request.options.HasField("push_enabled")
    assert request.options.push_title == "title"
    assert not request.options.HasField("offline_enabled")
    assert fake_server.gateway.metadata[0]["x-team"] == "growth"


def test_sync_client_streams_every_outcome_then_the_summary(fake_server: FakeServer) -> None:
    with GatewayClient(fake_server.target) as client:
        stream = client.batch_send(RECIPIENTS, text("hi"), sender_id="ops")
        outcomes = list(stream)
        _check_outcomes(outcomes)
        _check_summary(stream.summary)

        result = client.batch_send(["carol"], custom({"kind": "ping"}, sub_type=3)).collect()

    assert [o.recipient_id for o in result.outcomes] == ["carol"]
    assert result.summary.total == 1
    sent = fake_server.gateway.requests[1].message
    assert json.loads(sent.custom.data) == {"kind": "ping"}
    assert sent.custom.sub_type == 3
    # Without options, the request carries none: every vendor default applies.
    assert not fake_server.gateway.requests[1].HasField("options")


async def test_summary_may_come_alone_in_the_last_response(fake_server: FakeServer) -> None:
    fake_server.gateway.outcomes_per_response = 100
    async with AsyncGatewayClient(fake_server.target) as client:
        result = await client.batch_send(RECIPIENTS, text("hi")).collect()
    _check_outcomes(list(result.outcomes))
    _check_summary(result.summary)


async def test_invalid_request_exposes_field_violations(fake_server: FakeServer) -> None:
    async with AsyncGatewayClient(fake_server.target) as client:
        with pytest.raises(InvalidRequestError) as raised:
            await client.batch_send([], gateway_pb2.Message()).collect()
    error = raised.value
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details == "invalid request"
    assert error.violations == (
        FieldViolation("recipient_ids", "must not be empty"),
        FieldViolation("message", "must have content"),
    )
    assert "recipient_ids: must not be empty" in str(error)


def test_sync_invalid_request_exposes_field_violations(fake_server: FakeServer) -> None:
    with GatewayClient(fake_server.target) as client, pytest.raises(InvalidRequestError) as raised:
        list(client.batch_send([], text("hi")))
    assert raised.value.violations == (("recipient_ids", "must not be empty"),)


async def _collect_ids(flavour: str, target: str, received: list[str]) -> None:
    recipients = ["alice", "bob", "crash"]
    if flavour == "sync":
        with GatewayClient(target) as client:
            received.extend(o.recipient_id for o in client.batch_send(recipients, text("hi")))
    else:
        async with AsyncGatewayClient(target) as aclient:
            async for outcome in aclient.batch_send(recipients, text("hi")):
                received.append(outcome.recipient_id)


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_failure_mid_stream_raises_after_the_outcomes_received(
    fake_server: FakeServer, flavour: str
) -> None:
    received: list[str] = []
    with pytest.raises(GatewayError) as raised:
        await _collect_ids(flavour, fake_server.target, received)
    assert not isinstance(raised.value, InvalidRequestError)
    assert raised.value.code is grpc.StatusCode.INTERNAL
    assert raised.value.details == "vendor session lost"
    assert received == ["alice", "bob"]


def test_a_stream_without_summary_is_an_error(fake_server: FakeServer) -> None:
    fake_server.gateway.send_summary = False
    with GatewayClient(fake_server.target) as client:
        stream = client.batch_send(["alice"], text("hi"))
        with pytest.raises(GatewayError, match="without a summary"):
            list(stream)
        with pytest.raises(RuntimeError):
            _ = stream.summary


async def test_leaving_the_stream_early_cancels_the_call(fake_server: FakeServer) -> None:
    fake_server.gateway.pause_between_responses_s = 5
    async with AsyncGatewayClient(fake_server.target) as client:
        async with client.batch_send(["alice", "bob", "carol"], text("hi")) as stream:
            first = await anext(stream)
        assert first.recipient_id == "alice"
        assert stream.finished is False
        # The server sees the cancellation while the client channel is still open.
        assert fake_server.gateway.cancelled.wait(timeout=3)


async def test_iterating_after_cancel_raises_cancelled(fake_server: FakeServer) -> None:
    fake_server.gateway.pause_between_responses_s = 5
    async with AsyncGatewayClient(fake_server.target) as client:
        stream = client.batch_send(["alice", "bob", "carol"], text("hi"))
        await anext(stream)
        stream.cancel()
        with pytest.raises(GatewayError) as raised:
            await stream.collect()
    assert raised.value.code is grpc.StatusCode.CANCELLED
    assert stream.finished

    with GatewayClient(fake_server.target) as sync_client:
        sync_stream = sync_client.batch_send(["alice", "bob", "carol"], text("hi"))
        next(sync_stream)
        sync_stream.cancel()
        with pytest.raises(GatewayError) as raised:
            sync_stream.collect()
    assert raised.value.code is grpc.StatusCode.CANCELLED


async def test_list_backends(fake_server: FakeServer) -> None:
    async with AsyncGatewayClient(fake_server.target) as client:
        backends = await client.list_backends(timeout=5)
    assert backends.default_backend == "tencent"
    assert [b.name for b in backends.backends] == ["tencent"]
    assert imgate_client.backend_state_name(backends.backends[0].state) == "SERVING"
    with GatewayClient(fake_server.target) as sync_client:
        assert sync_client.list_backends().backends[0].limits.recipients_per_call == 500


def test_unreachable_target_raises_gateway_error(unused_target: str) -> None:
    with GatewayClient(unused_target) as client, pytest.raises(GatewayError) as raised:
        client.list_backends(timeout=2)
    assert raised.value.code in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def test_a_single_string_is_not_taken_for_recipients() -> None:
    with GatewayClient("127.0.0.1:1") as client, pytest.raises(TypeError, match="single string"):
        client.batch_send("alice", text("hi"))


def test_enum_short_names() -> None:
    assert state_name(ACCEPTED) == "ACCEPTED"
    assert reason_name(gateway_pb2.FAILURE_REASON_RECIPIENT_NOT_FOUND) == "RECIPIENT_NOT_FOUND"
    assert reason_name(gateway_pb2.FAILURE_REASON_UNSPECIFIED) == "UNSPECIFIED"
    # A value added to the API after this client was built still prints.
    assert state_name(99) == "99"


def test_content_helpers_carry_thumbnails_and_renditions() -> None:
    from imgate_client._content import image, video

    thumb = gateway_pb2.ImageVariant(url="https://x.example/t.jpg", width=4, height=3)
    assert video("https://x.example/v.mp4", thumbnail=thumb).video.thumbnail == thumb
    message = image("https://x.example/a.png", width=8, height=6, large=thumb, thumbnail=thumb)
    assert message.image.large == thumb
    assert message.image.thumbnail == thumb
    assert not image("https://x.example/a.png").image.HasField("thumbnail")


def test_upload_pages_are_built_lazily_as_the_stream_asks() -> None:
    from imgate_client._request import upload_pages

    consumed = 0

    def ids() -> Iterator[str]:
        nonlocal consumed
        for n in range(25_000):
            consumed += 1
            yield f"u{n}"

    pages = upload_pages(ids(), 10_000, "rid")
    first = next(pages)
    assert consumed == 10_000  # one page read, not the whole source
    assert (first.request_id, len(first.recipient_ids)) == ("rid", 10_000)
    rest = list(pages)
    assert [len(p.recipient_ids) for p in rest] == [10_000, 5_000]
    assert all(not p.request_id for p in rest)  # the first message only
    empty = list(upload_pages([], 10, ""))
    assert len(empty) == 1  # an empty source still reaches the gateway, which refuses it
    assert not empty[0].recipient_ids


def test_sync_upload_from_a_path_and_submit_the_list(
    fake_server: FakeServer, tmp_path: pytest.TempPathFactory
) -> None:
    path = tmp_path / "ids.txt"  # type: ignore[operator]
    path.write_text("\ufeffalice\n\n  bob \nalice\n" + "".join(f"u{n}\n" for n in range(5)))
    with GatewayClient(fake_server.target) as client:
        uploaded = client.upload_recipients(path, page_size=3)
        assert (uploaded.count, uploaded.duplicates_removed) == (7, 1)
        batch = client.submit_batch(uploaded, text("hi"), backend="tencent", send_before=2e9)
        assert batch.total == 7
        result = client.watch_batch(batch.batch_id).collect()
    assert fake_server.gateway.upload_pages == [[3, 3, 2]]
    submitted = fake_server.gateway.submitted[0]
    assert submitted.recipient_list == uploaded.recipient_list
    assert not submitted.recipient_ids
    assert submitted.send_before.seconds == 2_000_000_000
    assert [o.recipient_id for o in result.outcomes][:2] == ["alice", "bob"]
    assert result.summary.duplicates_removed == 1


async def test_async_upload_from_an_async_iterable_and_a_file(
    fake_server: FakeServer, tmp_path: pytest.TempPathFactory
) -> None:
    async def ids() -> AsyncIterator[str]:
        for n in range(5):
            yield f"u{n}"

    path = tmp_path / "ids.txt"  # type: ignore[operator]
    path.write_text("a\nb\n")
    async with AsyncGatewayClient(fake_server.target) as client:
        from_async = await client.upload_recipients(ids(), page_size=2)
        with open(path, encoding="utf-8") as file:  # noqa: ASYNC230 - two short lines
            from_file = await client.upload_recipients(file)
        batch = await client.submit_batch([], text("hi"), recipient_list=from_async.recipient_list)
        result = await client.watch_batch(batch.batch_id).collect()
    assert (from_async.count, from_file.count) == (5, 2)
    assert fake_server.gateway.upload_pages == [[2, 2, 1], [2]]
    assert [o.recipient_id for o in result.outcomes] == [f"u{n}" for n in range(5)]


def test_a_list_and_recipient_list_together_are_refused(fake_server: FakeServer) -> None:
    with GatewayClient(fake_server.target) as client, pytest.raises(TypeError):
        client.submit_batch(
            gateway_pb2.RecipientList(recipient_list="a"), text("hi"), recipient_list="b"
        )
