"""Yunxin legacy sendBatchMsg: the exact form body, CheckSum headers, limits, answers."""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import parse_qs

import pytest

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.spec import IdUnit
from imgate.vendors.base.translator import Disposition, VendorRequest
from imgate.vendors.yunxin_v1.translator import YunxinV1Translator

from .cases import CHUNK_KEY, CONTENTS, NONCE, NOW, RECIPIENTS, make_request

JSON_FIELDS = ("toAccids", "body", "option", "payload", "ext")


def _translator() -> YunxinV1Translator:
    return YunxinV1Translator(YunxinV1Translator.spec.sandbox_credentials)


def _build(request: pb.BatchSendRequest, recipients: Any = RECIPIENTS) -> VendorRequest:
    translator = _translator()
    return translator.build(translator.prepare(request), list(recipients), CHUNK_KEY, NOW, NONCE)


def _form(request: pb.BatchSendRequest) -> dict[str, Any]:
    """The form body with its JSON-text fields decoded."""
    pairs = parse_qs(
        _build(request).body.decode("ascii"), keep_blank_values=True, strict_parsing=True
    )
    form: dict[str, Any] = {}
    for key, values in pairs.items():
        assert len(values) == 1, key
        form[key] = json.loads(values[0]) if key in JSON_FIELDS else values[0]
    return form


@pytest.mark.parametrize(
    ("kind", "type_", "body", "extra"),
    [
        ("text", "0", {"msg": "hi, 你好"}, {}),
        ("tip", "10", {"msg": "张三 joined"}, {}),
        (
            "image",
            "1",
            {
                "name": "a.png",
                "md5": "9e107d9d372bb6826bd81d3542a419d6",
                "url": "https://cdn.example/a.png",
                "ext": "png",
                "w": 640,
                "h": 480,
                "size": 2048,
            },
            {},
        ),
        (
            "audio",
            "2",
            {
                "dur": 3200,
                "md5": "e4d909c290d0fb1ca068ffaddf22cbd0",
                "url": "https://cdn.example/v.aac",
                "ext": "aac",
                "size": 4096,
            },
            {},
        ),
        (
            "video",
            "3",
            {
                "dur": 61000,
                "md5": "d41d8cd98f00b204e9800998ecf8427e",
                "url": "https://cdn.example/m.mp4",
                "w": 1280,
                "h": 720,
                "ext": "mp4",
                "size": 10485760,
            },
            {},
        ),
        ("location", "4", {"title": "西湖", "lng": 120.1502, "lat": 30.2431}, {}),
        (
            "file",
            "6",
            {
                "name": "report.pdf",
                "md5": "0cc175b9c0f1b6a831c399e269772661",
                "url": "https://cdn.example/r.pdf",
                "ext": "pdf",
                "size": 123456,
            },
            {},
        ),
        ("custom", "100", {"kind": "order", "id": 42}, {"msgDesc": "新订单"}),
    ],
)
def test_content_kind_to_form(
    kind: str, type_: str, body: dict[str, Any], extra: dict[str, str]
) -> None:
    assert _form(make_request(CONTENTS[kind])) == {
        "fromAccid": "dave",
        "toAccids": list(RECIPIENTS),
        "type": type_,
        "body": body,
        **extra,
    }


def test_custom_data_passes_through_verbatim() -> None:
    # Big integers and key order survive: the caller's JSON text is the body.
    data = '{"id": 12345678901234567890123, "b": 1, "a": 2}'
    request = make_request(pb.Message(custom=pb.CustomContent(data=data)))
    pairs = parse_qs(_build(request).body.decode("ascii"))
    assert pairs["body"] == [data]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"push_enabled": False}, {"option": {"push": False}}),
        ({"push_enabled": True}, {"option": {"push": True}}),
        ({"push_content": "你有新消息"}, {"pushcontent": "你有新消息"}),
        ({"push_title": "标题"}, {"payload": {"pushTitle": "标题"}}),
        ({"push_payload": '{"sound":"a.caf"}'}, {"payload": {"sound": "a.caf"}}),
        (
            {"push_payload": '{"sound":"a.caf","pushTitle":"old"}', "push_title": "new"},
            {"payload": {"sound": "a.caf", "pushTitle": "new"}},
        ),
        ({"offline_enabled": False}, {"option": {"persistent": False}}),
        # Cloud history only: roaming is another behaviour (issue 13.3).
        ({"history_enabled": False}, {"option": {"history": False}}),
        ({"history_enabled": True}, {"option": {"history": True}}),
        ({"unread_enabled": False}, {"option": {"badge": False}}),
        ({"sync_to_sender": False}, {"option": {"sendersync": False}}),
        ({"update_conversation": False}, {"option": {"sessionUpdate": False}}),
        ({"skip_moderation": True}, {"useYidun": "0"}),
        ({"skip_moderation": False}, {}),
        (
            {"online_only": True},
            {"option": {"persistent": False, "history": False, "roam": False, "badge": False}},
        ),
        ({"online_only": False}, {}),
        (
            {"online_only": True, "history_enabled": False, "push_enabled": True},
            {
                "option": {
                    "persistent": False,
                    "history": False,
                    "roam": False,
                    "badge": False,
                    "push": True,
                }
            },
        ),
        ({"read_receipt": False}, {}),  # the vendor default; true is refused
        ({"return_message_ids": True}, {"returnMsgid": "true"}),
        ({"return_message_ids": False}, {"returnMsgid": "false"}),
    ],
)
def test_option_to_form(options: dict[str, Any], expected: dict[str, Any]) -> None:
    form = _form(make_request(**options))
    for key in ("fromAccid", "toAccids", "type", "body"):
        del form[key]
    assert form == expected


