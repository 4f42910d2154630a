"""Tencent batchsendmsg: the exact JSON body, the UserSig query, the 12 KB byte budget,
answers."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from imgate.api.validate import validate_common, validate_for_vendor
from imgate.config.load import sandbox_config
from imgate.pipeline.planner import dedupe, plan_chunks
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.auth import verify_tencent_user_sig
from imgate.vendors.base.spec import IdUnit
from imgate.vendors.base.translator import Disposition, VendorRequest
from imgate.vendors.tencent.admin import USER_SIG_REFRESH_BEFORE_S, USER_SIG_TTL_S
from imgate.vendors.tencent.translator import MAX_BODY_BYTES, TencentTranslator

from .cases import CHUNK_KEY, CONTENTS, NONCE, NOW, RECIPIENTS, make_request

SECRET = "sandbox-secret-key"
APP_ID = 1400000000
ADMIN = "administrator"


def _translator() -> TencentTranslator:
    return TencentTranslator(TencentTranslator.spec.sandbox_credentials)


def _build(
    request: pb.BatchSendRequest,
    recipients: Any = RECIPIENTS,
    translator: TencentTranslator | None = None,
    now: float = NOW,
    nonce: str = NONCE,
) -> VendorRequest:
    translator = translator or _translator()
    return translator.build(translator.prepare(request), list(recipients), CHUNK_KEY, now, nonce)


def _body(request: pb.BatchSendRequest) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(_build(request).body)
    return body


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


@pytest.mark.parametrize(
    ("kind", "element"),
    [
        ("text", {"MsgType": "TIMTextElem", "MsgContent": {"Text": "hi, 你好"}}),
        (
            "tip",
            {
                # No Desc (fidelity 5, issue 22): Desc is a custom element's offline-push
                # text; with neither it nor OfflinePushInfo.Desc, a custom-only message
                # raises no offline push (TX-FMT). The tip's text was pushed.
                "MsgType": "TIMCustomElem",
                "MsgContent": {"Data": '{"type":"tip","text":"张三 joined"}'},
            },
        ),
        (
            "image",
            {
                "MsgType": "TIMImageElem",
                "MsgContent": {
                    "UUID": "9e107d9d372bb6826bd81d3542a419d6",
                    "ImageFormat": 3,
                    "ImageInfoArray": [
                        {
                            "Type": 1,
                            "Size": 2048,
                            "Width": 640,
                            "Height": 480,
                            "URL": "https://cdn.example/a.png",
                        }
                    ],
                },
            },
        ),
        (
            "audio",
            {
                "MsgType": "TIMSoundElem",
                "MsgContent": {
                    "Url": "https://cdn.example/v.aac",
                    "UUID": "e4d909c290d0fb1ca068ffaddf22cbd0",
                    "Size": 4096,
                    "Second": 4,  # 3.2 s rounds up
                    "Download_Flag": 2,
                },
            },
        ),
        (
            "video",
            {
                "MsgType": "TIMVideoFileElem",
                "MsgContent": {
                    "VideoUrl": "https://cdn.example/m.mp4",
                    "VideoUUID": "d41d8cd98f00b204e9800998ecf8427e",
                    "VideoSize": 10485760,
                    "VideoSecond": 61,
                    "VideoFormat": "mp4",
                    "VideoDownloadFlag": 2,
                    "ThumbUrl": "https://cdn.example/m.jpg",
                    "ThumbUUID": "b026324c6904b2a9cb4b88d6d61c81d1",
                    "ThumbSize": 20480,
                    "ThumbWidth": 320,
                    "ThumbHeight": 180,
                    "ThumbFormat": "jpg",
                    "ThumbDownloadFlag": 2,
                },
            },
        ),
        (
            "location",
            {
                "MsgType": "TIMLocationElem",
                "MsgContent": {"Desc": "西湖", "Latitude": 30.2431, "Longitude": 120.1502},
            },
        ),
        (
            "file",
            {
                "MsgType": "TIMFileElem",
                "MsgContent": {
                    "Url": "https://cdn.example/r.pdf",
                    "UUID": "0cc175b9c0f1b6a831c399e269772661",
                    "FileSize": 123456,
                    "FileName": "report.pdf",
                    "Download_Flag": 2,
                },
            },
        ),
        (
            "custom",
            {
                "MsgType": "TIMCustomElem",
                "MsgContent": {"Data": '{"kind": "order", "id": 42}', "Desc": "新订单"},
            },
        ),
    ],
)
def test_content_kind_to_msg_body(kind: str, element: dict[str, Any]) -> None:
    body = _body(make_request(CONTENTS[kind]))
    assert body["MsgBody"] == [element]
    assert set(body) == {"To_Account", "MsgSeq", "MsgRandom", "From_Account", "MsgBody"}
    assert body["To_Account"] == list(RECIPIENTS)
    assert body["From_Account"] == "dave"


@pytest.mark.parametrize(
    ("image_format", "code"),
    [("jpg", 1), ("JPEG", 1), (".gif", 2), ("png", 3), ("bmp", 4), ("webp", 255), ("", 255)],
)
def test_image_format_codes(image_format: str, code: int) -> None:
    image = pb.ImageContent(url="https://x/y", format=image_format)
    content = _body(make_request(pb.Message(image=image)))["MsgBody"][0]["MsgContent"]
    assert content["ImageFormat"] == code
    assert content["UUID"] == _sha1("https://x/y")  # no md5: derived from the URL


def test_tip_pushes_only_what_push_content_says() -> None:
    """A tip raises no offline push of its own; push_content is the caller's push text."""
    tip = pb.Message(tip=pb.TipContent(text="张三 joined"))
    silent = _body(make_request(tip))
    assert "Desc" not in silent["MsgBody"][0]["MsgContent"]
    assert "OfflinePushInfo" not in silent
    pushed = _body(make_request(tip, push_content="有新成员"))
    assert pushed["OfflinePushInfo"] == {"Desc": "有新成员"}


