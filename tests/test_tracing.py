"""OpenTelemetry spans of a batch (CONTRACT.md §7), with the SDK's in-memory exporter."""

from __future__ import annotations

import dataclasses
import sys
import time

import grpc
import pytest

from imgate.api.server import Gateway
from imgate.config.errors import ConfigError
from imgate.config.load import sandbox_config
from imgate.observability.tracing import Tracing
from imgate.sandbox import FaultRule, SandboxServer
from imgate.v1 import gateway_pb2_grpc as pb_grpc
from tests.conftest import text_request

trace_sdk = pytest.importorskip("opentelemetry.sdk.trace", reason="needs imgate[otel]")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)


async def test_a_tencent_batch_is_one_span_with_a_child_per_vendor_call(
    sandbox: SandboxServer,
) -> None:
    exporter = InMemorySpanExporter()
    provider = trace_sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = sandbox_config(sandbox.url, "127.0.0.1:0", store_url="memory")
    backends = tuple(dataclasses.replace(b, recipients_per_call=2) for b in config.backends)
    gateway = Gateway(dataclasses.replace(config, backends=backends), tracing=Tracing(provider))
    port = await gateway.start()
    # The first call is refused with a 502 (nothing processed) and sent again.
    sandbox.state.set_faults("tencent", [FaultRule(kind="refuse_502", times=1)])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.GatewayServiceStub(channel)
            request = text_request(["a", "b", "c", "ghost1"], "tencent", request_id="rid-1")
            messages = [m async for m in stub.BatchSend(request)]
    finally:
        await gateway.stop(grace_s=1)
    summary = messages[-1].summary

    spans = exporter.get_finished_spans()
    (batch,) = [s for s in spans if s.name == "batch"]
    calls = [s for s in spans if s.name == "vendor call"]
    assert len(calls) == summary.vendor_calls == 3
    assert batch.attributes is not None
    assert batch.attributes["imgate.backend"] == "tencent"
    assert batch.attributes["imgate.vendor"] == "tencent"
    assert batch.attributes["imgate.recipients"] == 4
    assert batch.attributes["imgate.state"] == "DONE"
    assert batch.attributes["imgate.accepted"] == 3
    assert batch.attributes["imgate.failed"] == 1
    for call in calls:
        assert call.parent is not None
        assert call.parent.span_id == batch.context.span_id
        assert call.context.trace_id == batch.context.trace_id
        assert call.attributes is not None
        assert call.attributes["imgate.recipients"] == 2
    results = sorted(
        (c.attributes["imgate.attempt"], c.attributes["imgate.result"])  # type: ignore[index]
        for c in calls
    )
    assert results == [(1, "done"), (1, "retry"), (2, "done")]

    # No secret reaches a span: not the key, nor the UserSig, nor a signed query string.
    tencent = gateway.backends["tencent"]
    secret_key = tencent.config.credentials["secret_key"]
    # The UserSig the calls carried (cached by the translator for its lifetime).
    user_sig = tencent.translator._auth.user_sig(time.time())  # type: ignore[attr-defined]
    assert len(user_sig) > 20
    for span in spans:
        text = repr(dict(span.attributes or {})) + span.name + repr(span.events)
        for secret in (secret_key, user_sig, "usersig", "UserSig", "CheckSum", "sandbox-secret"):
            assert secret not in text, (span.name, secret)
        assert "rid-1" not in text  # not a metric label, and not needed on a span either
        assert "ghost1" not in text


def test_tracing_on_without_the_extra_fails_naming_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A module set to None in sys.modules cannot be imported: as if the extra were missing.
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(ConfigError) as error:
        Tracing.from_endpoint("http://127.0.0.1:4317")
    assert error.value.key == "tracing.otlp_endpoint"
    assert "imgate[otel]" in str(error.value)


def test_tracing_off_imports_nothing() -> None:
    tracing = Tracing.from_endpoint("")
    with tracing.span("batch", {"imgate.backend": "x"}) as span:
        span.set({"imgate.result": "done"})


def test_tracing_on_with_the_extra_builds_an_exporter_and_closes() -> None:
    tracing = Tracing.from_endpoint("http://127.0.0.1:1")
    assert tracing._tracer is not None  # a real tracer, not the off switch
    tracing.close()  # nothing was recorded: nothing to send to the (absent) collector


def test_http_headers_give_the_callers_trace_context() -> None:
    """For the HTTP/JSON layer (rule 33): a `traceparent` header parents a span."""
    exporter = InMemorySpanExporter()
    provider = trace_sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider)
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    parent = tracing.extract({"Traceparent": f"00-{trace_id}-{span_id}-01"})
    with tracing.span("batch", {}, parent=parent):
        pass
    (span,) = exporter.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == span_id
    assert Tracing().extract({"traceparent": "x"}) is None