def test_extension_is_ext() -> None:
    form = _form(make_request(extension='{"k":"v"}'))
    assert form["ext"] == {"k": "v"}


def test_unset_options_send_nothing() -> None:
    assert set(_form(make_request())) == {"fromAccid", "toAccids", "type", "body"}


def test_headers_sign_each_attempt() -> None:
    request = _build(make_request())
    headers = request.headers
    assert headers["AppKey"] == "sandbox-app-key"
    assert headers["Nonce"] == NONCE
    assert headers["CurTime"] == str(int(NOW))
    expected = hashlib.sha1(
        f"sandbox-app-secret{NONCE}{int(NOW)}".encode(), usedforsecurity=False
    ).hexdigest()
    assert headers["CheckSum"] == expected
    assert headers["Content-Type"] == "application/x-www-form-urlencoded;charset=utf-8"
    assert len(headers["RequestId"]) == 32
    assert request.query == {}
    assert request.method == "POST"
    assert request.path == "/nimserver/msg/sendBatchMsg.action"


def test_form_is_utf8_url_encoded() -> None:
    body = _build(make_request(), recipients=["张三", "a&b=c", 'q"'])
    assert body.body.isascii()
    pairs = parse_qs(body.body.decode("ascii"))
    assert json.loads(pairs["toAccids"][0]) == ["张三", "a&b=c", 'q"']


@pytest.mark.parametrize(
    ("options", "configured", "expected"),
    [
        ({}, 500, 500),
        ({"return_message_ids": False}, 500, 500),
        ({"return_message_ids": True}, 500, 100),
        ({"return_message_ids": True}, 40, 40),
    ],
)
def test_recipients_per_call(options: dict[str, Any], configured: int, expected: int) -> None:
    translator = _translator()
    prepared = translator.prepare(make_request(**options))
    assert translator.recipients_per_call(prepared, configured) == expected


@pytest.mark.parametrize(
    ("request_args", "fields"),
    [
        ({"content": pb.Message(text=pb.TextContent(text="x" * 5000))}, []),
        ({"content": pb.Message(text=pb.TextContent(text="字" * 5001))}, ["message.text.text"]),
        ({"content": pb.Message(tip=pb.TipContent(text="x" * 5001))}, ["message.tip.text"]),
        ({"push_content": "x" * 500}, []),
        ({"push_content": "x" * 501}, ["options.push_content"]),
        ({"push_payload": json.dumps({"k": "x" * 2039})}, []),  # 2048 chars
        ({"push_payload": json.dumps({"k": "x" * 2040})}, ["options.push_payload"]),
        # The title travels inside the payload and counts against its cap.
        ({"push_title": "x" * 2040}, ["options.push_title"]),
        (
            {"push_payload": json.dumps({"k": "x" * 1000}), "push_title": "t" * 1040},
            ["options.push_payload"],
        ),
        (
            {"content": pb.Message(custom=pb.CustomContent(data='{"a":1}', description="d" * 501))},
            ["message.custom.description"],
        ),
        # v1 documents no numeric ext cap (plan-dependent).
        ({"extension": json.dumps({"k": "x" * 3000})}, []),
        # An empty sender is the servicer's check (from sender_required), not repeated here.
        ({"sender_id": ""}, []),
    ],
)
def test_validate_yunxin_limits(request_args: dict[str, Any], fields: list[str]) -> None:
    assert [p.field for p in _translator().validate(make_request(**request_args))] == fields


def _parse(body: object, recipients: Any = RECIPIENTS, status: int = 200) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return _translator().parse(list(recipients), status, raw)


# The page's success example, made valid JSON (the page omits commas and adds comments).
SEED_SUCCESS = {
    "code": 200,
    "unregister": ["123123", "111422"],
    "timetag": 123124124124,
    "msgids": {"12345": 1200510468189, "55213": 3141251231231},
}


