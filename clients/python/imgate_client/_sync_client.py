"""The blocking client (``grpc``)."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self, Unpack

import grpc

from imgate.v1 import gateway_pb2, gateway_pb2_grpc

from ._errors import error_from_rpc
from ._request import Metadata, SendOptionFields, build_batch_send_request, call_metadata
from ._stream import BatchResult, StreamState


class BatchStream(StreamState):
    """The outcomes of one ``BatchSend`` call, one ``RecipientOutcome`` at a time.

    ``for outcome in stream`` yields every outcome; afterwards ``stream.summary`` holds
    the ``BatchSummary``. Leaving ``with stream`` early cancels the call. Iteration raises
    ``GatewayError`` (or ``InvalidRequestError``) when the call fails.
    """

    def __init__(self, call: grpc.CallIterator[gateway_pb2.BatchSendResponse]) -> None:
        super().__init__()
        self._call = call
        self._responses = iter(call)

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
    channel is plaintext. ``channel_options`` are grpc channel arguments, e.g.
    ``[("grpc.max_receive_message_length", 16 << 20)]``.
    """

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Iterable[tuple[str, Any]] | None = None,
    ) -> None:
        options = list(channel_options or ())
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
        call = self._stub.BatchSend(request, timeout=timeout, metadata=call_metadata(metadata))
        return BatchStream(call)

    def list_backends(
        self, *, timeout: float | None = None, metadata: Metadata | None = None
    ) -> gateway_pb2.ListBackendsResponse:
        """The configured backends with their vendor, effective limits and state."""
        try:
            return self._stub.ListBackends(
                gateway_pb2.ListBackendsRequest(),
                timeout=timeout,
                metadata=call_metadata(metadata),
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
