"""What Yunxin's legacy (v1) and v2 APIs share: credentials, CheckSum headers, the trace
header, field limits, media body keys and the meaning of their codes (vendors.md §2.1,
§5, §8.1, §9; docs/vendor-mapping.md).
"""

from __future__ import annotations

import abc
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.auth import yunxin_headers
from imgate.vendors.base.chars import IdCensus, java_len
from imgate.vendors.base.common import (
    compact_json,
    derived_trace_id,
    json_object,
    message_violations,
    short,
)
from imgate.vendors.base.translator import (
    CallResult,
    CodeTable,
    Disposition,
    FieldViolation,
    Reason,
    Translator,
    classify_code,
    request_verdict,
)

TEXT_MAX_CHARS: Final = 5000
"""Text and tip messages (vendors.md §5; a plan may allow more, none allows less)."""
ATTACHMENT_MAX_CHARS: Final = 5000
"""The body (legacy) / attachment JSON (v2) of a non-text message (vendors.md §5)."""
DESCRIPTION_MAX_CHARS: Final = 500
"""msgDesc (v1) / text of a non-text message (v2)."""
PUSH_CONTENT_MAX_CHARS: Final = 500
PUSH_PAYLOAD_MAX_CHARS: Final = 2048

SUCCESS_CODE: Final = 200

# Message type numbers, identical on both APIs (vendors.md §10.1).
MESSAGE_TYPES: Final[Mapping[str, int]] = {
    "text": 0,
    "image": 1,
    "audio": 2,
    "video": 3,
    "location": 4,
    "file": 6,
    "tip": 10,
    "custom": 100,
}

RATE_CODE: Final = 416
"""Frequency control, on both APIs: the call was refused and the app is blocked for a
while (SEED-YX1B; YX-RATE for v2; YX-CODES)."""

_DONE = Disposition.DONE
CODES: Final[Mapping[int, tuple[Disposition, Reason]]] = {
    403: (_DONE, pb.FAILURE_REASON_AUTH_FAILED),  # bad AppKey/CheckSum/CurTime, app forbidden
    404: (_DONE, pb.FAILURE_REASON_SENDER_NOT_FOUND),  # on a request: the sender is unknown
    405: (_DONE, pb.FAILURE_REASON_MESSAGE_INVALID),  # parameter too long
    # "request timeout": the vendor gave up somewhere inside, maybe after sending. It did
    # answer, so VENDOR_ERROR (TIMEOUT is for a vendor that did not answer us in time).
    408: (Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR),
    414: (_DONE, pb.FAILURE_REASON_MESSAGE_INVALID),  # parameter error (see _AUTH_DESC)
    RATE_CODE: (Disposition.RATE_LIMITED, pb.FAILURE_REASON_RATE_LIMITED),
    # "repeated operation" / "HTTP request repeated": an earlier identical request (same
    # trace id) may have been processed, so this one's outcome is unknown.
    417: (Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR),
    431: (Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR),
    419: (_DONE, pb.FAILURE_REASON_MESSAGE_INVALID),  # quantity exceeds limit
    422: (_DONE, pb.FAILURE_REASON_SENDER_BANNED),
    423: (_DONE, pb.FAILURE_REASON_SENDER_MUTED),
    500: (Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR),  # CONTRACT §1.6
    # "server busy" / "service unavailable" (YX-CODES): no Yunxin document says the call
    # was not processed, and the official SDKs do not resend on them (they resend only on
    # HTTP 502 or a connect error, YX-JAVA docs/retry.md): never resent (issue 22,
    # fidelity 4). The backend's later calls go to the other endpoint (UNAVAILABLE_CODES).
    503: (Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_UNAVAILABLE),
    514: (Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_UNAVAILABLE),
}
"""Request-level code → (disposition, reason), both APIs (YX-CODES, vendors.md §8.1).
Codes not listed are AMBIGUOUS: undocumented, so nothing says the call was not processed
(CONTRACT §8 rule 24)."""

UNAVAILABLE_CODES: Final = frozenset({503, 514})
"""Codes by which the vendor says its service is busy or unavailable: the backend fails
over to its backup endpoint for later calls (YX-CALL-V1: the backup domain keeps the API
available when the primary fails), harmless since the call itself is not resent."""

"""The IM 2.0 family's rate-limit code (docs/vendor-mapping.md "Answers", YX2-CODES)."""
V2_ACCOUNT_NOT_FOUND: Final = 102404
V2_SENDER_MUTED: Final = 102421
V2_SENDER_BANNED: Final = 102422
V2_RETRY: Final = 102449

