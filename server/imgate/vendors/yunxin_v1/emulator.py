"""Emulator of Yunxin's legacy batch send, `POST /nimserver/msg/sendBatchMsg.action`.

Checks, each answered as the vendor does (HTTP 200, `{"code": N, "desc": "..."}`):
- auth headers AppKey / Nonce (1-128) / CurTime (±300 s) / CheckSum (lowercase hex SHA1
  of AppSecret+Nonce+CurTime) → 403;
- rate: accepted calls per sliding window (120 / 60 s); the call that would exceed it and
  every call for `block_s` (60 s) after it → 416 (the block is not extended);
- body: form-urlencoded UTF-8; `fromAccid` 1-32 chars; `toAccids` a non-empty JSON array
  of 1-32-char ids, at most 500 (100 with `returnMsgid=true`, else "too many members.");
  `type` 0/1/2/3/4/6/10/100; `body` a JSON object of that type (text/tip `msg` ≤ 5000,
  media `url`, location `lat`/`lng`, custom non-empty; other types' body ≤ 5000 chars);
  `msgDesc` ≤ 500; `option` a JSON object of booleans; `pushcontent` ≤ 500; `payload`
  JSON ≤ 2048; `ext` JSON; `yidunAntiCheating`/`yidunAntiSpamExt` JSON ≤ 1024;
  `useYidun` an integer; `returnMsgid` true/false; `env` ≤ 32; `msgSenderNoSense` 0/1;
  any of these wrong → 414 naming the field;
- sender: unknown → 404, disabled → 422, muted → 423.
Answer: `{"code":200,"unregister":[...],"timetag":ms,"msgids":{accid: id}}` (msgids only
with returnMsgid=true, for registered recipients); duplicates are delivered once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from aiohttp import web

from imgate.vendors._yunxin import emulator as yx
from imgate.vendors.base.checks import NotJson, strict_json
from imgate.vendors.base.emulator import Emulator, ParsedCall, VendorError, content_fingerprint
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.yunxin_v1.spec import RECALL, SPEC

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
_OPTION_KEYS = frozenset(
    {
        "roam",
        "history",
        "sendersync",
        "push",
        "route",
        "badge",
        "needPushNick",
        "persistent",
        "sessionUpdate",
    }
)


@dataclass(frozen=True, kw_only=True)
class YunxinV1Settings(yx.YunxinSettings):
    """Yunxin legacy API settings (vendors.md §4.1, §5, §6)."""

    recipients_per_call: int = SPEC.limits.recipients_per_call
    call_limit: int | None = SPEC.limits.call_limit
    call_window_s: float = SPEC.limits.call_window_s
    block_s: float = SPEC.limits.vendor_block_s
    recipients_per_call_with_msgid: int = 100
    """Cap on toAccids when `returnMsgid=true`."""
    recall_call_limit: int | None = RECALL.call_limit
    recall_call_window_s: float = RECALL.call_window_s
    recall_block_s: float = RECALL.vendor_block_s


@dataclass(frozen=True)
class _V1Call(ParsedCall):
    return_msgid: bool


class YunxinV1Emulator(Emulator[YunxinV1Settings, _V1Call]):
    """Yunxin legacy `msg/sendBatchMsg.action`."""

    spec: ClassVar[VendorSpec] = SPEC
    settings_type: ClassVar[type[YunxinV1Settings]] = YunxinV1Settings
    rate_limit_code: ClassVar[int] = yx.RATE_LIMITED
    internal_error: ClassVar[tuple[int, str]] = yx.INTERNAL_ERROR

    @classmethod
    def default_settings(cls) -> YunxinV1Settings:
        return YunxinV1Settings()

    def authenticate(self, request: web.Request, body: bytes) -> None:
        yx.check_auth(request, self.settings, self.sandbox.clock.wall())

    def error_body(self, code: int, message: str) -> dict[str, Any]:
        return {"code": code, "desc": message}

    def without_failures(self, answer: dict[str, Any]) -> dict[str, Any]:
        return {**answer, "unregister": []} if "unregister" in answer else answer

    def parse(self, request: web.Request, body: bytes) -> _V1Call:
        form = _form_fields(request, body)
        settings = self.settings

        sender = yx.check_account_id(_required(form, "fromAccid"), "fromAccid")
        return_msgid = _boolean(form.get("returnMsgid"), "returnMsgid")
        try:
            to_accids = strict_json(_required(form, "toAccids"))
        except NotJson:
            raise VendorError(yx.PARAM_ERROR, "toAccids must be a JSON array") from None
        cap = (
            min(settings.recipients_per_call, settings.recipients_per_call_with_msgid)
            if return_msgid
            else settings.recipients_per_call
        )
        recipients = yx.check_recipient_ids(to_accids, "toAccids", cap)

        type_text = _required(form, "type")
        if not (type_text.isascii() and type_text.isdigit()):
            raise VendorError(yx.PARAM_ERROR, "type must be an integer")
        message_type = yx.check_message_type(int(type_text), "type")
        body_text = _required(form, "body")
        content = yx.check_json_object_text(body_text, "body", None)
        if message_type in yx.TEXT_TYPES:
            yx.check_text(content.get("msg"), "body.msg", settings.max_text_chars)
        else:
            yx.check_chars(body_text, "body", settings.max_attachment_chars)
            yx.check_media(message_type, content, "body")

        _check_optional_fields(form)
        yx.check_sender(self.sandbox.accounts, sender)
        return _V1Call(
            sender=sender,
            recipients=recipients,
            message_type=str(message_type),
            fingerprint=content_fingerprint({"type": message_type, "body": content}),
            return_msgid=return_msgid,
        )

    def process(self, call: _V1Call, call_id: int) -> dict[str, Any]:
        accounts = self.sandbox.accounts
        unregister: list[str] = []
        msgids: dict[str, int] = {}
        timetag = int(self.sandbox.clock.wall() * 1000)  # the call's: recall.action's too
        for recipient in call.unique_recipients():
            if not accounts.exists(recipient):
                unregister.append(recipient)
                continue
            message_id = self.sandbox.next_message_id()
            self.deliver(call, call_id, recipient, str(message_id), timetag)
            msgids[recipient] = message_id
        answer: dict[str, Any] = {
            "code": 200,
            "unregister": unregister,
            "timetag": timetag,
        }
        if call.return_msgid:
            answer["msgids"] = msgids
        return answer


def _form_fields(request: web.Request, body: bytes) -> dict[str, str]:
    if request.content_type != FORM_CONTENT_TYPE:
        raise VendorError(yx.PARAM_ERROR, f"Content-Type must be {FORM_CONTENT_TYPE}")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise VendorError(yx.PARAM_ERROR, "body is not UTF-8 form data") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)  # the first occurrence wins, as a servlet reads it
    return form


def _required(form: dict[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise VendorError(yx.PARAM_ERROR, f"{name} is required")
    return value


def _boolean(value: str | None, name: str) -> bool:
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise VendorError(yx.PARAM_ERROR, f"{name} must be true or false")
    return lowered == "true"


def _check_optional_fields(form: dict[str, str]) -> None:
    """The optional fields' formats and caps (vendors.md §4.1, §5)."""
    if "msgDesc" in form:
        yx.check_chars(form["msgDesc"], "msgDesc", 500)
    if form.get("option"):
        option = yx.check_json_object_text(form["option"], "option", None)
        for key in _OPTION_KEYS & option.keys():
            if not isinstance(option[key], bool):
                raise VendorError(yx.PARAM_ERROR, f"option.{key} must be true or false")
    if "pushcontent" in form:
        yx.check_chars(form["pushcontent"], "pushcontent", 500)
    if form.get("payload"):
        yx.check_json_object_text(form["payload"], "payload", 2048)
    if form.get("ext"):
        # The cap is plan-dependent (vendors.md §4.1); only the JSON format is checked.
        yx.check_json_object_text(form["ext"], "ext", None)
    for name in ("yidunAntiCheating", "yidunAntiSpamExt"):
        if form.get(name):
            yx.check_json_object_text(form[name], name, 1024)
    if form.get("useYidun") and not _is_integer_text(form["useYidun"]):
        raise VendorError(yx.PARAM_ERROR, "useYidun must be an integer")
    if "env" in form:
        yx.check_chars(form["env"], "env", 32)
    if form.get("msgSenderNoSense") not in (None, "", "0", "1"):
        raise VendorError(yx.PARAM_ERROR, "msgSenderNoSense must be 0 or 1")


def _is_integer_text(text: str) -> bool:
    digits = text.removeprefix("-")
    return digits.isascii() and digits.isdigit()
