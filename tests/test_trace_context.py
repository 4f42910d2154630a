"""CONTRACT §11 rule 33 across a process boundary: `imgate serve --otlp-endpoint` exports
to an OTLP receiver in this test; a caller's W3C `traceparent` (gRPC metadata) is the
parent of the RPC's SERVER span, the batch hangs under it, and each vendor request is a
CLIENT span, with the semantic conventions' RPC and HTTP attributes.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc
from tests._procs import free_port
from tests.test_process import _wait_serving

trace_service = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc", reason="needs imgate[otel]"
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2  # noqa: E402
from opentelemetry.proto.trace.v1 import trace_pb2  # noqa: E402


@dataclass
class _Span:
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


@dataclass
class _Receiver(trace_service.TraceServiceServicer):  # type: ignore[misc]
    """An OTLP/gRPC trace receiver that keeps every span it is sent."""

    spans: list[_Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def Export(self, request: Any, context: Any) -> Any:
        with self.lock:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        self.spans.append(
                            _Span(
                                span.name,
                                span.kind,
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.parent_span_id.hex(),
                                {a.key: _value(a.value) for a in span.attributes},
                            )
                        )
        return trace_service_pb2.ExportTraceServiceResponse()

    def wait(self, predicate: Any, timeout_s: float = 20) -> list[_Span]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            time.sleep(0.1)
        raise AssertionError(f"spans never arrived: {[s.name for s in spans]}")


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


@dataclass
class _Setup:
    receiver: _Receiver
    target: str


@pytest.fixture(scope="module")
def setup() -> Iterator[_Setup]:
    receiver = _Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    target = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMGATE_", "OTEL_"))}
    env["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # export within 0.1 s, not 5
    gateway = subprocess.Popen(
        [
            *(sys.executable, "-m", "imgate", "serve", "--listen", target),
            *("--sandbox-listen", "127.0.0.1:0"),
            *("--otlp-endpoint", f"http://127.0.0.1:{port}"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_serving(target)
        yield _Setup(receiver, target)
    finally:
        gateway.terminate()
        gateway.wait(30)
        server.stop(None)


def _caller() -> tuple[str, str, tuple[tuple[str, str], ...]]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, (("traceparent", f"00-{trace_id}-{span_id}-01"),)


def test_batch_send_joins_the_callers_trace_with_server_and_client_spans(setup: _Setup) -> None:
    trace_id, caller_span, metadata = _caller()
    request = pb.BatchSendRequest(
        backend="tencent",
        recipient_ids=["bob", "carol", "ghost1"],
        message=pb.Message(text=pb.TextContent(text="traced")),
    )
    with grpc.insecure_channel(setup.target) as channel:
        stub = pb_grpc.GatewayServiceStub(channel)
        messages = list(stub.BatchSend(request, metadata=metadata, timeout=30))
    assert messages[-1].summary.total == 3

    def complete(spans: list[_Span]) -> bool:
        mine = [s for s in spans if s.trace_id == trace_id]
        return {"batch", "vendor call", "POST"} <= {s.name for s in mine} and any(
            s.kind == trace_pb2.Span.SPAN_KIND_SERVER for s in mine
        )

    spans = [s for s in setup.receiver.wait(complete) if s.trace_id == trace_id]
    (server,) = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    assert server.parent_id == caller_span  # the caller's span is the parent
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.service"] == "imgate.v1.GatewayService"
    assert server.attributes["rpc.method"] == "BatchSend"
    assert server.attributes["rpc.grpc.status_code"] == 0

    (batch,) = [s for s in spans if s.name == "batch"]
    assert batch.parent_id == server.span_id
    assert batch.kind == trace_pb2.Span.SPAN_KIND_INTERNAL
    assert batch.attributes["imgate.backend"] == "tencent"

    calls = [s for s in spans if s.name == "vendor call"]
    requests = [s for s in spans if s.name == "POST"]
    assert calls
    assert len(requests) == len(calls)
    assert {c.parent_id for c in calls} == {batch.span_id}
    assert {r.parent_id for r in requests} == {c.span_id for c in calls}
    for http in requests:
        assert http.kind == trace_pb2.Span.SPAN_KIND_CLIENT
        assert http.attributes["http.request.method"] == "POST"
        assert http.attributes["http.response.status_code"] == 200
        assert http.attributes["server.address"] == "127.0.0.1"
        assert isinstance(http.attributes["server.port"], int)
        url = http.attributes["url.full"]
        assert url.endswith("/v4/openim/batchsendmsg")
        assert "?" not in url  # Tencent's UserSig is in the query: never on a span
    assert not any("usersig" in repr(s.attributes).lower() for s in spans)


def test_a_submitted_batch_joins_the_callers_trace_too(setup: _Setup) -> None:
    trace_id, caller_span, metadata = _caller()
    request = pb.SubmitBatchRequest(
        backend="yunxin_v2",
        sender_id="alice",
        recipient_ids=["bob"],
        message=pb.Message(text=pb.TextContent(text="traced")),
    )
    with grpc.insecure_channel(setup.target) as channel:
        stub = pb_grpc.GatewayServiceStub(channel)
        stub.SubmitBatch(request, metadata=metadata, timeout=30)

    def complete(spans: list[_Span]) -> bool:
        names = {s.name for s in spans if s.trace_id == trace_id}
        return {"batch", "POST", "/imgate.v1.GatewayService/SubmitBatch"} <= names

    spans = [s for s in setup.receiver.wait(complete) if s.trace_id == trace_id]
    (server,) = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    assert server.parent_id == caller_span
    assert server.attributes["rpc.method"] == "SubmitBatch"
    (batch,) = [s for s in spans if s.name == "batch"]
    assert batch.parent_id == server.span_id


def test_health_probes_make_no_spans(setup: _Setup) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(setup.target) as channel:
        for _ in range(3):
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    time.sleep(0.5)
    assert not [s for s in setup.receiver.spans if "grpc.health" in s.name]
