"""Emulator of RongCloud's private messages, `POST /message/private/publish.json`.

Refusals are `{"code": N, "errorMessage": "..."}` at the HTTP status of the spec's
refusal_statuses (RC-CODES). Checks, in this order:
- auth headers `App-Key` (or `RC-App-Key`, likewise for the others): missing or not this
  app → 1001; `Nonce` 1-18 characters, `Timestamp` Unix seconds (milliseconds, as the docs
  write it, accepted too) within ±300 s of the server clock, `Signature` the lowercase hex
  SHA-1 of app secret + Nonce + Timestamp → else 1004;
- rate: 6,000 recipients (toUserId as listed) and 6,000 calls per sliding 60 s → 1008
  (HTTP 429), the call not processed, no block;
- body: form-urlencoded UTF-8 (else 1002), not empty (1003); `fromUserId` and every
  `toUserId` 1-64 bytes of [A-Za-z0-9+=_-] → 1002; 1 to 1,000 `toUserId` → 1002;
  `objectName` required, an "RC:" name must be a built-in type, a custom one at most 32
  characters → 1002; `content` required, at most 128 KiB → 1005; a built-in type's content
  a JSON object with the members imgate sends (rules.BUILT_IN_CONTENT) of the right types,
  URLs non-empty, `extra` a string → 1002; a custom type's content any text;
  `isPersisted`/`isCounted`/`isIncludeSender`/`verifyBlacklist`/`contentAvailable`/
  `needReadReceipt` 0 or 1, `disablePush`/`expansion`/`disableUpdateLastMsg` true or
  false, `count` -1..9999, `msgRandom` an integer, `pushExt` a JSON object whose `title`
  is a string of at most 50 characters, `extraContent` (with expansion=true only) a JSON
  object of strings → else 1002.
The sender's account is not checked (the vendor documents no such refusal). Answer:
`{"code":200,"messageUIDs":[{"userId","messageUID"}]}`, one per distinct recipient, an
unregistered one included (it gets nothing: the vendor does not say so, unverified).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from aiohttp import web

from imgate.vendors.base.checks import NotJson, is_int, is_number, java_len, strict_json
from imgate.vendors.base.emulation import VendorSettings
from imgate.vendors.base.emulator import (
    Emulator,
    ParsedCall,
    VendorError,
    content_fingerprint,
)
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.rongcloud import rules
from imgate.vendors.rongcloud.spec import SPEC

_MILLISECONDS_FROM = 10**12
"""A Timestamp this large is in milliseconds (the docs' form); smaller ones are seconds."""
_FLAGS_01 = (
    "isPersisted",
    "isCounted",
    "isIncludeSender",
    "verifyBlacklist",
    "contentAvailable",
    "needReadReceipt",
)
_FLAGS_BOOL = ("disablePush", "expansion", "disableUpdateLastMsg")
_UID_ALPHABET = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"


@dataclass(frozen=True, kw_only=True)
class RongCloudSettings(VendorSettings):
    """RongCloud settings (its spec's limits and sandbox credentials)."""

    credential_fields: ClassVar[tuple[str, ...]] = tuple(SPEC.credential_fields)

    app_key: str = SPEC.sandbox_credentials["app_key"]
    app_secret: str = SPEC.sandbox_credentials["app_secret"]
    recipients_per_call: int = SPEC.limits.recipients_per_call
    call_limit: int | None = SPEC.limits.call_limit
    call_window_s: float = SPEC.limits.call_window_s
    recipient_limit: int | None = SPEC.limits.recipient_limit
    recipient_window_s: float = SPEC.limits.recipient_window_s
    block_s: float = SPEC.limits.vendor_block_s
    max_clock_skew_s: float = 300.0
    """A Signature is valid within this many seconds of its Timestamp, either way (the
    vendor's window is undocumented)."""
    max_content_bytes: int = rules.MAX_CONTENT_BYTES


class RongCloudEmulator(Emulator[RongCloudSettings, ParsedCall]):
    """RongCloud `message/private/publish.json`."""

    spec: ClassVar[VendorSpec] = SPEC
    settings_type: ClassVar[type[RongCloudSettings]] = RongCloudSettings
    rate_limit_code: ClassVar[int] = rules.RATE_LIMITED
    internal_error: ClassVar[tuple[int, str]] = (rules.INTERNAL_ERROR, "Internal logic error.")

    @classmethod
    def default_settings(cls) -> RongCloudSettings:
        return RongCloudSettings()

    def error_body(self, code: int, message: str) -> dict[str, Any]:
        return {"code": code, "errorMessage": message}

    def authenticate(self, request: web.Request, body: bytes) -> None:
        settings = self.settings
        app_key = _header(request, "App-Key")
        if not app_key or not hmac.compare_digest(app_key.encode(), settings.app_key.encode()):
            raise VendorError(rules.APP_SECRET_WRONG, "App-Key is missing or not valid")
        nonce = _header(request, "Nonce")
        if not 1 <= java_len(nonce) <= rules.NONCE_MAX_CHARS:
            raise VendorError(
                rules.SIGNATURE_FAILED, f"Nonce must be 1 to {rules.NONCE_MAX_CHARS} characters"
            )
        timestamp = _header(request, "Timestamp")
        if not (timestamp.isascii() and timestamp.isdigit()):
            raise VendorError(rules.SIGNATURE_FAILED, "Timestamp must be a Unix time")
        seconds = int(timestamp)
        if seconds >= _MILLISECONDS_FROM:
            seconds //= 1000
        if abs(self.sandbox.clock.wall() - seconds) > settings.max_clock_skew_s:
            raise VendorError(rules.SIGNATURE_FAILED, "Timestamp is too far from the server time")
        expected = rules.signature(settings.app_secret, nonce, timestamp)
        if not hmac.compare_digest(_header(request, "Signature").encode(), expected.encode()):
            raise VendorError(rules.SIGNATURE_FAILED, "Signature verification failed")

    def parse(self, request: web.Request, body: bytes) -> ParsedCall:
        settings = self.settings
        form, to_user_ids = _form(request, body)
        sender = _user_id(_required(form, "fromUserId"), "fromUserId")
        if not to_user_ids:
            raise VendorError(rules.PARAMETER_ERROR, "toUserId is required")
        if len(to_user_ids) > settings.recipients_per_call:
            raise VendorError(
                rules.PARAMETER_ERROR,
                f"toUserId: at most {settings.recipients_per_call} users per call",
            )
        recipients = tuple(_user_id(value, "toUserId") for value in to_user_ids)
        object_name = _required(form, "objectName")
        problem = rules.object_name_problem(object_name)
        if problem:
            raise VendorError(rules.PARAMETER_ERROR, f"objectName {problem}")
        text = _required(form, "content")
        if len(text.encode()) > settings.max_content_bytes:
            raise VendorError(
                rules.PARAMETER_TOO_LONG, f"content is over {settings.max_content_bytes} bytes"
            )
        content = _content(object_name, text)
        _check_optional_fields(form)
        return ParsedCall(
            sender=sender,
            recipients=recipients,
            message_type=object_name,
            fingerprint=content_fingerprint({"objectName": object_name, "content": content}),
        )

    def process(self, call: ParsedCall, call_id: int) -> dict[str, Any]:
        accounts = self.sandbox.accounts
        entries = []
        for recipient in call.unique_recipients():
            uid = _message_uid(self.sandbox.next_message_id())
            if accounts.exists(recipient):
                self.deliver(call, call_id, recipient, uid)
            entries.append({"userId": recipient, "messageUID": uid})
        return {"code": rules.SUCCESS, "messageUIDs": entries}


def _header(request: web.Request, name: str) -> str:
    """A signing header, or its `RC-` form for platforms that filter headers (RC-AUTH)."""
    return request.headers.get(name) or request.headers.get(f"RC-{name}") or ""


def _form(request: web.Request, body: bytes) -> tuple[dict[str, str], list[str]]:
    """The form's fields (the first of each name) and every toUserId, in order."""
    if request.content_type != rules.FORM_CONTENT_TYPE:
        raise VendorError(rules.PARAMETER_ERROR, f"Content-Type must be {rules.FORM_CONTENT_TYPE}")
    if not body:
        raise VendorError(rules.NO_POST_DATA, "no POST data")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise VendorError(rules.PARAMETER_ERROR, "body is not UTF-8 form data") from None
    form: dict[str, str] = {}
    to_user_ids: list[str] = []
    for name, value in pairs:
        if name == "toUserId":
            to_user_ids.append(value)
        else:
            form.setdefault(name, value)
    return form, to_user_ids


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise VendorError(rules.PARAMETER_ERROR, f"{name} is required")
    return value


def _user_id(value: str, field: str) -> str:
    if not (rules.USER_ID.fullmatch(value) and SPEC.id_rule.fits(value)):
        raise VendorError(
            rules.PARAMETER_ERROR,
            f"{field} must be 1 to {SPEC.id_rule.max_length} bytes of letters, digits, + = - _",
        )
    return value


def _content(object_name: str, text: str) -> Any:
    """The content of a built-in type checked against its members; a custom type's as is."""
    members = rules.BUILT_IN_CONTENT.get(object_name)
    if members is None:
        return text  # custom types "may use any format, not only JSON" (RC-SEND)
    try:
        content = strict_json(text)
    except NotJson:
        raise VendorError(rules.PARAMETER_ERROR, "content must be JSON") from None
    if not isinstance(content, dict):
        raise VendorError(rules.PARAMETER_ERROR, "content must be a JSON object")
    for member, kind in members.items():
        value = content.get(member)
        if not _typed(value, kind):
            raise VendorError(rules.PARAMETER_ERROR, f"content.{member} is missing or not a {kind}")
        if member in rules.URL_MEMBERS and not value:
            raise VendorError(rules.PARAMETER_ERROR, f"content.{member} must not be empty")
        if kind == rules.INTEGER and is_int(value) and value < 0:
            raise VendorError(rules.PARAMETER_ERROR, f"content.{member} must not be negative")
    _check_extra_and_location(object_name, content)
    return content


def _check_extra_and_location(object_name: str, content: Mapping[str, Any]) -> None:
    if "extra" in content and not isinstance(content["extra"], str):
        raise VendorError(rules.PARAMETER_ERROR, "content.extra must be a string")
    if object_name == "RC:LBSMsg" and not (
        -90 <= content["latitude"] <= 90 and -180 <= content["longitude"] <= 180
    ):
        raise VendorError(rules.PARAMETER_ERROR, "content.latitude/longitude out of range")


def _typed(value: object, kind: str) -> bool:
    if kind == rules.STRING:
        return isinstance(value, str)
    if kind == rules.INTEGER:
        return is_int(value)
    return is_number(value)


def _check_optional_fields(form: Mapping[str, str]) -> None:
    """The optional fields' formats (RC-SEND, RC-GO, RC-JAVA)."""
    for name in _FLAGS_01:
        if name in form and form[name] not in ("0", "1"):
            raise VendorError(rules.PARAMETER_ERROR, f"{name} must be 0 or 1")
    for name in _FLAGS_BOOL:
        if name in form and form[name] not in ("true", "false"):
            raise VendorError(rules.PARAMETER_ERROR, f"{name} must be true or false")
    if "count" in form and not (_is_integer(form["count"]) and -1 <= int(form["count"]) <= 9999):
        raise VendorError(rules.PARAMETER_ERROR, "count must be -1 to 9999")
    if "msgRandom" in form and not _is_integer(form["msgRandom"]):
        raise VendorError(rules.PARAMETER_ERROR, "msgRandom must be an integer")
    if form.get("pushExt"):
        push_ext = _json_object(form["pushExt"], "pushExt")
        title = push_ext.get("title")
        if "title" in push_ext and not (
            isinstance(title, str) and java_len(title) <= rules.PUSH_TITLE_MAX_CHARS
        ):
            raise VendorError(
                rules.PARAMETER_ERROR,
                f"pushExt.title must be a string of at most {rules.PUSH_TITLE_MAX_CHARS}"
                " characters",
            )
    if form.get("extraContent"):
        if form.get("expansion") != "true":
            raise VendorError(rules.PARAMETER_ERROR, "extraContent needs expansion=true")
        extra = _json_object(form["extraContent"], "extraContent")
        if not all(isinstance(value, str) for value in extra.values()):
            raise VendorError(rules.PARAMETER_ERROR, "extraContent values must be strings")


def _json_object(text: str, field: str) -> dict[str, Any]:
    try:
        value = strict_json(text)
    except NotJson:
        raise VendorError(rules.PARAMETER_ERROR, f"{field} must be JSON") from None
    if not isinstance(value, dict):
        raise VendorError(rules.PARAMETER_ERROR, f"{field} must be a JSON object")
    return value


def _is_integer(text: str) -> bool:
    digits = text.removeprefix("-")
    return digits.isascii() and digits.isdigit()


def _message_uid(number: int) -> str:
    """A messageUID: four dash-separated groups of four characters, like the ids in the
    vendor's client docs (the exact alphabet is unverified)."""
    chars = []
    for _ in range(16):
        number, digit = divmod(number, len(_UID_ALPHABET))
        chars.append(_UID_ALPHABET[digit])
    text = "".join(reversed(chars))
    return "-".join(text[i : i + 4] for i in range(0, 16, 4))
