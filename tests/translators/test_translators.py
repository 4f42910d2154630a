"""What every translator must do the same way: declared vendor facts, purity, stable
de-duplication material, common answer handling, the checks shared by all vendors."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from imgate.api.validate import validate_for_vendor
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.translator import Disposition, Translator, VendorRequest
from imgate.vendors.registry import VENDORS, VendorPlugin
from imgate.vendors.tencent.translator import TencentTranslator
from imgate.vendors.yunxin_v1.translator import YunxinV1Translator
from imgate.vendors.yunxin_v2.translator import YunxinV2Translator

from .cases import CHUNK_KEY, CONTENTS, NONCE, NOW, RECIPIENTS, THUMBNAIL, make_request

ALL = tuple(plugin.translator for plugin in VENDORS)
"""Every registered translator: the shared cases below run for each, a new vendor too."""


def _make(cls: type[Translator]) -> Translator:
    return cls(cls.spec.sandbox_credentials)


def _id(cls: type[Translator]) -> str:
    return cls.spec.vendor


@pytest.mark.parametrize("plugin", VENDORS, ids=lambda plugin: plugin.vendor)
def test_translator_and_emulator_read_one_spec(plugin: VendorPlugin) -> None:
    spec = plugin.spec
    assert plugin.translator.spec is spec
    assert plugin.emulator.spec is spec
    # The emulator's defaults are the spec's published limits and sandbox credentials.
    settings = plugin.emulator.default_settings()
    assert settings.credentials() == dict(spec.sandbox_credentials)
    assert settings.recipients_per_call == spec.limits.recipients_per_call
    assert settings.call_limit == spec.limits.call_limit
    assert settings.call_window_s == spec.limits.call_window_s
    assert (settings.recipient_limit or 0) == spec.limits.recipient_limit
    assert settings.block_s == spec.limits.vendor_block_s
    assert spec.path.startswith("/")
    assert spec.limits.recipients_per_call >= 1


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


@pytest.mark.parametrize("cls", ALL, ids=_id)
@pytest.mark.parametrize("kind", sorted(CONTENTS))
def test_every_content_kind_is_valid_and_builds(cls: type[Translator], kind: str) -> None:
    translator = _make(cls)
    request = make_request(CONTENTS[kind])
    assert translator.validate(request) == []
    vendor_request = translator.build(
        translator.prepare(request), list(RECIPIENTS), CHUNK_KEY, NOW, NONCE
    )
    assert vendor_request.method == "POST"
    assert vendor_request.path == cls.spec.path
    assert vendor_request.body


def _signed(request: VendorRequest) -> dict[str, str]:
    """The request's headers and query parameters together."""
    return {**request.headers, **{f"?{k}": v for k, v in request.query.items()}}


@pytest.mark.parametrize("cls", ALL, ids=_id)
def test_resend_keeps_dedup_material_and_refreshes_auth(cls: type[Translator]) -> None:
    translator = _make(cls)
    prepared = translator.prepare(make_request())
    first = translator.build(prepared, list(RECIPIENTS), CHUNK_KEY, NOW, NONCE)
    again = translator.build(prepared, list(RECIPIENTS), CHUNK_KEY, NOW + 7, "f" * 32)
    other_chunk = translator.build(prepared, list(RECIPIENTS), CHUNK_KEY + "x", NOW, NONCE)
    # A resend is the same call: the same body, only its signature is fresh.
    assert first.body == again.body
    assert first.path == again.path
    first_signed, again_signed = _signed(first), _signed(again)
    assert first_signed != again_signed
    # Whatever stays the same across attempts (a trace header, MsgSeq in the body) is
    # derived from the chunk: another chunk of the same recipients differs in it.
    stable = {k: v for k, v in first_signed.items() if again_signed.get(k) == v}
    other_signed = _signed(other_chunk)
    assert other_chunk.body != first.body or any(
        other_signed.get(k) != v for k, v in stable.items()
    )


