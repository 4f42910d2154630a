"""The blocking and asyncio clients are one API: same methods, same signatures, every RPC.

The static tests need no server; the batch tests run both clients against a real gateway
(the fixtures of tests/conftest.py), the blocking one from a thread so that the gateway,
on the test's loop, keeps serving.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from imgate.sandbox import FaultRule, SandboxServer
from imgate.v1 import gateway_pb2
from imgate_client import (
    AsyncBatchStream,
    AsyncGatewayClient,
    BatchResult,
    BatchStream,
    GatewayClient,
    GatewayError,
    InvalidRequestError,
    text,
)
from imgate_client._methods import GatewayMethods
from imgate_client._rpc import StreamingRpc, UnaryRpc
from tests.conftest import StartGateway

# Every GatewayService RPC and the client method calling it: a new RPC fails
# test_every_rpc_has_a_method until it has a method in _methods.py and a line here.
RPC_METHODS = {
    "BatchSend": "batch_send",
    "ListBackends": "list_backends",
    "SubmitBatch": "submit_batch",
    "UploadRecipients": "upload_recipients",
    "WatchBatch": "watch_batch",
    "GetBatch": "get_batch",
    "ListBatches": "list_batches",
    "CancelBatch": "cancel_batch",
    "RecallBatch": "recall_batch",
}
STREAMS = {"batch_send", "watch_batch"}
SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]


def _public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def test_both_clients_have_the_same_public_methods() -> None:
    assert _public(GatewayClient) == _public(AsyncGatewayClient)
    assert _public(GatewayClient) == {*RPC_METHODS.values(), "close"}
    assert hasattr(GatewayClient, "__enter__")
    assert hasattr(GatewayClient, "__exit__")
    assert hasattr(AsyncGatewayClient, "__aenter__")
    assert hasattr(AsyncGatewayClient, "__aexit__")


async def test_same_signatures_sync_values_async_awaitables() -> None:
    sync = GatewayClient("127.0.0.1:1")
    async_ = AsyncGatewayClient("127.0.0.1:1")
    try:
        assert inspect.signature(GatewayClient) == inspect.signature(AsyncGatewayClient)
        for name in sorted(_public(GatewayClient)):
            blocking, awaited = getattr(sync, name), getattr(async_, name)
            sync_signature = inspect.signature(blocking)
            async_signature = inspect.signature(awaited)
            assert sync_signature.parameters == async_signature.parameters, name
            assert not inspect.iscoroutinefunction(blocking), name
            if name in STREAMS:
                assert sync_signature.return_annotation is BatchStream, name
                assert async_signature.return_annotation is AsyncBatchStream, name
                assert not inspect.iscoroutinefunction(awaited), name
            else:
                assert sync_signature.return_annotation == async_signature.return_annotation
                assert inspect.iscoroutinefunction(awaited), name
            assert blocking.__doc__, name
            assert blocking.__doc__ == awaited.__doc__, name
    finally:
        sync.close()
        await async_.close()


def test_every_rpc_has_a_method() -> None:
    assert {method.name for method in SERVICE.methods} == set(RPC_METHODS)
    for method in SERVICE.methods:
        definition = GatewayMethods.__dict__[RPC_METHODS[method.name]]
        assert definition.rpc == method.name
        if method.server_streaming:
            assert isinstance(definition, StreamingRpc), method.name
        else:
            assert isinstance(definition, UnaryRpc), method.name
            assert definition.response.DESCRIPTOR is method.output_type, method.name


def test_the_blocking_client_refuses_an_async_iterable() -> None:
    async def ids() -> AsyncIterator[str]:
        yield "alice"

    with GatewayClient("127.0.0.1:1") as client, pytest.raises(TypeError, match="Async"):
        client.upload_recipients(ids())


class _Face:
    """Calls either client from the test's loop: the blocking one in a thread."""

    def __init__(self, client: GatewayClient | AsyncGatewayClient) -> None:
        self.client = client

    async def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.client, name)
        if isinstance(self.client, AsyncGatewayClient):
            return await method(*args, **kwargs)
        return await asyncio.to_thread(method, *args, **kwargs)

    async def watch(self, batch_id: str) -> BatchResult:
        if isinstance(self.client, AsyncGatewayClient):
            return await self.client.watch_batch(batch_id, timeout=60).collect()
        stream = self.client.watch_batch(batch_id, timeout=60)
        return await asyncio.to_thread(stream.collect)


