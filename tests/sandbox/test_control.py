"""The /sandbox/... control endpoints and the in-process state they mirror."""

from __future__ import annotations

from typing import Any

import pytest

from imgate.sandbox import (
    SANDBOX_TENCENT_ADMIN_IDENTIFIER,
    SANDBOX_TENCENT_SDK_APP_ID,
    SANDBOX_TENCENT_SECRET_KEY,
    SANDBOX_YUNXIN_APP_KEY,
    SANDBOX_YUNXIN_APP_SECRET,
    FaultRule,
)

from .helpers import Vendors, tx_doc, yx1_fields, yx2_doc


async def _get(vendors: Vendors, path: str, **params: str) -> Any:
    async with vendors.session.get(vendors.server.url + path, params=params) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def _send_one_of_each(vendors: Vendors) -> None:
    await vendors.yx1(yx1_fields(to=["bob"]))
    await vendors.yx2(yx2_doc(to=["carol", "ghost1"]))
    await vendors.tx(tx_doc(to=["dave"], From_Account="erin"))


async def test_deliveries_log_and_vendor_filter(vendors: Vendors) -> None:
    await _send_one_of_each(vendors)
    log = (await _get(vendors, "/sandbox/deliveries"))["deliveries"]
    assert [(d["vendor"], d["sender"], d["recipient"]) for d in log] == [
        ("yunxin_v1", "alice", "bob"),
        ("yunxin_v2", "alice", "carol"),
        ("tencent", "erin", "dave"),
    ]
    first = log[0]
    assert set(first) == {
        "seq",
        "vendor",
        "call_id",
        "sender",
        "recipient",
        "message_type",
        "fingerprint",
        "message_id",
        "time",
        "duplicate",
    }
    assert first["message_type"] == "0"
    assert log[2]["message_type"] == "TIMTextElem"
    assert [d["call_id"] for d in log] == [1, 2, 3]
    only = (await _get(vendors, "/sandbox/deliveries", vendor="tencent"))["deliveries"]
    assert only == [log[2]]
    assert [{"seq": 3, **d.to_json()} for d in vendors.server.state.deliveries("tencent")] == only


async def test_stats_count_calls_refusals_deliveries_and_duplicates(vendors: Vendors) -> None:
    await vendors.yx1(yx1_fields(to=["bob", "carol"]))
    await vendors.yx1(yx1_fields(to=["bob"]))  # same sender, recipient, content: a duplicate
    await vendors.yx1(yx1_fields(to=["bob"], text="other"))  # other content: not a duplicate
    await vendors.yx1(yx1_fields(type="5"))  # refused 414
    stats = (await _get(vendors, "/sandbox/stats"))["yunxin_v1"]
    assert stats == {
        "vendor": "yunxin_v1",
        "calls_received": 4,
        "calls_processed": 3,
        "refusals": {"414": 1},
        "faults_applied": {},
        "deliveries": 4,
        "duplicate_deliveries": 1,
        "peak_calls_in_window": 3,
        "peak_recipients_in_window": 4,
        "blocked_for_s": 0.0,
        "recall_calls_processed": 0,
        "withdrawals": 0,
        "repeated_withdrawals": 0,
        "peak_recall_calls_in_window": 0,
        "recall_blocked_for_s": 0.0,
    }
    assert vendors.server.state.stats("yunxin_v1").to_json() == stats
    assert [d.duplicate for d in vendors.server.state.deliveries()] == [False, False, True, False]
    only = await _get(vendors, "/sandbox/stats", vendor="tencent")
    assert list(only) == ["tencent"]


async def test_same_content_to_other_vendors_is_no_duplicate(vendors: Vendors) -> None:
    await vendors.yx1(yx1_fields(to=["bob"]))
    await vendors.yx2(yx2_doc(to=["bob"]))
    assert all(s.duplicate_deliveries == 0 for s in vendors.server.state.all_stats().values())


async def test_reset_clears_everything(vendors: Vendors) -> None:
    state = vendors.server.state
    await _send_one_of_each(vendors)
    state.set_faults("tencent", [FaultRule(kind="html")])
    async with vendors.session.post(vendors.server.url + "/sandbox/reset") as response:
        assert response.status == 200
    assert state.deliveries() == []
    assert state.faults("tencent") == []
    for stats in state.all_stats().values():
        assert (stats.calls_received, stats.deliveries, stats.peak_calls_in_window) == (0, 0, 0)
        assert stats.refusals == stats.faults_applied == {}