def test_custom_without_description_has_no_desc() -> None:
    request = make_request(pb.Message(custom=pb.CustomContent(data='{"a":1}')))
    assert _body(request)["MsgBody"][0]["MsgContent"] == {"Data": '{"a":1}'}


def test_empty_sender_means_admin() -> None:
    assert "From_Account" not in _body(make_request(sender_id=""))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"push_enabled": True}, {"OfflinePushInfo": {"PushFlag": 0}}),
        ({"push_enabled": False}, {"OfflinePushInfo": {"PushFlag": 1}}),
        ({"push_content": "离线推送内容"}, {"OfflinePushInfo": {"Desc": "离线推送内容"}}),
        ({"push_title": "apns title"}, {"OfflinePushInfo": {"Title": "apns title"}}),
        ({"push_payload": '{"k":"v"}'}, {"OfflinePushInfo": {"Ext": '{"k":"v"}'}}),
        ({"offline_enabled": True}, {}),
        ({"online_only": True, "offline_enabled": False}, {"OnlineOnlyFlag": 1}),
        ({"history_enabled": True}, {}),
        ({"online_only": True}, {"OnlineOnlyFlag": 1}),
        ({"online_only": False}, {}),
        ({"unread_enabled": False}, {"SendMsgControl": ["NoUnread"]}),
        ({"unread_enabled": True}, {}),
        ({"update_conversation": False}, {"SendMsgControl": ["NoLastMsg"]}),
        ({"skip_moderation": True}, {"SendMsgControl": ["NoMsgCheck"]}),
        ({"skip_moderation": False}, {}),
        (
            {"unread_enabled": False, "update_conversation": False, "skip_moderation": True},
            {"SendMsgControl": ["NoUnread", "NoLastMsg", "NoMsgCheck"]},
        ),
        ({"sync_to_sender": True}, {"SyncOtherMachine": 1}),
        ({"sync_to_sender": False}, {"SyncOtherMachine": 2}),
        ({"read_receipt": True}, {"IsNeedReadReceipt": 1}),
        ({"read_receipt": False}, {"IsNeedReadReceipt": 0}),
        ({"return_message_ids": True}, {}),  # one MsgKey per call whatever we ask
    ],
)
def test_option_to_body(options: dict[str, Any], expected: dict[str, Any]) -> None:
    body = _body(make_request(**options))
    for key in ("To_Account", "MsgSeq", "MsgRandom", "From_Account", "MsgBody"):
        del body[key]
    assert body == expected