@pytest.mark.parametrize("cls", ALL, ids=_id)
@pytest.mark.parametrize(
    ("status", "disposition", "reason", "final"),
    [
        (502, Disposition.RETRY, pb.FAILURE_REASON_VENDOR_UNAVAILABLE, False),
        (429, Disposition.RATE_LIMITED, pb.FAILURE_REASON_RATE_LIMITED, False),
        (500, Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR, False),
        (503, Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR, False),
        (504, Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR, False),
        # Undocumented answers (unless the spec says the vendor refuses with it): UNCERTAIN.
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
    if status in cls.spec.refusal_statuses.statuses:
        # The vendor refuses with this status: its body, not the status, is the answer.
        assert result.vendor_code != f"http_{status}"
        return
    assert result.disposition is disposition
    assert result.vendor_code == ("" if final else f"http_{status}")
    if final:
        assert [r.reason for r in result.results] == [reason] * len(RECIPIENTS)
        assert not any(r.accepted for r in result.results)
    else:
        assert result.reason == reason


@pytest.mark.parametrize("cls", ALL, ids=_id)
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


# Answers that repeat a key (issue 22 item 5): which value the vendor meant is unknown, so
# the answer cannot be accounted for (CONTRACT §8 rule 24). Each would read as a success
# (or a clean refusal) with one of its values.
DUPLICATE_KEY_ANSWERS: dict[type[Translator], list[bytes]] = {
    YunxinV1Translator: [
        b'{"code":414,"code":200,"unregister":[]}',
        b'{"code":200,"unregister":[],"unregister":["rong"]}',
        b'{"code":200,"unregister":"[]","msgids":"{\\"rong\\":1,\\"rong\\":2}"}',
    ],
    YunxinV2Translator: [
        b'{"code":200,"msg":"success","data":{"success_list":[],"success_list":[]}}',
        b'{"code":200,"msg":"success","data":{"success_list":[{"receiver_id":"bonnie",'
        b'"message_server_id":1,"receiver_id":"rong"}]}}',
    ],
    TencentTranslator: [
        b'{"ActionStatus":"OK","ErrorCode":0,"ErrorCode":90012,"MsgKey":"1_2_3"}',
        b'{"ActionStatus":"OK","ErrorCode":0,"MsgKey":"1_2_3","ErrorList":[],'
        b'"ErrorList":[{"To_Account":"rong","ErrorCode":70107}]}',
    ],
}


@pytest.mark.parametrize(
    ("cls", "body"),
    [(cls, body) for cls, bodies in DUPLICATE_KEY_ANSWERS.items() for body in bodies],
    ids=lambda value: value.spec.vendor if isinstance(value, type) else "",
)
def test_answer_repeating_a_key_is_uncertain(cls: type[Translator], body: bytes) -> None:
    result = _make(cls).parse(list(RECIPIENTS), 200, body)
    assert result.disposition is Disposition.AMBIGUOUS, result
    assert result.reason == pb.FAILURE_REASON_VENDOR_ERROR
    assert "repeats the key" in result.detail


@pytest.mark.parametrize("cls", ALL, ids=_id)
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


@pytest.mark.parametrize("cls", ALL, ids=_id)
def test_valid_request_has_no_violations(cls: type[Translator]) -> None:
    can = cls.spec.capabilities
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
        skip_moderation=can.skip_moderation,
        online_only=False,
        read_receipt=can.read_receipt,
        return_message_ids=True,
    )
    assert validate_for_vendor(request, list(RECIPIENTS), _make(cls)) == []


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


@pytest.mark.parametrize("cls", ALL, ids=_id)
def test_custom_sub_type_only_where_the_vendor_carries_it(cls: type[Translator]) -> None:
    request = make_request(pb.Message(custom=pb.CustomContent(data='{"a":1}', sub_type=4)))
    fields = [p.field for p in validate_for_vendor(request, list(RECIPIENTS), _make(cls))]
    allowed = cls.spec.capabilities.custom_sub_type
    assert fields == ([] if allowed else ["message.custom.sub_type"])


@pytest.mark.parametrize("cls", ALL, ids=_id)
@pytest.mark.parametrize(
    ("option", "capability"),
    [
        ("read_receipt", "read_receipt"),
        ("online_only", "online_only"),
        ("skip_moderation", "skip_moderation"),
    ],
)
def test_options_the_vendor_cannot_express_are_refused_by_name(
    cls: type[Translator], option: str, capability: str
) -> None:
    translator = _make(cls)
    fields = [
        p.field
        for p in validate_for_vendor(make_request(**{option: True}), list(RECIPIENTS), translator)
    ]
    able = getattr(cls.spec.capabilities, capability)
    assert fields == ([] if able else [f"options.{option}"])
    assert validate_for_vendor(make_request(**{option: False}), list(RECIPIENTS), translator) == []


@pytest.mark.parametrize("cls", ALL, ids=_id)
def test_another_vendors_own_options_are_refused_by_name(cls: type[Translator]) -> None:
    translator = _make(cls)
    for plugin in VENDORS:
        for option in plugin.spec.own_options:
            request = make_request(**{option: "{}"})
            fields = [p.field for p in validate_for_vendor(request, list(RECIPIENTS), translator)]
            owned = option in cls.spec.own_options
            assert fields == ([] if owned else [f"options.{option}"]), (option, fields)


@pytest.mark.parametrize("cls", ALL, ids=_id)
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
    bad = make_request(tencent_apns_info='{"BadgeMode": NaN}')
    assert [p.field for p in translator.validate(bad)] == ["options.tencent_apns_info"]
