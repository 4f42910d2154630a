"""The recall emulators (CONTRACT §9 rule 27): each vendor's recall API as strictly as its
send API: only a message it delivered can be withdrawn, once, within its window, at its
own rate, with the vendor's codes; the withdrawal log and stats say what was taken back."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from imgate.sandbox import Clock, FaultRule, SandboxConfig
from imgate.vendors.registry import BY_VENDOR
from imgate.vendors.tencent.emulator import TencentSettings
from imgate.vendors.yunxin_v1.emulator import YunxinV1Settings
from imgate.vendors.yunxin_v2.emulator import YunxinV2Settings

from .conftest import StartSandbox
from .helpers import (
    FORM,
    FakeClock,
    Vendors,
    tencent_query,
    tx_doc,
    yunxin_auth,
    yx1_fields,
    yx2_doc,
)


async def _call(vendors: Vendors, vendor: str, **request: Any) -> Any:
    recall = BY_VENDOR[vendor].spec.recall
    assert recall is not None
    path = request.pop("path", recall.path)
    async with vendors.session.request(
        recall.method, vendors.server.url + path, **request
    ) as response:
        assert response.status == 200
        return json.loads(await response.text())


async def tx_recall(vendors: Vendors, doc: Any, now: float | None = None) -> Any:
    return await _call(
        vendors,
        "tencent",
        data=doc if isinstance(doc, str) else json.dumps(doc),
        params=tencent_query(now=now),
        headers={"Content-Type": "application/json"},
    )


async def yx1_recall(vendors: Vendors, fields: dict[str, str], now: float | None = None) -> Any:
    headers = {**yunxin_auth(now), "Content-Type": FORM}
    return await _call(vendors, "yunxin_v1", data=urlencode(fields), headers=headers)


async def yx2_recall(
    vendors: Vendors,
    conversation: str,
    message_id: str,
    kind: str = "1",
    now: float | None = None,
) -> Any:
    path = f"/im/v2/conversations/{quote(conversation, '')}/messages/{message_id}"
    return await _call(
        vendors, "yunxin_v2", path=path, params={"type": kind}, headers=yunxin_auth(now)
    )


# -- Tencent ---------------------------------------------------------------------------


async def test_tencent_withdraws_a_delivered_message_once(vendors: Vendors) -> None:
    sent = await vendors.tx(tx_doc(to=["bob", "carol", "ghost1"], From_Account="alice"))
    key = sent["MsgKey"]
    ok = await tx_recall(vendors, {"From_Account": "alice", "To_Account": "bob", "MsgKey": key})
    assert ok == {"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0}
    again = await tx_recall(vendors, {"From_Account": "alice", "To_Account": "bob", "MsgKey": key})
    assert again["ErrorCode"] == 20023
    other_sender = {"From_Account": "dave", "To_Account": "carol", "MsgKey": key}
    assert (await tx_recall(vendors, other_sender))["ErrorCode"] == 20022
    never_sent = {"From_Account": "alice", "To_Account": "erin", "MsgKey": key}
    assert (await tx_recall(vendors, never_sent))["ErrorCode"] == 20022
    unknown = {"From_Account": "alice", "To_Account": "ghost1", "MsgKey": key}
    assert (await tx_recall(vendors, unknown))["ErrorCode"] == 90003
    bad_key = {"From_Account": "alice", "To_Account": "carol", "MsgKey": "x"}
    assert (await tx_recall(vendors, bad_key))["ErrorCode"] == 90054
    assert (await tx_recall(vendors, "{"))["ErrorCode"] == 90001
    state = vendors.server.state
    assert [(w.sender, w.recipient, w.message_id) for w in state.withdrawals("tencent")] == [
        ("alice", "bob", key)
    ]
    stats = state.stats("tencent")
    assert (stats.withdrawals, stats.repeated_withdrawals) == (1, 1)
    assert stats.refusals == {"recall:90003": 1, "recall:90054": 1, "recall:90001": 1}


async def test_tencent_admin_sent_messages_are_recalled_as_the_admin(vendors: Vendors) -> None:
    sent = await vendors.tx(tx_doc(to=["bob"]))  # no From_Account: the admin sends
    doc = {"From_Account": "administrator", "To_Account": "bob", "MsgKey": sent["MsgKey"]}
    assert (await tx_recall(vendors, doc))["ErrorCode"] == 0


async def test_tencent_recall_has_a_quota_of_its_own(start_sandbox: StartSandbox) -> None:
    settings = TencentSettings(recall_call_limit=2, recall_call_window_s=60.0)
    vendors = await start_sandbox(SandboxConfig(vendors={"tencent": settings}))
    sent = await vendors.tx(tx_doc(to=["a", "b", "c"]))
    key = sent["MsgKey"]
    answers = [
        await tx_recall(vendors, {"From_Account": "administrator", "To_Account": r, "MsgKey": key})
        for r in ("a", "b", "c")
    ]
    assert [a["ErrorCode"] for a in answers] == [0, 0, 60007]  # no block: the next window
    await vendors.tx(tx_doc(to=["d"]))  # sends are counted apart
    stats = vendors.server.state.stats("tencent")
    assert (stats.peak_recall_calls_in_window, stats.refusals) == (2, {"recall:60007": 1})


async def test_past_max_recallable_messages_the_oldest_are_forgotten_first(
    start_sandbox: StartSandbox,
) -> None:
    vendors = await start_sandbox(SandboxConfig(max_recallable_messages=3))
    first = (await vendors.tx(tx_doc(to=["a", "b"], MsgSeq=1)))["MsgKey"]
    second = (await vendors.tx(tx_doc(to=["c", "d"], MsgSeq=2)))["MsgKey"]
    answers = {}
    for key, recipient in ((first, "a"), (first, "b"), (second, "c"), (second, "d")):
        doc = {"From_Account": "administrator", "To_Account": recipient, "MsgKey": key}
        answers[(key, recipient)] = (await tx_recall(vendors, doc))["ErrorCode"]
    # "a", delivered first, is no longer held: as if never sent (20022).
    assert answers == {(first, "a"): 20022, (first, "b"): 0, (second, "c"): 0, (second, "d"): 0}
    assert len(vendors.server.state.vendor("tencent").sent) == 3


# -- Yunxin legacy ---------------------------------------------------------------------


async def _yx1_sent(vendors: Vendors, to: list[str], now: float | None = None) -> dict[str, Any]:
    answer = await vendors.yx1(yx1_fields(to=to, returnMsgid="true"), headers=yunxin_auth(now))
    assert answer["code"] == 200
    return answer


def _yx1_form(answer: dict[str, Any], to: str, **extra: str) -> dict[str, str]:
    fields = {
        "deleteMsgid": str(answer["msgids"][to]),
        "timetag": str(answer["timetag"]),
        "type": "7",
        "from": "alice",
        "to": to,
    }
    fields.update(extra)
    return fields


async def test_yunxin_v1_withdraws_what_it_holds_and_answers_200_for_what_it_does_not(
    vendors: Vendors,
) -> None:
    sent = await _yx1_sent(vendors, ["bob", "carol"])
    assert await yx1_recall(vendors, _yx1_form(sent, "bob", ignoreTime="1")) == {"code": 200}
    assert await yx1_recall(vendors, _yx1_form(sent, "bob")) == {"code": 200}  # again
    # A wrong timetag or sender: a message it does not hold, "recalled" all the same.
    wrong = _yx1_form(sent, "carol", timetag=str(sent["timetag"] + 1))
    assert await yx1_recall(vendors, wrong) == {"code": 200}
    assert await yx1_recall(vendors, _yx1_form(sent, "carol", **{"from": "dave"})) == {"code": 200}
    team = _yx1_form(sent, "carol", type="8")
    assert await yx1_recall(vendors, team) == {"code": 200}
    state = vendors.server.state
    assert [w.recipient for w in state.withdrawals("yunxin_v1")] == ["bob"]
    stats = state.stats("yunxin_v1")
    assert (stats.withdrawals, stats.repeated_withdrawals, stats.recall_calls_processed) == (
        1,
        1,
        5,
    )


async def test_yunxin_v1_checks_its_form(vendors: Vendors) -> None:
    sent = await _yx1_sent(vendors, ["bob"])
    for fields, named in (
        (_yx1_form(sent, "bob", type="13"), "type"),
        (_yx1_form(sent, "bob", ignoreTime="2"), "ignoreTime"),
        (_yx1_form(sent, "bob", deleteMsgid="abc"), "deleteMsgid"),
        (_yx1_form(sent, "bob", msg="x" * 129), "msg"),
        ({k: v for k, v in _yx1_form(sent, "bob").items() if k != "timetag"}, "timetag"),
    ):
        answer = await yx1_recall(vendors, fields)
        assert answer["code"] == 414, fields
        assert named in answer["desc"]
    assert vendors.server.state.stats("yunxin_v1").withdrawals == 0


async def test_yunxin_v1_window_without_ignore_time(start_sandbox: StartSandbox) -> None:
    wall = FakeClock(1_800_000_000.0)
    settings = YunxinV1Settings(recall_window_s=120.0)
    vendors = await start_sandbox(
        SandboxConfig(vendors={"yunxin_v1": settings}, clock=Clock(wall=wall))
    )
    sent = await _yx1_sent(vendors, ["bob", "carol"], now=wall())
    wall.advance(121)
    late = await yx1_recall(vendors, _yx1_form(sent, "bob"), now=wall())
    assert late["code"] == 508
    lifted = await yx1_recall(vendors, _yx1_form(sent, "bob", ignoreTime="1"), now=wall())
    assert lifted == {"code": 200}
    wall.advance(30 * 86400)
    too_late = await yx1_recall(vendors, _yx1_form(sent, "carol", ignoreTime="1"), now=wall())
    assert too_late["code"] == 508
    assert [w.recipient for w in vendors.server.state.withdrawals("yunxin_v1")] == ["bob"]


async def test_yunxin_v1_recall_over_its_rate_is_blocked(start_sandbox: StartSandbox) -> None:
    settings = YunxinV1Settings(recall_call_limit=1, recall_call_window_s=60.0)
    vendors = await start_sandbox(SandboxConfig(vendors={"yunxin_v1": settings}))
    sent = await _yx1_sent(vendors, ["bob", "carol"])
    first = await yx1_recall(vendors, _yx1_form(sent, "bob", ignoreTime="1"))
    second = await yx1_recall(vendors, _yx1_form(sent, "carol", ignoreTime="1"))
    assert (first["code"], second["code"]) == (200, 416)
    stats = vendors.server.state.stats("yunxin_v1")
    assert stats.recall_blocked_for_s > 9  # blocked 10 s
    assert stats.blocked_for_s == 0  # sends are not
    await _yx1_sent(vendors, ["dave"])


# -- Yunxin v2 -------------------------------------------------------------------------


async def _yx2_ids(vendors: Vendors, to: list[str], now: float | None = None) -> dict[str, str]:
    answer = await vendors.yx2(yx2_doc(to=to), headers=yunxin_auth(now))
    return {i["receiver_id"]: str(i["message_server_id"]) for i in answer["data"]["success_list"]}


async def test_yunxin_v2_withdraws_a_delivered_message_once(vendors: Vendors) -> None:
    ids = await _yx2_ids(vendors, ["bob", "carol"])
    done = await yx2_recall(vendors, "alice|1|bob", ids["bob"])
    assert done == {"code": 200, "msg": "success", "data": {}}
    assert (await yx2_recall(vendors, "alice|1|bob", ids["bob"]))["code"] == 200  # again
    assert (await yx2_recall(vendors, "dave|1|carol", ids["carol"]))["code"] == 404
    assert (await yx2_recall(vendors, "alice|1|carol", ids["bob"]))["code"] == 404
    for conversation, message_id, kind in (
        ("alice|2|carol", ids["carol"], "1"),
        ("alice|carol", ids["carol"], "1"),
        ("alice|1|carol", "x1", "1"),
        ("alice|1|carol", ids["carol"], "4"),
    ):
        answer = await yx2_recall(vendors, conversation, message_id, kind)
        assert answer["code"] == 414, (conversation, message_id, kind)
    state = vendors.server.state
    assert [w.recipient for w in state.withdrawals("yunxin_v2")] == ["bob"]
    assert state.stats("yunxin_v2").repeated_withdrawals == 1


async def test_yunxin_v2_two_way_recall_has_the_apps_window(start_sandbox: StartSandbox) -> None:
    wall = FakeClock(1_800_000_000.0)
    vendors = await start_sandbox(
        SandboxConfig(vendors={"yunxin_v2": YunxinV2Settings()}, clock=Clock(wall=wall))
    )
    ids = await _yx2_ids(vendors, ["bob", "carol"], now=wall())
    wall.advance(121)
    two_way = await yx2_recall(vendors, "alice|1|bob", ids["bob"], "2", now=wall())
    assert two_way["code"] == 508
    one_way = await yx2_recall(vendors, "alice|1|bob", ids["bob"], "1", now=wall())
    assert one_way["code"] == 200
    wall.advance(30 * 86400)
    late = await yx2_recall(vendors, "alice|1|carol", ids["carol"], "1", now=wall())
    assert late["code"] == 508


# -- all -------------------------------------------------------------------------------


async def test_faults_can_aim_at_one_api(vendors: Vendors) -> None:
    state = vendors.server.state
    state.set_faults("yunxin_v2", [FaultRule(kind="error_500", api="recall")])
    ids = await _yx2_ids(vendors, ["bob"])  # the send is not touched
    answer = await yx2_recall(vendors, "alice|1|bob", ids["bob"])
    assert answer["code"] == 500
    assert [w.recipient for w in state.withdrawals("yunxin_v2")] == ["bob"]  # processed


async def test_the_control_api_shows_recall_routes_and_withdrawals(vendors: Vendors) -> None:
    sent = await vendors.tx(tx_doc(to=["bob"]))
    doc = {"From_Account": "administrator", "To_Account": "bob", "MsgKey": sent["MsgKey"]}
    await tx_recall(vendors, doc)
    async with vendors.session.get(vendors.server.url + "/sandbox/info") as response:
        info = await response.json()
    assert info["vendors"]["yunxin_v2"]["recall"] == {
        "method": "DELETE",
        "path": "/im/v2/conversations/{conversation_id}/messages/{message_server_id}",
    }
    url = vendors.server.url + "/sandbox/withdrawals?vendor=tencent"
    async with vendors.session.get(url) as response:
        page = await response.json()
    assert [(w["seq"], w["recipient"]) for w in page["withdrawals"]] == [(1, "bob")]
    assert page["truncated"] is False
    assert "withdrawals" in vendors.server.banner()
