"""Emulator of Yunxin's v2 batch P2P send, `POST /im/v2/conversations/messages`.

Checks, each answered as the vendor does (HTTP 200, `{"code": N, "msg": "...", "data": {}}`):
- auth headers as the legacy API (AppKey / Nonce / CurTime ±300 s / CheckSum) → 403;
- rate: accepted calls per sliding window (default 120 / 60 s, the legacy numbers: the v2
  batch category's numbers are unpublished) and a `block_s` block → 416, the documented
  rate code (YX-RATE);
- body: `application/json`, a JSON object; `sender_id` 1-32 chars; `receiver_ids` a
  non-empty array of 1-32-char ids, at most `recipients_per_call` (default 100,
  configurable to the apifox page's 500) else "too many members."; `message` an object
  with `message_type` 0/1/2/3/4/6/10/100, `sub_type` an integer > 0, `text` required for
  text/tip (≤ 5000) and ≤ 500 otherwise, `attachment` required for other types (content
  rules of docs/vendor-mapping.md, ≤ 5000 chars of JSON), `message_client_id` a string;
  `extension` JSON-object text ≤ 1024; `push_config.push_content` ≤ 500,
  `push_payload` JSON-object text ≤ 2048, `route_config.route_environment` ≤ 32,
  `antispam_config.antispam_extension`/`antispam_cheating` JSON ≤ 1024; booleans are
  booleans; `p2p_option.check_friend` required inside `p2p_option`; sender and receiver
  not both no-sense; any of these wrong → 414 naming the field. JSON null = absent.
- sender: unknown → 102404, disabled → 102422, muted → 102421 (IM 2.0 codes).
Answer: `data.success_list` (message_server_id, sender_id, receiver_id, conversation_type 1,
create_time ms, message_type, sub_type and message_client_id when given, text and
attachment with need_message_detail) and, when some recipient is unknown,
`data.failed_list` items `{<failed_list_key>: id, "error_code": 102404, "error_msg": ...}`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from aiohttp import web

from imgate.vendors._yunxin import emulator as yx
from imgate.vendors._yunxin.translator import (
    V2_ACCOUNT_NOT_FOUND,
    V2_SENDER_BANNED,
    V2_SENDER_MUTED,
)
from imgate.vendors.base.checks import NotJson, is_int, java_len, strict_json
from imgate.vendors.base.emulator import Emulator, ParsedCall, VendorError, content_fingerprint
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.yunxin_v2.spec import RECALL, SPEC

JSON_CONTENT_TYPE = "application/json"
# The IM 2.0 family's 6-digit codes (declared on the translator, docs/vendor-mapping.md).
_V2_SENDER_CODES = yx.SenderCodes(V2_ACCOUNT_NOT_FOUND, V2_SENDER_BANNED, V2_SENDER_MUTED)
_MESSAGE_CONFIG_KEYS = (
    "unread_enabled",
    "mutil_sync_enabled",
    "offline_enabled",
    "history_enabled",
    "roaming_enabled",
    "conversation_update_enabled",
)


@dataclass(frozen=True, kw_only=True)
class YunxinV2Settings(yx.YunxinSettings):
    """Yunxin v2 API settings (vendors.md §4.2, §14.1, §14.3)."""

    recipients_per_call: int = SPEC.limits.recipients_per_call
    call_limit: int | None = SPEC.limits.call_limit
    call_window_s: float = SPEC.limits.call_window_s
    block_s: float = SPEC.limits.vendor_block_s
    recall_call_limit: int | None = RECALL.call_limit
    recall_call_window_s: float = RECALL.call_window_s
    recall_block_s: float = RECALL.vendor_block_s
    failed_list_key: Literal["account_id", "receiver_id"] = "account_id"
    """Key naming the account of a failed_list item (Java SDK: account_id; Go: receiver_id)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.failed_list_key not in ("account_id", "receiver_id"):
            raise ValueError("failed_list_key must be 'account_id' or 'receiver_id'")


@dataclass(frozen=True)
class _V2Call(ParsedCall):
    message: Mapping[str, Any]
    need_message_detail: bool


