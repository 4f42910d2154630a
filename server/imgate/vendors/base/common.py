"""Helpers shared by the vendor translators: JSON encoding, derived ids, common checks.

Everything here is pure. The checks are the ones every vendor needs on the message
itself (JSON-object fields, media URLs); the servicer's request-wide checks (recipients,
id lengths, content present, backend known) are not repeated here.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.base.translator import (
    CallResult,
    FieldViolation,
    classify_http_status,
    unreadable_answer,
)

# A vendor's free-text message (desc/ErrorInfo) can be long; outcomes carry a readable
# excerpt, not the whole thing.
DETAIL_MAX_CHARS = 300

MEDIA_KINDS = frozenset({"image", "audio", "video", "file"})

MAX_JSON_DEPTH: Final = 64
"""Deepest nesting of arrays/objects accepted in caller JSON (CONTRACT §8 rule 23)."""
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
MEDIA_URL_SCHEMES: Final = frozenset({"http", "https"})
"""The only URL schemes a media URL may have: what vendors' clients download from."""
_URL_FORBIDDEN: Final = re.compile(r"[\x00-\x20\x7f-\x9f]")


class NotStrictJson(ValueError):
    """Caller JSON the gateway refuses; the message says why without echoing the input."""


def _refuse_constant(name: str) -> Any:
    raise NotStrictJson("NaN and Infinity are not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise NotStrictJson("an object repeats a key")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotStrictJson("a number is out of range")
    return value


def _int64(text: str) -> int:
    if len(text) > 20:  # more digits than any int64 (and int() of huge strings is slow)
        raise NotStrictJson("a number is out of range")
    value = int(text)
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise NotStrictJson("a number is out of range")
    return value


def strict_json(text: str) -> Any:
    """Parse caller JSON strictly: no NaN/Infinity, finite floats, integers within int64
    (what the vendors' Java and Go servers hold), nesting at most MAX_JSON_DEPTH, strings
    that are valid Unicode (no lone surrogates), no object repeating a key (the vendors do
    not document which one their parsers keep). Raises NotStrictJson saying why."""
    try:
        value = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_int64,
            object_pairs_hook=_unique_keys,
        )
    except NotStrictJson:
        raise
    except RecursionError:
        raise NotStrictJson(f"nested deeper than {MAX_JSON_DEPTH}") from None
    except ValueError:
        raise NotStrictJson("not valid JSON") from None
    _check_tree(value)
    return value


def _check_tree(value: Any) -> None:
    """Depth and string checks without recursion (the input may be deep)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth >= MAX_JSON_DEPTH:
                raise NotStrictJson(f"nested deeper than {MAX_JSON_DEPTH}")
            for key, child in item.items():
                _check_text(key)
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth >= MAX_JSON_DEPTH:
                raise NotStrictJson(f"nested deeper than {MAX_JSON_DEPTH}")
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str):
            _check_text(item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NotStrictJson("a string holds a lone surrogate (not Unicode)") from None


def json_object_problem(text: str, *, non_empty: bool = False) -> str | None:
    """Why `text` is not a strict JSON object (see strict_json), or None when it is."""
    try:
        value = strict_json(text)
    except NotStrictJson as exc:
        return f"must be a JSON object ({exc})"
    if not isinstance(value, dict):
        return "must be a JSON object"
    if non_empty and not value:
        return "must be a non-empty JSON object"
    return None


def media_url_problem(url: str) -> str | None:
    """Why `url` cannot be a media URL (http/https with a host), or None."""
    if not url:
        return "is required"
    if _URL_FORBIDDEN.search(url):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in MEDIA_URL_SCHEMES or not parts.netloc:
        return "must be an http or https URL"
    return None


def compact_json(value: object) -> str:
    """JSON as sent to vendors: compact, non-ASCII as UTF-8 (not \\u escapes), no NaN."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_object(text: str) -> dict[str, Any] | None:
    """`text` parsed (strictly, see strict_json) when it is a JSON object, else None."""
    try:
        value = strict_json(text)
    except NotStrictJson:
        return None
    return value if isinstance(value, dict) else None


class UnreadableAnswer(ValueError):
    """A vendor answer (or JSON text inside one) that cannot be accounted for: the
    message says why (CONTRACT §8 rule 24: its recipients end UNCERTAIN)."""


def _answer_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise UnreadableAnswer(f"an object repeats the key {short(key)!r}")
            seen.add(key)
    return value


def answer_json(text: str | bytes) -> Any:
    """Vendor JSON parsed: the one place a vendor answer is read. An object that repeats
    a key is unreadable: which value the vendor meant is unknown (its own parser may keep
    the first, Python's keeps the last). Raises UnreadableAnswer."""
    try:
        return json.loads(text, object_pairs_hook=_answer_pairs)
    except UnreadableAnswer:
        raise
    except RecursionError:
        raise UnreadableAnswer("nested too deep") from None
    except (ValueError, UnicodeDecodeError):
        raise UnreadableAnswer("not JSON") from None


def read_answer(body: bytes) -> dict[str, Any]:
    """A vendor answer body as a JSON object (see answer_json); raises UnreadableAnswer."""
    value = answer_json(body)
    if not isinstance(value, dict):
        raise UnreadableAnswer("not a JSON object")
    return value


def load_answer(body: bytes) -> dict[str, Any] | None:
    """read_answer, or None when the answer is unreadable (whatever the reason)."""
    try:
        return read_answer(body)
    except UnreadableAnswer:
        return None


