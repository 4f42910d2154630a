"""The asyncio client (``grpc.aio``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import grpc
import grpc.aio

from imgate.v1 import gateway_pb2, gateway_pb2_grpc

from ._errors import error_from_rpc
from ._request import (
    DEFAULT_PAGE_SIZE,
    Metadata,
    Recipients,
    SendOptionFields,
    aupload_pages,
    build_batch_send_request,
    build_submit_request,
    call_metadata,
    tls_credentials,
)
from ._stream import BatchResult, StreamState

T = TypeVar("T")


class AsyncBatchStream(StreamState):
    """The outcomes of one ``BatchSend`` or ``WatchBatch`` call, one at a time.

    ``async for outcome in stream`` yields every outcome; afterwards ``stream.summary``
    holds the ``BatchSummary``. Leaving ``async with stream`` early cancels the call.
    Iteration raises ``GatewayError`` (or ``InvalidRequestError``) when the call fails.
    """

    def __init__(
        self,
        call: grpc.aio.UnaryStreamCall[gateway_pb2.BatchSendRequest, gateway_pb2.BatchSendResponse]
        | grpc.aio.UnaryStreamCall[gateway_pb2.WatchBatchRequest, gateway_pb2.WatchBatchResponse],
    ) -> None:
        super().__init__()
        self._call = call
        self._responses: AsyncIterator[
            gateway_pb2.BatchSendResponse | gateway_pb2.WatchBatchResponse
        ] = call.__aiter__()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> gateway_pb2.RecipientOutcome:
        while not self._pending:
            if self.finished:
                raise StopAsyncIteration
            try:
                response = await anext(self._responses)
            except StopAsyncIteration:
                self._end()
                raise
            except grpc.RpcError as error:
                raise self._fail(error) from error
            except asyncio.CancelledError:
                # grpc.aio reports a call ended by cancel() as CancelledError; only the
                # cancellation of the caller's own task may travel as such.
                task = asyncio.current_task()
                if self._call.cancelled() and (task is None or not task.cancelling()):
                    raise self._fail_cancelled() from None
                raise
            self._receive(response)
        return self._pending.popleft()

    async def collect(self) -> BatchResult:
        """Read the rest of the stream: every remaining outcome and the summary."""
        outcomes = [outcome async for outcome in self]
        return BatchResult(outcomes=outcomes, summary=self.summary)

    def cancel(self) -> None:
        """Cancel the call: the gateway starts no new vendor call for it."""
        self._call.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.finished:
            self.cancel()


class AsyncGatewayClient:
    """An asyncio client of imgate's ``GatewayService``; it owns its channel.

    ``async with AsyncGatewayClient("127.0.0.1:50051") as client: ...``; without
    ``credentials`` the channel is plaintext unless ``ca_file`` (the CA of the gateway's
    certificate) and/or ``cert_file`` + ``key_file`` (mTLS) are given; ``token`` (a caller's
    bearer token) is sent with every call. ``channel_options`` are grpc channel
    arguments, e.g. ``[("grpc.max_receive_message_length", 16 << 20)]``.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Iterable[tuple[str, Any]] | None = None,
        token: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        options = list(channel_options or ())
        # Sent as `authorization: Bearer <token>` on every call; kept out of any repr.
        self._token = token
        credentials = tls_credentials(credentials, ca_file, cert_file, key_file)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        self._stub = gateway_pb2_grpc.GatewayServiceStub(self._channel)

    def batch_send(
        self,
        recipients: Iterable[str],
        message: gateway_pb2.Message,
        *,
        backend: str = "",
        sender_id: str = "",
        request_id: str = "",
        options: gateway_pb2.SendOptions | None = None,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        **option_fields: Unpack[SendOptionFields],
    ) -> AsyncBatchStream:
        """Send ``message`` to ``recipients`` and stream back one outcome per unique recipient.

        ``backend`` empty selects the server's default backend; ``request_id`` makes the
        call idempotent; ``options`` and/or keyword ``option_fields`` (e.g.
        ``push_enabled=False``) set delivery options; ``timeout`` (seconds) is the deadline
        of the whole call.
        """
        request = build_batch_send_request(
            recipients,
            message,
            backend=backend,
            sender_id=sender_id,
            request_id=request_id,
            options=options,
            option_fields=option_fields,
        )
        call = self._stub.BatchSend(
            request, timeout=timeout, metadata=call_metadata(metadata, self._token)
        )
        return AsyncBatchStream(call)

    async def upload_recipients(
        self,
        recipients: Recipients | AsyncIterable[str],
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        request_id: str = "",
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline
        metadata: Metadata | None = None,
    ) -> gateway_pb2.RecipientList:
        """Store a recipient list for ``submit_batch`` (see ``GatewayClient``); also takes
        an async iterable of ids. Pages are built only as gRPC sends them."""
        pages = aupload_pages(recipients, page_size, request_id)
        return await self._unary(self._stub.UploadRecipients, pages, timeout, metadata)

    async def submit_batch(
        self,
        recipients: Iterable[str] | gateway_pb2.RecipientList,
        message: gateway_pb2.Message,
        *,
        backend: str = "",
        sender_id: str = "",
        request_id: str = "",
        options: gateway_pb2.SendOptions | None = None,
        send_before: float | None = None,
        recipient_list: str = "",
        timeout: float | None = None,  # noqa: ASYNC109 - the gRPC deadline
        metadata: Metadata | None = None,
        **option_fields: Unpack[SendOptionFields],
    ) -> gateway_pb2.Batch:
        """Store a batch durably and return it (see ``GatewayClient.submit_batch``)."""
        request = build_submit_request(
            recipients,
            message,
            backend=backend,
            sender_id=sender_id,
            request_id=request_id,
            options=options,
            option_fields=option_fields,
            send_before=send_before,
            recipient_list=recipient_list,
        )
        return await self._unary(self._stub.SubmitBatch, request, timeout, metadata)

    def watch_batch(
        self,
        batch_id: str,
        *,
        cursor: str = "",
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> AsyncBatchStream:
        """Every outcome of the batch from ``cursor`` on, live ones as they come, then the
        summary."""
        request = gateway_pb2.WatchBatchRequest(batch_id=batch_id, cursor=cursor)
        call = self._stub.WatchBatch(
            request, timeout=timeout, metadata=call_metadata(metadata, self._token)
        )
        return AsyncBatchStream(call)

    async def _unary(
        self,
        method: Callable[..., Awaitable[T]],
        request: Any,
        timeout: float | None,  # noqa: ASYNC109 - the gRPC deadline
        metadata: Metadata | None,
    ) -> T:
        try:
            return await method(
                request, timeout=timeout, metadata=call_metadata(metadata, self._token)
            )
        except grpc.RpcError as error:
            raise error_from_rpc(error) from error

    async def list_backends(
        self,
        *,
        # A gRPC deadline, propagated to the server, which asyncio.timeout could not do.
        timeout: float | None = None,  # noqa: ASYNC109
        metadata: Metadata | None = None,
    ) -> gateway_pb2.ListBackendsResponse:
        """The configured backends with their vendor, effective limits and state."""
        try:
            return await self._stub.ListBackends(
                gateway_pb2.ListBackendsRequest(),
                timeout=timeout,
                metadata=call_metadata(metadata, self._token),
            )
        except grpc.RpcError as error:
            raise error_from_rpc(error) from error

    async def close(self) -> None:
        """Close the channel, cancelling calls still running."""
        await self._channel.close(grace=None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
