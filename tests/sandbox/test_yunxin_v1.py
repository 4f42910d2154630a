"""Yunxin legacy sendBatchMsg: formats, limits, accounts and per-recipient answers."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

from imgate.sandbox import AccountRules, SandboxConfig, YunxinV1Settings

from .conftest import StartSandbox
from .helpers import Vendors, yx1_fields

IDS_500 = [f"user{i}" for i in range(500)]


def _ids(count: int) -> str:
    return json.dumps([f"user{i}" for i in range(count)])


def _media(message_type: int, body: object, **extra: str) -> dict[str, str]:
    return {**yx1_fields(type=str(message_type), body=json.dumps(body)), **extra}


# (case, form fields, code, a word the desc must contain)
REFUSED: list[tuple[str, dict[str, str], int, str]] = [
    ("no fromAccid", {k: v for k, v in yx1_fields().items() if k != "fromAccid"}, 414, "fromAccid"),
    ("fromAccid 33 chars", yx1_fields(sender="a" * 33), 414, "fromAccid"),
    ("no toAccids", {k: v for k, v in yx1_fields().items() if k != "toAccids"}, 414, "toAccids"),
    ("toAccids not JSON", yx1_fields(toAccids="bob,carol"), 414, "toAccids"),
    ("toAccids an object", yx1_fields(toAccids='{"a":1}'), 414, "toAccids"),
    ("toAccids empty", yx1_fields(to=[]), 414, "toAccids"),
    ("toAccids with a number", yx1_fields(toAccids='["bob",5]'), 414, "toAccids[1]"),
    ("toAccids with an empty id", yx1_fields(to=["bob", ""]), 414, "toAccids[1]"),
    ("toAccids id 33 chars", yx1_fields(to=["b" * 33]), 414, "toAccids[0]"),
    ("501 recipients", yx1_fields(toAccids=_ids(501)), 414, "too many members."),
    (
        "101 recipients with returnMsgid",
        yx1_fields(toAccids=_ids(101), returnMsgid="true"),
        414,
        "too many members.",
    ),
    ("no type", {k: v for k, v in yx1_fields().items() if k != "type"}, 414, "type"),
    ("type 5", yx1_fields(type="5"), 414, "type"),
    # JSON fields that repeat a key: the vendor does not document which value it keeps.
    ("body repeating a key", yx1_fields(body='{"msg":"hi","msg":"ho"}'), 414, "body"),
    ("option repeating a key", yx1_fields(option='{"push":true,"push":false}'), 414, "option"),
    ("payload repeating a key", yx1_fields(payload='{"a":1,"a":1}'), 414, "payload"),
    ("type not a number", yx1_fields(type="text"), 414, "type"),
    ("no body", {k: v for k, v in yx1_fields().items() if k != "body"}, 414, "body"),
    ("body not JSON", yx1_fields(body="hello"), 414, "body"),
    ("body a JSON array", yx1_fields(body='["hello"]'), 414, "body"),
    ("text without msg", yx1_fields(body='{"text":"hi"}'), 414, "body.msg"),
    ("text with empty msg", yx1_fields(text=""), 414, "body.msg"),
    ("text of 5001 chars", yx1_fields(text="x" * 5001), 414, "body.msg"),
    # Java counts UTF-16 units: 2501 emoji are 5002 characters to the vendor.
    ("text of 2501 emoji", yx1_fields(text="😀" * 2501), 414, "body.msg"),
    ("tip of 5001 chars", yx1_fields(type="10", text="x" * 5001), 414, "body.msg"),
    ("image without url", _media(1, {"name": "a.jpg", "w": 1, "h": 1}), 414, "body.url"),
    ("image size a string", _media(1, {"url": "http://x/a.jpg", "size": "9"}), 414, "size"),
    ("audio without url", _media(2, {"dur": 1000}), 414, "body.url"),
    ("video without url", _media(3, {"dur": 1000, "w": 1, "h": 1}), 414, "body.url"),
    ("file without url", _media(6, {"name": "a.txt"}), 414, "body.url"),
    ("location lat a string", _media(4, {"title": "x", "lat": "1", "lng": 2}), 414, "lat"),
    ("location without lng", _media(4, {"title": "x", "lat": 1}), 414, "lng"),
    ("location lat out of range", _media(4, {"lat": 91, "lng": 2}), 414, "lat"),
    ("custom empty object", _media(100, {}), 414, "body"),
    (
        "custom body over 5000 chars",
        _media(100, {"data": "x" * 5000}),
        414,
        "body",
    ),
    ("msgDesc 501 chars", _media(1, {"url": "u"}, msgDesc="d" * 501), 414, "msgDesc"),
    ("option not JSON", yx1_fields(option="push=false"), 414, "option"),
    ("option.push not a boolean", yx1_fields(option='{"push":"no"}'), 414, "option.push"),
    ("pushcontent 501 chars", yx1_fields(pushcontent="p" * 501), 414, "pushcontent"),
    ("payload not JSON", yx1_fields(payload="title"), 414, "payload"),
    ("payload 2049 chars", yx1_fields(payload=json.dumps({"k": "v" * 2041})), 414, "payload"),
    ("ext not JSON", yx1_fields(ext="plain"), 414, "ext"),
    (
        "yidunAntiCheating 1025",
        yx1_fields(yidunAntiCheating=json.dumps({"k": "v" * 1017})),
        414,
        "",
    ),
    ("useYidun not a number", yx1_fields(useYidun="no"), 414, "useYidun"),
    ("returnMsgid not a boolean", yx1_fields(returnMsgid="yes"), 414, "returnMsgid"),
    ("env 33 chars", yx1_fields(env="e" * 33), 414, "env"),
    ("msgSenderNoSense 2", yx1_fields(msgSenderNoSense="2"), 414, "msgSenderNoSense"),
    ("sender unknown", yx1_fields(sender="ghost-sender"), 404, "sender"),
    ("sender disabled", yx1_fields(sender="banned-sender"), 422, "forbidden"),
    ("sender muted", yx1_fields(sender="muted-sender"), 423, "account 'mute'."),
]


@pytest.mark.parametrize(("case", "fields", "code", "word"), REFUSED)
async def test_refuses_what_the_vendor_refuses(
    vendors: Vendors, case: str, fields: dict[str, str], code: int, word: str
) -> None:
    answer = await vendors.yx1(fields)
    assert answer["code"] == code, (case, answer)
    assert word in answer["desc"], (case, answer)
    assert set(answer) == {"code", "desc"}
    assert vendors.server.state.deliveries() == []
    stats = vendors.server.state.stats("yunxin_v1")
    assert stats.refusals == {str(code): 1}
    assert stats.calls_processed == 0


# (case, form fields): valid edge cases of the same rules
ACCEPTED: list[tuple[str, dict[str, str]]] = [
    ("500 recipients", yx1_fields(toAccids=_ids(500))),
    ("100 recipients with returnMsgid", yx1_fields(toAccids=_ids(100), returnMsgid="true")),
    ("fromAccid 32 chars", yx1_fields(sender="a" * 32, to=["b" * 32])),
    ("text of 5000 chars", yx1_fields(text="x" * 5000)),
    ("text of 2500 emoji", yx1_fields(text="😀" * 2500)),
    ("tip", yx1_fields(type="10", text="you were added")),
    (
        "image",
        _media(
            1,
            {
                "name": "a.jpg",
                "md5": "m",
                "url": "http://x/a.jpg",
                "ext": "jpg",
                "w": 6,
                "h": 4,
                "size": 9,
            },
            msgDesc="d" * 500,
        ),
    ),
    (
        "audio",
        _media(2, {"dur": 1500, "md5": "m", "url": "http://x/a.aac", "ext": "aac", "size": 9}),
    ),
    (
        "video",
        _media(
            3,
            {
                "dur": 1500,
                "md5": "m",
                "url": "http://x/a.mp4",
                "w": 6,
                "h": 4,
                "ext": "mp4",
                "size": 9,
            },
        ),
    ),
    ("location", _media(4, {"title": "Hangzhou", "lat": 30.27, "lng": 120.15})),
    (
        "file",
        _media(6, {"name": "a.txt", "md5": "m", "url": "http://x/a.txt", "ext": "txt", "size": 9}),
    ),
    ("custom", _media(100, {"kind": "card", "n": 1})),
    ("image with unknown keys", _media(1, {"url": "http://x/a.jpg", "extra": [1]})),
    (
        "every option field",
        yx1_fields(
            option=json.dumps(
                {
                    "push": False,
                    "roam": True,
                    "history": False,
                    "badge": False,
                    "sendersync": True,
                    "persistent": True,
                    "sessionUpdate": False,
                }
            ),
            pushcontent="p" * 500,
            payload=json.dumps({"pushTitle": "t", "k": "v" * 2020}),
            ext=json.dumps({"k": "v"}),
            useYidun="0",
            bid="business",
            yidunAntiCheating=json.dumps({"email": "a@b.c"}),
            yidunAntiSpamExt=json.dumps({"k": "v"}),
            returnMsgid="false",
            env="e" * 32,
            msgSenderNoSense="1",
        ),
    ),
]


@pytest.mark.parametrize(("case", "fields"), ACCEPTED)
async def test_accepts_valid_calls(vendors: Vendors, case: str, fields: dict[str, str]) -> None:
    answer = await vendors.yx1(fields)
    assert answer["code"] == 200, (case, answer)
    recipients = json.loads(fields["toAccids"])
    assert len(vendors.server.state.deliveries("yunxin_v1")) == len(recipients)


async def test_success_answer_lists_unregistered_and_delivers_each_once(vendors: Vendors) -> None:
    fields = yx1_fields(to=["bob", "ghost1", "bob", "carol", "ghost1"])
    answer = await vendors.yx1(fields)
    assert answer["code"] == 200
    assert answer["unregister"] == ["ghost1"]
    assert isinstance(answer["timetag"], int)
    assert "msgids" not in answer
    deliveries = vendors.server.state.deliveries("yunxin_v1")
    assert [(d.sender, d.recipient, d.message_type) for d in deliveries] == [
        ("alice", "bob", "0"),
        ("alice", "carol", "0"),
    ]
    assert len({d.call_id for d in deliveries}) == 1
    assert len({d.fingerprint for d in deliveries}) == 1


async def test_return_msgid_maps_registered_recipients_to_numbers(vendors: Vendors) -> None:
    answer = await vendors.yx1(yx1_fields(to=["bob", "ghost1", "carol"], returnMsgid="true"))
    assert answer["unregister"] == ["ghost1"]
    msgids = answer["msgids"]
    assert set(msgids) == {"bob", "carol"}
    assert all(isinstance(v, int) for v in msgids.values())
    assert msgids["bob"] != msgids["carol"]
    logged = {d.recipient: d.message_id for d in vendors.server.state.deliveries()}
    assert logged == {k: str(v) for k, v in msgids.items()}


async def test_all_unregistered_is_still_a_success_answer(vendors: Vendors) -> None:
    answer = await vendors.yx1(yx1_fields(to=["ghost1", "ghost2"]))
    assert answer["code"] == 200
    assert answer["unregister"] == ["ghost1", "ghost2"]
    assert vendors.server.state.deliveries() == []


async def test_form_must_be_urlencoded(vendors: Vendors) -> None:
    answer = await vendors.yx1_raw(json.dumps(yx1_fields()), content_type="application/json")
    assert answer.body["code"] == 414
    assert "Content-Type" in answer.body["desc"]


async def test_form_must_be_utf8(vendors: Vendors) -> None:
    raw = urlencode(yx1_fields()).encode() + b"&msgDesc=%FF%FE"
    answer = await vendors.yx1_raw(raw)
    assert answer.body["code"] == 414


async def test_first_occurrence_of_a_repeated_field_wins(vendors: Vendors) -> None:
    raw = urlencode(yx1_fields()) + "&fromAccid=ghost-x"
    answer = await vendors.yx1_raw(raw)
    assert answer.body["code"] == 200
    assert vendors.server.state.deliveries()[0].sender == "alice"


async def test_caps_are_configurable(start_sandbox: StartSandbox) -> None:
    settings = YunxinV1Settings(recipients_per_call=3, recipients_per_call_with_msgid=2)
    vendors = await start_sandbox(SandboxConfig(vendors={"yunxin_v1": settings}))
    assert (await vendors.yx1(yx1_fields(to=["a", "b", "c"])))["code"] == 200
    assert (await vendors.yx1(yx1_fields(to=["a", "b", "c", "d"])))["code"] == 414
    answer = await vendors.yx1(yx1_fields(to=["a", "b", "c"], returnMsgid="true"))
    assert answer == {"code": 414, "desc": "too many members."}


async def test_explicit_accounts_override_prefixes(start_sandbox: StartSandbox) -> None:
    accounts = AccountRules(
        existing=frozenset({"ghost-real"}),
        missing=frozenset({"bob"}),
        banned=frozenset({"alice"}),
        muted=frozenset({"dave"}),
    )
    vendors = await start_sandbox(SandboxConfig(accounts=accounts))
    answer = await vendors.yx1(yx1_fields(to=["ghost-real", "bob"], sender="carol"))
    assert answer["unregister"] == ["bob"]
    assert (await vendors.yx1(yx1_fields(sender="alice")))["code"] == 422
    assert (await vendors.yx1(yx1_fields(sender="dave")))["code"] == 423
    assert (await vendors.yx1(yx1_fields(sender="bob")))["code"] == 404