V2_CODES: Final[Mapping[int, tuple[Disposition, Reason]]] = {
    **CODES,
    # IM 2.0 codes are 6 digits: 1, a 2-digit resource (02 user, 04 friend, 07 message),
    # then a 3-digit code (YX2-CODES). The 3-digit common codes stay valid.
    V2_ACCOUNT_NOT_FOUND: (_DONE, pb.FAILURE_REASON_SENDER_NOT_FOUND),  # of a request: sender
    V2_SENDER_MUTED: (_DONE, pb.FAILURE_REASON_SENDER_MUTED),
    V2_SENDER_BANNED: (_DONE, pb.FAILURE_REASON_SENDER_BANNED),
    102426: (_DONE, pb.FAILURE_REASON_RECIPIENT_INVALID),  # in the receiver's block list
    104404: (_DONE, pb.FAILURE_REASON_RECIPIENT_INVALID),  # not a friend (check_friend)
    107451: (_DONE, pb.FAILURE_REASON_CONTENT_REJECTED),  # antispam
    107410: (_DONE, pb.FAILURE_REASON_VENDOR_ERROR),  # messaging disabled for the app
    # "retry": the vendor failed somewhere inside, maybe after sending.
    V2_RETRY: (Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR),
}
"""The v2 API's request-level codes: the common ones plus the IM 2.0 family. Its rate code
is the common 416 (YX-RATE, YX-V2B-DOC point to the rate-limit page): 107323, once taken
for it, appears in no vendor page or SDK, and 191004 is the client SDK's "invalid
parameter" (YX2-CLIENT-CODES), not a server answer; like every code not listed they are
AMBIGUOUS (CONTRACT §8 rule 24: nothing says the call was not processed)."""

RECIPIENT_REASONS: Final[Mapping[int, Reason]] = {
    404: pb.FAILURE_REASON_RECIPIENT_NOT_FOUND,
    V2_ACCOUNT_NOT_FOUND: pb.FAILURE_REASON_RECIPIENT_NOT_FOUND,
    405: pb.FAILURE_REASON_RECIPIENT_INVALID,
    414: pb.FAILURE_REASON_RECIPIENT_INVALID,
    102426: pb.FAILURE_REASON_RECIPIENT_INVALID,
    104404: pb.FAILURE_REASON_RECIPIENT_INVALID,
    107451: pb.FAILURE_REASON_CONTENT_REJECTED,
}
"""Per-recipient code (v2 failed_list) → reason, FAILED. Other codes go by V2_CODES
(recipient_verdict): 102449 ("retry"), undocumented codes and the rate code 416 make the
recipient UNCERTAIN. No vendor page documents failed_list codes (vendors.md §14.3): 416 is
a whole-call refusal there, so in failed_list it says nothing certain about that
recipient (the backend pauses, nothing is resent)."""

# Legacy docs answer a CheckSum failure with 414 (vendors.md §2.1): tell it from a plain
# parameter error by its description.
_AUTH_DESC: Final = re.compile(r"check\s*sum|app\s*key|cur\s*time|nonce", re.IGNORECASE)


def classify(
    recipients: Sequence[str], code: int, desc: str, codes: CodeTable = CODES
) -> CallResult:
    """The verdict for a Yunxin answer whose code is not 200."""
    disposition, reason = classify_code(codes, code)
    if code == 414 and _AUTH_DESC.search(desc):
        disposition, reason = _DONE, pb.FAILURE_REASON_AUTH_FAILED
    verdict = request_verdict(recipients, disposition, reason, str(code), short(desc))
    if code in UNAVAILABLE_CODES:
        return dataclasses.replace(verdict, vendor_unavailable=True)
    return verdict


def push_payload_text(options: pb.SendOptions) -> str | None:
    """The push payload as sent: push_payload with push_title merged in as `pushTitle`
    (Yunxin's payload key for the title, vendors.md §11), or None when neither is set."""
    if not options.HasField("push_title"):
        return options.push_payload if options.HasField("push_payload") else None
    payload = json_object(options.push_payload) if options.HasField("push_payload") else None
    merged = dict(payload or {})
    merged["pushTitle"] = options.push_title  # the explicit option wins over the payload
    return compact_json(merged)


