"""The blocking client (``grpc``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import grpc

from imgate.v1 import gateway_pb2, gateway_pb2_grpc

from ._errors import error_from_rpc
from ._request import (
    DEFAULT_PAGE_SIZE,
    Metadata,
    Recipients,
    SendOptionFields,
    build_batch_send_request,
    build_submit_request,
    call_metadata,
    tls_credentials,
    upload_pages,
)
from ._stream import BatchResult, StreamState

T = TypeVar("T")


class BatchStream(StreamState):
    """The outcomes of one ``BatchSend`` or ``WatchBatch`` call, one at a time.

    ``for outcome in stream`` yields every outcome; afterwards ``stream.summary`` holds
    the ``BatchSummary``; ``stream.cursor`` is where a new ``watch_batch`` resumes.
    Leaving ``with stream`` early cancels the call (and a ``batch_send`` batch without
    ``request_id`` with it: rule 10; never a submitted batch). Iteration raises
    ``GatewayError`` (or ``InvalidRequestError``) when the call fails.
    """

    def __init__(
        self,
        call: grpc.CallIterator[gateway_pb2.BatchSendResponse]
        | grpc.CallIterator[gateway_pb2.WatchBatchResponse],
    ) -> None:
        super().__init__()
        self._call = call
        self._responses: Iterator[
            gateway_pb2.BatchSendResponse | gateway_pb2.WatchBatchResponse
        ] = iter(call)

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> gateway_pb2.RecipientOutcome:
        while not self._pending:
            if self.finished:
                raise StopIteration
            try:
                response = next(self._responses)
            except StopIteration:
                self._end()
                raise
            except grpc.RpcError as error:
                raise self._fail(error) from error
            self._receive(response)
        return self._pending.popleft()

    def collect(self) -> BatchResult:
        """Read the rest of the stream: every remaining outcome and the summary."""
        outcomes = list(self)
        return BatchResult(outcomes=outcomes, summary=self.summary)

    def cancel(self) -> None:
        """Cancel the call: the gateway starts no new vendor call for it."""
        self._call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leave it untyped

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.finished:
            self.cancel()


class GatewayClient:
    """A blocking client of imgate's ``GatewayService``; it owns its channel.

    ``with GatewayClient("127.0.0.1:50051") as client: ...``; without ``credentials`` the
    channel is plaintext unless ``ca_file`` (the CA of the gateway's certificate) and/or
    ``cert_file`` + ``key_file`` (mTLS) are given; ``token`` (a caller's bearer token) is
    sent with every call. ``channel_options`` are grpc channel arguments, e.g.
    ``[("grpc.max_receive_message_length", 16 << 20)]``.
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
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options)
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
    ) -> BatchStream:
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
        return BatchStream(call)

    def upload_recipients(
        self,
        recipients: Recipients,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        request_id: str = "",
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> gateway_pb2.RecipientList:
        """Store a recipient list for ``submit_batch`` and return it (id, count, duplicates).

        ``recipients``: an iterable of ids, a text file object or a path (one id per line;
        blank lines skipped). Pages of ``page_size`` ids are built only as gRPC sends them,
        so a file of millions of ids is never held in memory. The gateway removes
        duplicates across pages; an invalid id fails the upload (``InvalidRequestError``
        naming ``pages[N].recipient_ids[M]``) and nothing of it is kept.
        """
        pages = upload_pages(recipients, page_size, request_id)
        return self._unary(self._stub.UploadRecipients, pages, timeout, metadata)

    def submit_batch(
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
        timeout: float | None = None,
        metadata: Metadata | None = None,
        **option_fields: Unpack[SendOptionFields],
    ) -> gateway_pb2.Batch:
        """Store a batch durably and return it; it is sent with nobody attached.

        Arguments as in ``batch_send``; ``recipients`` may instead be a ``RecipientList``
        from ``upload_recipients`` (or pass its id as ``recipient_list`` with no ids);
        ``send_before`` (Unix seconds): no vendor call starts after it. Follow the batch
        with ``watch_batch(batch.batch_id)``.
        """
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
        return self._unary(self._stub.SubmitBatch, request, timeout, metadata)

    def watch_batch(
        self,
        batch_id: str,
        *,
        cursor: str = "",
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> BatchStream:
        """Every outcome of the batch from ``cursor`` on (empty: from the start), live
        ones as they come, then the summary."""
        request = gateway_pb2.WatchBatchRequest(batch_id=batch_id, cursor=cursor)
        call = self._stub.WatchBatch(
            request, timeout=timeout, metadata=call_metadata(metadata, self._token)
        )
        return BatchStream(call)

    def get_batch(
        self, batch_id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> gateway_pb2.Batch:
        """The batch's state and counts."""
        request = gateway_pb2.GetBatchRequest(batch_id=batch_id)
        return self._unary(self._stub.GetBatch, request, timeout, metadata)

    def cancel_batch(
        self, batch_id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> gateway_pb2.Batch:
        """Stop the batch: no new vendor call; unsent recipients end NOT_ATTEMPTED."""
        request = gateway_pb2.CancelBatchRequest(batch_id=batch_id)
        return self._unary(self._stub.CancelBatch, request, timeout, metadata)

    def list_batches(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> gateway_pb2.ListBatchesResponse:
        """One page of the caller's batches, newest first."""
        request = gateway_pb2.ListBatchesRequest(page_size=page_size, page_token=page_token)
        return self._unary(self._stub.ListBatches, request, timeout, metadata)

    def _unary(
        self,
        method: Callable[..., T],
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
    ) -> T:
        try:
            return method(request, timeout=timeout, metadata=call_metadata(metadata, self._token))
        except grpc.RpcError as error:
            raise error_from_rpc(error) from error

    def list_backends(
        self, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> gateway_pb2.ListBackendsResponse:
        """The configured backends with their vendor, effective limits and state."""
        try:
            return self._stub.ListBackends(
                gateway_pb2.ListBackendsRequest(),
                timeout=timeout,
                metadata=call_metadata(metadata, self._token),
            )
        except grpc.RpcError as error:
            raise error_from_rpc(error) from error

    def close(self) -> None:
        """Close the channel, cancelling calls still running."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
