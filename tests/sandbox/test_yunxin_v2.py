"""Yunxin v2 batch P2P send: formats, limits, accounts and success/failed lists."""

from __future__ import annotations

import json
from typing import Any

import pytest

from imgate.sandbox import SandboxConfig, YunxinV2Settings

from .conftest import StartSandbox
from .helpers import Vendors, yx2_doc


def _ids(count: int) -> list[str]:
    return [f"user{i}" for i in range(count)]


def _message(message_type: int, attachment: Any = None, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"message_type": message_type, **extra}
    if attachment is not None:
        message["attachment"] = attachment
    return yx2_doc(message=message)


def _without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


IMAGE = {
    "name": "a.jpg",
    "md5": "m",
    "url": "http://x/a.jpg",
    "ext": "jpg",
    "width": 6,
    "height": 4,
    "size": 9,
}

# (case, body, code, a word the msg must contain)
REFUSED: list[tuple[str, Any, int, str]] = [
    ("body not JSON", "sender_id=alice", 414, "JSON"),
    ("body a JSON array", [yx2_doc()], 414, "object"),
    (
        "body repeating a key",
        json.dumps(yx2_doc())[:-1] + ', "sender_id": "bob"}',
        414,
        "JSON",
    ),
    (
        "message repeating a key",
        json.dumps(yx2_doc()).replace('"text": "hello"', '"text": "hello", "text": "ho"'),
        414,
        "JSON",
    ),
    ("no sender_id", _without(yx2_doc(), "sender_id"), 414, "sender_id"),
    ("sender_id 33 chars", yx2_doc(sender="a" * 33), 414, "sender_id"),
    ("sender_id a number", yx2_doc(sender_id=5), 414, "sender_id"),
    ("no receiver_ids", _without(yx2_doc(), "receiver_ids"), 414, "receiver_ids"),
    ("receiver_ids a string", yx2_doc(receiver_ids='["bob"]'), 414, "receiver_ids"),
    ("receiver_ids empty", yx2_doc(to=[]), 414, "receiver_ids"),
    ("receiver id 33 chars", yx2_doc(to=["b" * 33]), 414, "receiver_ids[0]"),
    ("receiver id a number", yx2_doc(receiver_ids=["bob", 7]), 414, "receiver_ids[1]"),
    ("101 receivers (default cap)", yx2_doc(to=_ids(101)), 414, "too many members."),
    ("no message", _without(yx2_doc(), "message"), 414, "message"),
    ("message_type 5", _message(5, text="x"), 414, "message_type"),
    ("message_type a string", _message("0", text="x"), 414, "message_type"),  # type: ignore[arg-type]
    ("text without text", _message(0), 414, "message.text"),
    ("text empty", yx2_doc(text=""), 414, "message.text"),
    ("text 5001 chars", yx2_doc(text="x" * 5001), 414, "message.text"),
    ("tip 5001 chars", _message(10, text="x" * 5001), 414, "message.text"),
    ("sub_type 0", _message(0, text="x", sub_type=0), 414, "sub_type"),
    ("image without attachment", _message(1, text="desc"), 414, "attachment"),
    ("image without url", _message(1, {"name": "a.jpg"}), 414, "attachment.url"),
    ("image attachment a string", _message(1, json.dumps(IMAGE)), 414, "attachment"),
    ("image description 501", _message(1, IMAGE, text="d" * 501), 414, "message.text"),
    ("audio without url", _message(2, {"dur": 5}), 414, "attachment.url"),
    ("video without url", _message(3, {"dur": 5}), 414, "attachment.url"),
    ("file without url", _message(6, {"name": "f"}), 414, "attachment.url"),
    ("location without lat", _message(4, {"title": "t", "lng": 1.5}), 414, "lat"),
    ("custom empty", _message(100, {}), 414, "attachment"),
    ("custom over 5000 chars", _message(100, {"d": "x" * 5000}), 414, "attachment"),
    (
        "message_client_id a number",
        yx2_doc(message={"message_type": 0, "text": "x", "message_client_id": 5}),
        414,
        "client",
    ),
    ("extension not JSON", yx2_doc(extension="officia labore"), 414, "extension"),
    ("extension an object", yx2_doc(extension={"k": "v"}), 414, "extension"),
    ("extension 1025 chars", yx2_doc(extension=json.dumps({"k": "v" * 1017})), 414, "extension"),
    ("push_content 501", yx2_doc(push_config={"push_content": "p" * 501}), 414, "push_content"),
    ("push_payload not JSON", yx2_doc(push_config={"push_payload": "t"}), 414, "push_payload"),
    (
        "push_payload 2049",
        yx2_doc(push_config={"push_payload": json.dumps({"k": "v" * 2041})}),
        414,
        "push_payload",
    ),
    ("push_enabled a string", yx2_doc(push_config={"push_enabled": "true"}), 414, "push_enabled"),
    ("route_environment 33", yx2_doc(route_config={"route_environment": "e" * 33}), 414, "route"),
    (
        "message_config flag a number",
        yx2_doc(message_config={"unread_enabled": 0}),
        414,
        "unread_enabled",
    ),
    (
        "antispam_extension not JSON",
        yx2_doc(antispam_config={"antispam_extension": "x"}),
        414,
        "antispam_extension",
    ),
    ("p2p_option without check_friend", yx2_doc(p2p_option={}), 414, "check_friend"),
    (
        "both no-sense",
        yx2_doc(sender_no_sense=True, receiver_no_sense=True),
        414,
        "no-sense",
    ),
    # The IM 2.0 family's 6-digit codes (docs/vendor-mapping.md "Answers").
    ("sender unknown", yx2_doc(sender="ghost-sender"), 102404, "sender"),
    ("sender disabled", yx2_doc(sender="banned-sender"), 102422, "forbidden"),
    ("sender muted", yx2_doc(sender="muted-sender"), 102421, "mute"),
]


