"""A grpc.aio server interceptor that keeps the grpc-ecosystem server metrics.

py-grpc-prometheus only knows the synchronous server, so this is our own. It wraps each
method handler's behaviour: requests received are counted as the request iterator is
read, responses sent both as an async generator yields them and as the servicer writes
them with `context.write()` (BatchSend and WatchBatch stream that way), through a thin
context wrapper. The status code is the one the handler ended with: `context.code()` after
an abort or `set_code`, OK otherwise, UNKNOWN on an unexpected exception, CANCELLED (or
DEADLINE_EXCEEDED) when the caller went away.

The HTTP/JSON layer (api.http) counts its calls with the same `RpcCall`, labelled
`transport="http"`: one RPC, whatever the transport, is one set of series.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from imgate.observability.metrics import GrpcMetrics

_UNARY = "unary"
_CLIENT_STREAM = "client_stream"
_SERVER_STREAM = "server_stream"
_BIDI_STREAM = "bidi_stream"


def rpc_kind(client_streaming: bool, server_streaming: bool) -> str:
    """The grpc_type label of an RPC of that streaming shape."""
    if client_streaming:
        return _BIDI_STREAM if server_streaming else _CLIENT_STREAM
    return _SERVER_STREAM if server_streaming else _UNARY


class RpcCall:
    """One RPC's bookkeeping: counted as started when made, as handled once by `end`.

    `labels`: (grpc_type, grpc_service, grpc_method, transport)."""

    __slots__ = ("_metrics", "_start", "labels", "received", "sent")

    def __init__(
        self, metrics: GrpcMetrics, labels: tuple[str, str, str, str], streams_in: bool
    ) -> None:
        self._metrics = metrics
        self.labels = labels
        # Children resolved once per RPC, not once per message.
        self.received = metrics.received.labels(*labels)
        self.sent = metrics.sent.labels(*labels)
        metrics.started.labels(*labels).inc()
        if not streams_in:
            self.received.inc()
        self._start = time.perf_counter()

    def end(self, code: grpc.StatusCode) -> None:
        self._metrics.handled.labels(*self.labels, code.name).inc()
        self._metrics.handling.labels(*self.labels).observe(time.perf_counter() - self._start)


class _CountingContext:
    """The servicer's context, with `write()` counted; everything else passes through."""

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any], call: RpcCall) -> None:
        self._context = context
        self._sent = call.sent
        self._received = call.received

    async def write(self, message: Any) -> None:
        await self._context.write(message)
        self._sent.inc()

    async def read(self) -> Any:
        request = await self._context.read()
        if request is not grpc.aio.EOF:  # type: ignore[attr-defined]  # stubs lag
            self._received.inc()
        return request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Counts every RPC of the server it is registered on (health and reflection too)."""

    def __init__(self, metrics: GrpcMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # unknown method: grpc answers UNIMPLEMENTED itself
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        return _wrap(handler, self._metrics, service or "unknown", method)


def _kind(handler: grpc.RpcMethodHandler[Any, Any]) -> str:
    return rpc_kind(handler.request_streaming, handler.response_streaming)


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any], metrics: GrpcMetrics, service: str, method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    kind = _kind(handler)
    behaviour: Callable[..., Any] = (
        handler.unary_unary  # type: ignore[assignment]  # exactly one is set
        or handler.unary_stream
        or handler.stream_unary
        or handler.stream_stream
    )
    streams_out = handler.response_streaming
    streams_in = handler.request_streaming
    labels = (kind, service, method, "grpc")

    async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        call = RpcCall(metrics, labels, streams_in)
        if streams_in:
            request = _count_requests(request, call)
        try:
            result = behaviour(request, _CountingContext(context, call))
            if inspect.isawaitable(result):
                result = await result
        except BaseException as exc:
            call.end(_code_after(exc, context))
            raise
        if not streams_out and result is not None:
            call.sent.inc()
        call.end(_code_of(context, grpc.StatusCode.OK))
        return result

    async def generator(request: Any, context: Any) -> AsyncIterator[Any]:
        call = RpcCall(metrics, labels, streams_in)
        if streams_in:
            request = _count_requests(request, call)
        try:
            async for response in behaviour(request, _CountingContext(context, call)):
                call.sent.inc()
                yield response
        except BaseException as exc:
            call.end(_code_after(exc, context))
            raise
        call.end(_code_of(context, grpc.StatusCode.OK))

    # grpc.aio iterates what an async generator function returns: so must the wrapper.
    wrapped = generator if inspect.isasyncgenfunction(behaviour) else observed
    factory = {
        _UNARY: grpc.unary_unary_rpc_method_handler,
        _SERVER_STREAM: grpc.unary_stream_rpc_method_handler,
        _CLIENT_STREAM: grpc.stream_unary_rpc_method_handler,
        _BIDI_STREAM: grpc.stream_stream_rpc_method_handler,
    }[kind]
    return factory(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


async def _count_requests(requests: AsyncIterator[Any], call: RpcCall) -> AsyncIterator[Any]:
    async for request in requests:
        call.received.inc()
        yield request


def _code_after(exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """The status an RPC ends with when its handler raised `exc`."""
    if isinstance(exc, grpc.aio.AbortError):
        return _code_of(context, grpc.StatusCode.UNKNOWN)
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return _gone(context)  # the caller went away (or its deadline passed)
    return grpc.StatusCode.UNKNOWN


def _code_of(
    context: grpc.aio.ServicerContext[Any, Any], default: grpc.StatusCode
) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        return next((c for c in grpc.StatusCode if c.value[0] == code), default)
    return default


def _gone(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED
