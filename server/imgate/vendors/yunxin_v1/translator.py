"""Yunxin legacy API batch send: `msg/sendBatchMsg.action`, a form body whose `toAccids`,
`body` and `option` fields are JSON text (vendors.md §4.1, §7.1; docs/vendor-mapping.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final
from urllib.parse import urlencode

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors._yunxin.translator import (
    MESSAGE_TYPES,
    SUCCESS_CODE,
    YunxinTranslator,
    classify,
    media_body,
    push_payload_text,
)
from imgate.vendors.base.common import (
    UnreadableAnswer,
    answer_json,
    as_int,
    chosen_options,
    coded_answer,
    compact_json,
)
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.base.translator import (
    AcceptedAlike,
    CallResult,
    Disposition,
    RecipientResult,
    VendorRequest,
    uncertain_all,
)
from imgate.vendors.yunxin_v1.spec import SPEC

RETURN_IDS_RECIPIENTS_PER_CALL: Final = 100
"""toAccids cap when `returnMsgid=true` (vendors.md §4.1)."""

# SendOptions field → the `option` keys it sets (vendor-mapping.md "Options").
_OPTION_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "push_enabled": ("push",),
    "offline_enabled": ("persistent",),
    # Cloud history only: roaming (sync to the recipient's other devices) is a different
    # behaviour the API cannot leave out of "history" (issue 13.3).
    "history_enabled": ("history",),
    "unread_enabled": ("badge",),
    "sync_to_sender": ("sendersync",),
    "update_conversation": ("sessionUpdate",),
    "push_nick_enabled": ("needPushNick",),
}
# online_only turns these off: no offline storage, history, roaming or unread badge.
_ONLINE_ONLY_OFF: Final = ("persistent", "history", "roam", "badge")


@dataclass(frozen=True, slots=True)
class YunxinV1Prepared:
    """The form fields of a batch except `toAccids`, already URL-encoded."""

    form: str
    return_message_ids: bool


class YunxinV1Translator(YunxinTranslator):
    """NetEase Yunxin legacy (nimserver) batch P2P send."""

    spec: ClassVar[VendorSpec] = SPEC
    trace_header: ClassVar[str] = "RequestId"
    content_type: ClassVar[str] = "application/x-www-form-urlencoded;charset=utf-8"
    extension_max_chars: ClassVar[int | None] = None  # plan-dependent (vendors.md §14.8)

    def attachment_text(self, message: pb.Message) -> str:
        kind = message.WhichOneof("content")
        if kind == "custom":
            return message.custom.data  # a JSON object (validated), passed as is
        return compact_json(media_body(message, str(kind), "w", "h"))

    def prepare(self, request: pb.BatchSendRequest) -> YunxinV1Prepared:
        message, options = request.message, request.options
        kind = message.WhichOneof("content")
        if kind is None:
            raise ValueError("message has no content")
        fields = {"fromAccid": request.sender_id, "type": str(MESSAGE_TYPES[kind])}
        if kind in ("text", "tip"):
            fields["body"] = compact_json({"msg": getattr(message, kind).text})
        else:
            fields["body"] = self.attachment_text(message)
            if kind == "custom" and message.custom.description:
                fields["msgDesc"] = message.custom.description
        option = _option(options)
        if option:
            fields["option"] = compact_json(option)
        if options.HasField("push_content"):
            fields["pushcontent"] = options.push_content
        payload = push_payload_text(options)
        if payload is not None:
            fields["payload"] = payload
        if message.extension:
            fields["ext"] = message.extension
        if options.skip_moderation:
            fields["useYidun"] = "0"  # the only meaningful value: skip moderation
        if options.HasField("return_message_ids"):
            fields["returnMsgid"] = "true" if options.return_message_ids else "false"
        return YunxinV1Prepared(urlencode(fields), options.return_message_ids)

    def recipients_per_call(self, prepared: YunxinV1Prepared, configured: int) -> int:
        if prepared.return_message_ids:
            return min(configured, RETURN_IDS_RECIPIENTS_PER_CALL)
        return configured

    def build(
        self,
        prepared: YunxinV1Prepared,
        recipients: Sequence[str],
        chunk_key: str,
        now: float,
        nonce: str,
    ) -> VendorRequest:
        to_accids = urlencode({"toAccids": compact_json(list(recipients))})
        return VendorRequest(
            method="POST",
            path=SPEC.path,
            headers=self.headers(chunk_key, now, nonce),
            body=f"{prepared.form}&{to_accids}".encode(),
        )

    def parse(self, recipients: Sequence[str], status: int, body: bytes) -> CallResult:
        read = coded_answer(recipients, status, body, SPEC, "code")
        if isinstance(read, CallResult):
            return read
        answer, code = read.fields, read.code
        if code != SUCCESS_CODE:
            return classify(recipients, code, str(answer.get("desc") or ""))
        # The page types both fields as "String" holding JSON, its example as raw JSON:
        # accept either. Anything else does not account for the call (rule 24).
        try:
            unregister = _decoded(answer.get("unregister"), list)
            msgids = _decoded(answer.get("msgids"), dict)
        except UnreadableAnswer as exc:
            return uncertain_all(f"malformed unregister/msgids: {exc}")
        wanted = set(recipients)
        if not all(isinstance(account, str) and account in wanted for account in unregister):
            return uncertain_all("unregister names accounts that are not in the call")
        if not all(
            account in wanted and isinstance(value, int | str) and not isinstance(value, bool)
            for account, value in msgids.items()
        ):
            return uncertain_all("msgids does not match the call's recipients")
        timetag = answer.get("timetag")
        time_ms = 0 if timetag is None else as_int(timetag)
        if time_ms is None or time_ms < 0:
            return uncertain_all("timetag is not a timestamp")
        not_registered = set(unregister)
        if not_registered & msgids.keys():
            return uncertain_all("an account is both unregistered and given a message id")
        # One timetag for the call: the accepted share it; only the unregistered and
        # those given a message id differ.
        exceptions = {
            position: RecipientResult(
                recipient,
                False,
                pb.FAILURE_REASON_RECIPIENT_NOT_FOUND,
                detail="account not registered (listed in unregister)",
            )
            if recipient in not_registered
            else RecipientResult(
                recipient,
                True,
                vendor_message_id=_message_id(msgids, recipient),
                vendor_time_ms=time_ms,
            )
            for position, recipient in (enumerate(recipients) if unregister or msgids else ())
            if recipient in not_registered or recipient in msgids
        }
        shared = RecipientResult("", True, vendor_time_ms=time_ms)
        return CallResult(Disposition.DONE, AcceptedAlike(recipients, shared, exceptions))


def _option(options: pb.SendOptions) -> dict[str, bool]:
    chosen = chosen_options(options)
    option: dict[str, bool] = {}
    for field, keys in _OPTION_KEYS.items():
        if field in chosen:
            for key in keys:
                option[key] = bool(chosen[field])
    if options.online_only:
        for key in _ONLINE_ONLY_OFF:
            option[key] = False
    return option


def _decoded(value: object, kind: type[list[Any]] | type[dict[str, Any]]) -> Any:
    """An answer field as `kind`: absent → empty, JSON text → parsed; raises
    UnreadableAnswer when it is neither."""
    if value is None:
        return kind()
    if isinstance(value, str):
        value = answer_json(value)
    if not isinstance(value, kind):
        raise UnreadableAnswer(f"not a JSON {'array' if kind is list else 'object'}")
    return value


def _message_id(msgids: Mapping[str, Any], recipient: str) -> str:
    value = msgids.get(recipient)
    return "" if value is None else str(value)