class YunxinV2Emulator(Emulator[YunxinV2Settings, _V2Call]):
    """Yunxin v2 `conversations/messages` (batch P2P send)."""

    spec: ClassVar[VendorSpec] = SPEC
    settings_type: ClassVar[type[YunxinV2Settings]] = YunxinV2Settings
    rate_limit_code: ClassVar[int] = yx.RATE_LIMITED
    internal_error: ClassVar[tuple[int, str]] = yx.INTERNAL_ERROR

    @classmethod
    def default_settings(cls) -> YunxinV2Settings:
        return YunxinV2Settings()

    def authenticate(self, request: web.Request, body: bytes) -> None:
        yx.check_auth(request, self.settings, self.sandbox.clock.wall())

    def error_body(self, code: int, message: str) -> dict[str, Any]:
        return {"code": code, "msg": message, "data": {}}

    def without_failures(self, answer: dict[str, Any]) -> dict[str, Any]:
        data = answer.get("data")
        if not isinstance(data, dict):
            return answer
        return {**answer, "data": {k: v for k, v in data.items() if k != "failed_list"}}

    def parse(self, request: web.Request, body: bytes) -> _V2Call:
        doc = _json_body(request, body)
        settings = self.settings
        sender = yx.check_account_id(doc.get("sender_id"), "sender_id")
        recipients = yx.check_recipient_ids(
            doc.get("receiver_ids"), "receiver_ids", settings.recipients_per_call
        )
        message = _object(doc.get("message"), "message", required=True)
        message_type = yx.check_message_type(message.get("message_type"), "message.message_type")
        sub_type = message.get("sub_type")
        if sub_type is not None and not (is_int(sub_type) and sub_type > 0):
            raise VendorError(yx.PARAM_ERROR, "message.sub_type must be an integer > 0")
        text = message.get("text")
        attachment = message.get("attachment")
        if message_type in yx.TEXT_TYPES:
            yx.check_text(text, "message.text", settings.max_text_chars)
            # The vendor's own example sends an attachment with a text message: tolerated.
            _object(attachment, "message.attachment", required=False)
        else:
            if text is not None:
                yx.check_chars(text, "message.text", 500)
            if attachment is None:
                raise VendorError(yx.PARAM_ERROR, "message.attachment is required")
            yx.check_media(message_type, attachment, "message.attachment")
            attachment_json = json.dumps(attachment, ensure_ascii=False, separators=(",", ":"))
            if java_len(attachment_json) > settings.max_attachment_chars:
                raise VendorError(
                    yx.PARAM_ERROR,
                    f"message.attachment is longer than {settings.max_attachment_chars} characters",
                )
        client_id = message.get("message_client_id")
        if client_id is not None:
            yx.check_chars(client_id, "message.message_client_id", None)

        _check_options(doc)
        yx.check_sender(self.sandbox.accounts, sender, _V2_SENDER_CODES)
        content = {k: v for k, v in message.items() if k != "message_client_id" and v is not None}
        return _V2Call(
            sender=sender,
            recipients=recipients,
            message_type=str(message_type),
            fingerprint=content_fingerprint(content),
            message=message,
            need_message_detail=doc.get("need_message_detail") is True,
        )

    def process(self, call: _V2Call, call_id: int) -> dict[str, Any]:
        accounts = self.sandbox.accounts
        create_time = int(self.sandbox.clock.wall() * 1000)
        message = call.message
        success_list: list[dict[str, Any]] = []
        failed_list: list[dict[str, Any]] = []
        for recipient in call.unique_recipients():
            if not accounts.exists(recipient):
                failed_list.append(
                    {
                        self.settings.failed_list_key: recipient,
                        "error_code": V2_ACCOUNT_NOT_FOUND,
                        "error_msg": "account not found",
                    }
                )
                continue
            message_server_id = self.sandbox.next_message_id()
            item: dict[str, Any] = {
                "message_server_id": message_server_id,
                "sender_id": call.sender,
                "receiver_id": recipient,
                "conversation_type": 1,
                "create_time": create_time,
                "message_type": message["message_type"],
            }
            for key in ("message_client_id", "sub_type"):
                if message.get(key) is not None:
                    item[key] = message[key]
            if call.need_message_detail:
                for key in ("text", "attachment"):
                    if message.get(key) is not None:
                        item[key] = message[key]
            self.deliver(call, call_id, recipient, str(message_server_id), create_time)
            success_list.append(item)
        data: dict[str, Any] = {"success_list": success_list}
        if failed_list:  # the vendor's example has no failed_list when nothing failed
            data["failed_list"] = failed_list
        return {"code": 200, "msg": "success", "data": data}


