"""Yunxin v2 API batch send: `POST /im/v2/conversations/messages` with a JSON body
(vendors.md §4.2, §7.2; docs/vendor-mapping.md).

`message.message_client_id` is derived from the chunk key, as the trace header is: a
second de-duplication handle that stays the same on every resend of the chunk (the Go SDK
sends it in batch requests, vendors.md §4.2). Whether the vendor de-duplicates on it is
not documented (§14.4), so no resend relies on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors._yunxin.translator import (
    MESSAGE_TYPES,
    RECIPIENT_REASONS,
    SUCCESS_CODE,
    V2_CODES,
    YunxinTranslator,
    classify,
    media_body,
    push_payload_text,
)
from imgate.vendors.base.common import (
    as_int,
    chosen_options,
    coded_answer,
    compact_json,
    derived_trace_id,
    json_object,
    short,
)
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.base.translator import (
    CallResult,
    Disposition,
    RecipientResult,
    VendorRequest,
    names_rate_refusal,
    recipient_verdict,
    uncertain_all,
    uncertain_result,
    unreadable_answer,
)
from imgate.vendors.yunxin_v2.spec import SPEC

EXTENSION_MAX_CHARS: Final = 1024

# SendOptions field → the `message_config` keys it sets (vendor-mapping.md "Options").
_MESSAGE_CONFIG_KEYS: Final[Mapping[str, tuple[str, ...]]] = {
    "offline_enabled": ("offline_enabled",),
    "history_enabled": ("history_enabled",),  # not roaming: another behaviour
    "unread_enabled": ("unread_enabled",),
    "sync_to_sender": ("mutil_sync_enabled",),  # sic: the vendor's spelling
    "update_conversation": ("conversation_update_enabled",),
}
# online_only turns these off: no offline storage, history, roaming or unread count.
_ONLINE_ONLY_OFF: Final = (
    "offline_enabled",
    "history_enabled",
    "roaming_enabled",
    "unread_enabled",
)

# The two official SDKs disagree on the key of a failed_list item (vendors.md §7.2).
_FAILED_ACCOUNT_KEYS: Final = ("account_id", "receiver_id")


@dataclass(frozen=True, slots=True)
class YunxinV2Prepared:
    """The JSON body of a batch without `receiver_ids`, encoded."""

    message_rest: bytes
    """The message object's members after message_client_id, closing brace included."""
    body_rest: bytes
    """The body object's members after `message`, closing brace included."""


class YunxinV2Translator(YunxinTranslator):
    """NetEase Yunxin v2 batch P2P send."""

    spec: ClassVar[VendorSpec] = SPEC
    trace_header: ClassVar[str] = "X-custom-traceid"
    content_type: ClassVar[str] = "application/json"
    extension_max_chars: ClassVar[int | None] = EXTENSION_MAX_CHARS

    def attachment_text(self, message: pb.Message) -> str:
        return compact_json(_message(message)["attachment"])

    def prepare(self, request: pb.BatchSendRequest) -> YunxinV2Prepared:
        message, options = request.message, request.options
        doc: dict[str, Any] = {"sender_id": request.sender_id}
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
        if "push_nick_enabled" in chosen:
            push_config["push_nick_enabled"] = options.push_nick_enabled
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
        return YunxinV2Prepared(
            compact_json(_message(message)).encode()[1:], compact_json(doc).encode()[1:]
        )

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
            path=SPEC.path,
            headers=self.headers(chunk_key, now, nonce),
            body=b"".join(
                (
                    b'{"receiver_ids":',
                    receivers,
                    b',"message":{"message_client_id":"',
                    message_client_id(chunk_key).encode(),
                    b'",',
                    prepared.message_rest,
                    b",",
                    prepared.body_rest,
                )
            ),
        )

    def parse(self, recipients: Sequence[str], status: int, body: bytes) -> CallResult:
        read = coded_answer(recipients, status, body, SPEC, "code")
        if isinstance(read, CallResult):
            return read
        answer, code = read.fields, read.code
        if code != SUCCESS_CODE:
            return classify(recipients, code, str(answer.get("msg") or ""), V2_CODES)
        data = answer.get("data")
        if not isinstance(data, dict):
            return unreadable_answer("no data object")
        wanted = set(recipients)
        accepted = _accepted(data.get("success_list"), wanted)
        failed = _failed(data.get("failed_list"), wanted)
        if accepted is None or failed is None or accepted.keys() & failed.keys():
            # Wrong types, accounts that are not in the call, or one account in both
            # lists: the answer does not account for the call (CONTRACT §8 rule 24).
            return uncertain_all("success_list/failed_list do not match the call's recipients")
        results: list[RecipientResult] = []
        for recipient in recipients:
            if recipient in accepted:
                server_id, create_time = accepted[recipient]
                results.append(
                    RecipientResult(
                        recipient, True, vendor_message_id=server_id, vendor_time_ms=create_time
                    )
                )
            elif recipient in failed:
                error_code, error_msg = failed[recipient]
                results.append(
                    recipient_verdict(
                        recipient,
                        error_code,
                        "" if error_code is None else str(error_code),
                        error_msg,
                        V2_CODES,
                        RECIPIENT_REASONS,
                    )
                )
            else:
                # In neither list of a processed call: the vendor may or may not have sent
                # it; only the recipient's client knows.
                results.append(
                    uncertain_result(
                        recipient,
                        pb.FAILURE_REASON_VENDOR_ERROR,
                        detail="not listed in the vendor's answer",
                    )
                )
        return CallResult(
            Disposition.DONE,
            tuple(results),
            rate_refused=names_rate_refusal(V2_CODES, (code for code, _ in failed.values())),
        )


def message_client_id(chunk_key: str) -> str:
    """The chunk's message_client_id: the same on every resend, unique per chunk."""
    return derived_trace_id(chunk_key, "yunxin-v2-client-id")


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


def _accepted(items: object, wanted: set[str]) -> dict[str, tuple[str, int]] | None:
    """success_list as receiver → (message_server_id as text, create_time ms); None when
    it is not a list of items for the call's recipients."""
    if items is None:
        return {}
    if not isinstance(items, list):
        return None
    accepted: dict[str, tuple[str, int]] = {}
    for item in items:
        if not isinstance(item, dict):
            return None
        receiver = item.get("receiver_id")
        server_id = item.get("message_server_id")
        create_time = item.get("create_time", 0)
        create_ms = as_int(create_time) if create_time is not None else 0
        if (
            not isinstance(receiver, str)
            or receiver not in wanted
            or isinstance(server_id, bool)
            or not isinstance(server_id, int | str | None)
            or create_ms is None
        ):
            return None
        # Text: ids exceed 2**53, which JSON clients in other languages cannot hold.
        accepted[receiver] = ("" if server_id is None else str(server_id), max(create_ms, 0))
    return accepted


def _failed(items: object, wanted: set[str]) -> dict[str, tuple[int | None, str]] | None:
    """failed_list as account → (error_code, error_msg), whichever key names the account;
    None when it is not a list of items for the call's recipients."""
    if items is None:
        return {}
    if not isinstance(items, list):
        return None
    failed: dict[str, tuple[int | None, str]] = {}
    for item in items:
        if not isinstance(item, dict):
            return None
        account = next(
            (item[key] for key in _FAILED_ACCOUNT_KEYS if isinstance(item.get(key), str)), None
        )
        if account is None or account not in wanted:
            return None
        failed[account] = (as_int(item.get("error_code")), short(item.get("error_msg")))
    return failed
