"""RongCloud private publish: the exact form body, the signature, what is refused by name,
and how answers become outcomes (docs/vendor-mapping.md "RongCloud")."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

import pytest

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.translator import Disposition, VendorRequest, not_accepted
from imgate.vendors.rongcloud import rules
from imgate.vendors.rongcloud.translator import RongCloudTranslator

from .cases import CHUNK_KEY, CONTENTS, NONCE, NOW, RECIPIENTS, make_request


def _translator() -> RongCloudTranslator:
    return RongCloudTranslator(RongCloudTranslator.spec.sandbox_credentials)


def _build(request: pb.BatchSendRequest, recipients: Any = RECIPIENTS) -> VendorRequest:
    translator = _translator()
    return translator.build(translator.prepare(request), list(recipients), CHUNK_KEY, NOW, NONCE)


def _form(request: pb.BatchSendRequest, recipients: Any = RECIPIENTS) -> dict[str, list[str]]:
    body = _build(request, recipients).body.decode("ascii")
    return parse_qs(body, keep_blank_values=True, strict_parsing=True)


def _fields(request: pb.BatchSendRequest) -> list[str]:
    return [p.field for p in _translator().validate(request)]


def test_signature_vectors() -> None:
    # The SDKs' form (seconds), and the docs' own sample (RC-AUTH), checked with hashlib.
    assert rules.signature("sandbox-app-secret", "12345", "1700000000") == (
        "2472f00ef39d0bc45e7154a0ef76f5bc33014547"
    )
    assert rules.signature("Y1W2MeFwwwRxa0", "14314", "1408710653000") == (
        "30be0bbca9c9b2e27578701e9fda2358a814c88f"
    )


def test_headers_sign_seconds_with_a_short_nonce() -> None:
    request = _build(make_request())
    headers = request.headers
    assert headers["App-Key"] == "sandbox-app-key"
    assert headers["Timestamp"] == str(int(NOW))
    assert headers["Nonce"].isdigit()
    assert len(headers["Nonce"]) <= rules.NONCE_MAX_CHARS
    assert headers["Signature"] == rules.signature(
        "sandbox-app-secret", headers["Nonce"], headers["Timestamp"]
    )
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert len(headers["X-Request-ID"]) == 32
    assert request.path == "/message/private/publish.json"
    assert request.query == {}


@pytest.mark.parametrize(
    ("kind", "object_name", "content"),
    [
        ("text", "RC:TxtMsg", {"content": "hi, 你好"}),
        ("tip", "RC:InfoNtf", {"message": "张三 joined"}),
        ("image", "RC:ImgMsg", {"content": "", "imageUri": "https://cdn.example/a.png"}),
        ("audio", "RC:HQVCMsg", {"remoteUrl": "https://cdn.example/v.aac", "duration": 4}),
        (
            "video",
            "RC:SightMsg",
            {
                "content": "",
                "sightUrl": "https://cdn.example/m.mp4",
                "duration": 61,
                "size": 10_485_760,
                "name": "",
            },
        ),
        (
            "location",
            "RC:LBSMsg",
            {"content": "", "latitude": 30.2431, "longitude": 120.1502, "poi": "西湖"},
        ),
        (
            "file",
            "RC:FileMsg",
            {
                "name": "report.pdf",
                "size": 123_456,
                "type": "pdf",
                "fileUrl": "https://cdn.example/r.pdf",
            },
        ),
        ("custom", "imgate:Custom", {"kind": "order", "id": 42}),
    ],
)
def test_each_content_kind(kind: str, object_name: str, content: dict[str, Any]) -> None:
    form = _form(make_request(CONTENTS[kind]))
    assert form["fromUserId"] == ["dave"]
    assert form["toUserId"] == list(RECIPIENTS)
    assert form["objectName"] == [object_name]
    assert json.loads(form["content"][0]) == content
    # Only a custom message gets its description as push text.
    assert form.get("pushContent") == (["新订单"] if kind == "custom" else None)


def test_extension_travels_as_extra_and_recipients_are_form_encoded() -> None:
    form = _form(make_request(extension='{"trace":"x"}'), ["a+b=c", "d-e_f"])
    assert json.loads(form["content"][0]) == {"content": "hi, 你好", "extra": '{"trace":"x"}'}
    assert form["toUserId"] == ["a+b=c", "d-e_f"]


def test_options_map_to_form_fields() -> None:
    form = _form(
        make_request(
            push_enabled=True,
            push_content="新消息",
            push_title="Title",
            push_payload='{"k":1}',
            history_enabled=False,
            unread_enabled=False,
            sync_to_sender=True,
            update_conversation=False,
            read_receipt=True,
            offline_enabled=True,
            return_message_ids=True,
        )
    )
    assert {k: v for k, v in form.items() if k not in ("fromUserId", "toUserId", "content")} == {
        "objectName": ["RC:TxtMsg"],
        "pushContent": ["新消息"],
        "pushData": ['{"k":1}'],
        "pushExt": ['{"title":"Title"}'],
        "isPersisted": ["0"],
        "isCounted": ["0"],
        "isIncludeSender": ["1"],
        "disablePush": ["false"],
        "needReadReceipt": ["1"],
        "disableUpdateLastMsg": ["true"],
    }
    quiet = _form(make_request(push_enabled=False, push_title="T", update_conversation=True))
    assert quiet["disablePush"] == ["true"]
    assert "pushExt" not in quiet
    assert "disableUpdateLastMsg" not in quiet


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (make_request(offline_enabled=False), "options.offline_enabled"),
        (make_request(push_nick_enabled=True), "options.push_nick_enabled"),
        (make_request(push_title="t" * 51), "options.push_title"),
        (make_request(sender_id="da.ve"), "sender_id"),
        (make_request(recipients=["ok", "not.ok"]), "recipient_ids[1]"),
        (
            make_request(pb.Message(custom=pb.CustomContent(data='{"a":1}')), push_enabled=True),
            "options.push_enabled",
        ),
        (make_request(CONTENTS["tip"], push_enabled=True), "options.push_enabled"),
        (
            make_request(pb.Message(custom=pb.CustomContent(data='{"extra":"x"}')), extension="{}"),
            "message.extension",
        ),
        (make_request(pb.Message(text=pb.TextContent(text="x" * (128 * 1024)))), "message"),
    ],
)
def test_what_private_publish_cannot_express_is_refused_by_name(
    request_: pb.BatchSendRequest, field: str
) -> None:
    assert _fields(request_) == [field]


def test_ids_of_allowed_characters_and_a_custom_push_with_text_are_valid() -> None:
    assert _fields(make_request(sender_id="A+b=C-d_9", recipients=["x" * 64, "y"])) == []
    custom = pb.Message(custom=pb.CustomContent(data='{"a":1}', description="d"))
    assert _fields(make_request(custom, push_enabled=True)) == []
    assert _fields(make_request(pb.Message(text=pb.TextContent(text="x" * 131_000)))) == []


def test_many_bad_ids_are_counted_not_all_listed() -> None:
    fields = _fields(make_request(recipients=[f"u.{n}" for n in range(12)]))
    assert fields == [f"recipient_ids[{n}]" for n in range(10)] + ["recipient_ids"]


def _parse(status: int, body: Any, recipients: Any = RECIPIENTS) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return _translator().parse(list(recipients), status, raw)


def test_success_gives_each_recipient_its_message_uid() -> None:
    uids = [{"userId": r, "messageUID": f"UID-{r}"} for r in reversed(RECIPIENTS)]
    result = _parse(200, {"code": 200, "messageUIDs": uids})
    assert result.disposition is Disposition.DONE
    assert [(r.recipient_id, r.accepted, r.vendor_message_id) for r in result.results] == [
        (r, True, f"UID-{r}") for r in RECIPIENTS
    ]
    older = _parse(200, {"code": 200})
    assert all(r.accepted and not r.vendor_message_id for r in older.results)
    single = _parse(200, {"code": 200, "messageUID": "U1"}, ["solo"])
    assert single.results[0].vendor_message_id == "U1"


def test_message_uids_that_do_not_match_the_call_are_uncertain() -> None:
    stranger = [{"userId": "mallory", "messageUID": "U"}]
    assert _parse(200, {"code": 200, "messageUIDs": stranger}).disposition is (
        Disposition.AMBIGUOUS
    )
    assert _parse(200, {"code": 200, "messageUIDs": "U"}).disposition is Disposition.AMBIGUOUS
    partial = _parse(200, {"code": 200, "messageUIDs": [{"userId": "rong", "messageUID": "U"}]})
    assert [(r.accepted, r.uncertain) for r in partial.results] == [(False, True), (True, False)]


@pytest.mark.parametrize(
    ("status", "body", "disposition", "reason"),
    [
        (
            401,
            {"code": 1004, "errorMessage": "sig"},
            Disposition.DONE,
            pb.FAILURE_REASON_AUTH_FAILED,
        ),
        (401, {"code": 1001}, Disposition.DONE, pb.FAILURE_REASON_AUTH_FAILED),
        (400, {"code": 1002}, Disposition.DONE, pb.FAILURE_REASON_MESSAGE_INVALID),
        (400, {"code": 1005}, Disposition.DONE, pb.FAILURE_REASON_MESSAGE_INVALID),
        (430, {"code": 1009}, Disposition.DONE, pb.FAILURE_REASON_VENDOR_ERROR),
        (429, {"code": 1008}, Disposition.RATE_LIMITED, pb.FAILURE_REASON_RATE_LIMITED),
        (500, {"code": 1000}, Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR),
        (504, {"code": 1050}, Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR),
        (403, {"code": 2007}, Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR),
        (400, {"code": 400}, Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR),
        # A documented status without the vendor's body: judged by the status.
        (429, b"<html>slow down</html>", Disposition.RATE_LIMITED, pb.FAILURE_REASON_RATE_LIMITED),
        (401, b"<html>no</html>", Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR),
        # Success at an error status contradicts itself.
        (500, {"code": 200}, Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR),
    ],
)
def test_codes(status: int, body: Any, disposition: Disposition, reason: int) -> None:
    result = _parse(status, body)
    assert result.disposition is disposition
    if disposition is Disposition.DONE:
        assert {r.reason for r in not_accepted(result.results)} == {reason}
        assert len(list(not_accepted(result.results))) == len(RECIPIENTS)
    else:
        assert result.reason == reason
