"""Every client method, defined once for ``GatewayClient`` and ``AsyncGatewayClient``.

A method here builds its call; its decorator names the RPC and how it answers (see
``_rpc``). A new GatewayService RPC is one more decorated method in this class (and
one line in tests/clients/test_parity.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import Any, ClassVar, Unpack

import grpc

from imgate.v1 import gateway_pb2, gateway_pb2_grpc

from ._request import (
    DEFAULT_PAGE_SIZE,
    Metadata,
    Recipients,
    SendOptionFields,
    aupload_pages,
    build_batch_send_request,
    build_submit_request,
    tls_credentials,
    upload_pages,
)
from ._rpc import Call, streaming, unary


class GatewayMethods:
    """What both clients share: the connection settings and every RPC method."""

    _is_async: ClassVar[bool]
    """Set by each client: whether its channel is grpc.aio (see ``_rpc``)."""

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
        # Sent as `authorization: Bearer <token>` on every call; kept out of any repr.
        self._token = token
        credentials = tls_credentials(credentials, ca_file, cert_file, key_file)
        channel = self._connect(target, credentials, list(channel_options or ()))
        # Any: the grpc and grpc.aio stubs differ in type only; _rpc types each method.
        self._stub: Any = gateway_pb2_grpc.GatewayServiceStub(channel)

    def _connect(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None,
        options: list[tuple[str, Any]],
    ) -> Any:
        """Open and keep the client's channel (grpc or grpc.aio)."""
        raise NotImplementedError

    @streaming("BatchSend")
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
    ) -> Call:
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
        return Call(request, timeout, metadata)

    @unary("UploadRecipients", gateway_pb2.RecipientList)
    def upload_recipients(
        self,
        recipients: Recipients | AsyncIterable[str],
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        request_id: str = "",
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Call:
        """Store a recipient list for ``submit_batch`` and return it (id, count, duplicates).

        ``recipients``: an iterable of ids, a text file object or a path (one id per line;
        blank lines skipped); ``AsyncGatewayClient`` also takes an async iterable of ids.
        Pages of ``page_size`` ids are built only as gRPC sends them, so a file of millions
        of ids is never held in memory. The gateway removes duplicates across pages; an
        invalid id fails the upload (``InvalidRequestError`` naming
        ``pages[N].recipient_ids[M]``) and nothing of it is kept.
        """
        if self._is_async:
            pages: Any = aupload_pages(recipients, page_size, request_id)
        elif isinstance(recipients, AsyncIterable):
            # grpc would fail on it in its sending thread, far from the caller.
            raise TypeError("an async iterable of ids needs AsyncGatewayClient")
        else:
            pages = upload_pages(recipients, page_size, request_id)
        return Call(pages, timeout, metadata)

    @unary("SubmitBatch", gateway_pb2.Batch)
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
        send_after: float | None = None,
        recipient_list: str = "",
        timeout: float | None = None,
        metadata: Metadata | None = None,
        **option_fields: Unpack[SendOptionFields],
    ) -> Call:
        """Store a batch durably and return it; it is sent with nobody attached.

        Arguments as in ``batch_send``; ``recipients`` may instead be a ``RecipientList``
        from ``upload_recipients`` (or pass its id as ``recipient_list`` with no ids);
        ``send_before`` (Unix seconds): no vendor call starts after it; ``send_after``
        (Unix seconds): none starts before it (the batch waits SCHEDULED). Follow the
        batch with ``watch_batch(batch.batch_id)``.
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
            send_after=send_after,
        )
        return Call(request, timeout, metadata)

    @streaming("WatchBatch")
    def watch_batch(
        self,
        batch_id: str,
        *,
        cursor: str = "",
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Call:
        """Every outcome of the batch from ``cursor`` on (empty: from the start), live
        ones as they come, then the summary."""
        request = gateway_pb2.WatchBatchRequest(batch_id=batch_id, cursor=cursor)
        return Call(request, timeout, metadata)

    @unary("GetBatch", gateway_pb2.Batch)
    def get_batch(
        self, batch_id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> Call:
        """The batch's state and counts."""
        return Call(gateway_pb2.GetBatchRequest(batch_id=batch_id), timeout, metadata)

    @unary("CancelBatch", gateway_pb2.Batch)
    def cancel_batch(
        self, batch_id: str, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> Call:
        """Stop the batch: no new vendor call; unsent recipients end NOT_ATTEMPTED."""
        return Call(gateway_pb2.CancelBatchRequest(batch_id=batch_id), timeout, metadata)

    @unary("RecallBatch", gateway_pb2.Batch)
    def recall_batch(
        self,
        batch_id: str,
        *,
        request_id: str = "",
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Call:
        """Withdraw what the batch delivered: cancels it if it has not ended, then returns
        its recall batch (``recall_of`` = ``batch_id``; the same one on every call), which
        has one outcome per recipient the batch delivered to (ACCEPTED = withdrawn). Follow
        it with ``watch_batch``. A ``GatewayError`` with code FAILED_PRECONDITION when the
        batch's backend cannot recall (nothing is sent then)."""
        request = gateway_pb2.RecallBatchRequest(batch_id=batch_id, request_id=request_id)
        return Call(request, timeout, metadata)

    @unary("ListBatches", gateway_pb2.ListBatchesResponse)
    def list_batches(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Call:
        """One page of the caller's batches, newest first."""
        request = gateway_pb2.ListBatchesRequest(page_size=page_size, page_token=page_token)
        return Call(request, timeout, metadata)

    @unary("ListBackends", gateway_pb2.ListBackendsResponse)
    def list_backends(
        self, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> Call:
        """The configured backends with their vendor, effective limits and state."""
        return Call(gateway_pb2.ListBackendsRequest(), timeout, metadata)
