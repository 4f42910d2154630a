"""OpenTelemetry spans: one per batch run, a child per vendor call (CONTRACT.md §7).

The SDK and the OTLP exporter are the optional `otel` extra: with `[tracing]` off the
gateway never imports them, and with it on but the extra missing start-up fails naming
`tracing.otlp_endpoint`. Each Gateway has its own TracerProvider (not the global one),
so tests can give it an in-memory exporter and several gateways can share a process.

Our own spans only: the grpc.aio server instrumentation of opentelemetry-python-contrib
breaks handlers that stream with `context.write()` (contrib issue 3066), which BatchSend
and WatchBatch do. Span attributes are names, counts and classifications — never a URL
(Tencent's UserSig is in the query string), a header, a body, a recipient or a credential.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from imgate.config.load import ConfigError

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
    def span(self, name: str, attributes: Mapping[str, AttributeValue]) -> Iterator[Span]:
        """A span, child of the current one (asyncio tasks inherit it), ended on exit."""
        if self._tracer is None:
            yield _OFF
            return
        with self._tracer.start_as_current_span(name, attributes=dict(attributes)) as span:
            yield Span(span)

    def close(self) -> None:
        if self._owned and self._provider is not None:
            self._provider.shutdown()