def test_extension_is_cloud_custom_data() -> None:
    assert _body(make_request(extension='{"k":"v"}'))["CloudCustomData"] == '{"k":"v"}'


def test_body_is_compact_utf8() -> None:
    raw = _build(make_request(), recipients=["张三", 'a"b']).body
    assert "你好".encode() in raw
    assert "张三".encode() in raw
    assert b'"a\\"b"' in raw
    compact = json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False)
    assert raw == compact.encode()
    assert raw.startswith(b'{"To_Account":[')


def test_query_and_headers() -> None:
    request = _build(make_request())
    query = request.query
    assert set(query) == {"sdkappid", "identifier", "usersig", "random", "contenttype"}
    assert (query["sdkappid"], query["identifier"], query["contenttype"]) == (
        str(APP_ID),
        ADMIN,
        "json",
    )
    assert 0 <= int(query["random"]) <= 0xFFFFFFFF
    claims = verify_tencent_user_sig(query["usersig"], SECRET, APP_ID, ADMIN, NOW)
    assert (claims.time, claims.expire) == (int(NOW), USER_SIG_TTL_S)
    assert request.headers == {"Content-Type": "application/json"}
    assert request.path == "/v4/openim/batchsendmsg"
    # The secret travels nowhere but inside the signature.
    assert SECRET.encode() not in request.body
    assert all(SECRET not in value for value in query.values())


def test_msg_seq_and_random_are_uint32_and_per_chunk() -> None:
    translator = _translator()
    prepared = translator.prepare(make_request())
    seen = set()
    for index in range(50):
        body = json.loads(translator.build(prepared, ["a"], f"k:{index}", NOW, NONCE).body)
        assert 0 <= body["MsgSeq"] <= 0xFFFFFFFF
        assert 0 <= body["MsgRandom"] <= 0xFFFFFFFF
        seen.add((body["MsgSeq"], body["MsgRandom"]))
    assert len(seen) == 50


def test_user_sig_is_cached_until_its_refresh_point() -> None:
    translator = _translator()
    first = _build(make_request(), translator=translator).query["usersig"]
    refresh_at = NOW + USER_SIG_TTL_S - USER_SIG_REFRESH_BEFORE_S
    still = _build(make_request(), translator=translator, now=refresh_at - 1).query["usersig"]
    assert still == first
    renewed = _build(make_request(), translator=translator, now=refresh_at).query["usersig"]
    assert renewed != first
    claims = verify_tencent_user_sig(renewed, SECRET, APP_ID, ADMIN, refresh_at)
    assert claims.time == int(refresh_at)
    # The old one would still have been valid at the refresh point: we renew early.
    verify_tencent_user_sig(first, SECRET, APP_ID, ADMIN, refresh_at)


def test_invalidate_credentials_forces_a_new_sig() -> None:
    translator = _translator()
    first = _build(make_request(), translator=translator).query["usersig"]
    assert _build(make_request(), translator=translator, now=NOW + 5).query["usersig"] == first
    translator.invalidate_credentials()
    renewed = _build(make_request(), translator=translator, now=NOW + 5).query["usersig"]
    assert verify_tencent_user_sig(renewed, SECRET, APP_ID, ADMIN, NOW + 5).time == NOW + 5


def test_random_differs_per_nonce() -> None:
    randoms = {_build(make_request(), nonce=f"n{i}").query["random"] for i in range(20)}
    assert len(randoms) == 20


# --- byte planning ---------------------------------------------------------------------

ID_CHARS = st.one_of(
    st.characters(exclude_categories=["Cs"]),
    st.sampled_from(['"', "\\", "\n", "\x00", "\x1f", "张", "😀", "\u2028", "é"]),
)
IDS = (
    st.text(alphabet=ID_CHARS, min_size=1, max_size=32)
    .map(lambda text: text.encode()[:32].decode(errors="ignore"))  # Tencent: ≤ 32 bytes
    .filter(bool)
)
TEXTS = st.builds(
    lambda chinese, tail: "中" * chinese + tail,
    st.one_of(st.integers(0, 4050), st.integers(3000, 4050)),  # often near the cap
    st.text(alphabet=ID_CHARS, max_size=40),
)
ID_LISTS = st.integers(1, 700).flatmap(lambda n: st.lists(IDS, min_size=n, max_size=n))


