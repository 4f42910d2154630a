"""What every translator must do the same way: declared vendor facts, purity, stable
de-duplication material, common answer handling, the checks shared by all vendors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.translator import Disposition, Translator, VendorLimits
from imgate.vendors.tencent.translator import TencentTranslator
from imgate.vendors.yunxin_v1.translator import YunxinV1Translator
from imgate.vendors.yunxin_v2.translator import YunxinV2Translator

from .cases import CHUNK_KEY, CONTENTS, NONCE, NOW, RECIPIENTS, THUMBNAIL, make_request

ALL = (YunxinV1Translator, YunxinV2Translator, TencentTranslator)

YUNXIN_CREDENTIALS = {"app_key": str, "app_secret": str}
TENCENT_CREDENTIALS = {"sdk_app_id": int, "secret_key": str, "admin_identifier": str}


def _make(cls: type[Translator]) -> Translator:
    return cls(cls.sandbox_credentials)


@pytest.mark.parametrize(
    ("cls", "vendor", "path", "limits", "credentials", "sender_required"),
    [
        (
            YunxinV1Translator,
            "yunxin_v1",
            "/nimserver/msg/sendBatchMsg.action",
            VendorLimits(500, 120, 60.0, 0, 60.0, 60.0, None),
            YUNXIN_CREDENTIALS,
            True,
        ),
        (
            YunxinV2Translator,
            "yunxin_v2",
            "/im/v2/conversations/messages",
            VendorLimits(100, 120, 60.0, 0, 60.0, 60.0, None),
            YUNXIN_CREDENTIALS,
            True,
        ),
        (
            TencentTranslator,
            "tencent",
            "/v4/openim/batchsendmsg",
            VendorLimits(500, 200, 1.0, 12000, 60.0, 60.0, 12288),
            TENCENT_CREDENTIALS,
            False,
        ),
    ],
)
def test_declared_vendor_facts(
    cls: type[Translator],
    vendor: str,
    path: str,
    limits: VendorLimits,
    credentials: Mapping[str, type],
    sender_required: bool,
) -> None:
    assert cls.vendor == vendor
    assert cls.path == path
    assert cls.default_limits == limits
    assert dict(cls.credential_fields) == credentials
    assert cls.sender_required is sender_required
    # The sandbox credentials are a complete, well-typed credential set.
    assert set(cls.sandbox_credentials) == set(credentials)
    for key, kind in credentials.items():
        assert isinstance(cls.sandbox_credentials[key], kind)


def test_sandbox_credentials_are_the_contract_ones() -> None:
    expected_yunxin = {"app_key": "sandbox-app-key", "app_secret": "sandbox-app-secret"}
    assert dict(YunxinV1Translator.sandbox_credentials) == expected_yunxin
    assert dict(YunxinV2Translator.sandbox_credentials) == expected_yunxin
    assert dict(TencentTranslator.sandbox_credentials) == {
        "sdk_app_id": 1400000000,
        "secret_key": "sandbox-secret-key",
        "admin_identifier": "administrator",
    }


def test_translators_import_no_io_library() -> None:
    code = (
        "import sys\n"
        "import imgate.vendors.yunxin_v1.translator, imgate.vendors.yunxin_v2.translator\n"
        "import imgate.vendors.tencent.translator, imgate.pipeline.planner\n"
        "bad = {'aiohttp', 'socket', 'asyncio', 'requests', 'httpx'} & set(sys.modules)\n"
        "print(sorted(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("kind", sorted(CONTENTS))
def test_every_content_kind_is_valid_and_builds(cls: type[Translator], kind: str) -> None:
    translator = _make(cls)
    request = make_request(CONTENTS[kind])
    assert translator.validate(request) == []
    vendor_request = translator.build(
        translator.prepare(request), list(RECIPIENTS), CHUNK_KEY, NOW, NONCE
    )
    assert vendor_request.method == "POST"
    assert vendor_request.path == cls.path
    assert vendor_request.body


def _dedup_material(cls: type[Translator], request: Any) -> Any:
    """What must not change between two attempts of one chunk."""
    if cls is TencentTranslator:
        import json

        body = json.loads(request.body)
        return body["MsgSeq"], body["MsgRandom"], body
    trace = "RequestId" if cls is YunxinV1Translator else "X-custom-traceid"
    return request.headers[trace], request.body


@pytest.mark.parametrize("cls", ALL)
def test_resend_keeps_dedup_material_and_refreshes_auth(cls: type[Translator]) -> None:
    translator = _make(cls)
    prepared = translator.prepare(make_request())
    first = translator.build(prepared, list(RECIPIENTS), CHUNK_KEY, NOW, NONCE)
    again = translator.build(prepared, list(RECIPIENTS), CHUNK_KEY, NOW + 7, "f" * 32)
    other_chunk = translator.build(prepared, list(RECIPIENTS), CHUNK_KEY + "x", NOW, NONCE)
    assert _dedup_material(cls, first) == _dedup_material(cls, again)
    assert _dedup_material(cls, first)[0] != _dedup_material(cls, other_chunk)[0]
    if cls is TencentTranslator:
        assert first.query["random"] != again.query["random"]
    else:
        for header in ("Nonce", "CurTime", "CheckSum"):
            assert first.headers[header] != again.headers[header]


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize(
    ("status", "disposition", "reason", "final"),
    [
        (502, Disposition.RETRY, pb.FAILURE_REASON_VENDOR_UNAVAILABLE, False),
        (429, Disposition.RATE_LIMITED, pb.FAILURE_REASON_RATE_LIMITED, False),
        (500, Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR, False),
        (503, Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR, False),
        (504, Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR, False),
        # Undocumented answers (the vendors answer errors with HTTP 200): UNCERTAIN.
        (404, Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR, False),
        (400, Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR, False),
        (301, Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR, False),
        (204, Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR, False),
    ],
)
def test_http_status_before_body(
    cls: type[Translator], status: int, disposition: Disposition, reason: int, final: bool
) -> None:
    # The body would read as success: the status decides first.
    ok_body = b'{"code":200,"ErrorCode":0,"data":{}}'
    result = _make(cls).parse(list(RECIPIENTS), status, ok_body)
    assert result.disposition is disposition
    assert result.vendor_code == ("" if final else f"http_{status}")
    if final:
        assert [r.reason for r in result.results] == [reason] * len(RECIPIENTS)
        assert not any(r.accepted for r in result.results)
    else:
        assert result.reason == reason


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502 Bad Gateway</html>",
        b'{"code":200',
        b"[1, 2]",
        b"\xff\xfe not utf-8",
        b'{"unrelated": true}',
    ],
)
def test_unreadable_200_answer_is_ambiguous(cls: type[Translator], body: bytes) -> None:
    result = _make(cls).parse(list(RECIPIENTS), 200, body)
    assert result.disposition is Disposition.AMBIGUOUS
    assert result.reason == pb.FAILURE_REASON_VENDOR_ERROR
    assert result.results == ()


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize(
    ("request_args", "field"),
    [
        ({"content": pb.Message(text=pb.TextContent(text=""))}, "message.text.text"),
        ({"content": pb.Message(tip=pb.TipContent(text=""))}, "message.tip.text"),
        (
            {"content": pb.Message(image=pb.ImageContent(md5="x", width=1, height=1))},
            "message.image.url",
        ),
        ({"content": pb.Message(audio=pb.AudioContent())}, "message.audio.url"),
        (
            {"content": pb.Message(video=pb.VideoContent(thumbnail=THUMBNAIL))},
            "message.video.url",
        ),
        ({"content": pb.Message(file=pb.FileContent())}, "message.file.url"),
        (
            {"content": pb.Message(location=pb.LocationContent(latitude=91.0))},
            "message.location.latitude",
        ),
        (
            {"content": pb.Message(location=pb.LocationContent(longitude=float("nan")))},
            "message.location.longitude",
        ),
        ({"content": pb.Message(custom=pb.CustomContent(data="[1]"))}, "message.custom.data"),
        ({"content": pb.Message(custom=pb.CustomContent(data="{}"))}, "message.custom.data"),
        ({"content": pb.Message(custom=pb.CustomContent(data="{"))}, "message.custom.data"),
        (
            {"content": pb.Message(custom=pb.CustomContent(data='{"a":1}', sub_type=-1))},
            "message.custom.sub_type",
        ),
        ({"extension": "not json"}, "message.extension"),
        ({"extension": '["a"]'}, "message.extension"),
        ({"push_payload": "null"}, "options.push_payload"),
        ({"push_payload": "{'single': 'quotes'}"}, "options.push_payload"),
    ],
)
def test_message_checks_shared_by_all_vendors(
    cls: type[Translator], request_args: dict[str, Any], field: str
) -> None:
    problems = _make(cls).validate(make_request(**request_args))
    assert [p.field for p in problems] == [field]
    assert problems[0].description


@pytest.mark.parametrize("cls", ALL)
def test_valid_request_has_no_violations(cls: type[Translator]) -> None:
    request = make_request(
        extension='{"trace":"x"}',
        push_enabled=True,
        push_content="新消息",
        push_title="Title",
        push_payload='{"sound":"a.caf"}',
        offline_enabled=True,
        history_enabled=True,
        unread_enabled=True,
        sync_to_sender=True,
        update_conversation=True,
        skip_moderation=False,
        online_only=False,
        read_receipt=cls is TencentTranslator,  # Yunxin batch sends have no receipts
        return_message_ids=True,
    )
    assert _make(cls).validate(request) == []


def test_per_recipient_results_become_outcomes_and_counts() -> None:
    from imgate.vendors.base.translator import (
        RecipientResult,
        count_states,
        fill_outcome,
        uncertain_result,
    )

    results = [
        RecipientResult("a", True, vendor_message_id="m", vendor_time_ms=5, detail="note"),
        RecipientResult("b", False, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND, "404", "gone"),
        uncertain_result("c", pb.FAILURE_REASON_VENDOR_ERROR, "102449", "retry"),
    ]
    outcomes = []
    for item in results:
        outcome = pb.RecipientOutcome()
        fill_outcome(outcome, item)
        outcomes.append(outcome)
    assert [(o.state, o.reason, o.vendor_code, o.detail) for o in outcomes] == [
        (pb.DELIVERY_STATE_ACCEPTED, pb.FAILURE_REASON_UNSPECIFIED, "", "note"),
        (pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND, "404", "gone"),
        (pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR, "102449", "retry"),
    ]
    assert (outcomes[0].vendor_message_id, outcomes[0].vendor_time_ms) == ("m", 5)
    assert count_states(results) == (1, 1, 1)


@pytest.mark.parametrize("cls", [YunxinV1Translator, YunxinV2Translator])
@pytest.mark.parametrize(
    ("content", "field"),
    [
        # Over the vendor's 5000-character body: refused up front, not 414 on every chunk.
        (
            pb.Message(custom=pb.CustomContent(data='{"a":"' + "x" * 5000 + '"}')),
            "message.custom.data",
        ),
        (
            pb.Message(file=pb.FileContent(url="https://cdn.example/" + "f" * 5000)),
            "message.file",
        ),
    ],
)
def test_yunxin_body_over_the_limit_is_refused(
    cls: type[Translator], content: pb.Message, field: str
) -> None:
    problems = _make(cls).validate(make_request(content))
    assert [p.field for p in problems] == [field]


def test_yunxin_body_counts_what_is_sent() -> None:
    # v2 re-encodes the custom data compactly: spaces in the caller's JSON do not count.
    data = '{"a": "' + "x" * 4985 + '",   "b": 1}'
    request = make_request(pb.Message(custom=pb.CustomContent(data=data)))
    assert _make(YunxinV2Translator).validate(request) == []
    assert [p.field for p in _make(YunxinV1Translator).validate(request)] == ["message.custom.data"]


@pytest.mark.parametrize(
    ("cls", "allowed"),
    [(YunxinV1Translator, False), (YunxinV2Translator, True), (TencentTranslator, False)],
)
def test_custom_sub_type_only_where_the_vendor_carries_it(
    cls: type[Translator], allowed: bool
) -> None:
    request = make_request(pb.Message(custom=pb.CustomContent(data='{"a":1}', sub_type=4)))
    fields = [p.field for p in _make(cls).validate(request)]
    assert fields == ([] if allowed else ["message.custom.sub_type"])


@pytest.mark.parametrize("cls", [YunxinV1Translator, YunxinV2Translator])
def test_yunxin_refuses_read_receipts_it_cannot_send(cls: type[Translator]) -> None:
    fields = [p.field for p in _make(cls).validate(make_request(read_receipt=True))]
    assert fields == ["options.read_receipt"]
    assert _make(cls).validate(make_request(read_receipt=False)) == []


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("option", ["offline_enabled", "history_enabled", "unread_enabled"])
def test_online_only_contradicted_is_refused(cls: type[Translator], option: str) -> None:
    problems = _make(cls).validate(make_request(online_only=True, **{option: True}))
    assert f"options.{option}" in [p.field for p in problems]


def test_push_nick_maps_on_yunxin_and_is_refused_on_tencent() -> None:
    import json as json_module
    from urllib.parse import parse_qs

    request = make_request(push_nick_enabled=False)
    v1 = _make(YunxinV1Translator)
    form = parse_qs(v1.build(v1.prepare(request), ["a"], CHUNK_KEY, NOW, NONCE).body.decode())
    assert json_module.loads(form["option"][0]) == {"needPushNick": False}
    v2 = _make(YunxinV2Translator)
    body = json_module.loads(v2.build(v2.prepare(request), ["a"], CHUNK_KEY, NOW, NONCE).body)
    assert body["push_config"] == {"push_nick_enabled": False}
    assert [p.field for p in _make(TencentTranslator).validate(request)] == [
        "options.push_nick_enabled"
    ]


def test_tencent_android_and_apns_info_are_passed_through() -> None:
    import json as json_module

    request = make_request(
        tencent_android_info='{"Sound":"a.mp3","OPPOChannelID":"c1"}',
        tencent_apns_info='{"Sound":"a.caf","BadgeMode":1,"SubTitle":"s"}',
    )
    translator = _make(TencentTranslator)
    assert translator.validate(request) == []
    body = json_module.loads(
        translator.build(translator.prepare(request), ["a"], CHUNK_KEY, NOW, NONCE).body
    )
    assert body["OfflinePushInfo"] == {
        "AndroidInfo": {"Sound": "a.mp3", "OPPOChannelID": "c1"},
        "ApnsInfo": {"Sound": "a.caf", "BadgeMode": 1, "SubTitle": "s"},
    }
    for cls in (YunxinV1Translator, YunxinV2Translator):
        fields = [p.field for p in _make(cls).validate(request)]
        assert fields == ["options.tencent_android_info", "options.tencent_apns_info"]
    bad = make_request(tencent_apns_info='{"BadgeMode": NaN}')
    assert [p.field for p in translator.validate(bad)] == ["options.tencent_apns_info"]
