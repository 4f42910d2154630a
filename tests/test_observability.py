"""Metrics, logs and traces (CONTRACT.md §7 rules 21-22) against a running gateway."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections import Counter
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from prometheus_client.parser import text_string_to_metric_families

from imgate.config.errors import ConfigError
from imgate.config.load import parse_config
from imgate.observability.logs import make_handler, set_log_context
from imgate.observability.metrics import REASON_NAMES, STATE_NAMES, Metrics
from imgate.sandbox import FaultRule, SandboxConfig, SandboxServer
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.yunxin_v1.emulator import YunxinV1Settings
from tests.conftest import RunningGateway, StartGateway, text_request

WINDOW_S = 1.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _scrape(session: aiohttp.ClientSession, port: int) -> Samples:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


class TestMetricsCountTheOutcomes:
    @pytest.fixture
    def sandbox_config_override(self) -> SandboxConfig:
        # The vendor allows fewer calls than the gateway thinks: it refuses (416) for rate.
        return SandboxConfig(
            seed=1,
            vendors={
                "yunxin_v1": YunxinV1Settings(call_limit=3, call_window_s=WINDOW_S, block_s=1.0)
            },
        )

    async def test_counters_equal_the_outcomes(
        self, sandbox: SandboxServer, start_gateway: StartGateway
    ) -> None:
        gateway = await start_gateway(
            {
                "call_limit": 6,
                "call_window_s": WINDOW_S,
                "recipients_per_call": 10,
                "block_s": 1.0,
                "max_in_flight": 2,
                "max_attempts": 10,
            },
            metrics_listen="127.0.0.1:0",
        )
        port = gateway.gateway.metrics_port
        assert port
        # One call processed but answered with an internal error: its 10 recipients UNCERTAIN.
        sandbox.state.set_faults("yunxin_v1", [FaultRule(kind="error_500", times=1)])
        recipients = [f"user{n:03d}" for n in range(75)] + [f"ghost{n:02d}" for n in range(15)]
        async with aiohttp.ClientSession() as session:
            blocked_seen = 0.0

            async def watch_blocked() -> None:
                nonlocal blocked_seen
                while True:
                    samples = await _scrape(session, port)
                    blocked = _value(samples, "imgate_backend_blocked", backend="yunxin_v1")
                    blocked_seen = max(blocked_seen, blocked)
                    await asyncio.sleep(0.02)

            watcher = asyncio.create_task(watch_blocked())
            messages, outcomes, summary = await gateway.send(text_request(recipients, "yunxin_v1"))
            watcher.cancel()
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await gateway.stub.GetBatch(pb.GetBatchRequest(batch_id="nope"))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            # The client can see an aborted call's status a moment before the interceptor
            # around the handler has counted it (a full run once scraped 0 here).
            for _ in range(100):
                samples = await _scrape(session, port)
                if _value(samples, "grpc_server_handled_total", grpc_method="GetBatch"):
                    break
                await asyncio.sleep(0.05)

        expected = Counter((STATE_NAMES[o.state], REASON_NAMES[o.reason]) for o in outcomes)
        assert expected[("FAILED", "RECIPIENT_NOT_FOUND")] == 15
        assert expected[("UNCERTAIN", "VENDOR_ERROR")] == 10
        counted = {
            (dict(labels)["state"], dict(labels)["reason"]): value
            for (name, labels), value in samples.items()
            if name == "imgate_recipients_total" and dict(labels)["backend"] == "yunxin_v1"
        }
        assert counted == dict(expected)
        assert not any(
            dict(labels).get("backend") not in (None, "yunxin_v1") and value
            for (name, labels), value in samples.items()
            if name == "imgate_recipients_total"
        )

        refusals = sandbox.state.stats("yunxin_v1").refusals.get("416", 0)
        assert refusals >= 1  # the vendor did refuse for rate ...
        assert blocked_seen == 1.0  # ... and the gauge showed the backend paused
        assert _value(samples, "imgate_backend_blocks_total", backend="yunxin_v1") == refusals
        calls = _value(samples, "imgate_vendor_requests_total", backend="yunxin_v1")
        assert calls == summary.vendor_calls
        assert (
            _value(
                samples, "imgate_vendor_requests_total", backend="yunxin_v1", result="rate_limited"
            )
            == refusals
        )
        assert (
            _value(samples, "imgate_vendor_request_duration_seconds_count", backend="yunxin_v1")
            == summary.vendor_calls
        )
        # Every sent attempt waited for quota once (the first calls with no wait at all).
        assert _value(samples, "imgate_quota_wait_seconds_count", backend="yunxin_v1") == calls
        assert _value(samples, "imgate_quota_wait_seconds_sum", backend="yunxin_v1") > 0
        assert _value(samples, "imgate_batches_ended_total", state="DONE") == 1
        assert _value(samples, "imgate_batches", state="RUNNING") == 0
        assert _value(samples, "imgate_vendor_in_flight", backend="yunxin_v1") == 0
        assert _value(samples, "imgate_watch_streams") == 0

        rpc = {"grpc_service": "imgate.v1.GatewayService"}
        send = {**rpc, "grpc_method": "BatchSend", "grpc_type": "server_stream"}
        assert _value(samples, "grpc_server_started_total", **send) == 1
        assert _value(samples, "grpc_server_handled_total", **send, grpc_code="OK") == 1
        assert _value(samples, "grpc_server_msg_received_total", **send) == 1
        assert _value(samples, "grpc_server_msg_sent_total", **send) == len(messages)
        assert _value(samples, "grpc_server_handling_seconds_count", **send) == 1
        get = {**rpc, "grpc_method": "GetBatch", "grpc_type": "unary"}
        assert _value(samples, "grpc_server_handled_total", **get, grpc_code="NOT_FOUND") == 1
        assert _value(samples, "grpc_server_msg_sent_total", **get) == 0

        # No label carries a recipient, a batch id or a request id.
        labels_seen = {value for (_, labels) in samples for _, value in labels}
        assert not any(v.startswith(("user", "ghost")) for v in labels_seen)
        assert not any(len(v) == 32 for v in labels_seen)  # batch ids are uuid hex


async def test_watch_batch_stream_is_counted(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(metrics_listen="127.0.0.1:0")
    batch = await gateway.stub.SubmitBatch(
        pb.SubmitBatchRequest(
            backend="tencent",
            sender_id="imgate_sender",
            recipient_ids=["a", "b"],
            message=pb.Message(text=pb.TextContent(text="hi")),
        )
    )
    watched = [
        m async for m in gateway.stub.WatchBatch(pb.WatchBatchRequest(batch_id=batch.batch_id))
    ]
    assert watched[-1].HasField("summary")
    async with aiohttp.ClientSession() as session:
        samples = await _scrape(session, gateway.gateway.metrics_port)
    watch = {"grpc_method": "WatchBatch", "grpc_type": "server_stream"}
    assert _value(samples, "grpc_server_msg_sent_total", **watch) == len(watched)
    assert _value(samples, "grpc_server_handled_total", **watch, grpc_code="OK") == 1
    submit = {"grpc_method": "SubmitBatch", "grpc_type": "unary"}
    assert _value(samples, "grpc_server_msg_sent_total", **submit) == 1


async def test_each_gateway_has_its_own_registry(start_gateway: StartGateway) -> None:
    first: RunningGateway = await start_gateway(metrics_listen="127.0.0.1:0")
    second = await start_gateway(metrics_listen="127.0.0.1:0")
    await first.send(text_request(["a"], "tencent"))
    async with aiohttp.ClientSession() as session:
        one = await _scrape(session, first.gateway.metrics_port)
        other = await _scrape(session, second.gateway.metrics_port)
    assert _value(one, "imgate_recipients_total", backend="tencent") == 1
    assert _value(other, "imgate_recipients_total", backend="tencent") == 0


# -- logs -------------------------------------------------------------------------------

HOSTILE = "bob\n2026-12-01 00:00:00,000 ERROR imgate.forged [backend=x] fake\r\x1b[31m\u2028"


_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ imgate\.[a-z_.]+ \[backend=")


def _capture(log_format: str) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    logger = logging.getLogger(f"imgate.test.{log_format}")
    logger.handlers[:] = [make_handler(log_format, stream)]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_value_can_forge_a_log_line(log_format: str) -> None:
    logger, stream = _capture(log_format)

    async def one_line() -> None:
        # Backend names and request ids reach the context; vendor details the arguments.
        set_log_context(backend=HOSTILE, request_id="r" * 2_000_000, batch_id="b1")
        logger.warning("backend %s: vendor said %s (%d)", HOSTILE, HOSTILE, 7)
        logger.info(HOSTILE)  # a message with no arguments may also come from input
        try:
            raise ValueError(HOSTILE)
        except ValueError:
            logger.exception("translator bug for %r", HOSTILE)

    asyncio.run(one_line())
    lines = stream.getvalue().splitlines(keepends=False)
    records = [line for line in lines if not line.startswith((" ", "\t"))]
    assert len(records) == 3, lines
    assert all(len(line) < 8000 for line in lines)  # a 2 MB id is cut
    assert not any(line.startswith("2026-12-01 00:00:00,000") for line in lines)
    for line in lines:
        assert not any(char in line for char in ("\x1b", "\r", "\u2028")), line
    if log_format == "json":
        first = json.loads(records[0])
        assert first["backend"].startswith("bob\\n2026")
        assert first["request_id"].endswith("(1999744 more)")
        assert first["batch_id"] == "b1"
        assert first["caller"] == "-"
        assert first["level"] == "WARNING"
        assert "\\x1b[31m" in first["message"]
        assert "7" in first["message"]
    else:
        assert "[backend=bob\\n2026" in records[0]
        assert "caller=-]" in records[0]
        assert "\\x1b[31m" in records[0]


def test_context_defaults_to_dashes() -> None:
    logger, stream = _capture("text")
    logger.info("no batch here")
    assert "[backend=- request_id=- batch_id=- caller=-] no batch here" in stream.getvalue()


async def test_hostile_request_fields_never_forge_gateway_lines(
    start_gateway: StartGateway,
) -> None:
    """Recipient and sender ids with control characters are refused; whatever the
    gateway logs while refusing them stays one line per record in both formats."""
    gateway = await start_gateway()
    buffers = {name: io.StringIO() for name in ("text", "json")}
    handlers = [make_handler(name, buffer) for name, buffer in buffers.items()]
    root = logging.getLogger("imgate")
    for handler in handlers:
        root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        for request in (
            text_request([HOSTILE], "tencent"),
            text_request(["ok"], "tencent", sender_id=HOSTILE),
            text_request(["ok"], HOSTILE),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await gateway.send(request)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await gateway.send(text_request(["fine"], "tencent"))
    finally:
        for handler in handlers:
            root.removeHandler(handler)
        root.setLevel(old_level)
    for name, buffer in buffers.items():
        for line in buffer.getvalue().splitlines():
            assert "\x1b" not in line
            if name == "json":
                assert json.loads(line)["logger"].startswith("imgate.")
            else:
                assert _RECORD.match(line) or line.startswith(" "), line
                assert not line.startswith("2026-12-01 00:00:00,000"), line
        assert "batch of 1 recipients" in buffer.getvalue(), name


def test_observability_tables_are_typed_keys() -> None:
    base = {"backends": {"tx": {"vendor": "tencent", "region": "china", **_TENCENT}}}
    config = parse_config(
        {
            **base,
            "metrics": {"listen": "0.0.0.0:9464"},
            "tracing": {"otlp_endpoint": "http://otel:4317"},
            "log": {"format": "JSON", "level": "debug"},
        },
        {},
    )
    assert (config.metrics_listen, config.tracing_otlp_endpoint) == (
        "0.0.0.0:9464",
        "http://otel:4317",
    )
    assert (config.log_format, config.log_level) == ("json", "debug")
    for table, key, value in (
        ("metrics", "listen", "nowhere"),
        ("tracing", "otlp_endpoint", "otel:4317"),
        ("log", "format", "xml"),
        ("log", "level", "loud"),
        ("log", "colour", "red"),
    ):
        with pytest.raises(ConfigError) as error:
            parse_config({**base, table: {key: value}}, {})
        assert error.value.key == f"{table}.{key}"


_TENCENT = {"sdk_app_id": 1400000000, "secret_key": "k", "admin_identifier": "admin"}


@pytest.mark.parametrize("path", ["grafana/imgate.json", "prometheus/imgate-alerts.yml"])
def test_deploy_files_only_use_metrics_the_gateway_exports(path: str) -> None:
    text = (ROOT / "deploy" / path).read_text()
    if path.endswith(".json"):
        dashboard = json.loads(text)
        text = "\n".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    else:
        text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    used = set(re.findall(r"\b((?:imgate|grpc_server)_[a-z_]+)\b", text))
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    exported = {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes.get(family.type, ("",))
    }
    assert used
    assert used <= exported, used - exported


ROOT = Path(__file__).resolve().parent.parent


async def test_a_metrics_address_in_use_fails_start_up_naming_the_key(
    start_gateway: StartGateway,
) -> None:
    first = await start_gateway(metrics_listen="127.0.0.1:0")
    taken = f"127.0.0.1:{first.gateway.metrics_port}"
    with pytest.raises(ConfigError) as error:
        await start_gateway(metrics_listen=taken)
    assert error.value.key == "metrics.listen"
    assert taken in str(error.value)


async def test_health_and_reflection_rpcs_are_counted(start_gateway: StartGateway) -> None:
    gateway = await start_gateway(metrics_listen="127.0.0.1:0")
    health = health_pb2_grpc.HealthStub(gateway.channel)
    await health.Check(health_pb2.HealthCheckRequest())
    watch = health.Watch(health_pb2.HealthCheckRequest())
    first = await watch.read()  # an async-generator handler: counted as it yields
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    watch.cancel()
    reflect = gateway.channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [reflection_pb2.ServerReflectionRequest(list_services="")] * 2
    answers = [a async for a in reflect(iter(requests))]
    assert len(answers) == 2
    await asyncio.sleep(0.1)  # the cancelled Watch ends on the server
    async with aiohttp.ClientSession() as session:
        samples = await _scrape(session, gateway.gateway.metrics_port)
    health_labels = {"grpc_service": "grpc.health.v1.Health"}
    check = {**health_labels, "grpc_method": "Check", "grpc_type": "unary"}
    assert _value(samples, "grpc_server_handled_total", **check, grpc_code="OK") == 1
    watched = {**health_labels, "grpc_method": "Watch", "grpc_type": "server_stream"}
    assert _value(samples, "grpc_server_msg_sent_total", **watched) == 1
    assert _value(samples, "grpc_server_handled_total", **watched, grpc_code="CANCELLED") == 1
    bidi = {"grpc_method": "ServerReflectionInfo", "grpc_type": "bidi_stream"}
    assert _value(samples, "grpc_server_msg_received_total", **bidi) == 2
    assert _value(samples, "grpc_server_msg_sent_total", **bidi) == 2
    assert _value(samples, "grpc_server_handled_total", **bidi, grpc_code="OK") == 1