async def test_reset_of_one_vendor(vendors: Vendors) -> None:
    await _send_one_of_each(vendors)
    url = vendors.server.url + "/sandbox/reset"
    async with vendors.session.post(url, params={"vendor": "tencent"}) as response:
        assert await response.json() == {"reset": ["tencent"]}
    assert {d.vendor for d in vendors.server.state.deliveries()} == {"yunxin_v1", "yunxin_v2"}
    assert vendors.server.state.stats("tencent").calls_received == 0


async def test_faults_get_and_put(vendors: Vendors) -> None:
    url = vendors.server.url + "/sandbox/faults"
    body = {"tencent": [{"kind": "error_500", "times": 1}, {"kind": "latency", "delay_s": 0.01}]}
    async with vendors.session.put(url, json=body) as response:
        assert response.status == 200
        shown = await response.json()
    assert shown["tencent"] == [
        {"kind": "error_500", "api": None, "delay_s": 0.0, "times": 1, "probability": 1.0},
        {"kind": "latency", "api": None, "delay_s": 0.01, "times": None, "probability": 1.0},
    ]
    assert shown["yunxin_v1"] == shown["yunxin_v2"] == []
    assert (await vendors.tx(tx_doc()))["ErrorCode"] == 70169
    remaining = (await _get(vendors, "/sandbox/faults"))["tencent"]
    assert [r["kind"] for r in remaining] == ["latency"]  # the used-up rule is gone


@pytest.mark.parametrize(
    "body",
    [
        {"tencent": [{"kind": "explode"}]},
        {"nobody": []},
        {"tencent": {"kind": "drop"}},
        {"tencent": [{"kind": "drop", "times": "1"}]},
        {"tencent": [{"kind": "drop", "probability": 2}]},
        {"tencent": [{"kind": "drop", "when": "now"}]},
        ["tencent"],
    ],
)
async def test_bad_fault_puts_are_refused_and_change_nothing(vendors: Vendors, body: Any) -> None:
    vendors.server.state.set_faults("yunxin_v1", [FaultRule(kind="html")])
    before = await _get(vendors, "/sandbox/faults")
    payload = {"yunxin_v1": [], **body} if isinstance(body, dict) else body
    async with vendors.session.put(vendors.server.url + "/sandbox/faults", json=payload) as resp:
        assert resp.status == 400
        assert "error" in await resp.json()
    assert await _get(vendors, "/sandbox/faults") == before


async def test_unknown_vendor_filter_is_a_400(vendors: Vendors) -> None:
    url = vendors.server.url + "/sandbox/deliveries"
    async with vendors.session.get(url, params={"vendor": "acme"}) as response:
        assert response.status == 400
    with pytest.raises(KeyError, match="acme"):
        vendors.server.state.deliveries("acme")


async def test_info_lists_credentials_limits_and_paths(vendors: Vendors) -> None:
    info = await _get(vendors, "/sandbox/info")
    yx1 = info["vendors"]["yunxin_v1"]
    assert yx1["path"] == "/nimserver/msg/sendBatchMsg.action"
    assert yx1["method"] == "POST"
    assert yx1["credentials"] == {
        "app_key": SANDBOX_YUNXIN_APP_KEY,
        "app_secret": SANDBOX_YUNXIN_APP_SECRET,
    }
    assert yx1["limits"]["recipients_per_call"] == 500
    assert yx1["limits"]["recipients_per_call_with_msgid"] == 100
    assert yx1["limits"]["call_limit"] == 120
    assert "app_secret" not in yx1["limits"]
    yx2 = info["vendors"]["yunxin_v2"]
    assert yx2["path"] == "/im/v2/conversations/messages"
    assert yx2["limits"]["failed_list_key"] == "account_id"
    tx = info["vendors"]["tencent"]
    assert tx["path"] == "/v4/openim/batchsendmsg"
    assert tx["credentials"] == {
        "sdk_app_id": SANDBOX_TENCENT_SDK_APP_ID,
        "secret_key": SANDBOX_TENCENT_SECRET_KEY,
        "admin_identifier": SANDBOX_TENCENT_ADMIN_IDENTIFIER,
    }
    assert tx["limits"]["max_body_bytes"] == 12288
    assert tx["limits"]["recipient_limit"] == 12000
    assert info["accounts"]["missing_prefix"] == "ghost"


async def test_vendor_paths_take_post_only(vendors: Vendors) -> None:
    async with vendors.session.get(vendors.server.vendor_url("tencent")) as response:
        assert response.status == 405
    async with vendors.session.post(vendors.server.url + "/v4/openim/sendmsg") as response:
        assert response.status == 404
