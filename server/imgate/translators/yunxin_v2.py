"""Yunxin v2 API batch send: `POST /im/v2/conversations/messages` with a JSON body
(vendors.md §4.2, §7.2; docs/vendor-mapping.md).

`message.message_client_id` is not sent: whether the batch API accepts one client id for
all receivers, and whether it de-duplicates on it, is unknown (vendors.md §14.4), the
official Java SDK's batch request has no such field, and the trace header already carries
per-chunk de-duplication material.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from imgate.translators._base import (
    CallResult,
    Disposition,
    RecipientResult,
    VendorLimits,
    VendorRequest,
    classify_http_status,
    unreadable_answer,
)
from imgate.translators._common import (
    as_int,
    chosen_options,
    compact_json,
    json_object,
    load_answer,
    short,
)
from imgate.translators._yunxin import (
    MESSAGE_TYPES,
    RECIPIENT_REASONS,
    SUCCESS_CODE,
    YunxinTranslator,
    classify,
    media_body,
    push_payload_text,
)
from imgate.v1 import gateway_pb2 as pb

EXTENSION_MAX_CHARS: Final = 1024

# SendOptions field → the `message_config` keys it sets (vendor-mapping.md "Options").
_MESSAGE_CONFIG_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "offline_enabled": ("offline_enabled",),
    "history_enabled": ("history_enabled", "roaming_enabled"),
    "unread_enabled": ("unread_enabled",),
    "sync_to_sender": ("mutil_sync_enabled",),  # sic: the vendor's spelling
    "update_conversation": ("conversation_update_enabled",),
}
# online_only turns these off; applied last so it wins over the individual switches.
_ONLINE_ONLY_OFF: Final = ("offline_enabled", "history_enabled", "roaming_enabled")

# The two official SDKs disagree on the key of a failed_list item (vendors.md §7.2).
_FAILED_ACCOUNT_KEYS: Final = ("account_id", "receiver_id")


@dataclass(frozen=True, slots=True)
class YunxinV2Prepared:
    """The JSON body of a batch without `receiver_ids`, encoded."""

    body_rest: bytes
    """The body object's members after the opening brace, closing brace included."""


