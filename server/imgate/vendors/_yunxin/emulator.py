"""What the two Yunxin APIs share: settings, CheckSum auth, content rules, sender states.

Content rules follow docs/vendor-mapping.md "Content": type numbers 0/1/2/3/4/6/10/100;
text and tip need non-empty text; image/audio/video/file need `url`; location needs
numeric `lat`/`lng`; custom needs a non-empty JSON object. Unknown keys are tolerated;
known keys must have the right JSON type.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web

from imgate.vendors._yunxin import spec as yunxin
from imgate.vendors._yunxin.translator import ATTACHMENT_MAX_CHARS, RATE_CODE, TEXT_MAX_CHARS
from imgate.vendors.base.auth import yunxin_checksum
from imgate.vendors.base.checks import NotJson, is_int, is_number, java_len, strict_json
from imgate.vendors.base.emulation import AccountRules, VendorSettings
from imgate.vendors.base.emulator import VendorError

AUTH_FAILED = 403
PARAM_ERROR = 414
NOT_FOUND = 404
SENDER_BANNED = 422
SENDER_MUTED = 423
RATE_LIMITED = RATE_CODE
INTERNAL_ERROR = (500, "server error")

TEXT_TYPES = frozenset({0, 10})
URL_TYPES = frozenset({1, 2, 3, 6})
LOCATION_TYPE = 4
CUSTOM_TYPE = 100
MESSAGE_TYPES = TEXT_TYPES | URL_TYPES | {LOCATION_TYPE, CUSTOM_TYPE}

MAX_NONCE_CHARS = 128

# Keys of media bodies whose JSON type is known (both key styles: v1 w/h, v2 width/height).
_STRING_KEYS = ("url", "md5", "name", "ext", "title")
_COUNT_KEYS = ("size", "dur", "w", "h", "width", "height")


@dataclass(frozen=True, kw_only=True)
class YunxinSettings(VendorSettings):
    """Settings common to both Yunxin APIs (one app, two endpoints counted separately);
    each API's subclass takes its limits from its spec."""

    credential_fields: ClassVar[tuple[str, ...]] = tuple(yunxin.CREDENTIAL_FIELDS)

    app_key: str = yunxin.SANDBOX_CREDENTIALS["app_key"]
    app_secret: str = yunxin.SANDBOX_CREDENTIALS["app_secret"]
    max_clock_skew_s: float = 300.0
    """A CheckSum is valid within this many seconds of CurTime, either way."""
    max_text_chars: int = TEXT_MAX_CHARS
    """Text and tip messages: the text."""
    max_attachment_chars: int = ATTACHMENT_MAX_CHARS
    """Other types: the body (legacy) or the attachment's JSON (v2)."""


def check_auth(request: web.Request, settings: YunxinSettings, wall_now: float) -> None:
    """AppKey / Nonce / CurTime / CheckSum headers (vendors.md §2.1); 403 when wrong."""
    headers = request.headers
    app_key = headers.get("AppKey", "")
    if not app_key:
        raise VendorError(AUTH_FAILED, "AppKey header is missing")
    if not hmac.compare_digest(app_key.encode(), settings.app_key.encode()):
        raise VendorError(AUTH_FAILED, "AppKey is not valid")
    nonce = headers.get("Nonce", "")
    if not 1 <= java_len(nonce) <= MAX_NONCE_CHARS:
        raise VendorError(AUTH_FAILED, f"Nonce must be 1 to {MAX_NONCE_CHARS} characters")
    cur_time = headers.get("CurTime", "")
    if not (cur_time.isascii() and cur_time.isdigit()):
        raise VendorError(AUTH_FAILED, "CurTime must be Unix time in seconds")
    if abs(wall_now - int(cur_time)) > settings.max_clock_skew_s:
        raise VendorError(AUTH_FAILED, "CurTime is too far from the server time (CheckSum expired)")
    expected = yunxin_checksum(settings.app_secret, nonce, cur_time)
    # Exact comparison: the documented form is lowercase hex, so uppercase is refused.
    if not hmac.compare_digest(headers.get("CheckSum", "").encode(), expected.encode()):
        raise VendorError(AUTH_FAILED, "CheckSum is not valid")


