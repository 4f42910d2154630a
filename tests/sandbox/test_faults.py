"""Faults on demand: every kind, use counts, probability, order, and valid calls only."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlencode

import aiohttp
import pytest

from imgate.sandbox import (
    FaultRule,
    SandboxConfig,
    SandboxServer,
    TencentSettings,
    YunxinV1Settings,
)

from .conftest import StartSandbox
from .helpers import Vendors, tx_doc, yx1_fields, yx2_doc


def _faults(vendor: str, *rules: FaultRule) -> SandboxConfig:
    settings = {
        "yunxin_v1": YunxinV1Settings(faults=rules),
        "tencent": TencentSettings(faults=rules),
    }[vendor]
    return SandboxConfig(vendors={vendor: settings}, seed=1)


async def test_latency_delays_then_answers_normally(start_sandbox: StartSandbox) -> None:
    vendors = await start_sandbox(_faults("yunxin_v1", FaultRule(kind="latency", delay_s=0.3)))
    started = time.monotonic()
    answer = await vendors.yx1(yx1_fields())
    assert time.monotonic() - started >= 0.3
    assert answer["code"] == 200
    stats = vendors.server.state.stats("yunxin_v1")
    assert stats.deliveries == 2
    assert stats.faults_applied == {"latency": 1}


async def test_refuse_502_answers_html_and_processes_nothing(vendors: Vendors) -> None:
    vendors.server.state.set_faults("tencent", [FaultRule(kind="refuse_502", times=1)])
    answer = await vendors.tx_raw(tx_doc())
    assert answer.status == 502
    assert answer.content_type == "text/html"
    assert "502 Bad Gateway" in answer.text
    state = vendors.server.state
    assert state.deliveries() == []
    assert state.stats("tencent").refusals == {"fault:refuse_502": 1}
    assert state.stats("tencent").peak_calls_in_window == 0  # never counted
    assert (await vendors.tx(tx_doc()))["ActionStatus"] == "OK"  # times=1 used up


async def test_hang_processes_then_keeps_the_caller_waiting(vendors: Vendors) -> None:
    vendors.server.state.set_faults("yunxin_v2", [FaultRule(kind="hang", delay_s=5.0, times=1)])
    with pytest.raises(asyncio.TimeoutError):
        await vendors.yx2_raw(yx2_doc(), time_limit_s=0.3)
    # Delivered although the caller never heard back: the ambiguous case.
    assert [d.recipient for d in vendors.server.state.deliveries()] == ["bob", "carol"]
    assert vendors.server.state.stats("yunxin_v2").calls_processed == 1


async def test_hang_answers_after_its_delay(vendors: Vendors) -> None:
    vendors.server.state.set_faults("tencent", [FaultRule(kind="hang", delay_s=0.2)])
    started = time.monotonic()
    assert (await vendors.tx(tx_doc()))["ActionStatus"] == "OK"
    assert time.monotonic() - started >= 0.2


async def test_a_default_hang_does_not_hold_up_shutdown(session: aiohttp.ClientSession) -> None:
    config = SandboxConfig(vendors={"tencent": TencentSettings(faults=(FaultRule(kind="hang"),))})
    server = SandboxServer(config=config)
    await server.start()
    assert server.state.faults("tencent")[0].effective_delay_s == 3600
    with pytest.raises(asyncio.TimeoutError):
        await Vendors(server, session).tx_raw(tx_doc(), time_limit_s=0.2)
    assert len(server.state.deliveries()) == 2  # processed; the answer is hanging
    started = time.monotonic()
    await server.stop()
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("vendor", "expected"),
    [
        ("yunxin_v1", {"code": 500, "desc": "server error"}),
        ("yunxin_v2", {"code": 500, "msg": "server error", "data": {}}),
        ("tencent", {"ActionStatus": "FAIL", "ErrorCode": 70169, "ErrorInfo": "internal timeout"}),
    ],
)
async def test_error_500_processes_then_answers_the_internal_error(
    vendors: Vendors, vendor: str, expected: dict[str, object]
) -> None:
    vendors.server.state.set_faults(vendor, [FaultRule(kind="error_500", times=1)])
    if vendor == "yunxin_v1":
        answer = await vendors.yx1(yx1_fields())
    elif vendor == "yunxin_v2":
        answer = await vendors.yx2(yx2_doc())
    else:
        answer = await vendors.tx(tx_doc())
    assert answer == expected
    assert len(vendors.server.state.deliveries(vendor)) == 2


async def test_malformed_processes_then_answers_truncated_json(vendors: Vendors) -> None:
    vendors.server.state.set_faults("yunxin_v1", [FaultRule(kind="malformed", times=1)])
    answer = await vendors.yx1_raw(urlencode(yx1_fields()))
    assert answer.status == 200
    assert answer.content_type == "application/json"
    assert answer.text.startswith('{"code":200')
    with pytest.raises(json.JSONDecodeError):
        json.loads(answer.text)
    assert len(vendors.server.state.deliveries()) == 2


async def test_html_processes_then_answers_an_html_page(vendors: Vendors) -> None:
    vendors.server.state.set_faults("tencent", [FaultRule(kind="html", times=1)])
    answer = await vendors.tx_raw(tx_doc())
    assert (answer.status, answer.content_type) == (200, "text/html")
    assert answer.text.lstrip().startswith("<!DOCTYPE html>")
    assert len(vendors.server.state.deliveries()) == 2


async def test_drop_closes_the_connection_and_processes_nothing(vendors: Vendors) -> None:
    vendors.server.state.set_faults("yunxin_v2", [FaultRule(kind="drop", times=1)])
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await vendors.yx2_raw(yx2_doc())
    state = vendors.server.state
    assert state.deliveries() == []
    assert state.stats("yunxin_v2").refusals == {"fault:drop": 1}
    assert (await vendors.yx2(yx2_doc()))["code"] == 200


async def test_times_counts_down_and_rules_apply_in_order(vendors: Vendors) -> None:
    state = vendors.server.state
    state.set_faults(
        "tencent",
        [FaultRule(kind="refuse_502", times=2), FaultRule(kind="error_500", times=1)],
    )
    statuses = []
    for _ in range(4):
        answer = await vendors.tx_raw(tx_doc())
        statuses.append((answer.status, answer.body and answer.body["ErrorCode"]))
    assert statuses == [(502, None), (502, None), (200, 70169), (200, 0)]
    assert state.faults("tencent") == []


async def test_faults_apply_only_to_valid_calls(vendors: Vendors) -> None:
    state = vendors.server.state
    state.set_faults("yunxin_v1", [FaultRule(kind="refuse_502", times=1)])
    assert (await vendors.yx1(yx1_fields(type="5")))["code"] == 414
    assert state.faults("yunxin_v1")[0].times == 1  # not consumed by the invalid call
    assert (await vendors.yx1_raw(urlencode(yx1_fields()))).status == 502


async def _pattern(start_sandbox: StartSandbox, seed: int) -> list[int]:
    rule = FaultRule(kind="refuse_502", probability=0.5)
    config = SandboxConfig(vendors={"tencent": TencentSettings(faults=(rule,))}, seed=seed)
    vendors = await start_sandbox(config)
    return [(await vendors.tx_raw(tx_doc())).status for _ in range(20)]


async def test_probability_is_drawn_from_the_seeded_rng(start_sandbox: StartSandbox) -> None:
    first = await _pattern(start_sandbox, seed=7)
    assert first == await _pattern(start_sandbox, seed=7)
    assert 0 < first.count(502) < 20
    assert first != await _pattern(start_sandbox, seed=8)


async def test_reset_replays_the_seeded_draws(start_sandbox: StartSandbox) -> None:
    rule = FaultRule(kind="refuse_502", probability=0.5)
    vendors = await start_sandbox(SandboxConfig(seed=3))
    state = vendors.server.state
    state.set_faults("tencent", [rule])
    first = [(await vendors.tx_raw(tx_doc())).status for _ in range(10)]
    state.reset()
    assert state.faults("tencent") == []  # reset clears faults
    state.set_faults("tencent", [rule])
    assert [(await vendors.tx_raw(tx_doc())).status for _ in range(10)] == first


def test_fault_rules_are_checked() -> None:
    with pytest.raises(ValueError, match="kind"):
        FaultRule(kind="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="probability"):
        FaultRule(kind="drop", probability=1.5)
    with pytest.raises(ValueError, match="times"):
        FaultRule(kind="drop", times=-1)
    with pytest.raises(ValueError, match="delay_s"):
        FaultRule(kind="latency", delay_s=-1)
