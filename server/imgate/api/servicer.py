"""imgate.v1.GatewayService over gRPC: each RPC calls the transport-neutral operation
(api.service) and turns an ApiError into a status with its details.

Streams are written with context.write() from the operation's messages (serialized
already: stored outcome pages are never parsed again), inside `aclosing`, so that a
caller who goes away closes the operation's stream at once (a bound batch is cancelled
then, rule 10).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, TypeAlias, TypeVar

import grpc
from grpc_status import rpc_status

from imgate.api.errors import ApiError, as_api_error
from imgate.api.service import GatewayApi
from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc

_Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
T = TypeVar("T")


async def abort(context: _Context, error: ApiError) -> None:
    """End the call with `error`'s code, message and details (BadRequest)."""
    status = rpc_status.to_status(error.status())
    await context.abort(status.code, status.details, status.trailing_metadata)


async def _answer(work: Awaitable[T], context: _Context) -> T:
    try:
        return await work
    except Exception as exc:
        error = as_api_error(exc)
        if error is None:
            raise
        await abort(context, error)
        raise AssertionError("unreachable") from None  # abort raises


async def _write_all(stream: AsyncGenerator[bytes, None], context: _Context) -> None:
    async with contextlib.aclosing(stream):
        try:
            async for message in stream:
                await context.write(message)
        except Exception as exc:
            error = as_api_error(exc)
            if error is None:
                raise
            await abort(context, error)


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    """imgate.v1.GatewayService."""

    def __init__(self, api: GatewayApi) -> None:
        self._api = api

    async def ListBackends(
        self, request: pb.ListBackendsRequest, context: _Context
    ) -> pb.ListBackendsResponse:
        return await _answer(self._api.list_backends(request), context)

    async def SubmitBatch(self, request: pb.SubmitBatchRequest, context: _Context) -> pb.Batch:
        return await _answer(self._api.submit_batch(request), context)

    async def BatchSend(  # type: ignore[override]
        self, request: pb.BatchSendRequest, context: _Context
    ) -> None:
        await _write_all(self._api.batch_send(request, context.time_remaining()), context)

    async def WatchBatch(  # type: ignore[override]
        self, request: pb.WatchBatchRequest, context: _Context
    ) -> None:
        await _write_all(self._api.watch_batch(request), context)

    async def GetBatch(self, request: pb.GetBatchRequest, context: _Context) -> pb.Batch:
        return await _answer(self._api.get_batch(request), context)

    async def CancelBatch(self, request: pb.CancelBatchRequest, context: _Context) -> pb.Batch:
        return await _answer(self._api.cancel_batch(request), context)

    async def RecallBatch(self, request: pb.RecallBatchRequest, context: _Context) -> pb.Batch:
        return await _answer(self._api.recall_batch(request, context.time_remaining()), context)

    async def ListBatches(
        self, request: pb.ListBatchesRequest, context: _Context
    ) -> pb.ListBatchesResponse:
        return await _answer(self._api.list_batches(request), context)

    async def UploadRecipients(
        self, request_iterator: AsyncIterator[pb.UploadRecipientsRequest], context: _Context
    ) -> pb.RecipientList:
        return await _answer(self._api.upload_recipients(request_iterator), context)
