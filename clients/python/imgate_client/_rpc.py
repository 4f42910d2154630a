"""How one RPC definition becomes a method of both clients.

A definition (a ``GatewayMethods`` method decorated with ``unary`` or ``streaming``) only
builds the ``Call``. Read from a ``GatewayClient`` it becomes a blocking method; from an
``AsyncGatewayClient`` a coroutine method (``unary``) or one returning an
``AsyncBatchStream`` (``streaming``). Making the call, error mapping and stream wrapping
are here, once for every RPC: this is the only place where the two clients differ.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

import grpc

from ._errors import error_from_rpc
from ._request import Metadata, call_metadata
from ._stream import AsyncBatchStream, BatchStream

if TYPE_CHECKING:
    from ._async_client import AsyncGatewayClient
    from ._methods import GatewayMethods
    from ._sync_client import GatewayClient

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Call:
    """One RPC as its definition builds it: what to send, the deadline, the metadata."""

    request: Any  # a request message, or an iterable of them for a client stream
    timeout: float | None
    metadata: Metadata | None


Build = Callable[Concatenate[Any, P], Call]


class _Rpc(Generic[P]):
    """The definition of a client method calling the GatewayService RPC ``rpc``."""

    def __init__(self, rpc: str, build: Build[P]) -> None:
        self.rpc = rpc
        self.build = build
        self.__doc__ = build.__doc__
        # The definition's signature without self: what help() and the parity test see.
        signature = inspect.signature(build)
        self._signature = signature.replace(parameters=list(signature.parameters.values())[1:])

    def _start(self, client: GatewayMethods, args: Any, kwargs: Any) -> Any:
        """Build the call and start it: grpc answers, grpc.aio gives an awaitable call."""
        call = self.build(client, *args, **kwargs)
        method = getattr(client._stub, self.rpc)
        return method(
            call.request,
            timeout=call.timeout,
            metadata=call_metadata(call.metadata, client._token),
        )

    def _method(
        self, client: GatewayMethods, function: Callable[..., Any], returns: Any
    ) -> Callable[..., Any]:
        function.__signature__ = self._signature.replace(  # type: ignore[attr-defined]
            return_annotation=returns
        )
        function.__name__ = self.build.__name__
        function.__qualname__ = f"{type(client).__name__}.{self.build.__name__}"
        function.__doc__ = self.build.__doc__
        return function


class UnaryRpc(_Rpc[P], Generic[P, R]):
    """An RPC answered by one message: the blocking client returns it, the async one
    awaits it. Failures raise ``GatewayError``."""

    def __init__(self, rpc: str, response: type[R], build: Build[P]) -> None:
        super().__init__(rpc, build)
        self.response = response

    @overload
    def __get__(self, client: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, client: GatewayClient, owner: type[Any]) -> Callable[P, R]: ...
    @overload
    def __get__(
        self, client: AsyncGatewayClient, owner: type[Any]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    def __get__(self, client: GatewayMethods | None, owner: type[Any]) -> Any:
        if client is None:
            return self
        if client._is_async:

            async def call_async(*args: Any, **kwargs: Any) -> R:
                try:
                    response: R = await self._start(client, args, kwargs)
                except grpc.RpcError as error:
                    raise error_from_rpc(error) from error
                return response

            return self._method(client, call_async, self.response)

        def call(*args: Any, **kwargs: Any) -> R:
            try:
                response: R = self._start(client, args, kwargs)
            except grpc.RpcError as error:
                raise error_from_rpc(error) from error
            return response

        return self._method(client, call, self.response)


class StreamingRpc(_Rpc[P]):
    """An RPC answered by a stream of outcomes: a ``BatchStream`` (blocking) or an
    ``AsyncBatchStream``, which raise ``GatewayError`` as they are iterated."""

    @overload
    def __get__(self, client: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, client: GatewayClient, owner: type[Any]) -> Callable[P, BatchStream]: ...
    @overload
    def __get__(
        self, client: AsyncGatewayClient, owner: type[Any]
    ) -> Callable[P, AsyncBatchStream]: ...
    def __get__(self, client: GatewayMethods | None, owner: type[Any]) -> Any:
        if client is None:
            return self
        stream = AsyncBatchStream if client._is_async else BatchStream

        def call(*args: Any, **kwargs: Any) -> BatchStream | AsyncBatchStream:
            return stream(self._start(client, args, kwargs))

        return self._method(client, call, stream)


def unary(rpc: str, response: type[R]) -> Callable[[Build[P]], UnaryRpc[P, R]]:
    """Define a client method calling the unary (or client-streaming) RPC ``rpc``."""

    def define(build: Build[P]) -> UnaryRpc[P, R]:
        return UnaryRpc(rpc, response, build)

    return define


def streaming(rpc: str) -> Callable[[Build[P]], StreamingRpc[P]]:
    """Define a client method calling the server-streaming RPC ``rpc`` of outcomes."""

    def define(build: Build[P]) -> StreamingRpc[P]:
        return StreamingRpc(rpc, build)

    return define