class YunxinV2Translator(YunxinTranslator):
    """NetEase Yunxin v2 batch P2P send."""

    vendor: ClassVar[str] = "yunxin_v2"
    path: ClassVar[str] = "/im/v2/conversations/messages"
    # The batch category's numbers are not published (vendors.md §6, §14.1-2): 100 per
    # call as the current doc and both SDKs say, and v1's documented 120 calls/min with a
    # one-minute block as a conservative default until the plan's numbers are configured.
    default_limits: ClassVar[VendorLimits] = VendorLimits(
        recipients_per_call=100,
        call_limit=120,
        call_window_s=60.0,
        recipient_limit=0,
        recipient_window_s=60.0,
        block_s=60.0,
    )
    trace_header: ClassVar[str] = "X-custom-traceid"
    content_type: ClassVar[str] = "application/json"
    extension_max_chars: ClassVar[int | None] = EXTENSION_MAX_CHARS

    def prepare(self, request: pb.BatchSendRequest) -> YunxinV2Prepared:
        message, options = request.message, request.options
        doc: dict[str, Any] = {"sender_id": request.sender_id, "message": _message(message)}
        chosen = chosen_options(options)
        message_config: dict[str, bool] = {}
        for field, keys in _MESSAGE_CONFIG_KEYS.items():
            if field in chosen:
                for key in keys:
                    message_config[key] = bool(chosen[field])
        if options.online_only:
            for key in _ONLINE_ONLY_OFF:
                message_config[key] = False
        if message_config:
            doc["message_config"] = message_config
        push_config: dict[str, Any] = {}
        if "push_enabled" in chosen:
            push_config["push_enabled"] = options.push_enabled
        if "push_content" in chosen:
            push_config["push_content"] = options.push_content
        payload = push_payload_text(options)
        if payload is not None:
            push_config["push_payload"] = payload  # JSON text, as the API types it
        if push_config:
            doc["push_config"] = push_config
        if options.skip_moderation:
            doc["antispam_config"] = {"antispam_enabled": False}
        if message.extension:
            doc["extension"] = message.extension
        return YunxinV2Prepared(compact_json(doc).encode()[1:])

    def build(
        self,
        prepared: YunxinV2Prepared,
        recipients: Sequence[str],
        chunk_key: str,
        now: float,
        nonce: str,
    ) -> VendorRequest:
        receivers = compact_json(list(recipients)).encode()
        return VendorRequest(
            method="POST",
            path=self.path,
            headers=self.headers(chunk_key, now, nonce),
            body=b'{"receiver_ids":' + receivers + b"," + prepared.body_rest,
        )

    def parse(self, recipients: Sequence[str], status: int, body: bytes) -> CallResult:
        verdict = classify_http_status(recipients, status)
        if verdict is not None:
            return verdict
        answer = load_answer(body)
        if answer is None:
            return unreadable_answer("not a JSON object")
        code = as_int(answer.get("code"))
        if code is None:
            return unreadable_answer("no numeric code")
        if code != SUCCESS_CODE:
            return classify(recipients, code, str(answer.get("msg") or ""))
        data = answer.get("data")
        if not isinstance(data, dict):
            return unreadable_answer("no data object")
        accepted = _accepted(data.get("success_list"))
        failed = _failed(data.get("failed_list"))
        results: list[RecipientResult] = []
        for recipient in recipients:
            if recipient in accepted:
                # Listed as sent, so a message exists, whatever else the answer says.
                results.append(
                    RecipientResult(recipient, True, vendor_message_id=accepted[recipient])
                )
            elif recipient in failed:
                error_code, error_msg = failed[recipient]
                reason = RECIPIENT_REASONS.get(
                    as_int(error_code) or 0, pb.FAILURE_REASON_VENDOR_ERROR
                )
                results.append(
                    RecipientResult(recipient, False, reason, _code_text(error_code), error_msg)
                )
            else:
                # In neither list of a processed call (code 200). The vendor lists failures
                # explicitly, as Tencent's ErrorList and v1's unregister (both counted
                # accepted when absent); failing it instead would invite a resend and so a
                # possible duplicate.
                results.append(
                    RecipientResult(
                        recipient, True, detail="not listed in the answer; counted accepted"
                    )
                )
        return CallResult(Disposition.DONE, tuple(results))


def _message(message: pb.Message) -> dict[str, Any]:
    kind = message.WhichOneof("content")
    if kind is None:
        raise ValueError("message has no content")
    doc: dict[str, Any] = {"message_type": MESSAGE_TYPES[kind]}
    if kind in ("text", "tip"):
        doc["text"] = getattr(message, kind).text
    elif kind == "custom":
        doc["attachment"] = json_object(message.custom.data)
        if message.custom.sub_type > 0:
            doc["sub_type"] = message.custom.sub_type
        if message.custom.description:
            doc["text"] = message.custom.description
    else:
        doc["attachment"] = media_body(message, kind, "width", "height")
    return doc


def _accepted(items: object) -> dict[str, str]:
    """success_list as receiver → message_server_id (text; ids exceed 2**53)."""
    accepted: dict[str, str] = {}
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and isinstance(item.get("receiver_id"), str):
            server_id = item.get("message_server_id")
            accepted[item["receiver_id"]] = "" if server_id is None else str(server_id)
    return accepted


def _failed(items: object) -> dict[str, tuple[object, str]]:
    """failed_list as account → (error_code, error_msg), whichever key names the account."""
    failed: dict[str, tuple[object, str]] = {}
    for item in items if isinstance(items, list) else ():
        if not isinstance(item, dict):
            continue
        for key in _FAILED_ACCOUNT_KEYS:
            account = item.get(key)
            if isinstance(account, str):
                failed[account] = (item.get("error_code"), short(item.get("error_msg")))
                break
    return failed


def _code_text(code: object) -> str:
    return "" if code is None else str(code)
