"""Helpers shared by the vendor translators: JSON encoding, derived ids, common checks.

Everything here is pure. The checks are the ones every vendor needs on the message
itself (JSON-object fields, media URLs); the servicer's request-wide checks (recipients,
id lengths, content present, backend known) are not repeated here.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from imgate.translators._base import FieldViolation
from imgate.v1 import gateway_pb2 as pb

# A vendor's free-text message (desc/ErrorInfo) can be long; outcomes carry a readable
# excerpt, not the whole thing.
DETAIL_MAX_CHARS = 300

MEDIA_KINDS = frozenset({"image", "audio", "video", "file"})


def compact_json(value: object) -> str:
    """JSON as sent to vendors: compact, non-ASCII as UTF-8 (not \\u escapes), no NaN."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_object(text: str) -> dict[str, Any] | None:
    """`text` parsed when it is a JSON object, else None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def load_answer(body: bytes) -> dict[str, Any] | None:
    """A vendor answer body parsed as a JSON object, or None when it is not one."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def as_int(value: object) -> int | None:
    """A vendor's numeric code as an int (some answers send numbers as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def short(text: object) -> str:
    """A vendor message trimmed for an outcome's `detail`."""
    value = text if isinstance(text, str) else ("" if text is None else str(text))
    return value if len(value) <= DETAIL_MAX_CHARS else value[: DETAIL_MAX_CHARS - 1] + "…"


def derived_digest(seed: str, label: str) -> bytes:
    """A digest of `seed` for one purpose: the same seed gives the same value every time,
    different labels give unrelated values (trace id vs MsgSeq vs MsgRandom)."""
    return hashlib.sha256(f"imgate:{label}:{seed}".encode()).digest()


def derived_uint32(seed: str, label: str) -> int:
    """A uint32 derived from `seed` (Tencent MsgSeq/MsgRandom/random)."""
    return int.from_bytes(derived_digest(seed, label)[:4], "big")


def derived_trace_id(seed: str, label: str) -> str:
    """32 lowercase hex chars derived from `seed`, the shape of the official SDKs' ids."""
    return derived_digest(seed, label)[:16].hex()


def message_violations(request: pb.BatchSendRequest) -> list[FieldViolation]:
    """Checks on the message every vendor needs: the emulators and the vendors refuse
    these with a parameter error, so they are cheaper to refuse before sending."""
    message = request.message
    problems: list[FieldViolation] = []
    kind = message.WhichOneof("content")
    if kind == "text" and not message.text.text:
        problems.append(FieldViolation("message.text.text", "must not be empty"))
    elif kind == "tip" and not message.tip.text:
        problems.append(FieldViolation("message.tip.text", "must not be empty"))
    elif kind in MEDIA_KINDS and not getattr(message, kind).url:
        problems.append(FieldViolation(f"message.{kind}.url", "is required"))
    elif kind == "location":
        for name, bound in (("latitude", 90.0), ("longitude", 180.0)):
            value = getattr(message.location, name)
            if not (math.isfinite(value) and -bound <= value <= bound):
                problems.append(
                    FieldViolation(
                        f"message.location.{name}", f"must be a number in [-{bound}, {bound}]"
                    )
                )
    elif kind == "custom":
        if not json_object(message.custom.data):
            problems.append(
                FieldViolation("message.custom.data", "must be a non-empty JSON object")
            )
        if message.custom.sub_type < 0:
            problems.append(FieldViolation("message.custom.sub_type", "must be > 0 when set"))
    if message.extension and json_object(message.extension) is None:
        problems.append(FieldViolation("message.extension", "must be a JSON object"))
    options = request.options
    if options.HasField("push_payload") and json_object(options.push_payload) is None:
        problems.append(FieldViolation("options.push_payload", "must be a JSON object"))
    return problems


def chosen_options(options: pb.SendOptions) -> dict[str, Any]:
    """The SendOptions the caller set, by field name; unset ones keep the vendor default."""
    return {field.name: value for field, value in options.ListFields()}


def media_uuid(md5: str, url: str) -> str:
    """A stable id for a media file: its MD5 when given, else SHA-1 of its URL."""
    return md5 or hashlib.sha1(url.encode(), usedforsecurity=False).hexdigest()


def ceil_seconds(duration_ms: int) -> int:
    """Milliseconds to whole seconds, rounded up (a 1.2 s clip is 2 s long to a player)."""
    return max(0, -(-duration_ms // 1000))
