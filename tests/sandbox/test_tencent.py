"""Tencent batchsendmsg: body formats, limits, accounts and OK / SomeError / FAIL answers."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from imgate.sandbox import Clock, SandboxConfig, TencentSettings

from .conftest import StartSandbox
from .helpers import Vendors, tencent_query, tx_doc

NOW = 1_700_000_000.0


def _ids(count: int) -> list[str]:
    return [f"user{i}" for i in range(count)]


def _body(*elements: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return tx_doc(MsgBody=list(elements), **extra)


def _elem(msg_type: str, **content: Any) -> dict[str, Any]:
    return {"MsgType": msg_type, "MsgContent": content}


def _without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


SOUND = _elem("TIMSoundElem", Url="http://x/a.aac", UUID="u", Size=9, Second=2, Download_Flag=2)
IMAGE = _elem(
    "TIMImageElem",
    UUID="md5",
    ImageFormat=1,
    ImageInfoArray=[{"Type": 1, "Size": 9, "Width": 6, "Height": 4, "URL": "http://x/a.jpg"}],
)
FILE = _elem(
    "TIMFileElem", Url="http://x/a.txt", UUID="u", FileSize=9, FileName="a.txt", Download_Flag=2
)
VIDEO = _elem(
    "TIMVideoFileElem",
    VideoUrl="http://x/a.mp4",
    VideoUUID="u",
    VideoSize=9,
    VideoSecond=2,
    VideoFormat="mp4",
    VideoDownloadFlag=2,
    ThumbUrl="http://x/a.jpg",
    ThumbUUID="t",
    ThumbSize=3,
    ThumbWidth=4,
    ThumbHeight=3,
    ThumbFormat="jpg",
    ThumbDownloadFlag=2,
)
CUSTOM = _elem("TIMCustomElem", Data='{"type":"tip","text":"hi"}', Desc="hi")

# (case, body, code)
REFUSED: list[tuple[str, Any, int]] = [
    ("body not JSON", "{To_Account: [bob]}", 90001),
    ("body a JSON array", [tx_doc()], 90001),
    # A key repeated: which value the vendor's parser keeps is undocumented (issue 22).
    ("body repeating To_Account", json.dumps(tx_doc())[:-1] + ', "To_Account": ["x"]}', 90001),
    (
        "MsgContent repeating Text",
        json.dumps(tx_doc()).replace('"Text": "hello"', '"Text": "hello", "Text": "x"'),
        90001,
    ),
    ("body over 12288 bytes", tx_doc(CloudCustomData="x" * 12288), 93000),
    ("no To_Account", _without(tx_doc(), "To_Account"), 90003),
    ("To_Account a string", tx_doc(To_Account="bob"), 90003),
    ("To_Account empty", tx_doc(to=[]), 90003),
    ("To_Account with a number", tx_doc(To_Account=["bob", 5]), 90003),
    ("To_Account with an empty id", tx_doc(to=["bob", ""]), 90003),
    ("To_Account id over 32 bytes", tx_doc(to=["用户" * 6]), 90003),  # 36 UTF-8 bytes
    ("501 recipients", tx_doc(to=_ids(501)), 90011),
    ("From_Account empty", tx_doc(From_Account=""), 90008),
    ("From_Account a number", tx_doc(From_Account=7), 90008),
    ("From_Account unknown", tx_doc(From_Account="ghost-sender"), 90008),
    ("no MsgRandom", _without(tx_doc(), "MsgRandom"), 90005),
    ("MsgRandom a string", tx_doc(MsgRandom="1"), 90005),
    ("MsgRandom negative", tx_doc(MsgRandom=-1), 90005),
    ("MsgRandom too big", tx_doc(MsgRandom=4294967296), 90005),
    ("MsgRandom a float", tx_doc(MsgRandom=1.5), 90005),
    ("MsgRandom a boolean", tx_doc(MsgRandom=True), 90005),
    ("MsgSeq negative", tx_doc(MsgSeq=-1), 90004),
    ("MsgSeq a string", tx_doc(MsgSeq="7"), 90004),
    ("no MsgBody", _without(tx_doc(), "MsgBody"), 90007),
    ("MsgBody an object", tx_doc(MsgBody={"MsgType": "TIMTextElem"}), 90007),
    ("MsgBody empty", _body(), 90002),
    ("MsgBody element a string", tx_doc(MsgBody=["hi"]), 90002),
    ("unknown MsgType", _body(_elem("TIMTipElem", Text="x")), 90002),
    ("TIMRelayElem", _body(_elem("TIMRelayElem", Title="x")), 90002),
    ("no MsgContent", _body({"MsgType": "TIMTextElem"}), 90002),
    ("text without Text", _body(_elem("TIMTextElem", Desc="x")), 90002),
    ("text empty", tx_doc(text=""), 90002),
    ("text a number", _body(_elem("TIMTextElem", Text=5)), 90002),
    ("location without Latitude", _body(_elem("TIMLocationElem", Desc="d", Longitude=1)), 90002),
    ("face without Index", _body(_elem("TIMFaceElem", Data="d")), 90002),
    ("custom without Data", _body(_elem("TIMCustomElem", Desc="d")), 90002),
    ("two custom elements", _body(CUSTOM, CUSTOM), 90002),
    ("sound without Url", _body(_elem("TIMSoundElem", UUID="u", Download_Flag=2)), 90002),
    (
        "sound Download_Flag 1",
        _body(SOUND | {"MsgContent": SOUND["MsgContent"] | {"Download_Flag": 1}}),
        90002,
    ),
    ("image without ImageInfoArray", _body(_elem("TIMImageElem", UUID="u")), 90002),
    ("image info without URL", _body(_elem("TIMImageElem", ImageInfoArray=[{"Type": 1}])), 90002),
    (
        "image Size a string",
        _body(_elem("TIMImageElem", Size="9", ImageInfoArray=[{"URL": "u"}])),
        90002,
    ),
    ("file without Url", _body(_elem("TIMFileElem", FileName="a")), 90002),
    ("video without VideoUrl", _body(_elem("TIMVideoFileElem", VideoUUID="u")), 90002),
    *[
        (
            f"video without {name}",
            _body(
                {**VIDEO, "MsgContent": {k: v for k, v in VIDEO["MsgContent"].items() if k != name}}
            ),
            90002,
        )
        for name in (
            "VideoUUID",
            "VideoSize",
            "VideoSecond",
            "VideoFormat",
            "VideoDownloadFlag",
            "ThumbUrl",
            "ThumbUUID",
            "ThumbSize",
            "ThumbWidth",
            "ThumbHeight",
            "ThumbFormat",
            "ThumbDownloadFlag",
        )
    ],
    *[
        (
            f"image info without {name}",
            _body(
                {
                    **IMAGE,
                    "MsgContent": {
                        **IMAGE["MsgContent"],
                        "ImageInfoArray": [
                            {
                                k: v
                                for k, v in IMAGE["MsgContent"]["ImageInfoArray"][0].items()
                                if k != name
                            }
                        ],
                    },
                }
            ),
            90002,
        )
        for name in ("Type", "Size", "Width", "Height", "URL")
    ],
    *[
        (
            f"sound without {name}",
            _body(
                {**SOUND, "MsgContent": {k: v for k, v in SOUND["MsgContent"].items() if k != name}}
            ),
            90002,
        )
        for name in ("UUID", "Size", "Second", "Download_Flag")
    ],
    *[
        (
            f"file without {name}",
            _body(
                {**FILE, "MsgContent": {k: v for k, v in FILE["MsgContent"].items() if k != name}}
            ),
            90002,
        )
        for name in ("UUID", "FileSize", "FileName", "Download_Flag")
    ],
    (
        "video size negative",
        _body({**VIDEO, "MsgContent": {**VIDEO["MsgContent"], "VideoSize": -1}}),
        90002,
    ),
    (
        "image info Type 4",
        _body(
            {
                **IMAGE,
                "MsgContent": {
                    **IMAGE["MsgContent"],
                    "ImageInfoArray": [{**IMAGE["MsgContent"]["ImageInfoArray"][0], "Type": 4}],
                },
            }
        ),
        90002,
    ),
    ("SyncOtherMachine 3", tx_doc(SyncOtherMachine=3), 90031),
    ("SyncOtherMachine true", tx_doc(SyncOtherMachine=True), 90031),
    ("OnlineOnlyFlag a string", tx_doc(OnlineOnlyFlag="1"), 70402),
    ("CloudCustomData an object", tx_doc(CloudCustomData={"k": "v"}), 70402),
    ("SendMsgControl unknown", tx_doc(SendMsgControl=["NoPush"]), 70402),
    ("OfflinePushInfo.Ext an object", tx_doc(OfflinePushInfo={"Ext": {"k": 1}}), 70402),
    (
        "ApnsInfo.BadgeMode 2",
        tx_doc(OfflinePushInfo={"ApnsInfo": {"BadgeMode": 2}}),
        70402,
    ),
    (
        "AndroidInfo.Sound a number",
        tx_doc(OfflinePushInfo={"AndroidInfo": {"Sound": 1}}),
        70402,
    ),
    ("OfflinePushInfo.PushFlag 2", tx_doc(OfflinePushInfo={"PushFlag": 2}), 70402),
]


@pytest.mark.parametrize(("case", "doc", "code"), REFUSED)
async def test_refuses_what_the_vendor_refuses(
    vendors: Vendors, case: str, doc: Any, code: int
) -> None:
    answer = await vendors.tx(doc)
    assert answer["ActionStatus"] == "FAIL", case
    assert answer["ErrorCode"] == code, (case, answer)
    assert answer["ErrorInfo"]
    assert "ErrorList" not in answer
    assert "MsgKey" not in answer
    assert vendors.server.state.deliveries() == []
    assert vendors.server.state.stats("tencent").refusals == {str(code): 1}


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("500 recipients", tx_doc(to=_ids(500))),
    ("no MsgSeq", _without(tx_doc(), "MsgSeq")),
    ("MsgRandom and MsgSeq at the uint32 bounds", tx_doc(MsgRandom=4294967295, MsgSeq=0)),
    ("id of 32 bytes", tx_doc(to=["用户" * 5 + "ab"])),  # 30 + 2 bytes
    ("banned and muted senders are not checked", tx_doc(From_Account="banned-muted")),
    ("location", _body(_elem("TIMLocationElem", Desc="d", Latitude=30.2, Longitude=120.1))),
    ("face", _body(_elem("TIMFaceElem", Index=1, Data="smile"))),
    ("custom", _body(CUSTOM)),
    ("sound", _body(SOUND)),
    ("image", _body(IMAGE)),
    ("file", _body(FILE)),
    ("video", _body(VIDEO)),
    ("text and custom", _body(_elem("TIMTextElem", Text="hi"), CUSTOM)),
    (
        "every optional field",
        tx_doc(
            SyncOtherMachine=2,
            OnlineOnlyFlag=1,
            CloudCustomData='{"k":"v"}',
            SendMsgControl=["NoUnread", "NoLastMsg", "WithMuteNotifications", "NoMsgCheck"],
            OfflinePushInfo={
                "PushFlag": 0,
                "Title": "t",
                "Desc": "d",
                "Ext": '{"k":1}',
                "AndroidInfo": {"Sound": "a"},
                "ApnsInfo": {"BadgeMode": 1},
            },
            IsNeedReadReceipt=1,
            UnknownField={"tolerated": True},
        ),
    ),
]


@pytest.mark.parametrize(("case", "doc"), ACCEPTED)
async def test_accepts_valid_calls(vendors: Vendors, case: str, doc: dict[str, Any]) -> None:
    answer = await vendors.tx(doc)
    assert answer["ActionStatus"] == "OK", (case, answer)
    assert answer["ErrorCode"] == 0
    assert len(vendors.server.state.deliveries("tencent")) == len(set(doc["To_Account"]))


async def test_body_of_exactly_12288_bytes_is_accepted(vendors: Vendors) -> None:
    doc = tx_doc(CloudCustomData="")
    padding = 12288 - len(json.dumps(doc).encode())
    doc["CloudCustomData"] = "x" * padding
    assert len(json.dumps(doc).encode()) == 12288
    assert (await vendors.tx(doc))["ActionStatus"] == "OK"


async def test_ok_answer_and_msg_key(start_sandbox: StartSandbox) -> None:
    vendors = await start_sandbox(SandboxConfig(clock=Clock(wall=lambda: NOW)))
    answer = await vendors.tx(tx_doc(MsgSeq=28360, MsgRandom=19901224), tencent_query(now=NOW))
    assert answer["ActionStatus"] == "OK"
    assert answer["ErrorInfo"] == ""
    assert answer["MsgKey"] == "28360_19901224_1700000000"
    assert re.fullmatch(r"\d+-1700000000-\d+", answer["MsgId"])
    assert "ErrorList" not in answer
    deliveries = vendors.server.state.deliveries("tencent")
    assert [(d.sender, d.recipient, d.message_id) for d in deliveries] == [
        ("administrator", "bob", answer["MsgKey"]),
        ("administrator", "carol", answer["MsgKey"]),
    ]
    assert deliveries[0].message_type == "TIMTextElem"


async def test_missing_msg_seq_gets_a_random_one(vendors: Vendors) -> None:
    answer = await vendors.tx(_without(tx_doc(MsgRandom=42), "MsgSeq"))
    seq, random, _ = answer["MsgKey"].split("_")
    assert random == "42"
    assert 0 <= int(seq) <= 4294967295


async def test_partial_failure_is_some_error_with_error_list(vendors: Vendors) -> None:
    answer = await vendors.tx(tx_doc(to=["bob", "ghost1", "bob", "ghost2"], From_Account="dave"))
    assert answer["ActionStatus"] == "SomeError"
    assert answer["ErrorCode"] == 0
    assert answer["MsgKey"]
    assert answer["ErrorList"] == [
        {"To_Account": "ghost1", "ErrorCode": 70107},
        {"To_Account": "ghost2", "ErrorCode": 70107},
    ]
    deliveries = vendors.server.state.deliveries("tencent")
    assert [(d.sender, d.recipient) for d in deliveries] == [("dave", "bob")]


async def test_all_unknown_is_fail_90012_without_error_list(vendors: Vendors) -> None:
    answer = await vendors.tx(tx_doc(to=["ghost1", "ghost2"]))
    assert answer == {"ActionStatus": "FAIL", "ErrorCode": 90012, "ErrorInfo": "invalid To_Account"}
    assert vendors.server.state.deliveries() == []
    # The call was looked at, not refused: it counts as processed.
    assert vendors.server.state.stats("tencent").calls_processed == 1


async def test_recipient_cap_and_byte_cap_are_configurable(start_sandbox: StartSandbox) -> None:
    settings = TencentSettings(recipients_per_call=2, max_body_bytes=300)
    vendors = await start_sandbox(SandboxConfig(vendors={"tencent": settings}))
    assert (await vendors.tx(tx_doc(to=["a", "b", "c"])))["ErrorCode"] == 90011
    assert (await vendors.tx(tx_doc(CloudCustomData="x" * 300)))["ErrorCode"] == 93000
    assert (await vendors.tx(tx_doc(to=["a", "b"])))["ActionStatus"] == "OK"


async def test_a_resent_call_is_delivered_again(vendors: Vendors) -> None:
    """Fidelity 3 (issue 22): batchsendmsg documents MsgSeq/MsgRandom de-duplication
    "within the same second" only (the 120 s CRC32 key is on the sendmsg page), so the
    emulator does not de-duplicate a resend: the sandbox shows any double send."""
    first = await vendors.tx(tx_doc(to=["bob"]))
    again = await vendors.tx(tx_doc(to=["bob"]))  # same MsgSeq, MsgRandom and content
    assert first["ActionStatus"] == again["ActionStatus"] == "OK"
    deliveries = vendors.server.state.deliveries("tencent")
    assert [d.duplicate for d in deliveries] == [False, True]