@pytest.mark.parametrize(("case", "doc", "code", "word"), REFUSED)
async def test_refuses_what_the_vendor_refuses(
    vendors: Vendors, case: str, doc: Any, code: int, word: str
) -> None:
    answer = await vendors.yx2(doc)
    assert answer["code"] == code, (case, answer)
    assert word in answer["msg"], (case, answer)
    assert answer["data"] == {}
    assert vendors.server.state.deliveries() == []
    assert vendors.server.state.stats("yunxin_v2").refusals == {str(code): 1}


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("100 receivers", yx2_doc(to=_ids(100))),
    ("text 5000 chars", yx2_doc(text="x" * 5000)),
    ("tip", _message(10, text="note")),
    # receiver_no_sense is optional, default false (YX-JAVA BatchSendP2PMessageRequestV2;
    # the apifox page's "required" mark is not the server's): a body without it is valid.
    ("no receiver_no_sense", _without(yx2_doc(), "receiver_no_sense")),
    # Media size keys: width/height (the vendor's example, what imgate sends) or w/h (the
    # legacy body): which one the v2 server stores is unverified, so neither is refused.
    ("image with width/height", _message(1, IMAGE)),
    (
        "image with w/h",
        _message(
            1, {k: v for k, v in IMAGE.items() if k not in ("width", "height")} | {"w": 6, "h": 4}
        ),
    ),
    ("text with sub_type and an attachment", _message(0, IMAGE, text="hi", sub_type=3)),
    ("image", _message(1, IMAGE, text="d" * 500)),
    (
        "audio",
        _message(2, {"dur": 1500, "md5": "m", "url": "http://x/a.aac", "ext": "aac", "size": 9}),
    ),
    (
        "video",
        _message(
            3,
            {
                "dur": 1500,
                "md5": "m",
                "url": "http://x/a.mp4",
                "width": 6,
                "height": 4,
                "ext": "mp4",
                "size": 9,
            },
        ),
    ),
    ("location", _message(4, {"title": "Hangzhou", "lat": 30.27, "lng": 120.15})),
    (
        "file",
        _message(
            6, {"name": "a.txt", "md5": "m", "url": "http://x/a.txt", "ext": "txt", "size": 9}
        ),
    ),
    ("custom", _message(100, {"kind": "card"}, sub_type=2)),
    (
        "every option",
        yx2_doc(
            extension=json.dumps({"k": "v" * 1015}),
            need_message_detail=False,
            sender_no_sense=True,
            receiver_no_sense=False,
            message_config={
                "unread_enabled": False,
                "mutil_sync_enabled": True,
                "offline_enabled": True,
                "history_enabled": False,
                "roaming_enabled": False,
                "conversation_update_enabled": True,
            },
            route_config={"route_enabled": True, "route_environment": "e" * 32},
            push_config={
                "push_enabled": True,
                "push_nick_enabled": False,
                "push_content": "p" * 500,
                "push_payload": json.dumps({"pushTitle": "t"}),
            },
            antispam_config={
                "antispam_enabled": False,
                "antispam_business_id": "1",
                "antispam_extension": None,
                "antispam_cheating": "{}",
            },
            p2p_option={"check_friend": False},
        ),
    ),
]


