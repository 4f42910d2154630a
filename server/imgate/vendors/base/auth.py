"""Vendor authentication: Yunxin CheckSum headers and Tencent UserSig v2 (vendors.md §2).

Pure functions over explicit inputs (time, nonce), so they can be tested against fixed
vectors; the sandbox uses the verifiers, the translators the signers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import zlib
from dataclasses import dataclass

# Tencent's URL-safe Base64 variant: standard alphabet, then + -> *, / -> -, = -> _.
_TO_TENCENT = str.maketrans("+/=", "*-_")
_FROM_TENCENT = str.maketrans("*-_", "+/=")


def yunxin_checksum(app_secret: str, nonce: str, cur_time: str) -> str:
    """CheckSum header: lowercase hex SHA1 of AppSecret + Nonce + CurTime."""
    # SHA-1 is the vendor's choice, not ours.
    return hashlib.sha1((app_secret + nonce + cur_time).encode()).hexdigest()  # noqa: S324


def yunxin_headers(app_key: str, app_secret: str, nonce: str, now: float) -> dict[str, str]:
    """The four auth headers Yunxin checks on every request (both legacy and v2 APIs)."""
    cur_time = str(int(now))
    return {
        "AppKey": app_key,
        "Nonce": nonce,
        "CurTime": cur_time,
        "CheckSum": yunxin_checksum(app_secret, nonce, cur_time),
    }


def _tencent_content(identifier: str, sdk_app_id: int, time: int, expire: int) -> str:
    return (
        f"TLS.identifier:{identifier}\n"
        f"TLS.sdkappid:{sdk_app_id}\n"
        f"TLS.time:{time}\n"
        f"TLS.expire:{expire}\n"
    )


def tencent_hmac(key: str, identifier: str, sdk_app_id: int, time: int, expire: int) -> str:
    """The inner TLS.sig: standard Base64 of HMAC-SHA256 over the four-line content."""
    content = _tencent_content(identifier, sdk_app_id, time, expire)
    digest = hmac.new(key.encode(), content.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def tencent_user_sig(key: str, sdk_app_id: int, identifier: str, now: int, expire: int) -> str:
    """A UserSig v2 valid from `now` for `expire` seconds."""
    doc = {
        "TLS.ver": "2.0",
        "TLS.identifier": identifier,
        "TLS.sdkappid": sdk_app_id,
        "TLS.expire": expire,
        "TLS.time": now,
        "TLS.sig": tencent_hmac(key, identifier, sdk_app_id, now, expire),
    }
    compressed = zlib.compress(json.dumps(doc, separators=(",", ":")).encode())
    return base64.b64encode(compressed).decode().translate(_TO_TENCENT)


class UserSigError(Exception):
    """A UserSig failed verification; `code` is the Tencent error code for the failure."""

    def __init__(self, code: int, info: str) -> None:
        super().__init__(info)
        self.code = code
        self.info = info


@dataclass(frozen=True, slots=True)
class UserSigClaims:
    """The decoded fields of a valid UserSig."""

    identifier: str
    sdk_app_id: int
    time: int
    expire: int


def verify_tencent_user_sig(
    user_sig: str, key: str, sdk_app_id: int, identifier: str, now: float
) -> UserSigClaims:
    """Verify a UserSig the way Tencent does, raising UserSigError with Tencent's code.

    70003: not decodable; 70014: other SDKAppID; 70013: other identifier; 70001: expired;
    70009: signature made with another key.
    """
    try:
        raw = base64.b64decode(user_sig.translate(_FROM_TENCENT), validate=True)
        doc = json.loads(zlib.decompress(raw))
        claims = UserSigClaims(
            identifier=str(doc["TLS.identifier"]),
            sdk_app_id=int(doc["TLS.sdkappid"]),
            time=int(doc["TLS.time"]),
            expire=int(doc["TLS.expire"]),
        )
        signature = str(doc["TLS.sig"])
        version = doc.get("TLS.ver")
    except (ValueError, KeyError, TypeError, zlib.error) as exc:
        raise UserSigError(70003, "UserSig could not be decoded") from exc
    if version != "2.0":
        raise UserSigError(70003, "UserSig version is not 2.0")
    if claims.sdk_app_id != sdk_app_id:
        raise UserSigError(70014, "SDKAppID does not match the UserSig")
    if claims.identifier != identifier:
        raise UserSigError(70013, "identifier does not match the UserSig")
    if now > claims.time + claims.expire:
        raise UserSigError(70001, "UserSig expired")
    expected = tencent_hmac(key, claims.identifier, claims.sdk_app_id, claims.time, claims.expire)
    if not hmac.compare_digest(expected, signature):
        raise UserSigError(70009, "UserSig signature does not match")
    return claims