@dataclass(frozen=True, slots=True)
class CodedAnswer:
    """A vendor answer read as a JSON object with a numeric result code."""

    fields: dict[str, Any]
    code: int


def coded_answer(
    recipients: Sequence[str], status: int, body: bytes, spec: VendorSpec, code_field: str
) -> CallResult | CodedAnswer:
    """What every vendor's parser reads first: a refusal by HTTP status decides (the spec's
    statuses); else the body must be a JSON object with a numeric `code_field`, or the
    answer is unreadable (UNCERTAIN, CONTRACT §8 rule 24) and says why."""
    verdict = classify_http_status(recipients, status, spec.refusal_statuses.statuses)
    if verdict is not None:
        return verdict
    try:
        fields = read_answer(body)
    except UnreadableAnswer as exc:
        return unreadable_answer(str(exc))
    code = as_int(fields.get(code_field))
    if code is None:
        return unreadable_answer(f"no numeric {code_field}")
    return CodedAnswer(fields, code)


def as_int(value: object) -> int | None:
    """A vendor's numeric code as an int (some answers send numbers as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        # ASCII digits only: str.isdigit() takes "¹" too, which int() refuses.
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


_COUNT_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "image": ("size_bytes", "width", "height"),
    "audio": ("size_bytes", "duration_ms"),
    "video": ("size_bytes", "width", "height", "duration_ms"),
    "file": ("size_bytes",),
}
_VARIANT_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "image": ("large", "thumbnail"),
    "video": ("thumbnail",),
}
_VARIANT_COUNTS: Final = ("size_bytes", "width", "height")
_ONLINE_ONLY_CONTRADICTIONS: Final = ("offline_enabled", "history_enabled", "unread_enabled")


def message_violations(request: pb.BatchSendRequest) -> list[FieldViolation]:
    """Checks on the message every vendor needs (CONTRACT §8 rule 23): the vendors refuse
    these with a parameter error, or would store nonsense, so they are refused before
    anything is sent."""
    message = request.message
    problems: list[FieldViolation] = []
    kind = message.WhichOneof("content")
    if kind == "text" and not message.text.text:
        problems.append(FieldViolation("message.text.text", "must not be empty"))
    elif kind == "tip" and not message.tip.text:
        problems.append(FieldViolation("message.tip.text", "must not be empty"))
    elif kind in MEDIA_KINDS:
        media = getattr(message, kind)
        problem = media_url_problem(media.url)
        if problem:
            problems.append(FieldViolation(f"message.{kind}.url", problem))
        for name in _COUNT_FIELDS[kind]:
            if getattr(media, name) < 0:
                problems.append(FieldViolation(f"message.{kind}.{name}", "must not be negative"))
        for variant_name in _VARIANT_FIELDS.get(kind, ()):
            if media.HasField(variant_name):
                problems += _variant_violations(
                    f"message.{kind}.{variant_name}", getattr(media, variant_name)
                )
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
        problem = json_object_problem(message.custom.data, non_empty=True)
        if problem:
            problems.append(FieldViolation("message.custom.data", problem))
        if message.custom.sub_type < 0:
            problems.append(FieldViolation("message.custom.sub_type", "must be > 0 when set"))
    if message.extension:
        problem = json_object_problem(message.extension)
        if problem:
            problems.append(FieldViolation("message.extension", problem))
    options = request.options
    if options.HasField("push_payload"):
        problem = json_object_problem(options.push_payload)
        if problem:
            problems.append(FieldViolation("options.push_payload", problem))
    if options.online_only:
        for name in _ONLINE_ONLY_CONTRADICTIONS:
            if options.HasField(name) and getattr(options, name):  # type: ignore[arg-type]
                problems.append(
                    FieldViolation(f"options.{name}", "cannot be true with online_only")
                )
    return problems


def _variant_violations(field: str, variant: pb.ImageVariant) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    problem = media_url_problem(variant.url)
    if problem:
        problems.append(FieldViolation(f"{field}.url", problem))
    for name in _VARIANT_COUNTS:
        if getattr(variant, name) < 0:
            problems.append(FieldViolation(f"{field}.{name}", "must not be negative"))
    return problems


def unsupported_option(vendor: str, field: str, why: str) -> FieldViolation:
    """An option value the vendor cannot express: refused rather than sent as something
    else (issue 13.3)."""
    return FieldViolation(f"options.{field}", f"not supported on {vendor}: {why}")


def capability_violations(spec: VendorSpec, request: pb.BatchSendRequest) -> list[FieldViolation]:
    """What the request asks that the vendor's API cannot express (the spec's
    capabilities): refused by name, never dropped (CONTRACT §8 rule 23)."""
    can = spec.capabilities
    options, message = request.options, request.message
    problems: list[FieldViolation] = []
    if options.online_only and not can.online_only:
        problems.append(unsupported_option(spec.vendor, "online_only", "no online-only send"))
    if options.skip_moderation and not can.skip_moderation:
        problems.append(
            unsupported_option(spec.vendor, "skip_moderation", "moderation cannot be skipped")
        )
    if options.HasField("read_receipt") and options.read_receipt and not can.read_receipt:
        problems.append(
            unsupported_option(
                spec.vendor, "read_receipt", "batch one-to-one sends have no read receipt"
            )
        )
    if (
        message.WhichOneof("content") == "custom"
        and message.custom.sub_type > 0
        and not can.custom_sub_type
    ):
        problems.append(
            FieldViolation(
                "message.custom.sub_type",
                f"not supported on {spec.vendor}: the batch API has no sub-type (put it in data)",
            )
        )
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