def check_account_id(value: object, field: str) -> str:
    """An account id: a non-empty string within the id rule (32 characters)."""
    if not isinstance(value, str) or not value:
        raise VendorError(PARAM_ERROR, f"{field} must be a non-empty string")
    if not yunxin.ID_RULE.fits(value):
        raise VendorError(
            PARAM_ERROR, f"{field} is longer than {yunxin.ID_RULE.max_length} characters"
        )
    return value


def check_recipient_ids(value: object, field: str, limit: int) -> tuple[str, ...]:
    """A non-empty array of account ids, at most `limit` long (counted as sent)."""
    if not isinstance(value, list):
        raise VendorError(PARAM_ERROR, f"{field} must be a JSON array")
    if not value:
        raise VendorError(PARAM_ERROR, f"{field} is empty")
    if len(value) > limit:
        raise VendorError(PARAM_ERROR, "too many members.")
    return tuple(check_account_id(item, f"{field}[{i}]") for i, item in enumerate(value))


@dataclass(frozen=True)
class SenderCodes:
    """The codes an API answers a sender problem with."""

    not_found: int
    banned: int
    muted: int


LEGACY_SENDER_CODES = SenderCodes(NOT_FOUND, SENDER_BANNED, SENDER_MUTED)


def check_sender(
    accounts: AccountRules, sender: str, codes: SenderCodes = LEGACY_SENDER_CODES
) -> None:
    """The sender must exist (404), not be disabled (422) and not be muted (423); the v2
    API answers with its 6-digit codes instead."""
    if not accounts.exists(sender):
        raise VendorError(codes.not_found, "sender account does not exist")
    if accounts.is_banned(sender):
        raise VendorError(codes.banned, "account is forbidden.")
    if accounts.is_muted(sender):
        raise VendorError(codes.muted, "account 'mute'.")


def check_message_type(value: object, field: str) -> int:
    """One of the documented message type numbers."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in MESSAGE_TYPES:
        raise VendorError(PARAM_ERROR, f"{field} must be one of {sorted(MESSAGE_TYPES)}")
    return value


def check_text(value: object, field: str, max_chars: int) -> str:
    """The text of a text or tip message: required, non-empty, capped."""
    if not isinstance(value, str) or not value:
        raise VendorError(PARAM_ERROR, f"{field} is required for text and tip messages")
    if java_len(value) > max_chars:
        raise VendorError(PARAM_ERROR, f"{field} is longer than {max_chars} characters")
    return value


def check_media(message_type: int, content: object, field: str) -> Mapping[str, Any]:
    """The body (legacy) or attachment (v2) of a non-text message."""
    if not isinstance(content, dict):
        raise VendorError(PARAM_ERROR, f"{field} must be a JSON object")
    if message_type == CUSTOM_TYPE:
        if not content:
            raise VendorError(PARAM_ERROR, f"{field} of a custom message must not be empty")
        return content
    for key in _STRING_KEYS:
        if key in content and not isinstance(content[key], str):
            raise VendorError(PARAM_ERROR, f"{field}.{key} must be a string")
    for key in _COUNT_KEYS:
        if key in content and not (is_int(content[key]) and content[key] >= 0):
            raise VendorError(PARAM_ERROR, f"{field}.{key} must be a non-negative integer")
    if message_type in URL_TYPES and not content.get("url"):
        raise VendorError(PARAM_ERROR, f"{field}.url is required")
    if message_type == LOCATION_TYPE:
        for key, bound in (("lat", 90), ("lng", 180)):
            coordinate = content.get(key)
            if not (is_number(coordinate) and -bound <= coordinate <= bound):
                raise VendorError(PARAM_ERROR, f"{field}.{key} must be a number within ±{bound}")
    return content


def check_chars(value: object, field: str, max_chars: int | None) -> str:
    """A string field, with a length cap when `max_chars` is set."""
    if not isinstance(value, str):
        raise VendorError(PARAM_ERROR, f"{field} must be a string")
    if max_chars is not None and java_len(value) > max_chars:
        raise VendorError(PARAM_ERROR, f"{field} is longer than {max_chars} characters")
    return value


def check_json_object_text(value: object, field: str, max_chars: int | None) -> dict[str, Any]:
    """A string holding a JSON object ("JSON 格式" in the Yunxin docs), length-capped."""
    text = check_chars(value, field, max_chars)
    try:
        doc = strict_json(text)
    except NotJson:
        raise VendorError(PARAM_ERROR, f"{field} must be JSON") from None
    if not isinstance(doc, dict):
        raise VendorError(PARAM_ERROR, f"{field} must be a JSON object")
    return doc