def test_seed_success_example() -> None:
    result = _parse(SEED_SUCCESS, ["12345", "123123", "55213", "111422"])
    assert result.disposition is Disposition.DONE
    assert [
        (r.recipient_id, r.accepted, r.reason, r.vendor_message_id) for r in result.results
    ] == [
        ("12345", True, pb.FAILURE_REASON_UNSPECIFIED, "1200510468189"),
        ("123123", False, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND, ""),
        ("55213", True, pb.FAILURE_REASON_UNSPECIFIED, "3141251231231"),
        ("111422", False, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND, ""),
    ]


def test_fields_sent_as_json_text_are_read_too() -> None:
    body = {"code": 200, "unregister": '["b"]', "msgids": '{"a": 7}'}
    result = _parse(body, ["a", "b"])
    assert [(r.accepted, r.vendor_message_id) for r in result.results] == [(True, "7"), (False, "")]


def test_success_without_optional_fields_accepts_everyone() -> None:
    result = _parse({"code": 200, "timetag": 1})
    assert [(r.accepted, r.vendor_message_id) for r in result.results] == [(True, ""), (True, "")]


def test_malformed_unregister_is_ambiguous() -> None:
    assert _parse({"code": 200, "unregister": 5}).disposition is Disposition.AMBIGUOUS


@pytest.mark.parametrize(
    ("answer", "reason", "detail"),
    [
        (
            {"code": 414, "desc": "too many members."},
            pb.FAILURE_REASON_MESSAGE_INVALID,
            "too many members.",
        ),
        (
            {"code": 423, "desc": "account 'mute'."},
            pb.FAILURE_REASON_SENDER_MUTED,
            "account 'mute'.",
        ),
    ],
)
def test_seed_failure_examples(answer: dict[str, Any], reason: int, detail: str) -> None:
    result = _parse(answer)
    assert result.disposition is Disposition.DONE
    assert [(r.accepted, r.reason, r.vendor_code, r.detail) for r in result.results] == [
        (False, reason, str(answer["code"]), detail)
    ] * len(RECIPIENTS)


@pytest.mark.parametrize(
    ("desc", "reason"),
    [
        ("checksum error", pb.FAILURE_REASON_AUTH_FAILED),
        ("CheckSum is invalid", pb.FAILURE_REASON_AUTH_FAILED),
        ("curtime expired", pb.FAILURE_REASON_AUTH_FAILED),
        ("parameter error: body", pb.FAILURE_REASON_MESSAGE_INVALID),
    ],
)
def test_414_that_is_an_auth_failure(desc: str, reason: int) -> None:
    result = _parse({"code": 414, "desc": desc})
    assert {r.reason for r in result.results} == {reason}


@pytest.mark.parametrize(
    "answer",
    [
        {"code": 200, "unregister": ["stranger"]},  # not in the call
        {"code": 200, "unregister": [5]},
        {"code": 200, "unregister": "not json"},
        {"code": 200, "msgids": {"stranger": 1}},
        {"code": 200, "msgids": {"a": [1]}},
        {"code": 200, "msgids": ["a"]},
        {"code": 200, "timetag": "yesterday"},
        {"code": 200, "timetag": -5},
        {"code": 200, "unregister": ["a"], "msgids": {"a": 1}},
    ],
)
def test_answers_that_do_not_match_the_call_make_everyone_uncertain(
    answer: dict[str, Any],
) -> None:
    translator = YunxinV1Translator(YunxinV1Translator.spec.sandbox_credentials)
    result = translator.parse(["a", "b"], 200, json.dumps(answer).encode())
    assert result.disposition is Disposition.AMBIGUOUS


def test_timetag_is_returned_beside_the_message_id() -> None:
    translator = YunxinV1Translator(YunxinV1Translator.spec.sandbox_credentials)
    answer = {"code": 200, "unregister": ["b"], "timetag": 1700000000123, "msgids": {"a": 9}}
    result = translator.parse(["a", "b"], 200, json.dumps(answer).encode())
    assert [(r.state, r.vendor_message_id, r.vendor_time_ms) for r in result.results] == [
        (pb.DELIVERY_STATE_ACCEPTED, "9", 1700000000123),
        (pb.DELIVERY_STATE_FAILED, "", 0),
    ]


def test_spec_pins_the_published_facts() -> None:
    # The vendor's documented numbers (vendors.md §5, §6), CONTRACT §2's sandbox app.
    spec = YunxinV1Translator.spec
    limits = spec.limits
    assert spec.path == "/nimserver/msg/sendBatchMsg.action"
    assert (limits.recipients_per_call, limits.call_limit, limits.call_window_s) == (500, 120, 60.0)
    assert (limits.recipient_limit, limits.block_s, limits.vendor_block_s) == (0, 60.0, 60.0)
    assert limits.max_body_bytes is None
    assert (spec.id_rule.max_length, spec.id_rule.unit) == (32, IdUnit.UTF16)
    assert dict(spec.sandbox_credentials) == {
        "app_key": "sandbox-app-key",
        "app_secret": "sandbox-app-secret",
    }
    assert spec.sender_required