def _assert_exact_bound(
    translator: TencentTranslator, prepared: Any, recipients: list[str], body: bytes
) -> None:
    """base + per-id bytes overshoots only by the missing comma and shorter numbers."""
    parsed = json.loads(body)
    assert parsed["To_Account"] == recipients
    slack = 1 + (10 - len(str(parsed["MsgSeq"]))) + (10 - len(str(parsed["MsgRandom"])))
    bound = translator.base_body_bytes(prepared) + sum(
        translator.recipient_body_bytes(r) for r in recipients
    )
    assert bound - len(body) == slack


@settings(max_examples=150, deadline=None)
@given(text=TEXTS, ids=ID_LISTS, extension=st.booleans())
def test_planned_chunks_always_fit(text: str, ids: list[str], extension: bool) -> None:
    assume(text)
    translator = _translator()
    request = make_request(
        pb.Message(text=pb.TextContent(text=text)),
        recipients=ids,
        extension=json.dumps({"e": "扩展" * 50}, ensure_ascii=False) if extension else "",
    )
    assume(translator.validate(request) == [])
    prepared = translator.prepare(request)
    unique = dedupe(ids).ids
    sizes = plan_chunks(translator, prepared, unique, 500)
    assert sum(sizes) == len(unique)
    assert all(0 < size <= 500 for size in sizes)
    event("cut by bytes" if len(sizes) > 1 and min(sizes[:-1]) < 500 else "not cut by bytes")
    start = 0
    for number, size in enumerate(sizes):
        chunk = unique[start : start + size]
        body = translator.build(prepared, chunk, f"k:{number}", NOW, NONCE).body
        assert len(body) <= MAX_BODY_BYTES
        _assert_exact_bound(translator, prepared, chunk, body)
        start += size
        if start < len(unique) and size < 500:
            # Greedy: the next id would not have fitted this chunk.
            used = translator.base_body_bytes(prepared) + sum(
                translator.recipient_body_bytes(r) for r in chunk
            )
            assert used + translator.recipient_body_bytes(unique[start]) > MAX_BODY_BYTES


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(IDS, max_size=50))
def test_bulk_sizes_equal_single_sizes(ids: list[str]) -> None:
    translator = _translator()
    expected = [len(json.dumps(r, ensure_ascii=False).encode()) + 1 for r in ids]
    assert translator.recipients_body_bytes(ids) == expected
    assert [translator.recipient_body_bytes(r) for r in ids] == expected


def test_plain_ids_take_the_fast_path_with_the_same_answer() -> None:
    translator = _translator()
    ids = ["user_1", "张三", "e\u0301", "😀" * 32]
    assert translator.recipients_body_bytes(ids) == [9, 9, 6, 131]


@pytest.mark.parametrize(
    ("chinese_chars", "recipients", "fits"),
    [
        (4000, ("a" * 32,), True),
        (4025, ("a" * 32,), True),
        (4040, ("a",), False),  # too big even with the 32-character reference id
        (3940, ("\x01" * 32,), True),  # a 32-byte id JSON writes as 192 bytes
        (4000, ("\x01" * 32,), False),  # this recipient could not be sent even alone
    ],
)
def test_validate_body_fits_with_one_recipient(
    chinese_chars: int, recipients: tuple[str, ...], fits: bool
) -> None:
    request = make_request(
        pb.Message(text=pb.TextContent(text="中" * chinese_chars)), recipients=recipients
    )
    problems = _translator().validate(request)
    assert [p.field for p in problems] == ([] if fits else ["message"])
    if fits:
        translator = _translator()
        body = _build(request, recipients=list(recipients), translator=translator).body
        assert len(body) <= MAX_BODY_BYTES


# --- answers ---------------------------------------------------------------------------


def _parse(body: object, recipients: Any = ("bonnie", "rong")) -> Any:
    return _translator().parse(list(recipients), 200, json.dumps(body).encode())


