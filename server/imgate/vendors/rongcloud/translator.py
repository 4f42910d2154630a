"""RongCloud private messages: `POST /message/private/publish.json`, a form body with
`toUserId` repeated for each recipient, signed by the App-Key / Nonce / Timestamp /
Signature headers (CONTRACT §12 rule 35; docs/vendor-mapping.md "RongCloud").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final
from urllib.parse import urlencode

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.chars import IdCensus, java_len
from imgate.vendors.base.common import (
    chosen_options,
    compact_json,
    derived_digest,
    derived_trace_id,
    json_object,
    message_violations,
    unsupported_option,
)
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.base.translator import (
    CallResult,
    FieldViolation,
    Translator,
    VendorRequest,
)
from imgate.vendors.rongcloud import rules
from imgate.vendors.rongcloud.answers import parse_answer
from imgate.vendors.rongcloud.content import OBJECT_NAMES, content_of
from imgate.vendors.rongcloud.spec import SPEC

_MAX_LISTED_BAD_IDS: Final = 10

# SendOptions field → (form field, value when true, value when false) (RC-SEND, RC-GO,
# RC-JAVA): integer flags take 0/1, the newer ones true/false.
_FLAGS: Final[Mapping[str, tuple[str, str, str]]] = {
    "history_enabled": ("isPersisted", "1", "0"),
    "unread_enabled": ("isCounted", "1", "0"),
    "sync_to_sender": ("isIncludeSender", "1", "0"),
    "push_enabled": ("disablePush", "false", "true"),
    "read_receipt": ("needReadReceipt", "1", "0"),
}


@dataclass(frozen=True, slots=True)
class RongCloudPrepared:
    """Every form field of a batch but `toUserId`, URL-encoded once."""

    form: str


class RongCloudTranslator(Translator):
    """RongCloud `message/private/publish.json`."""

    spec: ClassVar[VendorSpec] = SPEC

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
        ids = list(request.recipient_ids) if recipient_ids is None else recipient_ids
        census = census or IdCensus.of(ids)
        problems = message_violations(request)
        problems += _id_violations(request.sender_id, ids, census)
        problems += _option_violations(request)
        if problems or request.message.WhichOneof("content") is None:
            return problems  # the content cannot be encoded before these are fixed
        size = len(compact_json(content_of(request.message)).encode())
        if size > rules.MAX_CONTENT_BYTES:
            problems.append(
                FieldViolation(
                    "message",
                    f"the RongCloud content would be {size} bytes; the vendor allows"
                    f" {rules.MAX_CONTENT_BYTES}",
                )
            )
        return problems

    def prepare(self, request: pb.BatchSendRequest) -> RongCloudPrepared:
        message, options = request.message, request.options
        kind = message.WhichOneof("content")
        if kind is None:
            raise ValueError("message has no content")
        chosen = chosen_options(options)
        fields = [
            ("fromUserId", request.sender_id),
            ("objectName", OBJECT_NAMES[kind]),
            ("content", compact_json(content_of(message))),
        ]
        push_content = _push_content(message, options)
        if push_content is not None:
            fields.append(("pushContent", push_content))
        if "push_payload" in chosen:
            fields.append(("pushData", options.push_payload))
        # The title is pushExt's; like the Go SDK, no pushExt for a message with no push.
        if "push_title" in chosen and chosen.get("push_enabled") is not False:
            fields.append(("pushExt", compact_json({"title": options.push_title})))
        for name, (field, when_true, when_false) in _FLAGS.items():
            if name in chosen:
                fields.append((field, when_true if chosen[name] else when_false))
        # Sent only when true, as both official SDKs do.
        if chosen.get("update_conversation") is False:
            fields.append(("disableUpdateLastMsg", "true"))
        return RongCloudPrepared(urlencode(fields))

    def build(
        self,
        prepared: RongCloudPrepared,
        recipients: Sequence[str],
        chunk_key: str,
        now: float,
        nonce: str,
    ) -> VendorRequest:
        timestamp = str(int(now))  # seconds, as every official SDK sends it (RC-AUTH)
        # At most 18 characters (RC-AUTH): 7 bytes of the attempt's nonce, in decimal.
        short_nonce = str(int.from_bytes(derived_digest(nonce, "rongcloud-nonce")[:7], "big"))
        headers = {
            "App-Key": self._app_key,
            "Nonce": short_nonce,
            "Timestamp": timestamp,
            "Signature": rules.signature(self._app_secret, short_nonce, timestamp),
            "Content-Type": rules.FORM_CONTENT_TYPE,
            # The vendor's support traces a call by it (RC-AUTH); the same on every resend
            # of the chunk. Nothing documents a de-duplication on it.
            "X-Request-ID": derived_trace_id(chunk_key, "rongcloud-request-id"),
        }
        to_users = urlencode([("toUserId", recipient) for recipient in recipients])
        return VendorRequest(
            method="POST",
            path=SPEC.path,
            headers=headers,
            body=f"{prepared.form}&{to_users}".encode(),
        )

    def parse(self, recipients: Sequence[str], status: int, body: bytes) -> CallResult:
        return parse_answer(recipients, status, body)


def _push_content(message: pb.Message, options: pb.SendOptions) -> str | None:
    """pushContent: push_content, else a custom message's description (a custom type is
    pushed only with a pushContent, RC-SEND)."""
    if options.HasField("push_content"):
        return options.push_content
    if message.WhichOneof("content") == "custom" and message.custom.description:
        return message.custom.description
    return None


def _id_violations(
    sender: str, recipient_ids: Sequence[str], census: IdCensus
) -> list[FieldViolation]:
    """Ids outside RongCloud's user-id characters (lengths are the spec's id rule, checked
    by api.validate)."""
    problems: list[FieldViolation] = []
    if sender and not rules.USER_ID.fullmatch(sender):
        problems.append(FieldViolation("sender_id", rules.USER_ID_RULE_TEXT))
    if not census.joined or rules.USER_ID.fullmatch(census.joined):
        return problems  # every id is made of the allowed characters (the usual case)
    bad = [i for i, value in enumerate(recipient_ids) if not rules.USER_ID.fullmatch(value)]
    problems += [
        FieldViolation(f"recipient_ids[{i}]", rules.USER_ID_RULE_TEXT)
        for i in bad[:_MAX_LISTED_BAD_IDS]
    ]
    if len(bad) > _MAX_LISTED_BAD_IDS:
        problems.append(
            FieldViolation("recipient_ids", f"{len(bad)} ids have other characters in all")
        )
    return problems


def _option_violations(request: pb.BatchSendRequest) -> list[FieldViolation]:
    """What private publish cannot express beyond the spec's capabilities."""
    message, options = request.message, request.options
    vendor = SPEC.vendor
    problems: list[FieldViolation] = []
    if options.HasField("offline_enabled") and not options.offline_enabled:
        problems.append(
            unsupported_option(
                vendor,
                "offline_enabled",
                "a private message is always kept for offline recipients (only status"
                " messages, another API, are online-only)",
            )
        )
    if options.HasField("push_nick_enabled"):
        problems.append(
            unsupported_option(vendor, "push_nick_enabled", "RongCloud has no sender-name switch")
        )
    if options.HasField("push_title") and java_len(options.push_title) > (
        rules.PUSH_TITLE_MAX_CHARS
    ):
        problems.append(
            FieldViolation(
                "options.push_title",
                f"is over {rules.PUSH_TITLE_MAX_CHARS} characters (RongCloud pushExt.title)",
            )
        )
    kind = message.WhichOneof("content")
    if kind == "tip" and options.HasField("push_enabled") and options.push_enabled:
        problems.append(
            unsupported_option(
                vendor, "push_enabled", "a tip (RC:InfoNtf, the gray-bar notice) is never pushed"
            )
        )
    if (
        kind == "custom"
        and options.HasField("push_enabled")
        and options.push_enabled
        and _push_content(message, options) is None
    ):
        problems.append(
            unsupported_option(
                vendor,
                "push_enabled",
                "a custom message is pushed only with push text: set push_content or"
                " custom.description",
            )
        )
    if kind == "custom" and message.extension:
        data = json_object(message.custom.data)
        if data is not None and "extra" in data:
            problems.append(
                FieldViolation(
                    "message.extension",
                    "not supported on rongcloud with custom data that has an `extra` member:"
                    " the extension travels as the content's `extra`",
                )
            )
    return problems
