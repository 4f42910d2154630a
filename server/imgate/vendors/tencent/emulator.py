"""Emulator of Tencent Cloud IM batch send, `POST /v4/openim/batchsendmsg`.

Checks, each answered as the vendor does (HTTP 200,
`{"ActionStatus":"FAIL","ErrorCode":N,"ErrorInfo":"..."}`), in this order:
- URL: `sdkappid` missing → 60012, not this app → 60006 (the app is looked up by it
  before any UserSig check, so 70014 is kept for a UserSig made for another SDKAppID);
  `contenttype` not "json" or `random` not an integer 0..4294967295 → 60002;
  `identifier` missing → 60004, not the app admin → 60010; `usersig` empty → 70002, else
  UserSig v2 verification (70003 undecodable, 70014 SDKAppID, 70013 identifier, 70001
  expired, 70009 wrong key);
- rate: 200 accepted calls per 1 s and 12,000 recipients per 60 s (sliding windows,
  recipients counted as listed in To_Account) → 60007, call not processed, no block;
- body: > 12288 bytes → 93000; not a JSON object → 90001; `To_Account` missing, not a
  non-empty array of 1-32-byte strings → 90003, more than 500 → 90011; `From_Account`
  empty, too long or unknown → 90008 (mute and disabled state are not checked by
  batchsendmsg); `MsgRandom` missing / not uint32 → 90005; `MsgSeq` not uint32 → 90004;
  `MsgBody` not an array → 90007; empty, unknown MsgType, MsgContent missing one of the
  fields the vendor documents as required for REST sends (tencent.body
  ELEMENT_REQUIRED_FIELDS: e.g. a video's VideoUUID and every Thumb* field, an image's
  ImageInfoArray entries with Type 1-3, Size, Width, Height, URL), a size or duration
  that is not a non-negative integer, a download flag other than 2, or more than one
  TIMCustomElem → 90002; `SyncOtherMachine` not 1/2 → 90031;
  other optional fields of the wrong type → 70402.
Answer: all known → "OK"; some unknown → "SomeError", ErrorCode 0, ErrorList 70107 per
unknown recipient; all unknown → "FAIL" 90012 without ErrorList or MsgKey. MsgKey is
`{MsgSeq}_{MsgRandom}_{server time}`; duplicates in To_Account are delivered once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from imgate.vendors.base.auth import UserSigError, verify_tencent_user_sig
from imgate.vendors.base.checks import NotJson, is_int, is_number, is_uint32, strict_json
from imgate.vendors.base.emulation import VendorSettings
from imgate.vendors.base.emulator import Emulator, ParsedCall, VendorError, content_fingerprint
from imgate.vendors.base.sandbox_state import SandboxState
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.tencent.body import (
    ELEMENT_REQUIRED_FIELDS,
    IMAGE_INFO_REQUIRED_FIELDS,
    LARGE_IMAGE,
    ORIGINAL_IMAGE,
    THUMBNAIL_IMAGE,
)
from imgate.vendors.tencent.spec import RECALL, SPEC

INVALID_PARAMETER = 70402

_Check = Callable[[Mapping[str, Any]], bool]


def _string(key: str) -> _Check:
    return lambda content: isinstance(content.get(key), str)


def _text(key: str) -> _Check:
    return lambda content: isinstance(content.get(key), str) and bool(content[key])


def _number(key: str) -> _Check:
    return lambda content: is_number(content.get(key))


def _integer(key: str) -> _Check:
    return lambda content: is_int(content.get(key))


def _count(key: str) -> _Check:
    return lambda content: is_int(content.get(key)) and content[key] >= 0


def _download_flag(key: str) -> _Check:
    return lambda content: content.get(key) == _DOWNLOAD_FLAG


def _image_infos(content: Mapping[str, Any]) -> bool:
    infos = content.get("ImageInfoArray")
    return isinstance(infos, list) and bool(infos) and all(_image_info(i) for i in infos)


def _image_info(info: object) -> bool:
    return (
        isinstance(info, dict)
        and all(key in info for key in IMAGE_INFO_REQUIRED_FIELDS)
        and info["Type"] in (ORIGINAL_IMAGE, LARGE_IMAGE, THUMBNAIL_IMAGE)
        and all(_count(key)(info) for key in ("Type", "Size", "Width", "Height"))
        and _text("URL")(info)
    )


_DOWNLOAD_FLAG = 2  # the only value the API takes
# How each documented field is checked. Which fields each element must carry comes from
# body.ELEMENT_REQUIRED_FIELDS: one declaration (TX-FMT, vendors.md §10.3).
_FIELD_CHECKS: Mapping[str, _Check] = {
    "Text": _text("Text"),
    "Desc": _string("Desc"),
    "Latitude": _number("Latitude"),
    "Longitude": _number("Longitude"),
    "Index": _integer("Index"),
    "Data": _string("Data"),
    "Url": _text("Url"),
    "UUID": _text("UUID"),
    "Size": _count("Size"),
    "Second": _count("Second"),
    "Download_Flag": _download_flag("Download_Flag"),
    "ImageFormat": _integer("ImageFormat"),
    "ImageInfoArray": _image_infos,
    "FileSize": _count("FileSize"),
    "FileName": _string("FileName"),
    "VideoUrl": _text("VideoUrl"),
    "VideoUUID": _text("VideoUUID"),
    "VideoSize": _count("VideoSize"),
    "VideoSecond": _count("VideoSecond"),
    "VideoFormat": _string("VideoFormat"),
    "VideoDownloadFlag": _download_flag("VideoDownloadFlag"),
    "ThumbUrl": _text("ThumbUrl"),
    "ThumbUUID": _text("ThumbUUID"),
    "ThumbSize": _count("ThumbSize"),
    "ThumbWidth": _count("ThumbWidth"),
    "ThumbHeight": _count("ThumbHeight"),
    "ThumbFormat": _string("ThumbFormat"),
    "ThumbDownloadFlag": _download_flag("ThumbDownloadFlag"),
}
_ELEMENT_RULES: Mapping[str, Mapping[str, _Check]] = {
    msg_type: {name: _FIELD_CHECKS[name] for name in fields}
    for msg_type, fields in ELEMENT_REQUIRED_FIELDS.items()
}
_SEND_MSG_CONTROLS = frozenset({"NoUnread", "NoLastMsg", "WithMuteNotifications", "NoMsgCheck"})


@dataclass(frozen=True, kw_only=True)
class TencentSettings(VendorSettings):
    """Tencent Cloud IM settings (vendors.md §4.3, §5, §6)."""

    credential_fields: ClassVar[tuple[str, ...]] = tuple(SPEC.credential_fields)

    sdk_app_id: int = SPEC.sandbox_credentials["sdk_app_id"]
    secret_key: str = SPEC.sandbox_credentials["secret_key"]
    admin_identifier: str = SPEC.sandbox_credentials["admin_identifier"]
    recipients_per_call: int = SPEC.limits.recipients_per_call
    call_limit: int | None = SPEC.limits.call_limit
    call_window_s: float = SPEC.limits.call_window_s
    recipient_limit: int | None = SPEC.limits.recipient_limit
    recipient_window_s: float = SPEC.limits.recipient_window_s
    block_s: float = SPEC.limits.vendor_block_s
    max_body_bytes: int = SPEC.limits.max_body_bytes or 0
    """The whole JSON packet, in bytes (93000 above)."""
    recall_call_limit: int | None = RECALL.call_limit
    recall_call_window_s: float = RECALL.call_window_s
    recall_block_s: float = RECALL.vendor_block_s


@dataclass(frozen=True)
class _TencentCall(ParsedCall):
    msg_seq: int | None
    msg_random: int


class TencentEmulator(Emulator[TencentSettings, _TencentCall]):
    """Tencent Cloud IM `v4/openim/batchsendmsg`."""

    spec: ClassVar[VendorSpec] = SPEC
    settings_type: ClassVar[type[TencentSettings]] = TencentSettings
    rate_limit_code: ClassVar[int] = 60007
    internal_error: ClassVar[tuple[int, str]] = (70169, "internal timeout")

    def __init__(self, settings: TencentSettings, sandbox: SandboxState) -> None:
        super().__init__(settings, sandbox)
        # MsgSeq is "random if omitted"; message ids need no reproducibility.
        self._random = random.Random()

    @classmethod
    def default_settings(cls) -> TencentSettings:
        return TencentSettings()

    def error_body(self, code: int, message: str) -> dict[str, Any]:
        return {"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": message}

    def without_failures(self, answer: dict[str, Any]) -> dict[str, Any]:
        # The quirk developers report: OK, no ErrorList, an unknown account all the same.
        quiet = {k: v for k, v in answer.items() if k != "ErrorList"}
        if quiet.get("ErrorCode") == 0:
            quiet["ActionStatus"] = "OK"
        return quiet

    def authenticate(self, request: web.Request, body: bytes) -> None:
        query = request.rel_url.query
        settings = self.settings
        sdk_app_id = query.get("sdkappid")
        if not sdk_app_id:
            raise VendorError(60012, "sdkappid is missing")
        if sdk_app_id != str(settings.sdk_app_id):
            raise VendorError(60006, "sdkappid is not a valid SDKAppID")
        if query.get("contenttype") != "json":
            raise VendorError(60002, "contenttype must be json")
        random_param = query.get("random", "")
        if not (random_param.isascii() and random_param.isdigit() and is_uint32(int(random_param))):
            raise VendorError(60002, "random must be an integer within 0..4294967295")
        identifier = query.get("identifier")
        if not identifier:
            raise VendorError(60004, "identifier is missing")
        if identifier != settings.admin_identifier:
            raise VendorError(60010, "identifier must be the app admin")
        user_sig = query.get("usersig")
        if not user_sig:
            raise VendorError(70002, "usersig is empty")
        try:
            verify_tencent_user_sig(
                user_sig,
                settings.secret_key,
                settings.sdk_app_id,
                identifier,
                self.sandbox.clock.wall(),
            )
        except UserSigError as exc:
            raise VendorError(exc.code, exc.info) from None

    def parse(self, request: web.Request, body: bytes) -> _TencentCall:
        settings = self.settings
        if len(body) > settings.max_body_bytes:
            raise VendorError(93000, f"JSON packet is longer than {settings.max_body_bytes} bytes")
        try:
            doc = strict_json(body.decode("utf-8"))
        except (UnicodeDecodeError, NotJson):
            raise VendorError(90001, "JSON parse error") from None
        if not isinstance(doc, dict):
            raise VendorError(90001, "request body must be a JSON object")

        recipients = self._recipients(doc.get("To_Account"))
        sender = self._sender(doc)
        msg_random = doc.get("MsgRandom")
        if not is_uint32(msg_random):
            raise VendorError(90005, "MsgRandom is missing or not a 32-bit unsigned integer")
        msg_seq = doc.get("MsgSeq")
        if msg_seq is not None and not is_uint32(msg_seq):
            raise VendorError(90004, "MsgSeq is not a 32-bit unsigned integer")
        msg_body = doc.get("MsgBody")
        if not isinstance(msg_body, list):
            raise VendorError(90007, "MsgBody is not an Array")
        message_types = _check_msg_body(msg_body)
        _check_optional_fields(doc)
        return _TencentCall(
            sender=sender,
            recipients=recipients,
            message_type=",".join(message_types),
            fingerprint=content_fingerprint(msg_body),
            msg_seq=msg_seq,
            msg_random=msg_random,
        )

    def _recipients(self, to_account: object) -> tuple[str, ...]:
        if not isinstance(to_account, list) or not to_account:
            raise VendorError(90003, "To_Account must be a non-empty array of UserIDs")
        if len(to_account) > self.settings.recipients_per_call:
            raise VendorError(
                90011, f"more than {self.settings.recipients_per_call} accounts in To_Account"
            )
        for index, account in enumerate(to_account):
            if not _valid_user_id(account):
                raise VendorError(90003, f"To_Account[{index}] is not a valid UserID")
        return tuple(to_account)

    def _sender(self, doc: Mapping[str, Any]) -> str:
        if "From_Account" not in doc:
            return self.settings.admin_identifier
        sender = doc["From_Account"]
        if not _valid_user_id(sender):
            raise VendorError(90008, "From_Account is empty or invalid")
        if not self.sandbox.accounts.exists(sender):
            raise VendorError(90008, "From_Account does not exist")
        return str(sender)

    def process(self, call: _TencentCall, call_id: int) -> dict[str, Any]:
        accounts = self.sandbox.accounts
        unique = call.unique_recipients()
        unknown = [r for r in unique if not accounts.exists(r)]
        if len(unknown) == len(unique):
            # Nothing to deliver: the vendor fails the whole call (processed, not refused).
            return self.error_body(90012, "invalid To_Account")
        server_time = int(self.sandbox.clock.wall())
        msg_seq = call.msg_seq if call.msg_seq is not None else self._random.getrandbits(32)
        msg_key = f"{msg_seq}_{call.msg_random}_{server_time}"
        msg_id = f"{self.sandbox.next_message_id()}-{server_time}-{self._random.getrandbits(31)}"
        missing = set(unknown)
        for recipient in unique:
            if recipient not in missing:
                self.deliver(call, call_id, recipient, msg_key)
        answer: dict[str, Any] = {
            "ActionStatus": "SomeError" if unknown else "OK",
            "ErrorCode": 0,
            "ErrorInfo": "",
            "MsgKey": msg_key,
            "MsgId": msg_id,
        }
        if unknown:
            answer["ErrorList"] = [{"To_Account": r, "ErrorCode": 70107} for r in unknown]
        return answer


def _valid_user_id(value: object) -> bool:
    return isinstance(value, str) and bool(value) and SPEC.id_rule.fits(value)


def _check_msg_body(msg_body: list[Any]) -> list[str]:
    """Element types and required fields; returns the MsgTypes in order."""
    if not msg_body:
        raise VendorError(90002, "MsgBody is empty")
    types: list[str] = []
    for index, element in enumerate(msg_body):
        where = f"MsgBody[{index}]"
        if not isinstance(element, dict):
            raise VendorError(90002, f"{where} must be an object")
        msg_type = element.get("MsgType")
        rules = _ELEMENT_RULES.get(msg_type) if isinstance(msg_type, str) else None
        if rules is None:
            raise VendorError(90002, f"{where}.MsgType is not a known message type")
        content = element.get("MsgContent")
        if not isinstance(content, dict):
            raise VendorError(90002, f"{where}.MsgContent must be an object")
        for field, check in rules.items():
            if not check(content):
                raise VendorError(90002, f"{where}.MsgContent.{field} is missing or invalid")
        types.append(str(msg_type))
    if types.count("TIMCustomElem") > 1:
        raise VendorError(90002, "MsgBody holds more than one TIMCustomElem")
    return types


def _check_optional_fields(doc: Mapping[str, Any]) -> None:
    """Types of the optional request fields (vendors.md §4.3)."""
    sync = doc.get("SyncOtherMachine")
    if "SyncOtherMachine" in doc and (not is_int(sync) or sync not in (1, 2)):
        raise VendorError(90031, "SyncOtherMachine must be 1 or 2")

    def invalid(field: str, expected: str) -> VendorError:
        return VendorError(INVALID_PARAMETER, f"{field} must be {expected}")

    for field in ("OnlineOnlyFlag", "IsNeedReadReceipt"):
        if field in doc and (not is_int(doc[field]) or doc[field] not in (0, 1)):
            raise invalid(field, "0 or 1")
    if "CloudCustomData" in doc and not isinstance(doc["CloudCustomData"], str):
        raise invalid("CloudCustomData", "a string")
    controls = doc.get("SendMsgControl")
    if "SendMsgControl" in doc and not (
        isinstance(controls, list) and all(c in _SEND_MSG_CONTROLS for c in controls)
    ):
        raise invalid("SendMsgControl", f"an array of {sorted(_SEND_MSG_CONTROLS)}")
    if "OfflinePushInfo" in doc:
        push = doc["OfflinePushInfo"]
        if not isinstance(push, dict):
            raise invalid("OfflinePushInfo", "an object")
        if "PushFlag" in push and (not is_int(push["PushFlag"]) or push["PushFlag"] not in (0, 1)):
            raise invalid("OfflinePushInfo.PushFlag", "0 or 1")
        for key in ("Title", "Desc", "Ext"):
            if key in push and not isinstance(push[key], str):
                raise invalid(f"OfflinePushInfo.{key}", "a string")
        for key in ("AndroidInfo", "ApnsInfo"):
            if key in push and not isinstance(push[key], dict):
                raise invalid(f"OfflinePushInfo.{key}", "an object")
        _check_push_members(push.get("AndroidInfo") or {}, "AndroidInfo", ("Sound",), ())
        _check_push_members(
            push.get("ApnsInfo") or {},
            "ApnsInfo",
            ("Sound", "Title", "SubTitle", "Image"),
            ("BadgeMode", "MutableContent"),
        )


def _check_push_members(
    info: Mapping[str, Any], where: str, strings: tuple[str, ...], flags: tuple[str, ...]
) -> None:
    """The documented members of AndroidInfo / ApnsInfo (SEED-TX, DOBYTE types.go);
    vendor channel fields not listed here are tolerated."""
    for key in strings:
        if key in info and not isinstance(info[key], str):
            raise VendorError(INVALID_PARAMETER, f"OfflinePushInfo.{where}.{key} must be a string")
    for key in flags:
        if key in info and not (is_int(info[key]) and info[key] in (0, 1)):
            raise VendorError(INVALID_PARAMETER, f"OfflinePushInfo.{where}.{key} must be 0 or 1")