def media_body(message: pb.Message, kind: str, width_key: str, height_key: str) -> Any:
    """The body (v1) / attachment (v2) of a media or location message.

    The APIs differ only in the image/video size keys: v1 `w`/`h`, v2 `width`/`height`.
    """
    if kind == "image":
        image = message.image
        return {
            "name": image.name,
            "md5": image.md5,
            "url": image.url,
            "ext": image.format,
            width_key: image.width,
            height_key: image.height,
            "size": image.size_bytes,
        }
    if kind == "audio":
        audio = message.audio
        return {
            "dur": audio.duration_ms,
            "md5": audio.md5,
            "url": audio.url,
            "ext": audio.format,
            "size": audio.size_bytes,
        }
    if kind == "video":
        video = message.video
        return {
            "dur": video.duration_ms,
            "md5": video.md5,
            "url": video.url,
            width_key: video.width,
            height_key: video.height,
            "ext": video.format,
            "size": video.size_bytes,
        }
    if kind == "location":
        location = message.location
        return {"title": location.title, "lng": location.longitude, "lat": location.latitude}
    if kind == "file":
        file = message.file
        return {
            "name": file.name,
            "md5": file.md5,
            "url": file.url,
            "ext": file.format,
            "size": file.size_bytes,
        }
    raise ValueError(f"not a media kind: {kind!r}")


class YunxinTranslator(Translator):
    """The parts of a Yunxin translator both APIs share."""

    trace_header: ClassVar[str]
    """Header carrying the per-chunk trace id the vendor de-duplicates on (vendors.md §9)."""
    content_type: ClassVar[str]
    extension_max_chars: ClassVar[int | None]
    """Cap on message.extension, when the API documents one."""

    def __init__(self, credentials: Mapping[str, Any]) -> None:
        super().__init__(credentials)
        self._app_key = str(credentials["app_key"])
        self._app_secret = str(credentials["app_secret"])

    def validate(
        self,
        request: pb.BatchSendRequest,
        recipient_ids: Sequence[str] | None = None,
        census: IdCensus | None = None,
    ) -> list[FieldViolation]:
        # An empty sender, options and sub-types the API cannot carry are refused by
        # api.validate from the spec.
        problems = message_violations(request)
        message, options = request.message, request.options
        kind = message.WhichOneof("content")
        # The body cannot be encoded before the message's own problems are fixed.
        if not problems and kind not in (None, "text", "tip"):
            attachment = self.attachment_text(message)
            if java_len(attachment) > ATTACHMENT_MAX_CHARS:
                field = "message.custom.data" if kind == "custom" else f"message.{kind}"
                problems.append(
                    FieldViolation(
                        field,
                        f"the vendor body would be {java_len(attachment)} characters;"
                        f" Yunxin allows {ATTACHMENT_MAX_CHARS}",
                    )
                )
        if kind in ("text", "tip"):
            text = getattr(message, kind).text
            if java_len(text) > TEXT_MAX_CHARS:
                problems.append(
                    FieldViolation(
                        f"message.{kind}.text",
                        f"is {java_len(text)} characters; Yunxin allows {TEXT_MAX_CHARS}",
                    )
                )
        elif kind == "custom" and java_len(message.custom.description) > DESCRIPTION_MAX_CHARS:
            problems.append(
                FieldViolation(
                    "message.custom.description",
                    f"is over {DESCRIPTION_MAX_CHARS} characters (Yunxin limit)",
                )
            )
        if self.extension_max_chars is not None and (
            java_len(message.extension) > self.extension_max_chars
        ):
            problems.append(
                FieldViolation(
                    "message.extension",
                    f"is over {self.extension_max_chars} characters ({self.spec.vendor} limit)",
                )
            )
        if options.HasField("push_content") and java_len(options.push_content) > (
            PUSH_CONTENT_MAX_CHARS
        ):
            problems.append(
                FieldViolation(
                    "options.push_content",
                    f"is over {PUSH_CONTENT_MAX_CHARS} characters (Yunxin limit)",
                )
            )
        payload = push_payload_text(options)
        if payload is not None and java_len(payload) > PUSH_PAYLOAD_MAX_CHARS:
            # The title travels inside the payload, so it counts against the same cap.
            has_payload = options.HasField("push_payload")
            field = "options.push_payload" if has_payload else "options.push_title"
            problems.append(
                FieldViolation(
                    field,
                    f"the push payload (title included) is {java_len(payload)} characters;"
                    f" Yunxin allows {PUSH_PAYLOAD_MAX_CHARS}",
                )
            )
        return problems

    @abc.abstractmethod
    def attachment_text(self, message: pb.Message) -> str:
        """The body (legacy) / attachment (v2) of a non-text message, as sent."""

    def headers(self, chunk_key: str, now: float, nonce: str) -> dict[str, str]:
        """Auth headers (fresh per attempt) plus the trace id (the same on every resend)."""
        headers = yunxin_headers(self._app_key, self._app_secret, nonce, now)
        headers["Content-Type"] = self.content_type
        headers[self.trace_header] = trace_id(chunk_key)
        return headers


def trace_id(chunk_key: str) -> str:
    """The chunk's trace id: Yunxin de-duplicates on it, so every resend of the chunk
    carries the same one and different chunks never share one."""
    return derived_trace_id(chunk_key, "yunxin-trace")