def _json_body(request: web.Request, body: bytes) -> dict[str, Any]:
    if request.content_type != JSON_CONTENT_TYPE:
        raise VendorError(yx.PARAM_ERROR, f"Content-Type must be {JSON_CONTENT_TYPE}")
    try:
        doc = strict_json(body.decode("utf-8"))
    except (UnicodeDecodeError, NotJson):
        raise VendorError(yx.PARAM_ERROR, "request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise VendorError(yx.PARAM_ERROR, "request body must be a JSON object")
    return doc


def _object(value: object, field: str, *, required: bool) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise VendorError(yx.PARAM_ERROR, f"{field} must be a JSON object")
    return value


def _booleans(doc: Mapping[str, Any], keys: tuple[str, ...], prefix: str) -> None:
    for key in keys:
        if doc.get(key) is not None and not isinstance(doc[key], bool):
            raise VendorError(yx.PARAM_ERROR, f"{prefix}{key} must be true or false")


def _optional_chars(doc: Mapping[str, Any], key: str, prefix: str, max_chars: int) -> None:
    if doc.get(key) is not None:
        yx.check_chars(doc[key], prefix + key, max_chars)


def _optional_json(doc: Mapping[str, Any], key: str, prefix: str, max_chars: int) -> None:
    if doc.get(key) is not None:
        yx.check_json_object_text(doc[key], prefix + key, max_chars)


def _check_options(doc: Mapping[str, Any]) -> None:
    """Option objects and top-level flags (vendors.md §4.2)."""
    _booleans(doc, ("sender_no_sense", "receiver_no_sense", "need_message_detail"), "")
    if doc.get("sender_no_sense") is True and doc.get("receiver_no_sense") is True:
        raise VendorError(yx.PARAM_ERROR, "sender and receiver cannot both be no-sense")
    # Not JSON text (as in the apifox mock's "officia labore ex sit ut") is refused: the
    # field is documented as JSON.
    _optional_json(doc, "extension", "", 1024)

    message_config = _object(doc.get("message_config"), "message_config", required=False)
    _booleans(message_config, _MESSAGE_CONFIG_KEYS, "message_config.")

    route_config = _object(doc.get("route_config"), "route_config", required=False)
    _booleans(route_config, ("route_enabled",), "route_config.")
    _optional_chars(route_config, "route_environment", "route_config.", 32)

    push = _object(doc.get("push_config"), "push_config", required=False)
    _booleans(push, ("push_enabled", "push_nick_enabled", "push_forcepush_all"), "push_config.")
    _optional_chars(push, "push_content", "push_config.", 500)
    _optional_chars(push, "push_forcepush_content", "push_config.", 500)
    _optional_json(push, "push_payload", "push_config.", 2048)
    forcepush_ids = push.get("push_forcepush_ids")
    if forcepush_ids is not None and not (
        isinstance(forcepush_ids, list) and all(isinstance(i, str) for i in forcepush_ids)
    ):
        raise VendorError(yx.PARAM_ERROR, "push_config.push_forcepush_ids must be an array of ids")

    antispam = _object(doc.get("antispam_config"), "antispam_config", required=False)
    _booleans(antispam, ("antispam_enabled",), "antispam_config.")
    if antispam.get("antispam_business_id") is not None:
        yx.check_chars(
            antispam["antispam_business_id"], "antispam_config.antispam_business_id", None
        )
    _optional_json(antispam, "antispam_extension", "antispam_config.", 1024)
    _optional_json(antispam, "antispam_cheating", "antispam_config.", 1024)

    if doc.get("p2p_option") is not None:
        p2p = _object(doc["p2p_option"], "p2p_option", required=True)
        if not isinstance(p2p.get("check_friend"), bool):
            raise VendorError(yx.PARAM_ERROR, "p2p_option.check_friend is required (true or false)")