def test_seed_success_example() -> None:
    answer = {
        "ErrorInfo": "",
        "ActionStatus": "OK",
        "ErrorCode": 0,
        "MsgKey": "128493_903762_1572870301",
        "MsgId": "144015217074523023-1734398005-1067690400",
    }
    result = _parse(answer)
    assert result.disposition is Disposition.DONE
    assert [(r.recipient_id, r.accepted, r.vendor_message_id) for r in result.results] == [
        ("bonnie", True, "128493_903762_1572870301"),
        ("rong", True, "128493_903762_1572870301"),
    ]


def test_seed_partial_failure_example() -> None:
    answer = {
        "ActionStatus": "SomeError",
        "ErrorCode": 0,
        "ErrorInfo": "",
        "MsgKey": "4852_28135_1579678877",
        "MsgId": "144015217074523023-1734398005-1067690400",
        "ErrorList": [{"To_Account": "rong", "ErrorCode": 70107}],
    }
    result = _parse(answer)
    assert result.disposition is Disposition.DONE
    bonnie, rong = result.results
    assert (bonnie.accepted, bonnie.vendor_message_id) == (True, "4852_28135_1579678877")
    assert (rong.accepted, rong.reason, rong.vendor_code, rong.vendor_message_id) == (
        False,
        pb.FAILURE_REASON_RECIPIENT_NOT_FOUND,
        "70107",
        "",
    )


def test_seed_all_failed_example() -> None:
    answer = {"ActionStatus": "FAIL", "ErrorInfo": "invalid To_Account", "ErrorCode": 90012}
    result = _parse(answer)
    assert result.disposition is Disposition.DONE
    assert [(r.accepted, r.reason, r.vendor_code, r.detail) for r in result.results] == [
        (False, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND, "90012", "invalid To_Account")
    ] * 2


def test_image_renditions_are_image_info_types_2_and_3() -> None:
    image = pb.ImageContent()
    image.CopyFrom(CONTENTS["image"].image)
    image.large.CopyFrom(pb.ImageVariant(url="https://cdn.example/l.png", width=320, height=240))
    image.thumbnail.CopyFrom(
        pb.ImageVariant(url="https://cdn.example/t.png", size_bytes=99, width=64, height=48)
    )
    request = make_request(pb.Message(image=image))
    assert TencentTranslator(TencentTranslator.spec.sandbox_credentials).validate(request) == []
    infos = _body(request)["MsgBody"][0]["MsgContent"]["ImageInfoArray"]
    assert infos[1:] == [
        {"Type": 2, "Size": 0, "Width": 320, "Height": 240, "URL": "https://cdn.example/l.png"},
        {"Type": 3, "Size": 99, "Width": 64, "Height": 48, "URL": "https://cdn.example/t.png"},
    ]


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (
            pb.Message(video=pb.VideoContent(url="https://x.example/v.mp4")),
            "message.video.thumbnail",
        ),
        (
            pb.Message(
                video=pb.VideoContent(
                    url="https://x.example/v.mp4",
                    thumbnail=pb.ImageVariant(url="https://x.example/t.jpg", width=5),
                )
            ),
            "message.video.thumbnail.height",
        ),
        (
            pb.Message(image=pb.ImageContent(url="https://x.example/i.png", height=5)),
            "message.image.width",
        ),
        (
            pb.Message(custom=pb.CustomContent(data='{"a":1}', sub_type=3)),
            "message.custom.sub_type",  # the spec: custom_sub_type=False
        ),
    ],
)
def test_what_tencent_requires_or_cannot_carry_is_refused(content: pb.Message, field: str) -> None:
    translator = TencentTranslator(TencentTranslator.spec.sandbox_credentials)
    request = make_request(content)
    problems = validate_for_vendor(request, list(request.recipient_ids), translator)
    assert [p.field for p in problems] == [field]


def test_history_off_alone_is_refused_not_sent_as_online_only() -> None:
    translator = TencentTranslator(TencentTranslator.spec.sandbox_credentials)
    problems = translator.validate(make_request(history_enabled=False))
    assert [p.field for p in problems] == ["options.history_enabled"]
    assert "online_only" in problems[0].description


