"""The vendors' own documented examples (shared/seeds/) go through the emulators.

Only the auth material is adapted (fresh sandbox signatures instead of the pages' sample
keys); where the page's mock data is itself invalid, the test says so.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from imgate.sandbox import AccountRules, Clock, SandboxConfig, YunxinV2Settings

from .conftest import StartSandbox
from .helpers import Vendors, tencent_query

NOW = 1_572_870_301.0

# seeds/001 (Yunxin legacy), the cURL example's body exactly as the page sends it (-d,
# not URL-encoded) and its Content-Type without charset.
YX1_CURL_BODY = 'fromAccid=zhangsan&toAccids=["aaa","bbb"]&type=0&body={"msg":"hello"}'

# seeds/000 (Yunxin v2 batch, apifox), the request example verbatim.
YX2_EXAMPLE: dict[str, Any] = {
    "sender_no_sense": False,
    "extension": "officia labore ex sit ut",
    "message": {
        "message_type": 0,
        "sub_type": 30164486,
        "text": "laborum irure",
        "attachment": {
            "name": "型用四这却认",
            "md5": "amet sit Excepteur officia",
            "url": "http://xkjotf.cq/ckp",
            "ext": "in qui",
            "width": 10,
            "height": 95,
            "size": 89,
        },
    },
    "route_config": {
        "route_enabled": False,
        "route_environment": "incididunt eiusmod esse magna",
    },
    "push_config": {
        "push_enabled": True,
        "push_nick_enabled": False,
        "push_content": "proident reprehenderit",
        "push_payload": None,
        "push_forcepush_all": True,
        "push_forcepush_ids": ["30"],
        "push_forcepush_content": "irure",
    },
    "antispam_config": {
        "antispam_enabled": False,
        "antispam_business_id": "31",
        "antispam_extension": None,
        "antispam_cheating": None,
    },
    "p2p_option": {"check_friend": True},
    "sender_id": "apifoxtest1",
    "receiver_ids": ["apifoxtest2"],
}

# seeds/003 (Tencent batchsendmsg), the two request examples with their // comments removed.
TX_ADMIN_EXAMPLE = """{"SyncOtherMachine": 2,"To_Account": ["bonnie","rong"],"MsgSeq": 28360,
"MsgRandom": 19901224,"MsgBody": [{"MsgType": "TIMTextElem","MsgContent": {"Text": "hi, beauty"}}],
"CloudCustomData": "your cloud custom data"}"""
TX_FROM_ACCOUNT_EXAMPLE = """{"SyncOtherMachine": 1,"From_Account": "dave","To_Account":
["bonnie","rong"],"MsgSeq": 28360,"MsgRandom": 19901224,"MsgBody": [{"MsgType":
"TIMTextElem","MsgContent": {"Text": "hi, beauty"}}],"CloudCustomData": "your cloud custom data",
"OfflinePushInfo": {"PushFlag": 0,"Desc": "离线推送内容","Ext": "这是透传的内容","AndroidInfo":
{"Sound": "android.mp3"},"ApnsInfo": {"Sound": "apns.mp3","BadgeMode": 1,"Title":"apns title",
"SubTitle":"apns subtitle","Image":"www.image.com"}}}"""


async def test_yunxin_v1_curl_example(vendors: Vendors) -> None:
    answer = await vendors.yx1_raw(YX1_CURL_BODY, content_type="application/x-www-form-urlencoded")
    assert answer.status == 200
    assert answer.content_type == "application/json"
    assert answer.body["code"] == 200
    assert answer.body["unregister"] == []
    assert isinstance(answer.body["timetag"], int)
    deliveries = vendors.server.state.deliveries("yunxin_v1")
    assert [(d.sender, d.recipient) for d in deliveries] == [
        ("zhangsan", "aaa"),
        ("zhangsan", "bbb"),
    ]


async def test_yunxin_v1_answer_shapes_of_the_page(start_sandbox: StartSandbox) -> None:
    # The page's success example: unregistered accids listed, msgids as numbers.
    accounts = AccountRules(missing=frozenset({"123123", "111422"}))
    vendors = await start_sandbox(SandboxConfig(accounts=accounts))
    body = YX1_CURL_BODY.replace('["aaa","bbb"]', '["12345","55213","123123","111422"]')
    answer = await vendors.yx1_raw(body + "&returnMsgid=true")
    assert answer.body["unregister"] == ["123123", "111422"]
    assert set(answer.body["msgids"]) == {"12345", "55213"}
    assert all(isinstance(v, int) for v in answer.body["msgids"].values())
    # The page's failure examples.
    too_many = YX1_CURL_BODY.replace('["aaa","bbb"]', json.dumps([str(i) for i in range(501)]))
    assert (await vendors.yx1_raw(too_many)).body == {"code": 414, "desc": "too many members."}
    muted = YX1_CURL_BODY.replace("zhangsan", "muted-zhangsan")
    assert (await vendors.yx1_raw(muted)).body == {"code": 423, "desc": "account 'mute'."}


async def test_yunxin_v2_example_as_published_is_refused_for_its_extension(
    vendors: Vendors,
) -> None:
    # The apifox mock fills `extension` with lorem text; the field is documented as JSON
    # ("JSON 格式"), so the emulator refuses it as the vendor would.
    answer = await vendors.yx2(YX2_EXAMPLE)
    assert answer["code"] == 414
    assert "extension" in answer["msg"]


async def test_yunxin_v2_example_with_json_extension(vendors: Vendors) -> None:
    # Only the invalid mock value changes (to the page's own example {"k":"v"}). The
    # example omits receiver_no_sense (marked required) and sets check_friend=true:
    # both are accepted (friend relations are not emulated).
    doc = copy.deepcopy(YX2_EXAMPLE)
    doc["extension"] = '{"k":"v"}'
    answer = await vendors.yx2(doc)
    assert answer["code"] == 200
    assert answer["msg"] == "success"
    (item,) = answer["data"]["success_list"]
    assert {
        k: item[k]
        for k in ("sender_id", "receiver_id", "conversation_type", "message_type", "sub_type")
    } == {
        "sender_id": "apifoxtest1",
        "receiver_id": "apifoxtest2",
        "conversation_type": 1,
        "message_type": 0,
        "sub_type": 30164486,
    }
    assert isinstance(item["message_server_id"], int)
    assert isinstance(item["create_time"], int)


async def test_yunxin_v2_example_with_the_apifox_cap(start_sandbox: StartSandbox) -> None:
    vendors = await start_sandbox(
        SandboxConfig(vendors={"yunxin_v2": YunxinV2Settings(recipients_per_call=500)})
    )
    doc = copy.deepcopy(YX2_EXAMPLE)
    doc["extension"] = '{"k":"v"}'
    doc["receiver_ids"] = [f"apifoxtest{i}" for i in range(500)]
    assert len((await vendors.yx2(doc))["data"]["success_list"]) == 500


async def _tencent_at_seed_time(start_sandbox: StartSandbox, accounts: AccountRules) -> Vendors:
    return await start_sandbox(SandboxConfig(accounts=accounts, clock=Clock(wall=lambda: NOW)))


async def test_tencent_request_examples(start_sandbox: StartSandbox) -> None:
    vendors = await _tencent_at_seed_time(start_sandbox, AccountRules())
    query = tencent_query(now=NOW, random="99999999")  # the page's random; sandbox admin
    for example, sender in ((TX_ADMIN_EXAMPLE, "administrator"), (TX_FROM_ACCOUNT_EXAMPLE, "dave")):
        answer = await vendors.tx(example, query)
        assert answer["ActionStatus"] == "OK"
        assert answer["ErrorCode"] == 0
        assert answer["ErrorInfo"] == ""
        assert answer["MsgKey"] == "28360_19901224_1572870301"
        assert answer["MsgId"]
        deliveries = vendors.server.state.deliveries("tencent")[-2:]
        assert [(d.sender, d.recipient) for d in deliveries] == [
            (sender, "bonnie"),
            (sender, "rong"),
        ]


async def test_tencent_answer_examples(start_sandbox: StartSandbox) -> None:
    vendors = await _tencent_at_seed_time(start_sandbox, AccountRules(missing=frozenset({"rong"})))
    query = tencent_query(now=NOW)
    partial = await vendors.tx(TX_ADMIN_EXAMPLE, query)
    assert partial["ActionStatus"] == "SomeError"
    assert partial["ErrorCode"] == 0
    assert partial["ErrorList"] == [{"To_Account": "rong", "ErrorCode": 70107}]
    all_failed = await vendors.tx(TX_ADMIN_EXAMPLE.replace('"bonnie",', ""), query)
    assert all_failed == {
        "ActionStatus": "FAIL",
        "ErrorInfo": "invalid To_Account",
        "ErrorCode": 90012,
    }
