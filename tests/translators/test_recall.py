"""The recall translators, table-driven and without a network: what each builds for one
message to one recipient, and what each vendor answer means (notes/recall.md)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.recall import RecallTarget
from imgate.vendors.base.translator import Disposition
from imgate.vendors.tencent.recall import TencentRecallTranslator
from imgate.vendors.tencent.spec import SPEC as TENCENT
from imgate.vendors.yunxin_v1.recall import YunxinV1RecallTranslator
from imgate.vendors.yunxin_v1.spec import SPEC as YUNXIN_V1
from imgate.vendors.yunxin_v2.recall import YunxinV2RecallTranslator
from imgate.vendors.yunxin_v2.spec import SPEC as YUNXIN_V2

NOW = 1_800_000_000.0
TARGET = RecallTarget("alice", "bob", "6872011250143432705", 1_800_000_000_123)


def test_tencent_builds_one_withdraw_with_the_senders_msg_key() -> None:
    translator = TencentRecallTranslator(TENCENT.sandbox_credentials)
    request = translator.build(TARGET, ["bob"], "batch:0", NOW, "nonce")
    assert (request.method, request.path) == ("POST", "/v4/openim/admin_msgwithdraw")
    assert json.loads(request.body) == {
        "From_Account": "alice",
        "To_Account": "bob",
        "MsgKey": "6872011250143432705",
    }
    assert request.query["identifier"] == "administrator"
    admin = translator.build(RecallTarget("", "bob", "1_2_3", 0), ["bob"], "batch:1", NOW, "nonce")
    assert json.loads(admin.body)["From_Account"] == "administrator"  # it sent as the admin


def test_yunxin_v1_builds_a_two_way_recall_with_ignore_time() -> None:
    translator = YunxinV1RecallTranslator(YUNXIN_V1.sandbox_credentials)
    request = translator.build(TARGET, ["bob"], "batch:0", NOW, "nonce")
    assert (request.method, request.path) == ("POST", "/nimserver/msg/recall.action")
    assert {k: v[0] for k, v in parse_qs(request.body.decode()).items()} == {
        "deleteMsgid": "6872011250143432705",
        "timetag": "1800000000123",
        "type": "7",
        "from": "alice",
        "to": "bob",
        "ignoreTime": "1",
    }
    assert request.headers["RequestId"]  # the trace id, the same on every resend
    assert (
        request.headers["RequestId"]
        == translator.build(TARGET, ["bob"], "batch:0", NOW + 5, "other").headers["RequestId"]
    )


def test_yunxin_v2_deletes_in_the_p2p_conversation_one_way() -> None:
    translator = YunxinV2RecallTranslator(YUNXIN_V2.sandbox_credentials)
    request = translator.build(TARGET, ["bob"], "batch:0", NOW, "nonce")
    assert request.method == "DELETE"
    assert request.path == "/im/v2/conversations/alice%7C1%7Cbob/messages/6872011250143432705"
    assert (request.query, request.body) == ({"type": "1"}, b"")


def test_a_recall_call_is_one_target_for_its_one_recipient() -> None:
    translator = TencentRecallTranslator(TENCENT.sandbox_credentials)
    with pytest.raises(ValueError, match="one RecallTarget"):
        translator.build(TARGET, ["bob", "carol"], "k", NOW, "n")
    assert translator.recipients_per_call(None, 500) == 1


_TX = TencentRecallTranslator(TENCENT.sandbox_credentials)
_YX1 = YunxinV1RecallTranslator(YUNXIN_V1.sandbox_credentials)
_YX2 = YunxinV2RecallTranslator(YUNXIN_V2.sandbox_credentials)
DONE, AMBIGUOUS = Disposition.DONE, Disposition.AMBIGUOUS


@pytest.mark.parametrize(
    ("translator", "answer", "disposition", "state", "reason"),
    [
        (_TX, {"ErrorCode": 0, "ActionStatus": "OK"}, DONE, pb.DELIVERY_STATE_ACCEPTED, 0),
        (_TX, {"ErrorCode": 20023}, DONE, pb.DELIVERY_STATE_ACCEPTED, 0),
        (_TX, {"ErrorCode": 20022}, DONE, pb.DELIVERY_STATE_FAILED, 14),
        (_TX, {"ErrorCode": 90054}, DONE, pb.DELIVERY_STATE_FAILED, 14),
        (_TX, {"ErrorCode": 90003}, DONE, pb.DELIVERY_STATE_FAILED, 1),
        (_TX, {"ErrorCode": 90008}, DONE, pb.DELIVERY_STATE_FAILED, 13),
        (_TX, {"ErrorCode": 91000}, AMBIGUOUS, None, 9),
        (_TX, {"ErrorCode": 60007}, Disposition.RATE_LIMITED, None, 7),
        (_TX, {"ErrorCode": 70001}, Disposition.REFRESH_AUTH, None, 8),
        (_TX, {"ErrorCode": 93000}, AMBIGUOUS, None, 9),  # not this API's: undocumented
        (_YX1, {"code": 200}, DONE, pb.DELIVERY_STATE_ACCEPTED, 0),
        (_YX1, {"code": 508, "desc": "expired"}, DONE, pb.DELIVERY_STATE_FAILED, 14),
        (_YX1, {"code": 414, "desc": "antispam"}, DONE, pb.DELIVERY_STATE_FAILED, 14),
        (_YX1, {"code": 414, "desc": "checksum"}, DONE, pb.DELIVERY_STATE_FAILED, 8),
        (_YX1, {"code": 416}, Disposition.RATE_LIMITED, None, 7),
        (_YX1, {"code": 500}, AMBIGUOUS, None, 9),
        (_YX1, {"code": 777}, AMBIGUOUS, None, 9),
        (_YX2, {"code": 200, "msg": "success", "data": {}}, DONE, pb.DELIVERY_STATE_ACCEPTED, 0),
        (_YX2, {"code": 404, "msg": "not found"}, DONE, pb.DELIVERY_STATE_FAILED, 14),
        (_YX2, {"code": 508}, DONE, pb.DELIVERY_STATE_FAILED, 14),
        (_YX2, {"code": 416}, Disposition.RATE_LIMITED, None, 7),
        (_YX2, {"code": 102449}, AMBIGUOUS, None, 9),
    ],
)
def test_what_each_answer_means(
    translator: object,
    answer: dict[str, object],
    disposition: Disposition,
    state: int | None,
    reason: int,
) -> None:
    assert isinstance(
        translator, TencentRecallTranslator | YunxinV1RecallTranslator | YunxinV2RecallTranslator
    )
    result = translator.parse(["bob"], 200, json.dumps(answer).encode())
    assert result.disposition is disposition
    if disposition is DONE:
        (item,) = result.results
        assert (item.recipient_id, item.state, item.reason) == ("bob", state, reason)
    else:
        assert result.reason == reason


@pytest.mark.parametrize("translator", [_TX, _YX1, _YX2])
def test_what_is_not_an_answer_is_uncertain(translator: object) -> None:
    assert isinstance(
        translator, TencentRecallTranslator | YunxinV1RecallTranslator | YunxinV2RecallTranslator
    )
    assert translator.parse(["bob"], 200, b"<html>").disposition is AMBIGUOUS
    assert translator.parse(["bob"], 500, b"{}").disposition is AMBIGUOUS
    assert translator.parse(["bob"], 502, b"").disposition is Disposition.RETRY


@pytest.mark.parametrize(
    ("translator", "body"),
    [
        (_TX, b'{"ErrorCode":91000,"ErrorCode":0}'),
        (_YX1, b'{"code":500,"code":200}'),
        (_YX2, b'{"code":404,"code":200}'),
    ],
)
def test_a_recall_answer_repeating_its_code_is_uncertain_and_says_so(
    translator: object, body: bytes
) -> None:
    assert isinstance(
        translator, TencentRecallTranslator | YunxinV1RecallTranslator | YunxinV2RecallTranslator
    )
    result = translator.parse(["bob"], 200, body)
    assert result.disposition is AMBIGUOUS
    assert "repeats the key" in result.detail  # the send parsers' reason, not "not JSON"