@pytest.mark.parametrize(("case", "doc"), ACCEPTED)
async def test_accepts_valid_calls(vendors: Vendors, case: str, doc: dict[str, Any]) -> None:
    answer = await vendors.yx2(doc)
    assert answer["code"] == 200, (case, answer)
    assert answer["msg"] == "success"
    assert len(answer["data"]["success_list"]) == len(doc["receiver_ids"])
    assert len(vendors.server.state.deliveries("yunxin_v2")) == len(doc["receiver_ids"])


async def test_success_and_failed_lists(vendors: Vendors) -> None:
    doc = yx2_doc(to=["bob", "ghost1", "bob", "carol"])
    doc["message"]["message_client_id"] = "client-1"
    answer = await vendors.yx2(doc)
    data = answer["data"]
    assert [item["receiver_id"] for item in data["success_list"]] == ["bob", "carol"]
    for item in data["success_list"]:
        assert item["sender_id"] == "alice"
        assert item["conversation_type"] == 1
        assert item["message_type"] == 0
        assert item["message_client_id"] == "client-1"
        assert isinstance(item["message_server_id"], int)
        assert isinstance(item["create_time"], int)
        assert "text" not in item  # only with need_message_detail
    assert data["failed_list"] == [
        {"account_id": "ghost1", "error_code": 102404, "error_msg": "account not found"}
    ]
    logged = {d.recipient: d.message_id for d in vendors.server.state.deliveries()}
    assert logged == {i["receiver_id"]: str(i["message_server_id"]) for i in data["success_list"]}


async def test_no_failed_list_when_nothing_failed(vendors: Vendors) -> None:
    answer = await vendors.yx2(yx2_doc())
    assert set(answer["data"]) == {"success_list"}


async def test_need_message_detail_returns_the_message(vendors: Vendors) -> None:
    answer = await vendors.yx2(_message(1, IMAGE, text="desc") | {"need_message_detail": True})
    item = answer["data"]["success_list"][0]
    assert item["attachment"] == IMAGE
    assert item["text"] == "desc"


async def test_all_unknown_receivers(vendors: Vendors) -> None:
    answer = await vendors.yx2(yx2_doc(to=["ghost1", "ghost2"]))
    assert answer["code"] == 200
    assert answer["data"]["success_list"] == []
    assert [i["account_id"] for i in answer["data"]["failed_list"]] == ["ghost1", "ghost2"]


async def test_content_type_must_be_json(vendors: Vendors) -> None:
    answer = await vendors.yx2_raw(json.dumps(yx2_doc()), content_type="text/plain")
    assert answer.body["code"] == 414


async def test_cap_500_and_receiver_id_key_are_configurable(start_sandbox: StartSandbox) -> None:
    settings = YunxinV2Settings(recipients_per_call=500, failed_list_key="receiver_id")
    vendors = await start_sandbox(SandboxConfig(vendors={"yunxin_v2": settings}))
    answer = await vendors.yx2(yx2_doc(to=[*_ids(499), "ghost1"]))
    assert len(answer["data"]["success_list"]) == 499
    assert answer["data"]["failed_list"][0]["receiver_id"] == "ghost1"
    assert "account_id" not in answer["data"]["failed_list"][0]
    assert (await vendors.yx2(yx2_doc(to=_ids(501))))["code"] == 414


def test_failed_list_key_is_checked() -> None:
    with pytest.raises(ValueError, match="failed_list_key"):
        YunxinV2Settings(failed_list_key="id")  # type: ignore[arg-type]
