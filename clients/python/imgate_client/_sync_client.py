"""The blocking client: the methods of ``GatewayMethods`` over a ``grpc`` channel."""

from __future__ import annotations

from types import TracebackType
from typing import Any, ClassVar, Self

import grpc

from ._methods import GatewayMethods


class GatewayClient(GatewayMethods):
    """A blocking client of imgate's ``GatewayService``; it owns its channel.

    ``with GatewayClient("127.0.0.1:50051") as client: ...``; without ``credentials`` the
    channel is plaintext unless ``ca_file`` (the CA of the gateway's certificate) and/or
    ``cert_file`` + ``key_file`` (mTLS) are given; ``token`` (a caller's bearer token) is
    sent with every call. ``channel_options`` are grpc channel arguments, e.g.
    ``[("grpc.max_receive_message_length", 16 << 20)]``.
    """

    _is_async: ClassVar[bool] = False

    def _connect(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None,
        options: list[tuple[str, Any]],
    ) -> grpc.Channel:
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options)
        return self._channel

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