def _client(flavour: str, target: str) -> GatewayClient | AsyncGatewayClient:
    return GatewayClient(target) if flavour == "sync" else AsyncGatewayClient(target)


async def _close(client: GatewayClient | AsyncGatewayClient) -> None:
    if isinstance(client, AsyncGatewayClient):
        await client.close()
    else:
        client.close()


def _ids(count: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}{n:05d}" for n in range(count)]


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_get_list_and_cancel_a_batch(
    flavour: str, sandbox: SandboxServer, start_gateway: StartGateway
) -> None:
    # One call at a time, 0.1 s each: 20 calls, far longer than the test needs to cancel.
    gateway = await start_gateway({"recipients_per_call": 10, "max_in_flight": 1})
    sandbox.state.set_faults("tencent", [FaultRule(kind="latency", delay_s=0.1)])
    client = _client(flavour, gateway.target)
    face = _Face(client)
    try:
        batch = await face(
            "submit_batch", _ids(200), text("hello"), backend="tencent", sender_id="imgate_sender"
        )
        got = await face("get_batch", batch.batch_id, timeout=10)
        assert (got.batch_id, got.total, got.backend) == (batch.batch_id, 200, "tencent")
        assert got.state in (gateway_pb2.BATCH_STATE_QUEUED, gateway_pb2.BATCH_STATE_RUNNING)
        page = await face("list_batches", page_size=10)
        assert [b.batch_id for b in page.batches] == [batch.batch_id]
        assert page.next_page_token == ""
        cancelling = await face("cancel_batch", batch.batch_id)
        assert cancelling.state in (
            gateway_pb2.BATCH_STATE_CANCELLING,
            gateway_pb2.BATCH_STATE_CANCELLED,
        )
        result = await face.watch(batch.batch_id)
        assert sorted(o.recipient_id for o in result.outcomes) == _ids(200)
        not_sent = [
            o for o in result.outcomes if o.reason == gateway_pb2.FAILURE_REASON_NOT_ATTEMPTED
        ]
        assert len(not_sent) >= 100
        ended = await face("get_batch", batch.batch_id)
        assert (ended.state, ended.pending) == (gateway_pb2.BATCH_STATE_CANCELLED, 0)
        assert ended.summary == result.summary
    finally:
        await _close(client)


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_list_pages_and_batch_errors(flavour: str, start_gateway: StartGateway) -> None:
    gateway = await start_gateway()
    client = _client(flavour, gateway.target)
    face = _Face(client)
    try:
        submitted = [
            await face("submit_batch", [f"user{n}"], text("hi"), sender_id="imgate_sender")
            for n in range(3)
        ]
        first = await face("list_batches", page_size=2)
        assert first.next_page_token
        second = await face("list_batches", page_size=2, page_token=first.next_page_token)
        assert second.next_page_token == ""
        listed = [b.batch_id for b in [*first.batches, *second.batches]]
        assert listed == [b.batch_id for b in reversed(submitted)]  # newest first
        with pytest.raises(GatewayError) as missing:
            await face("get_batch", "no-such-batch")
        assert missing.value.code is grpc.StatusCode.NOT_FOUND
        with pytest.raises(GatewayError) as not_cancelled:
            await face("cancel_batch", "no-such-batch")
        assert not_cancelled.value.code is grpc.StatusCode.NOT_FOUND
        with pytest.raises(InvalidRequestError) as invalid:
            await face("list_batches", page_size=-1)
        assert invalid.value.violations[0].field == "page_size"
    finally:
        await _close(client)
