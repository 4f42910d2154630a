"""The asyncio client: the methods of ``GatewayMethods`` over a ``grpc.aio`` channel."""

from __future__ import annotations

from types import TracebackType
from typing import Any, ClassVar, Self

import grpc
import grpc.aio

from ._methods import GatewayMethods


class AsyncGatewayClient(GatewayMethods):
    """An asyncio client of imgate's ``GatewayService``; it owns its channel.

    The methods of ``GatewayClient``, with the same arguments: the unary ones are
    awaited, ``batch_send`` and ``watch_batch`` return an ``AsyncBatchStream`` (``async
    for``). ``async with AsyncGatewayClient("127.0.0.1:50051") as client: ...``; the
    connection arguments are ``GatewayClient``'s.
    """

    _is_async: ClassVar[bool] = True

    def _connect(
        self,
        target: str,
        credentials: grpc.ChannelCredentials | None,
        options: list[tuple[str, Any]],
    ) -> grpc.aio.Channel:
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        return self._channel

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
