"""The SERVER span of each RPC, from opentelemetry-instrumentation-grpc (the `otel` extra).

Its aio interceptor reads the caller's `traceparent` from the metadata, starts a SERVER
span with the RPC conventions and records the status; but it wraps every
response-streaming handler as an async generator, and BatchSend and WatchBatch are
coroutines that stream with `context.write()` (contrib issue 3066). The subclass here
wraps those as coroutines, with the package's own span and context handling. Health
checks and reflection make no spans: probes every few seconds would bury the batches.
Imported only when tracing is on.
"""

from __future__ import annotations

import inspect
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import _aio_server
from opentelemetry.instrumentation.grpc.version import __version__
from opentelemetry.trace import get_tracer

_UNTRACED = ("/grpc.health.v1.", "/grpc.reflection.")


class _Interceptor(_aio_server.OpenTelemetryAioServerInterceptor):
    def _intercept_aio_server_stream(self, behavior: Any, handler_call_details: Any) -> Any:
        if inspect.isasyncgenfunction(behavior):
            return super()._intercept_aio_server_stream(behavior, handler_call_details)

        async def _stream_interceptor(request: Any, context: Any) -> None:
            with (
                self._set_remote_context(context),
                self._start_span(handler_call_details, context) as span,
            ):
                wrapped = _aio_server._OpenTelemetryAioServicerContext(context, span)
                try:
                    await behavior(request, wrapped)
                except Exception as error:
                    if type(error) is not Exception:  # an abort is recorded by the wrapper
                        span.record_exception(error)
                    raise

        return _stream_interceptor


def _traced(details: grpc.HandlerCallDetails) -> bool:
    return not details.method.startswith(_UNTRACED)


def server_interceptor(provider: Any) -> grpc.aio.ServerInterceptor:  # type: ignore[type-arg]
    """The interceptor, with spans from `provider` (the gateway's own TracerProvider)."""
    tracer = get_tracer(
        "opentelemetry.instrumentation.grpc",
        __version__,
        provider,
        schema_url="https://opentelemetry.io/schemas/1.11.0",
    )
    interceptor: grpc.aio.ServerInterceptor = _Interceptor(  # type: ignore[type-arg]
        tracer, filter_=_traced
    )
    return interceptor
