"""Yunxin v2 batch send: the exact JSON body, headers, limits, answers."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.spec import IdUnit
from imgate.vendors.base.translator import Disposition, VendorRequest
from imgate.vendors.yunxin_v2.translator import YunxinV2Translator, message_client_id

from .cases import CHUNK_KEY, CONTENTS, CUSTOM_WITH_SUB_TYPE, NONCE, NOW, RECIPIENTS, make_request


def _translator() -> YunxinV2Translator:
    return YunxinV2Translator(YunxinV2Translator.spec.sandbox_credentials)


def _build(request: pb.BatchSendRequest, recipients: Any = RECIPIENTS) -> VendorRequest:
    translator = _translator()
    return translator.build(translator.prepare(request), list(recipients), CHUNK_KEY, NOW, NONCE)


def _body(request: pb.BatchSendRequest) -> dict[str, Any]:
    """The body without message_client_id (tested on its own)."""
    body: dict[str, Any] = json.loads(_build(request).body)
    assert body["message"].pop("message_client_id") == message_client_id(CHUNK_KEY)
    return body


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("text", {"message_type": 0, "text": "hi, 你好"}),
        ("tip", {"message_type": 10, "text": "张三 joined"}),
        (
            "image",
            {
                "message_type": 1,
                "attachment": {
                    "name": "a.png",
                    "md5": "9e107d9d372bb6826bd81d3542a419d6",
                    "url": "https://cdn.example/a.png",
                    "ext": "png",
                    "width": 640,
                    "height": 480,
                    "size": 2048,
                },
            },
        ),
        (
            "audio",
            {
                "message_type": 2,
                "attachment": {
                    "dur": 3200,
                    "md5": "e4d909c290d0fb1ca068ffaddf22cbd0",
                    "url": "https://cdn.example/v.aac",
                    "ext": "aac",
                    "size": 4096,
                },
            },
        ),
        (
            "video",
            {
                "message_type": 3,
                "attachment": {
                    "dur": 61000,
                    "md5": "d41d8cd98f00b204e9800998ecf8427e",
                    "url": "https://cdn.example/m.mp4",
                    "width": 1280,
                    "height": 720,
                    "ext": "mp4",
                    "size": 10485760,
                },
            },
        ),
        (
            "location",
            {"message_type": 4, "attachment": {"title": "西湖", "lng": 120.1502, "lat": 30.2431}},
        ),
        (
            "file",
            {
                "message_type": 6,
                "attachment": {
                    "name": "report.pdf",
                    "md5": "0cc175b9c0f1b6a831c399e269772661",
                    "url": "https://cdn.example/r.pdf",
                    "ext": "pdf",
                    "size": 123456,
                },
            },
        ),
        (
            "custom",
            {
                "message_type": 100,
                "attachment": {"kind": "order", "id": 42},
                "text": "新订单",
            },
        ),
    ],
)
def test_content_kind_to_message(kind: str, message: dict[str, Any]) -> None:
    assert _body(make_request(CONTENTS[kind])) == {
        "receiver_ids": list(RECIPIENTS),
        "sender_id": "dave",
        "message": message,
    }


def test_message_client_id_is_stable_per_chunk_and_unique_across_chunks() -> None:
    translator = _translator()
    prepared = translator.prepare(make_request())
    ids = [
        json.loads(translator.build(prepared, ["a"], key, NOW, nonce).body)["message"][
            "message_client_id"
        ]
        for key, nonce in ((CHUNK_KEY, NONCE), (CHUNK_KEY, "f" * 32), (CHUNK_KEY + "x", NONCE))
    ]
    assert ids[0] == ids[1] != ids[2]
    assert len(ids[0]) == 32


def test_custom_sub_type_is_sent() -> None:
    request = make_request(pb.Message(custom=CUSTOM_WITH_SUB_TYPE))
    assert _translator().validate(request) == []
    assert _body(request)["message"]["sub_type"] == 7


def test_custom_without_sub_type_or_description() -> None:
    request = make_request(pb.Message(custom=pb.CustomContent(data='{"a":[1,2]}')))
    assert _body(request)["message"] == {"message_type": 100, "attachment": {"a": [1, 2]}}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"push_enabled": False}, {"push_config": {"push_enabled": False}}),
        ({"push_content": "你有新消息"}, {"push_config": {"push_content": "你有新消息"}}),
        ({"push_title": "标题"}, {"push_config": {"push_payload": '{"pushTitle":"标题"}'}}),
        (
            {"push_payload": '{"sound":"a.caf"}'},
            {"push_config": {"push_payload": '{"sound":"a.caf"}'}},
        ),
        (
            {"push_payload": '{"sound":"a.caf"}', "push_title": "T"},
            {"push_config": {"push_payload": '{"sound":"a.caf","pushTitle":"T"}'}},
        ),
        ({"offline_enabled": False}, {"message_config": {"offline_enabled": False}}),
        (
            {"history_enabled": False},
            {"message_config": {"history_enabled": False}},
        ),
        ({"unread_enabled": False}, {"message_config": {"unread_enabled": False}}),
        ({"sync_to_sender": True}, {"message_config": {"mutil_sync_enabled": True}}),
        (
            {"update_conversation": False},
            {"message_config": {"conversation_update_enabled": False}},
        ),
        ({"skip_moderation": True}, {"antispam_config": {"antispam_enabled": False}}),
        ({"skip_moderation": False}, {}),
        (
            {"online_only": True},
            {
                "message_config": {
                    "offline_enabled": False,
                    "history_enabled": False,
                    "roaming_enabled": False,
                    "unread_enabled": False,
                }
            },
        ),
        ({"online_only": False}, {}),
        ({"read_receipt": False}, {}),  # the vendor default; true is refused
        ({"return_message_ids": True}, {}),  # ids are always returned
    ],
)
def test_option_to_body(options: dict[str, Any], expected: dict[str, Any]) -> None:
    body = _body(make_request(**options))
    for key in ("receiver_ids", "sender_id", "message"):
        del body[key]
    assert body == expected


@pytest.mark.parametrize(
    "options",
    [{}, {"online_only": True}, {"sync_to_sender": False}, {"push_enabled": False}],
)
def test_no_sense_flags_are_never_sent(options: dict[str, bool]) -> None:
    """receiver_no_sense is optional, default false (YX-JAVA; the apifox "required" mark
    is an artefact, fidelity 5): imgate has no option for it and never sends it."""
    body = _body(make_request(**options))
    assert "receiver_no_sense" not in body
    assert "sender_no_sense" not in body


def test_extension_and_unset_options() -> None:
    assert set(_body(make_request())) == {"receiver_ids", "sender_id", "message"}
    assert _body(make_request(extension='{"k":"v"}'))["extension"] == '{"k":"v"}'


# Every key the vendor's own request examples show (apifox batch + single send).
DOCUMENTED_KEYS = {
    "": {
        "sender_no_sense", "receiver_no_sense", "extension", "message", "route_config",
        "push_config", "antispam_config", "p2p_option", "sender_id", "receiver_ids",
        "message_config", "need_message_detail",
    },
    "message": {"message_type", "sub_type", "text", "attachment", "message_client_id"},
    "message_config": {
        "unread_enabled", "mutil_sync_enabled", "offline_enabled", "history_enabled",
        "roaming_enabled", "conversation_update_enabled",
    },
    "push_config": {
        "push_enabled", "push_nick_enabled", "push_content", "push_payload",
        "push_forcepush_all", "push_forcepush_ids", "push_forcepush_content",
    },
    "antispam_config": {
        "antispam_enabled", "antispam_business_id", "antispam_extension", "antispam_cheating",
    },
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(CONTENTS))
def test_every_key_sent_is_documented(kind: str) -> None:
    body = _body(
        make_request(
            CONTENTS[kind],
            extension="{}",
            push_enabled=True,
            push_content="c",
            push_title="t",
            push_payload="{}",
            offline_enabled=False,
            history_enabled=False,
            unread_enabled=False,
            sync_to_sender=True,
            update_conversation=True,
            skip_moderation=True,
            online_only=True,
            read_receipt=False,
            return_message_ids=True,
        )
    )
    assert set(body) <= DOCUMENTED_KEYS[""]
    for section in ("message", "message_config", "push_config", "antispam_config"):
        assert set(body[section]) <= DOCUMENTED_KEYS[section], section


def test_headers() -> None:
    request = _build(make_request())
    headers = request.headers
    assert headers["AppKey"] == "sandbox-app-key"
    expected = hashlib.sha1(
        f"sandbox-app-secret{NONCE}{int(NOW)}".encode(), usedforsecurity=False
    ).hexdigest()
    assert (headers["Nonce"], headers["CurTime"], headers["CheckSum"]) == (
        NONCE,
        str(int(NOW)),
        expected,
    )
    assert headers["Content-Type"] == "application/json"
    assert len(headers["X-custom-traceid"]) == 32
    assert request.path == "/im/v2/conversations/messages"


def test_body_is_compact_utf8() -> None:
    body = _build(make_request(), recipients=["张三"]).body
    assert "张三".encode() in body
    compact = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False)
    assert body == compact.encode()


@pytest.mark.parametrize(
    ("request_args", "fields"),
    [
        ({"extension": json.dumps({"k": "x" * 1015})}, []),  # 1024 chars
        ({"extension": json.dumps({"k": "x" * 1016})}, ["message.extension"]),
        ({"content": pb.Message(text=pb.TextContent(text="x" * 5001))}, ["message.text.text"]),
        ({"push_content": "x" * 501}, ["options.push_content"]),
        ({"push_payload": json.dumps({"k": "x" * 2040})}, ["options.push_payload"]),
        (
            {"content": pb.Message(custom=pb.CustomContent(data='{"a":1}', description="d" * 501))},
            ["message.custom.description"],
        ),
        (
            {"content": pb.Message(custom=pb.CustomContent(data='{"a":1}', description="d" * 500))},
            [],
        ),
    ],
)
def test_validate_v2_limits(request_args: dict[str, Any], fields: list[str]) -> None:
    assert [p.field for p in _translator().validate(make_request(**request_args))] == fields


def _parse(body: object, recipients: Any = RECIPIENTS) -> Any:
    return _translator().parse(list(recipients), 200, json.dumps(body).encode())


SEED_SUCCESS = {
    "code": 200,
    "msg": "success",
    "data": {
        "success_list": [
            {
                "text": "laborum irure",
                "attachment": {
                    "ext": "in qui",
                    "size": 89,
                    "name": "型用四这却认",
                    "width": 10,
                    "url": "http://xkjotf.cq/ckp",
                    "md5": "amet sit Excepteur officia",
                    "height": 95,
                },
                "message_server_id": 9897543190303,
                "sender_id": "apifoxtest1",
                "conversation_type": 1,
                "receiver_id": "apifoxtest2",
                "create_time": 1707017423142,
                "message_type": 0,
                "sub_type": 30164486,
            }
        ]
    },
}


def test_seed_success_example() -> None:
    result = _parse(SEED_SUCCESS, ["apifoxtest2"])
    assert result.disposition is Disposition.DONE
    [only] = result.results
    assert (only.recipient_id, only.accepted, only.vendor_message_id) == (
        "apifoxtest2",
        True,
        "9897543190303",
    )


@pytest.mark.parametrize("account_key", ["account_id", "receiver_id"])
def test_failed_item_keyed_either_way(account_key: str) -> None:
    answer = {
        "code": 200,
        "msg": "success",
        "data": {
            "success_list": [{"receiver_id": "a", "message_server_id": 11}],
            "failed_list": [
                {account_key: "ghost1", "error_code": 404, "error_msg": "account not exist"},
                {account_key: "b", "error_code": 414, "error_msg": "bad id"},
                {account_key: "c", "error_code": 500, "error_msg": "internal"},
                {account_key: "d", "error_code": 416, "error_msg": "freq"},
            ],
        },
    }
    result = _parse(answer, ["a", "ghost1", "b", "c", "d"])
    assert [(r.recipient_id, r.state, r.reason, r.vendor_code) for r in result.results] == [
        ("a", pb.DELIVERY_STATE_ACCEPTED, pb.FAILURE_REASON_UNSPECIFIED, ""),
        ("ghost1", pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND, "404"),
        ("b", pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_RECIPIENT_INVALID, "414"),
        ("c", pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR, "500"),
        ("d", pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_RATE_LIMITED, "416"),
    ]
    assert result.results[1].detail == "account not exist"
    assert result.results[0].vendor_message_id == "11"


def test_recipient_in_neither_list_is_uncertain() -> None:
    answer = {
        "code": 200,
        "msg": "success",
        "data": {"success_list": [{"receiver_id": "a", "message_server_id": 1}]},
    }
    result = _parse(answer, ["a", "b"])
    assert [r.state for r in result.results] == [
        pb.DELIVERY_STATE_ACCEPTED,
        pb.DELIVERY_STATE_UNCERTAIN,
    ]
    assert result.results[1].detail


@pytest.mark.parametrize(
    "data",
    [
        {"success_list": "a"},
        {"success_list": [{"receiver_id": "a", "message_server_id": 1}, "junk"]},
        {"success_list": [{"receiver_id": 7, "message_server_id": 1}]},
        {"success_list": [{"receiver_id": "stranger", "message_server_id": 1}]},
        {"success_list": [{"receiver_id": "a", "message_server_id": [1]}]},
        {"success_list": [{"receiver_id": "a", "message_server_id": 1, "create_time": "x"}]},
        {"failed_list": {"account_id": "a"}},
        {"failed_list": [{"error_code": 404}]},
        {"failed_list": [{"account_id": "stranger", "error_code": 404}]},
        # One account in both lists: which one is true?
        {
            "success_list": [{"receiver_id": "a", "message_server_id": 1}],
            "failed_list": [{"account_id": "a", "error_code": 500}],
        },
    ],
)
def test_lists_that_do_not_match_the_call_make_everyone_uncertain(data: object) -> None:
    answer = {"code": 200, "msg": "success", "data": data}
    assert _parse(answer, ["a"]).disposition is Disposition.AMBIGUOUS


@pytest.mark.parametrize(
    ("code", "state", "reason"),
    [
        (404, pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND),
        (102404, pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND),
        (102426, pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_RECIPIENT_INVALID),
        (104404, pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_RECIPIENT_INVALID),
        (107451, pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_CONTENT_REJECTED),
        (102449, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR),
        (500, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR),
        (None, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR),
        (99, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR),
        # Fidelity 2 (issue 22): a rate code is documented for a whole call only; in
        # failed_list it says nothing certain about that recipient. Was FAILED (a
        # transient reason: the caller would send it again).
        (416, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_RATE_LIMITED),
        # 107323 is documented nowhere (fidelity 5): undocumented, no pause. Was FAILED.
        (107323, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR),
        # 191004 is a client-SDK code ("invalid parameter", NIM V10), not a server answer.
        (191004, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR),
    ],
)
def test_failed_list_codes(code: int | None, state: int, reason: int) -> None:
    item: dict[str, Any] = {"account_id": "a", "error_msg": "why"}
    if code is not None:
        item["error_code"] = code
    answer = {"code": 200, "data": {"failed_list": [item]}}
    parsed = _parse(answer, ["a"])
    result = parsed.results[0]
    assert (result.state, result.reason, result.vendor_code) == (
        state,
        reason,
        "" if code is None else str(code),
    )
    # Only the documented rate code pauses the backend; nothing is resent either way.
    assert parsed.disposition is Disposition.DONE
    assert parsed.rate_refused is (code == 416)


def test_create_time_is_returned_beside_the_message_id() -> None:
    answer = {
        "code": 200,
        "data": {
            "success_list": [
                {"receiver_id": "a", "message_server_id": 12345678901234567, "create_time": 17}
            ]
        },
    }
    result = _parse(answer, ["a"]).results[0]
    assert (result.vendor_message_id, result.vendor_time_ms) == ("12345678901234567", 17)


def test_error_envelope() -> None:
    result = _parse({"code": 416, "msg": "freq control", "data": {}})
    assert (result.disposition, result.vendor_code, result.detail) == (
        Disposition.RATE_LIMITED,
        "416",
        "freq control",
    )


def test_success_without_data_is_ambiguous() -> None:
    assert _parse({"code": 200, "msg": "success"}).disposition is Disposition.AMBIGUOUS


def test_spec_pins_the_published_facts() -> None:
    # The vendor's documented numbers (vendors.md §5, §6), CONTRACT §2's sandbox app.
    spec = YunxinV2Translator.spec
    limits = spec.limits
    assert spec.path == "/im/v2/conversations/messages"
    assert (limits.recipients_per_call, limits.call_limit, limits.call_window_s) == (100, 120, 60.0)
    assert (limits.recipient_limit, limits.block_s, limits.vendor_block_s) == (0, 60.0, 60.0)
    assert limits.max_body_bytes is None
    assert (spec.id_rule.max_length, spec.id_rule.unit) == (32, IdUnit.UTF16)
    assert dict(spec.sandbox_credentials) == {
        "app_key": "sandbox-app-key",
        "app_secret": "sandbox-app-secret",
    }
    assert spec.sender_required
