"""OpenTelemetry traces (CONTRACT.md §7, §11 rule 33): they join the caller's.

- Each RPC is a SERVER span (rpc.system, rpc.service, rpc.method, rpc.grpc.status_code)
  whose parent is the caller's W3C `traceparent` from gRPC metadata: the server
  interceptor of opentelemetry-instrumentation-grpc, taught to wrap handlers that stream
  with `context.write()` (its own assumes async generators, contrib issue 3066).
- A batch's run is a span under the RPC that created it, even when it starts later from
  the queue (the context is kept until the run starts); resumed batches are roots.
- Each vendor call is a span with imgate's attributes, and its HTTP request the CLIENT
  span of opentelemetry-instrumentation-aiohttp-client with the stable HTTP conventions
  (http.request.method, url.full without its query, server.address, server.port,
  http.response.status_code).

The SDK, the exporter and the instrumentations are the optional `otel` extra: with
`[tracing]` off the gateway never imports them, and with it on but the extra missing
start-up fails naming `tracing.otlp_endpoint`. Each Gateway has its own TracerProvider (not
the global one), so tests can give it an in-memory exporter and several gateways can share
a process. Span attributes are names, counts and classifications — never a query string
(Tencent's UserSig is there), a header, a body, a recipient or a credential.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from imgate.config.errors import ConfigError

AttributeValue = str | int | float | bool


class Span:
    """What the gateway does with a span: add attributes; a no-op when tracing is off."""

    def __init__(self, span: Any = None) -> None:
        self._span = span

    def set(self, attributes: Mapping[str, AttributeValue]) -> None:
        if self._span is not None:
            self._span.set_attributes(attributes)

    def error(self, description: str) -> None:
        if self._span is not None:
            from opentelemetry.trace import Status, StatusCode

            self._span.set_status(Status(StatusCode.ERROR, description))


_OFF = Span()
_CURRENT = object()  # span(parent=...) not given: the current context


class Tracing:
    """The gateway's tracer; `Tracing(None)` traces nothing and imports nothing."""

    def __init__(self, provider: Any = None, owned: bool = False) -> None:
        """`provider`: an opentelemetry-sdk TracerProvider; `owned`: shut it down on close."""
        self._provider = provider
        self._owned = owned
        self._tracer = None if provider is None else provider.get_tracer("imgate")

    @classmethod
    def from_endpoint(cls, endpoint: str) -> Tracing:
        """Export to the OTLP/gRPC collector at `endpoint` ("" = off)."""
        if not endpoint:
            return cls()
        try:
            import opentelemetry.instrumentation.aiohttp_client
            import opentelemetry.instrumentation.grpc  # noqa: F401
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            raise ConfigError(
                "tracing.otlp_endpoint",
                "tracing needs the otel extra: pip install 'imgate[otel]'",
            ) from None
        provider = TracerProvider(resource=Resource.create({"service.name": "imgate"}))
        provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
            )
        )
        return cls(provider, owned=True)

    @contextlib.contextmanager
    def span(
        self, name: str, attributes: Mapping[str, AttributeValue], parent: Any = _CURRENT
    ) -> Iterator[Span]:
        """A span, child of the current one (asyncio tasks inherit it) or of `parent` (a
        context from `current()`; None: a root), ended on exit."""
        if self._tracer is None:
            yield _OFF
            return
        context = None
        if parent is not _CURRENT:
            from opentelemetry.context import Context

            context = parent if parent is not None else Context()
        with self._tracer.start_as_current_span(
            name, context=context, attributes=dict(attributes)
        ) as span:
            yield Span(span)

    def current(self) -> Any:
        """The current trace context (to parent a span started later), None when off."""
        if self._tracer is None:
            return None
        from opentelemetry.context import get_current

        return get_current()

    def extract(self, headers: Mapping[str, str]) -> Any:
        """The caller's trace context from W3C `traceparent` / `tracestate` headers (HTTP),
        for `span(..., parent=...)`; None when off or absent (then: a root)."""
        if self._tracer is None:
            return None
        from opentelemetry.propagate import extract

        return extract({key.lower(): value for key, value in headers.items()})

    def server_interceptors(self) -> list[Any]:
        """The gRPC server interceptor that makes each RPC a SERVER span (none when off)."""
        if self._provider is None:
            return []
        from imgate.observability.otel_grpc import server_interceptor

        return [server_interceptor(self._provider)]

    def http_trace_configs(self) -> list[Any]:
        """aiohttp TraceConfigs that make each vendor request a CLIENT span (none when
        off). The query string never reaches a span: Tencent signs there."""
        if self._provider is None:
            return []
        from opentelemetry.instrumentation._semconv import _StabilityMode
        from opentelemetry.instrumentation.aiohttp_client import create_trace_config

        return [
            create_trace_config(
                url_filter=lambda url: str(url.with_query(None).with_fragment(None)),
                tracer_provider=self._provider,
                sem_conv_opt_in_mode=_StabilityMode.HTTP,
            )
        ]

    def close(self) -> None:
        if self._owned and self._provider is not None:
            self._provider.shutdown()
