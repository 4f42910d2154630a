"""Tencent Cloud IM batch send: `POST /v4/openim/batchsendmsg` with a JSON body capped at
12 KB and the admin's UserSig in the query (vendors.md §2.2, §4.3, §7.3, §8.2;
docs/vendor-mapping.md).

The body is assembled from pre-encoded bytes so that its size is known exactly before it
is built: `base_body_bytes` + the sum of `recipient_body_bytes` bounds it from above, and
the planner cuts chunks by that bound.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.auth import tencent_user_sig
from imgate.vendors.base.chars import IdCensus
from imgate.vendors.base.common import (
    TENCENT_PUSH_OBJECTS,
    as_int,
    ceil_seconds,
    chosen_options,
    compact_json,
    derived_uint32,
    json_object,
    load_answer,
    media_uuid,
    message_violations,
    short,
    unsupported_option,
)
from imgate.vendors.base.translator import (
    AcceptedAlike,
    CallResult,
    Disposition,
    FieldViolation,
    Reason,
    RecipientResult,
    Region,
    Translator,
    VendorLimits,
    VendorRequest,
    classify_code,
    classify_http_status,
    recipient_verdict,
    request_verdict,
    uncertain_all,
    unreadable_answer,
)

MAX_BODY_BYTES: Final = 12288
"""Whole JSON packet; over it the vendor answers 93000 (vendors.md §5)."""
MAX_ID_CHARS: Final = 32
"""Longest UserID in characters (CONTRACT §1.4): a message must fit with one such recipient."""
MAX_ID_BYTES: Final = 32
"""Tencent counts UserIDs in UTF-8 bytes (vendors.md §5); longer ones fail a whole call
(90003), so they are refused up front."""
_MAX_LISTED_BAD_IDS: Final = 10  # a huge bad list should not make a huge error

USER_SIG_TTL_S: Final = 86400
"""Validity of the admin UserSig we sign: a day, as the community SDKs do."""
USER_SIG_REFRESH_BEFORE_S: Final = 3600
"""Re-sign this long before expiry, so a sig never expires in flight or by clock skew."""

_UINT32_MAX: Final = 0xFFFFFFFF
_SUCCESS_CODE: Final = 0

# The body is `{"To_Account":[...],"MsgSeq":N,"MsgRandom":N,` + the batch part. The
# batch part is encoded once; the head is counted with MsgSeq/MsgRandom at their widest.
_HEAD_MAX: Final = b'{"To_Account":[],"MsgSeq":%d,"MsgRandom":%d,' % (_UINT32_MAX, _UINT32_MAX)

# Ids that JSON writes verbatim: then an id costs its UTF-8 length + 2 quotes + 1 comma.
_NEEDS_ESCAPE: Final = re.compile(r'[\x00-\x1f"\\]')

_IMAGE_FORMATS: Final[Mapping[str, int]] = {"jpg": 1, "jpeg": 1, "gif": 2, "png": 3, "bmp": 4}
_OTHER_IMAGE_FORMAT: Final = 255
_DOWNLOAD_FLAG: Final = 2  # the only value the API takes: download from Url
ORIGINAL_IMAGE, LARGE_IMAGE, THUMBNAIL_IMAGE = 1, 2, 3
"""ImageInfoArray Type values (vendors.md §10.3)."""

ELEMENT_REQUIRED_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "TIMTextElem": ("Text",),
    "TIMLocationElem": ("Desc", "Latitude", "Longitude"),
    "TIMFaceElem": ("Index", "Data"),
    "TIMCustomElem": ("Data",),
    "TIMSoundElem": ("Url", "UUID", "Size", "Second", "Download_Flag"),
    "TIMImageElem": ("UUID", "ImageFormat", "ImageInfoArray"),
    "TIMFileElem": ("Url", "UUID", "FileSize", "FileName", "Download_Flag"),
    "TIMVideoFileElem": (
        "VideoUrl",
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
    ),
}
"""MsgContent fields each element must carry in a REST send (TX-FMT, vendors.md §10.3):
what the translator sends and the emulator requires."""
IMAGE_INFO_REQUIRED_FIELDS: Final = ("Type", "Size", "Width", "Height", "URL")
"""Fields of every ImageInfoArray entry (TX-FMT)."""

_DONE = Disposition.DONE
_AMBIGUOUS = Disposition.AMBIGUOUS
_RATE = Disposition.RATE_LIMITED
_AUTH = pb.FAILURE_REASON_AUTH_FAILED
_INVALID = pb.FAILURE_REASON_MESSAGE_INVALID
_VENDOR = pb.FAILURE_REASON_VENDOR_ERROR

CODES: Final[Mapping[int, tuple[Disposition, Reason]]] = {
    # Request refused as malformed (our request, not the message content per se).
    60002: (_DONE, _INVALID),  # URL parse error (e.g. random not a uint32)
    60003: (_DONE, _INVALID),  # request JSON parse error
    60009: (_DONE, _INVALID),  # bad resource / URL
    # Credentials and app state: fixing them takes an operator.
    60004: (_DONE, _AUTH),  # identifier or UserSig wrong
    60005: (_DONE, _AUTH),
    60006: (_DONE, _AUTH),  # SDKAppID invalid
    60010: (_DONE, _AUTH),  # identifier is not an app admin
    60012: (_DONE, _AUTH),  # SDKAppID missing
    60015: (_DONE, _AUTH),  # identifier not a string
    60016: (_DONE, _AUTH),  # SDKAppID disabled
    60017: (_DONE, _AUTH),  # request disabled
    60020: (_DONE, _AUTH),  # package expired / not yet effective
    60021: (_DONE, _AUTH),  # caller IP not allowed
    70002: (_DONE, _AUTH),  # UserSig empty
    70003: (_DONE, _AUTH),  # UserSig not decodable
    70005: (_DONE, _AUTH),
    70009: (_DONE, _AUTH),  # signed with another key / SDKAppID
    70013: (_DONE, _AUTH),  # identifier does not match the UserSig
    70014: (_DONE, _AUTH),  # SDKAppID does not match the UserSig
    70016: (_DONE, _AUTH),  # key not found (often: wrong region host)
    70020: (_DONE, _AUTH),  # SDKAppID not found
    70051: (_DONE, _AUTH),  # the (admin) account is blacklisted
    70403: (_DONE, _AUTH),  # admin required
    90009: (_DONE, _AUTH),  # admin permission required
    # Expired or invalid sig: re-sign once and resend; nothing was processed.
    70001: (Disposition.REFRESH_AUTH, _AUTH),
    70052: (Disposition.REFRESH_AUTH, _AUTH),
    # Refused for rate, not processed (CONTRACT §1.5); 70050 asks for a minute's pause.
    60007: (_RATE, pb.FAILURE_REASON_RATE_LIMITED),
    60011: (_RATE, pb.FAILURE_REASON_RATE_LIMITED),
    60018: (_RATE, pb.FAILURE_REASON_RATE_LIMITED),
    60019: (_RATE, pb.FAILURE_REASON_RATE_LIMITED),
    70050: (_RATE, pb.FAILURE_REASON_RATE_LIMITED),
    # Internal errors and timeouts "retry later": nothing says the call was not processed.
    # An internal timeout is still an answer, so the reason is VENDOR_ERROR; TIMEOUT is
    # for a vendor that did not answer us in time.
    60008: (_AMBIGUOUS, _VENDOR),  # service timeout
    60013: (_AMBIGUOUS, _VENDOR),  # internal response parse error
    60014: (_AMBIGUOUS, _VENDOR),  # account exchange timeout
    70169: (_AMBIGUOUS, _VENDOR),  # CONTRACT §1.6
    70202: (_AMBIGUOUS, _VENDOR),
    70500: (_AMBIGUOUS, _VENDOR),
    90992: (_AMBIGUOUS, _VENDOR),  # CONTRACT §1.6
    90994: (_AMBIGUOUS, _VENDOR),
    90995: (_AMBIGUOUS, _VENDOR),
    91000: (_AMBIGUOUS, _VENDOR),  # CONTRACT §1.6
    20004: (_AMBIGUOUS, _VENDOR),  # network error (sendmsg family)
    20005: (_AMBIGUOUS, _VENDOR),  # internal error (sendmsg family)
    # The message or request parameters.
    70402: (_DONE, _INVALID),
    80002: (_DONE, _INVALID),  # packet too long
    90001: (_DONE, _INVALID),
    90002: (_DONE, _INVALID),
    90003: (_DONE, _INVALID),
    90004: (_DONE, _INVALID),
    90005: (_DONE, _INVALID),
    90007: (_DONE, _INVALID),
    90010: (_DONE, _INVALID),
    90011: (_DONE, _INVALID),  # over 500 recipients
    90026: (_DONE, _INVALID),
    90031: (_DONE, _INVALID),
    90044: (_DONE, _INVALID),
    93000: (_DONE, _INVALID),  # over 12 KB
    80001: (_DONE, pb.FAILURE_REASON_CONTENT_REJECTED),
    # Parties.
    90008: (_DONE, pb.FAILURE_REASON_SENDER_NOT_FOUND),
    90012: (_DONE, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND),  # no recipient exists
    70107: (_DONE, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND),
    90048: (_DONE, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND),
    # sendmsg-family checks batchsendmsg does not make; classified should they appear.
    20007: (_DONE, pb.FAILURE_REASON_RECIPIENT_INVALID),  # blacklisted by the recipient
    20009: (_DONE, pb.FAILURE_REASON_RECIPIENT_INVALID),  # not friends
    20010: (_DONE, pb.FAILURE_REASON_RECIPIENT_INVALID),
    20011: (_DONE, pb.FAILURE_REASON_RECIPIENT_INVALID),
    20012: (_DONE, pb.FAILURE_REASON_SENDER_MUTED),
}
"""Request-level ErrorCode → (disposition, reason). Codes not listed are AMBIGUOUS: the
vendor does not document them, so nothing says the call was not processed (rule 24)."""

RECIPIENT_REASONS: Final[Mapping[int, Reason]] = {
    70107: pb.FAILURE_REASON_RECIPIENT_NOT_FOUND,
    90048: pb.FAILURE_REASON_RECIPIENT_NOT_FOUND,
}
"""ErrorList code → reason; other codes are classified by CODES (FAILED when they refuse,
UNCERTAIN when they may mean "processed" or are undocumented)."""


@dataclass(frozen=True, slots=True)
class TencentPrepared:
    """The batch part of the body, encoded once."""

    body_rest: bytes
    """The members after MsgRandom, closing brace included."""
    base_body_bytes: int


class TencentTranslator(Translator):
    """Tencent Cloud IM batch P2P send (batchsendmsg)."""

    vendor: ClassVar[str] = "tencent"
    path: ClassVar[str] = "/v4/openim/batchsendmsg"
    default_limits: ClassVar[VendorLimits] = VendorLimits(
        recipients_per_call=500,
        call_limit=200,
        call_window_s=1.0,
        recipient_limit=12000,
        recipient_window_s=60.0,
        # Tencent documents no block. A rate refusal usually means the per-minute message
        # quota is spent (possibly by another system sharing the app): only a full minute
        # frees it, and 70050 asks for one minute explicitly.
        block_s=60.0,
        max_body_bytes=MAX_BODY_BYTES,
    )
    credential_fields: ClassVar[Mapping[str, type]] = {
        "sdk_app_id": int,
        "secret_key": str,
        "admin_identifier": str,
    }
    app_id_field: ClassVar[str] = "sdk_app_id"
    sender_required: ClassVar[bool] = False  # an empty sender means the app admin
    sandbox_credentials: ClassVar[Mapping[str, Any]] = {
        "sdk_app_id": 1400000000,
        "secret_key": "sandbox-secret-key",
        "admin_identifier": "administrator",
    }
    # TX-REST (vendors.md §3.2): the host must be the SDKAppID's data centre; the
    # my-imcloud.com host is the documented fallback when the primary cannot be reached.
    regions: ClassVar[Mapping[str, Region]] = {
        name: Region(f"https://{primary}", f"https://{backup}")
        for name, primary, backup in (
            ("china", "console.tim.qq.com", "adminapi.my-imcloud.com"),
            ("singapore", "adminapisgp.im.qcloud.com", "adminapisgp.my-imcloud.com"),
            ("seoul", "adminapikr.im.qcloud.com", "adminapikr.my-imcloud.com"),
            ("tokyo", "adminapijpn.im.qcloud.com", "adminapijpn.my-imcloud.com"),
            ("frankfurt", "adminapiger.im.qcloud.com", "adminapiger.my-imcloud.com"),
            ("silicon_valley", "adminapiusa.im.qcloud.com", "adminapiusa.my-imcloud.com"),
            ("jakarta", "adminapiidn.im.qcloud.com", "adminapiidn.my-imcloud.com"),
        )
    }

    def __init__(self, credentials: Mapping[str, Any]) -> None:
        super().__init__(credentials)
        self._sdk_app_id = int(credentials["sdk_app_id"])
        self._secret_key = str(credentials["secret_key"])
        self._admin = str(credentials["admin_identifier"])
        # The admin UserSig and the time (Unix s) from which it must be re-signed.
        self._user_sig: str | None = None
        self._user_sig_refresh_at = 0

    def validate(
        self,
        request: pb.BatchSendRequest,
        recipient_ids: Sequence[str] | None = None,
        census: IdCensus | None = None,
    ) -> list[FieldViolation]:
        ids = list(request.recipient_ids) if recipient_ids is None else recipient_ids
        census = census or IdCensus.of(ids)
        problems = _id_byte_violations(request, ids, census)
        problems += message_violations(request)
        problems += _tencent_violations(request)
        if problems or request.message.WhichOneof("content") is None:
            return problems  # the body cannot be encoded before these are fixed
        prepared = self.prepare(request)
        # Every recipient must fit alone, or the planner could not place it: check the
        # longest actual id, and at least a 32-character one.
        longest = max(
            self.recipient_body_bytes("x" * MAX_ID_CHARS),
            _longest_body_bytes(self, ids, census),
        )
        size = prepared.base_body_bytes + longest
        if size > MAX_BODY_BYTES:
            problems.append(
                FieldViolation(
                    "message",
                    f"the Tencent request body would be {size} bytes with a single"
                    f" recipient; the vendor's limit is {MAX_BODY_BYTES} bytes",
                )
            )
        return problems

    def prepare(self, request: pb.BatchSendRequest) -> TencentPrepared:
        message, options = request.message, request.options
        chosen = chosen_options(options)
        doc: dict[str, Any] = {}
        if request.sender_id:
            doc["From_Account"] = request.sender_id
        if "sync_to_sender" in chosen:
            doc["SyncOtherMachine"] = 1 if options.sync_to_sender else 2
        doc["MsgBody"] = [_element(message)]
        # Only online_only and offline_enabled=false mean "online recipients only";
        # history_enabled=false alone is refused by validate() (issue 13.3).
        if options.online_only or chosen.get("offline_enabled") is False:
            doc["OnlineOnlyFlag"] = 1
        if message.extension:
            doc["CloudCustomData"] = message.extension
        control = [
            flag
            for flag, wanted in (
                ("NoUnread", chosen.get("unread_enabled") is False),
                ("NoLastMsg", chosen.get("update_conversation") is False),
                ("NoMsgCheck", options.skip_moderation),
            )
            if wanted
        ]
        if control:
            doc["SendMsgControl"] = control
        push: dict[str, Any] = {}
        if "push_enabled" in chosen:
            push["PushFlag"] = 0 if options.push_enabled else 1
        if "push_title" in chosen:
            push["Title"] = options.push_title
        if "push_content" in chosen:
            push["Desc"] = options.push_content
        if "push_payload" in chosen:
            push["Ext"] = options.push_payload
        for name, member in TENCENT_PUSH_OBJECTS.items():
            if name in chosen:
                push[member] = json_object(chosen[name])
        if push:
            doc["OfflinePushInfo"] = push
        if "read_receipt" in chosen:
            doc["IsNeedReadReceipt"] = 1 if options.read_receipt else 0
        body_rest = compact_json(doc).encode()[1:]
        return TencentPrepared(body_rest, len(_HEAD_MAX) + len(body_rest))

    def base_body_bytes(self, prepared: TencentPrepared) -> int:
        return prepared.base_body_bytes

    def recipient_body_bytes(self, recipient_id: str) -> int:
        return len(compact_json(recipient_id).encode()) + 1  # + the comma before it

    def recipients_body_bytes(self, recipient_ids: Sequence[str]) -> list[int]:
        # One regex pass over all ids instead of a JSON encode per id: 100,000 ids must
        # plan in a few milliseconds.
        joined = "".join(recipient_ids)
        if not _NEEDS_ESCAPE.search(joined):
            if joined.isascii():  # one byte a character: no encoding needed
                return [len(recipient_id) + 3 for recipient_id in recipient_ids]
            return [len(recipient_id.encode()) + 3 for recipient_id in recipient_ids]
        return [self.recipient_body_bytes(recipient_id) for recipient_id in recipient_ids]

    def build(
        self,
        prepared: TencentPrepared,
        recipients: Sequence[str],
        chunk_key: str,
        now: float,
        nonce: str,
    ) -> VendorRequest:
        # Stable per chunk: the vendor de-duplicates on MsgSeq/MsgRandom (vendors.md §9).
        msg_seq = derived_uint32(chunk_key, "tencent-msgseq")
        msg_random = derived_uint32(chunk_key, "tencent-msgrandom")
        body = b"".join(
            (
                b'{"To_Account":',
                compact_json(list(recipients)).encode(),
                b',"MsgSeq":%d,"MsgRandom":%d,' % (msg_seq, msg_random),
                prepared.body_rest,
            )
        )
        query = {
            "sdkappid": str(self._sdk_app_id),
            "identifier": self._admin,
            "usersig": self._current_user_sig(now),
            "random": str(derived_uint32(nonce, "tencent-random")),  # fresh per attempt
            "contenttype": "json",
        }
        return VendorRequest(
            method="POST",
            path=self.path,
            headers={"Content-Type": "application/json"},
            body=body,
            query=query,
        )

    def invalidate_credentials(self) -> None:
        self._user_sig = None

    def _current_user_sig(self, now: float) -> str:
        issued = int(now)
        if self._user_sig is None or issued >= self._user_sig_refresh_at:
            self._user_sig = tencent_user_sig(
                self._secret_key, self._sdk_app_id, self._admin, issued, USER_SIG_TTL_S
            )
            self._user_sig_refresh_at = issued + USER_SIG_TTL_S - USER_SIG_REFRESH_BEFORE_S
        return self._user_sig

    def parse(self, recipients: Sequence[str], status: int, body: bytes) -> CallResult:
        verdict = classify_http_status(recipients, status)
        if verdict is not None:
            return verdict
        answer = load_answer(body)
        if answer is None:
            return unreadable_answer("not a JSON object")
        code = as_int(answer.get("ErrorCode"))
        if code is None:
            return unreadable_answer("no numeric ErrorCode")
        failed = _error_list(answer.get("ErrorList"), recipients)
        if failed is None:
            return uncertain_all("the ErrorList does not match the call's recipients")
        if code == _SUCCESS_CODE:
            return _success(recipients, answer, failed)
        disposition, reason = classify_code(CODES, code)
        verdict = request_verdict(
            recipients, disposition, reason, str(code), short(answer.get("ErrorInfo"))
        )
        if disposition is Disposition.DONE and failed:
            # A failed call may still say per account why; that is more precise.
            return CallResult(
                Disposition.DONE,
                tuple(
                    _failed_recipient(result.recipient_id, failed[result.recipient_id])
                    if result.recipient_id in failed
                    else result
                    for result in verdict.results
                ),
            )
        return verdict


def _success(
    recipients: Sequence[str], answer: Mapping[str, Any], failed: Mapping[str, int]
) -> CallResult:
    """ErrorCode 0: someone got it, whatever ActionStatus says ("SomeError" on partial
    success, vendors.md §7.3). Listed accounts failed, the rest were accepted."""
    msg_key = answer.get("MsgKey", "")
    if not isinstance(msg_key, str):
        return uncertain_all("MsgKey is not a string")
    if not failed and answer.get("ActionStatus") != "OK":
        # The vendor says something failed but not for whom.
        return uncertain_all("the answer reports an error but lists no account")
    # One MsgKey for the call: the accepted share every field but their id.
    exceptions = {
        position: _failed_recipient(recipient, failed[recipient])
        for position, recipient in (enumerate(recipients) if failed else ())
        if recipient in failed
    }
    shared = RecipientResult("", True, vendor_message_id=msg_key)
    return CallResult(Disposition.DONE, AcceptedAlike(recipients, shared, exceptions))


"""Detail of every Tencent ACCEPTED outcome: batchsendmsg has been seen answering OK with
no ErrorList while an account did not exist (vendors.md §7.3, §12), so an ACCEPTED
recipient is not proof that the account exists (docs/vendor-mapping.md "Answers")."""


def _tencent_violations(request: pb.BatchSendRequest) -> list[FieldViolation]:
    """What Tencent requires or cannot express (vendors.md §4.3, §10.3; issue 13.1, 13.3)."""
    message, options = request.message, request.options
    problems: list[FieldViolation] = []
    kind = message.WhichOneof("content")
    if kind == "image":
        for name in ("width", "height"):
            if getattr(message.image, name) <= 0:
                problems.append(
                    FieldViolation(f"message.image.{name}", "required (> 0) on Tencent")
                )
    elif kind == "video":
        if not message.video.HasField("thumbnail"):
            problems.append(
                FieldViolation(
                    "message.video.thumbnail",
                    "required on Tencent (ThumbUrl, ThumbWidth, ThumbHeight are required)",
                )
            )
        else:
            for name in ("width", "height"):
                if getattr(message.video.thumbnail, name) <= 0:
                    problems.append(
                        FieldViolation(
                            f"message.video.thumbnail.{name}", "required (> 0) on Tencent"
                        )
                    )
    elif kind == "custom" and message.custom.sub_type > 0:
        problems.append(
            FieldViolation(
                "message.custom.sub_type",
                "not supported on tencent: TIMCustomElem has no sub-type (put it in data)",
            )
        )
    if options.HasField("push_nick_enabled"):
        problems.append(
            unsupported_option(
                "tencent", "push_nick_enabled", "Tencent has no sender-nickname switch"
            )
        )
    if options.HasField("history_enabled") and not options.history_enabled:
        problems.append(
            unsupported_option(
                "tencent",
                "history_enabled",
                "history cannot be turned off alone; online_only turns off history,"
                " offline storage and unread together",
            )
        )
    return problems


def _longest_body_bytes(translator: TencentTranslator, ids: Sequence[str], census: IdCensus) -> int:
    """The most bytes one of `ids` adds to a body (what recipients_body_bytes would max)."""
    # Printable ASCII but '"' and '\\' encodes as itself; str methods beat the regex.
    joined = census.joined
    if census.printable_ascii and '"' not in joined and "\\" not in joined:
        return census.longest + 3  # quotes and comma
    return max(translator.recipients_body_bytes(ids), default=0)


def _id_byte_violations(
    request: pb.BatchSendRequest, ids: Sequence[str], census: IdCensus
) -> list[FieldViolation]:
    """Ids within the common 32-character limit but over Tencent's 32 bytes (non-ASCII).

    Longer-in-characters ids are the servicer's violation already; not repeated here.
    """
    problems: list[FieldViolation] = []

    def too_long(account: str) -> bool:
        return len(account) <= MAX_ID_CHARS and len(account.encode()) > MAX_ID_BYTES

    if too_long(request.sender_id):
        problems.append(FieldViolation("sender_id", f"over {MAX_ID_BYTES} UTF-8 bytes (Tencent)"))
    if census.joined.isascii():
        return problems  # one byte per character: the common check covers them
    bad = [position for position, recipient in enumerate(ids) if too_long(recipient)]
    problems += [
        FieldViolation(f"recipient_ids[{position}]", f"over {MAX_ID_BYTES} UTF-8 bytes (Tencent)")
        for position in bad[:_MAX_LISTED_BAD_IDS]
    ]
    if len(bad) > _MAX_LISTED_BAD_IDS:
        problems.append(
            FieldViolation("recipient_ids", f"{len(bad)} ids over {MAX_ID_BYTES} bytes in all")
        )
    return problems


def _element(message: pb.Message) -> dict[str, Any]:
    """The one MsgBody element for the message (vendors.md §10.3, vendor-mapping.md)."""
    kind = message.WhichOneof("content")
    if kind == "text":
        return {"MsgType": "TIMTextElem", "MsgContent": {"Text": message.text.text}}
    if kind == "tip":
        # Tencent has no tip type: an app-defined element clients recognise by its type.
        data = compact_json({"type": "tip", "text": message.tip.text})
        return {"MsgType": "TIMCustomElem", "MsgContent": {"Data": data, "Desc": message.tip.text}}
    if kind == "custom":
        custom: dict[str, Any] = {"Data": message.custom.data}
        if message.custom.description:
            custom["Desc"] = message.custom.description
        return {"MsgType": "TIMCustomElem", "MsgContent": custom}
    if kind == "location":
        location = message.location
        content: dict[str, Any] = {
            "Desc": location.title,
            "Latitude": location.latitude,
            "Longitude": location.longitude,
        }
        return {"MsgType": "TIMLocationElem", "MsgContent": content}
    if kind == "image":
        image = message.image
        infos = [_image_info(ORIGINAL_IMAGE, image)]
        if image.HasField("large"):
            infos.append(_image_info(LARGE_IMAGE, image.large))
        if image.HasField("thumbnail"):
            infos.append(_image_info(THUMBNAIL_IMAGE, image.thumbnail))
        content = {
            "UUID": media_uuid(image.md5, image.url),
            "ImageFormat": _image_format(image.format),
            "ImageInfoArray": infos,
        }
        return {"MsgType": "TIMImageElem", "MsgContent": content}
    if kind == "audio":
        audio = message.audio
        content = {
            "Url": audio.url,
            "UUID": media_uuid(audio.md5, audio.url),
            "Size": audio.size_bytes,
            "Second": ceil_seconds(audio.duration_ms),
            "Download_Flag": _DOWNLOAD_FLAG,
        }
        return {"MsgType": "TIMSoundElem", "MsgContent": content}
    if kind == "video":
        video = message.video
        thumb = video.thumbnail
        content = {
            "VideoUrl": video.url,
            "VideoUUID": media_uuid(video.md5, video.url),
            "VideoSize": video.size_bytes,
            "VideoSecond": ceil_seconds(video.duration_ms),
            "VideoFormat": video.format,
            "VideoDownloadFlag": _DOWNLOAD_FLAG,
            # Required for REST sends (TX-FMT); validate() refuses a video without one.
            "ThumbUrl": thumb.url,
            "ThumbUUID": media_uuid(thumb.md5, thumb.url),
            "ThumbSize": thumb.size_bytes,
            "ThumbWidth": thumb.width,
            "ThumbHeight": thumb.height,
            "ThumbFormat": thumb.format,
            "ThumbDownloadFlag": _DOWNLOAD_FLAG,
        }
        return {"MsgType": "TIMVideoFileElem", "MsgContent": content}
    if kind == "file":
        file = message.file
        content = {
            "Url": file.url,
            "UUID": media_uuid(file.md5, file.url),
            "FileSize": file.size_bytes,
            "FileName": file.name,
            "Download_Flag": _DOWNLOAD_FLAG,
        }
        return {"MsgType": "TIMFileElem", "MsgContent": content}
    raise ValueError("message has no content")


def _image_format(name: str) -> int:
    return _IMAGE_FORMATS.get(name.lower().lstrip("."), _OTHER_IMAGE_FORMAT)


def _image_info(info_type: int, image: pb.ImageContent | pb.ImageVariant) -> dict[str, Any]:
    """One ImageInfoArray entry; Width and Height are required (TX-FMT)."""
    return {
        "Type": info_type,
        "Size": image.size_bytes,
        "Width": image.width,
        "Height": image.height,
        "URL": image.url,
    }


def _error_list(items: object, recipients: Sequence[str]) -> dict[str, int] | None:
    """ErrorList as account → its ErrorCode; None when the list is not one the vendor
    documents for this call (wrong types, accounts not in the call): then the answer does
    not account for the recipients (CONTRACT §8 rule 24)."""
    if items is None:
        return {}
    if not isinstance(items, list):
        return None
    failed: dict[str, int] = {}
    if not items:
        return failed
    wanted = set(recipients)
    for item in items:
        if not isinstance(item, dict):
            return None
        account = item.get("To_Account")
        code = as_int(item.get("ErrorCode"))
        if not isinstance(account, str) or account not in wanted or code is None:
            return None
        failed[account] = code
    return failed


def _failed_recipient(recipient: str, code: int) -> RecipientResult:
    """A recipient the ErrorList names: its code decides FAILED or UNCERTAIN (70169,
    90992, 91000 and undocumented codes may mean it was processed)."""
    detail = "account does not exist" if code in RECIPIENT_REASONS else ""
    return recipient_verdict(
        recipient,
        code,
        str(code),
        detail or "listed in the vendor's ErrorList",
        CODES,
        RECIPIENT_REASONS,
    )