@pytest.mark.parametrize(
    ("options", "refused"),
    [
        # Fidelity 1 (issue 22): was sent as OnlineOnlyFlag 1, which also drops history,
        # roaming and the unread count; offline recipients were ACCEPTED and never saw it.
        ({"offline_enabled": False}, ["options.offline_enabled"]),
        ({"offline_enabled": False, "online_only": False}, ["options.offline_enabled"]),
        ({"offline_enabled": False, "online_only": True}, []),
        ({"offline_enabled": True}, []),
    ],
)
def test_offline_off_alone_is_refused_not_sent_as_online_only(
    options: dict[str, bool], refused: list[str]
) -> None:
    translator = TencentTranslator(TencentTranslator.spec.sandbox_credentials)
    problems = translator.validate(make_request(**options))
    assert [p.field for p in problems] == refused
    assert all("online_only" in p.description for p in problems)


def test_ok_without_error_list_accepts_everyone() -> None:
    # OK with no ErrorList may hide an unknown account (a vendor quirk); the answer gives
    # nothing else to go on, so everyone is ACCEPTED (documented in vendor-mapping.md).
    result = _parse({"ActionStatus": "OK", "ErrorCode": 0, "MsgKey": "1_2_3"})
    assert all(r.accepted and r.vendor_message_id == "1_2_3" for r in result.results)
    assert all(r.detail == "" for r in result.results)


@pytest.mark.parametrize("status", ["FAIL", "SomeError", None, 7])
def test_error_code_zero_with_an_error_status_and_no_list_is_uncertain(status: object) -> None:
    # The answer says something failed but not for whom: nobody can be called accepted.
    answer: dict[str, Any] = {"ErrorCode": 0, "MsgKey": "k"}
    if status is not None:
        answer["ActionStatus"] = status
    assert _parse(answer).disposition is Disposition.AMBIGUOUS


def test_error_code_zero_with_a_list_trusts_the_list_whatever_the_status() -> None:
    answer = {
        "ActionStatus": "FAIL",
        "ErrorCode": 0,
        "ErrorList": [{"To_Account": "rong", "ErrorCode": 70107}],
    }
    result = _parse(answer)
    assert [r.state for r in result.results] == [
        pb.DELIVERY_STATE_ACCEPTED,
        pb.DELIVERY_STATE_FAILED,
    ]


@pytest.mark.parametrize(
    ("code", "state", "reason"),
    [
        (70107, pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND),
        (90048, pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND),
        (20007, pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_RECIPIENT_INVALID),
        # Fidelity 2 (issue 22): the rate codes are documented for a whole call only
        # (ErrorCode non-zero = every recipient failed); in ErrorList they are an
        # undocumented answer for that recipient. Were FAILED (a transient reason).
        (60007, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_RATE_LIMITED),
        (60011, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_RATE_LIMITED),
        (60018, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_RATE_LIMITED),
        (60019, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_RATE_LIMITED),
        (70050, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_RATE_LIMITED),
        # Stale credentials are a whole-call matter too.
        (70001, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR),
        # May mean "processed" (CONTRACT §1.6): that recipient is UNCERTAIN (issue 13.4).
        (70169, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR),
        (90992, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR),
        (91000, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR),
        # Not documented (CONTRACT §8 rule 24).
        (12345, pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_VENDOR_ERROR),
    ],
)
def test_error_list_codes(code: int, state: int, reason: int) -> None:
    entry: dict[str, Any] = {"To_Account": "rong", "ErrorCode": code}
    result = _parse({"ActionStatus": "SomeError", "ErrorCode": 0, "ErrorList": [entry]})
    rong = result.results[1]
    assert (rong.state, rong.reason, rong.vendor_code) == (state, reason, str(code))
    assert result.results[0].accepted
    # A rate code pauses the backend (the vendor is refusing for rate); none resends.
    assert result.disposition is Disposition.DONE
    assert result.rate_refused is (reason == pb.FAILURE_REASON_RATE_LIMITED)


@pytest.mark.parametrize(
    "error_list",
    [
        "rong",
        {"To_Account": "rong", "ErrorCode": 70107},
        [{"To_Account": "rong"}],  # no code
        [{"To_Account": "rong", "ErrorCode": "x"}],
        [{"To_Account": 5, "ErrorCode": 70107}],
        [{"To_Account": "stranger", "ErrorCode": 70107}],  # not in the call
        ["rong"],
        [None],
    ],
)
def test_garbage_error_list_makes_everyone_uncertain(error_list: object) -> None:
    answer = {"ActionStatus": "SomeError", "ErrorCode": 0, "ErrorList": error_list}
    assert _parse(answer).disposition is Disposition.AMBIGUOUS


