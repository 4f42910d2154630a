"""A fake GatewayService on 127.0.0.1:0, served from its own thread and event loop.

The server runs on a thread of its own so that both the asyncio client (on the test's
loop) and the blocking client (which would stall a shared loop) can call it.

Recipients steer the fake: ``ghost*`` FAIL with RECIPIENT_NOT_FOUND, ``slow*`` end
UNCERTAIN with TIMEOUT, ``crash`` makes the stream fail with INTERNAL when its batch comes
up, and every other id is ACCEPTED. Empty recipients or a message without content are
refused with INVALID_ARGUMENT and google.rpc.BadRequest details, like the real gateway.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from imgate.v1 import gateway_pb2, gateway_pb2_grpc

ELAPSED_MS = 12

Response = TypeVar("Response", gateway_pb2.BatchSendResponse, gateway_pb2.WatchBatchResponse)

_Context = grpc.aio.ServicerContext[Any, Any]


class FakeGateway(gateway_pb2_grpc.GatewayServiceServicer):
    """Streams canned outcomes in batches and records what it was asked."""

    def __init__(self) -> None:
        self.outcomes_per_response = 2
        self.send_summary = True
        self.pause_between_responses_s = 0.0
        self.pause_between_pages_s = 0.0
        """UploadRecipients reads its pages this much apart (a slow upload, on purpose)."""
        self.requests: list[gateway_pb2.BatchSendRequest] = []
        self.metadata: list[dict[str, str | bytes]] = []
        self.cancelled = threading.Event()
        self.lists: dict[str, list[str]] = {}
        self.upload_pages: list[list[int]] = []
        """The page sizes of each UploadRecipients call."""
        self.submitted: list[gateway_pb2.SubmitBatchRequest] = []
        self.batches: dict[str, gateway_pb2.BatchSendRequest] = {}
        self.cancelled_batches: list[str] = []

    async def BatchSend(
        self, request: gateway_pb2.BatchSendRequest, context: _Context
    ) -> AsyncIterator[gateway_pb2.BatchSendResponse]:
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata() or ()))
        await self._check(request, context)
        async for response in self._outcomes(request, context, gateway_pb2.BatchSendResponse):
            yield response

    async def _check(self, request: gateway_pb2.BatchSendRequest, context: _Context) -> None:
        violations = []
        if not request.recipient_ids:
            violations.append(("recipient_ids", "must not be empty"))
        if not request.message.WhichOneof("content"):
            violations.append(("message", "must have content"))
        if violations:
            await _abort_invalid(context, violations)

    async def _outcomes(
        self,
        request: gateway_pb2.BatchSendRequest,
        context: _Context,
        message_type: type[Response],
    ) -> AsyncIterator[Response]:
        first_index: dict[str, int] = {}
        for index, recipient in enumerate(request.recipient_ids):
            first_index.setdefault(recipient, index)
        unique = list(first_index.items())
        failed = sum(recipient.startswith("ghost") for recipient in first_index)
        uncertain = sum(recipient.startswith("slow") for recipient in first_index)
        summary = gateway_pb2.BatchSummary(
            total=len(unique),
            accepted=len(unique) - failed - uncertain,
            failed=failed,
            uncertain=uncertain,
            duplicates_removed=len(request.recipient_ids) - len(unique),
            vendor_calls=-(-len(unique) // self.outcomes_per_response),
            elapsed_ms=ELAPSED_MS,
        )
        try:
            for start in range(0, len(unique), self.outcomes_per_response):
                # Built a response at a time: a million outcomes never sit in memory at once.
                batch = [
                    _outcome(recipient, index)
                    for recipient, index in unique[start : start + self.outcomes_per_response]
                ]
                if any(o.recipient_id == "crash" for o in batch):
                    await context.abort(grpc.StatusCode.INTERNAL, "vendor session lost")
                is_last = start + self.outcomes_per_response >= len(unique)
                yield message_type(
                    outcomes=batch,
                    cursor=str(start),
                    summary=summary if is_last and self.send_summary else None,
                )
                await asyncio.sleep(self.pause_between_responses_s)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    async def UploadRecipients(
        self,
        request_iterator: AsyncIterator[gateway_pb2.UploadRecipientsRequest],
        context: _Context,
    ) -> gateway_pb2.RecipientList:
        ids: list[str] = []
        pages: list[int] = []
        async for page in request_iterator:
            pages.append(len(page.recipient_ids))
            ids.extend(page.recipient_ids)
            if self.pause_between_pages_s:
                await asyncio.sleep(self.pause_between_pages_s)
        self.upload_pages.append(pages)
        list_id = f"list-{len(self.lists)}"
        self.lists[list_id] = ids
        unique = len(dict.fromkeys(ids))
        return gateway_pb2.RecipientList(
            recipient_list=list_id, count=unique, duplicates_removed=len(ids) - unique
        )

    async def SubmitBatch(
        self, request: gateway_pb2.SubmitBatchRequest, context: _Context
    ) -> gateway_pb2.Batch:
        self.metadata.append(dict(context.invocation_metadata() or ()))
        # Kept as the BatchSendRequest it amounts to: the tests read requests[n] alike.
        send = gateway_pb2.BatchSendRequest.FromString(request.SerializeToString())
        if request.recipient_list:
            if request.recipient_list not in self.lists:
                await context.abort(grpc.StatusCode.NOT_FOUND, "no such recipient list")
            send.recipient_ids.extend(self.lists[request.recipient_list])
        self.requests.append(send)
        self.submitted.append(request)
        await self._check(send, context)
        batch_id = f"batch-{len(self.batches)}"
        self.batches[batch_id] = send
        unique = len(dict.fromkeys(send.recipient_ids))
        return gateway_pb2.Batch(
            batch_id=batch_id, state=gateway_pb2.BATCH_STATE_QUEUED, total=unique, pending=unique
        )

    async def WatchBatch(
        self, request: gateway_pb2.WatchBatchRequest, context: _Context
    ) -> AsyncIterator[gateway_pb2.WatchBatchResponse]:
        batch = self.batches.get(request.batch_id)
        if batch is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such batch")
            return
        async for response in self._outcomes(batch, context, gateway_pb2.WatchBatchResponse):
            yield response

    async def CancelBatch(
        self, request: gateway_pb2.CancelBatchRequest, context: _Context
    ) -> gateway_pb2.Batch:
        self.cancelled_batches.append(request.batch_id)
        return gateway_pb2.Batch(batch_id=request.batch_id, state=gateway_pb2.BATCH_STATE_CANCELLED)

    async def ListBackends(
        self, request: gateway_pb2.ListBackendsRequest, context: _Context
    ) -> gateway_pb2.ListBackendsResponse:
        return gateway_pb2.ListBackendsResponse(
            backends=[
                gateway_pb2.Backend(
                    name="tencent",
                    vendor="tencent",
                    limits=gateway_pb2.BackendLimits(recipients_per_call=500),
                    state=gateway_pb2.BACKEND_STATE_SERVING,
                    sandbox=True,
                )
            ],
            default_backend="tencent",
        )


def _outcome(recipient: str, index: int) -> gateway_pb2.RecipientOutcome:
    if recipient.startswith("ghost"):
        return gateway_pb2.RecipientOutcome(
            recipient_id=recipient,
            index=index,
            state=gateway_pb2.DELIVERY_STATE_FAILED,
            reason=gateway_pb2.FAILURE_REASON_RECIPIENT_NOT_FOUND,
            vendor_code="70107",
            detail="account does not exist",
            attempts=1,
        )
    if recipient.startswith("slow"):
        return gateway_pb2.RecipientOutcome(
            recipient_id=recipient,
            index=index,
            state=gateway_pb2.DELIVERY_STATE_UNCERTAIN,
            reason=gateway_pb2.FAILURE_REASON_TIMEOUT,
            detail="no answer\nwithin 10 s",
            attempts=1,
        )
    return gateway_pb2.RecipientOutcome(
        recipient_id=recipient,
        index=index,
        state=gateway_pb2.DELIVERY_STATE_ACCEPTED,
        vendor_message_id=f"msg-{index}",
        attempts=1,
    )


async def _abort_invalid(context: _Context, violations: list[tuple[str, str]]) -> None:
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
            for field, description in violations
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(bad_request)
    status = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message="invalid request", details=[detail]
    )
    # Missing from grpc-stubs, present in grpc.aio.
    await context.abort_with_status(rpc_status.to_status(status))  # type: ignore[attr-defined]


@dataclass
class FakeServer:
    """Where the fake listens, and the servicer to steer and inspect."""

    target: str
    gateway: FakeGateway


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    gateway = FakeGateway()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-gateway", daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        gateway_pb2_grpc.add_GatewayServiceServicer_to_server(gateway, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=5)
    try:
        yield FakeServer(target=f"127.0.0.1:{port}", gateway=gateway)
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()


@pytest.fixture
def unused_target() -> str:
    """A loopback address where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"