def test_msg_key_of_the_wrong_type_is_uncertain() -> None:
    assert _parse({"ActionStatus": "OK", "ErrorCode": 0, "MsgKey": 5}).disposition is (
        Disposition.AMBIGUOUS
    )


def test_failed_call_keeps_per_account_reasons() -> None:
    answer = {
        "ActionStatus": "FAIL",
        "ErrorCode": 90048,
        "ErrorInfo": "account not found",
        "ErrorList": [{"To_Account": "rong", "ErrorCode": 70107}],
    }
    bonnie, rong = _parse(answer).results
    assert (bonnie.vendor_code, rong.vendor_code) == ("90048", "70107")
    assert not bonnie.accepted
    assert not rong.accepted


def test_error_list_for_others_is_ignored() -> None:
    answer = {"ErrorCode": 0, "ErrorList": [{"To_Account": "stranger", "ErrorCode": 70107}]}
    assert all(r.accepted for r in _parse(answer).results)


def test_error_code_as_text_is_read() -> None:
    result = _parse({"ActionStatus": "FAIL", "ErrorCode": "60007", "ErrorInfo": "freq"})
    assert result.disposition is Disposition.RATE_LIMITED


@pytest.mark.parametrize(
    ("sender", "recipients", "fields"),
    [
        ("张" * 10 + "ab", ("张" * 10 + "ab",), []),  # exactly 32 bytes
        ("张" * 11, ("ok",), ["sender_id"]),
        ("", ("ok", "张" * 11, "😀" * 9), ["recipient_ids[1]", "recipient_ids[2]"]),
        ("", ("x" * 33,), ["recipient_ids[0]"]),
        (
            "",
            tuple("张" * 11 for _ in range(12)),
            [f"recipient_ids[{i}]" for i in range(10)] + ["recipient_ids"],
        ),
    ],
)
def test_validate_ids_in_bytes(sender: str, recipients: tuple[str, ...], fields: list[str]) -> None:
    # The spec's id rule (32 UTF-8 bytes), applied by the common validation.
    request = make_request(sender_id=sender, recipients=recipients)
    request.backend = "tencent"
    problems = validate_common(request, list(recipients), sandbox_config("http://127.0.0.1:1"))
    assert [p.field for p in problems] == fields
    assert all("UTF-8 bytes" in p.description for p in problems if p.field != "recipient_ids")


def test_spec_pins_the_published_facts() -> None:
    # The vendor's documented numbers (vendors.md §5, §6), CONTRACT §2's sandbox app.
    spec = TencentTranslator.spec
    limits = spec.limits
    assert spec.path == "/v4/openim/batchsendmsg"
    assert (limits.recipients_per_call, limits.call_limit, limits.call_window_s) == (500, 200, 1.0)
    assert (limits.recipient_limit, limits.recipient_window_s) == (12000, 60.0)
    assert (limits.block_s, limits.vendor_block_s, limits.max_body_bytes) == (60.0, 0.0, 12288)
    assert (spec.id_rule.max_length, spec.id_rule.unit) == (32, IdUnit.UTF8)
    assert dict(spec.sandbox_credentials) == {
        "sdk_app_id": 1400000000,
        "secret_key": "sandbox-secret-key",
        "admin_identifier": "administrator",
    }
    assert not spec.sender_required


@pytest.mark.parametrize("code", [70169, 90992, 91000])
def test_internal_errors_are_never_resent(code: int) -> None:
    """Fidelity 3 (issue 22): batchsendmsg documents no de-duplication window (the 120 s
    CRC32 key is sendmsg's), so "internal error, retry" may have been processed: the
    call is UNCERTAIN and the spec says the vendor does not de-duplicate resends."""
    assert not TencentTranslator.spec.capabilities.dedupes_resends
    result = _parse({"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": "retry"})
    assert result.disposition is Disposition.AMBIGUOUS
