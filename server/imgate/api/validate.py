"""Whole-request validation: what makes a BatchSendRequest wrong before anything is sent.

Checks common to every vendor live here; vendor field limits come from the backend's
translator. Every problem is a FieldViolation naming the request field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from imgate.config.load import GatewayConfig
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.chars import IdCensus, java_len
from imgate.vendors.base.translator import FieldViolation, Translator

MAX_ACCOUNT_ID_CHARS = 32  # Yunxin accid (UTF-16 units); Tencent also caps bytes (§5)
MAX_REQUEST_ID_CHARS = 128  # CONTRACT §4.1 rule 11
MAX_ECHOED_CHARS: Final = 64
"""Most characters of caller input an error text may repeat (CONTRACT §8 rule 23)."""
_MAX_LISTED_BAD_IDS = 10  # a huge bad list should not make a huge error

# Control characters (Unicode Cc: C0, DEL, C1): never part of an id, and a log forger's tool.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ID_RULE: Final = (
    f"account ids must be 1 to {MAX_ACCOUNT_ID_CHARS} characters, with no control"
    " characters and no leading or trailing whitespace"
)


def echo(text: str) -> str:
    """Caller input quoted in an error: at most MAX_ECHOED_CHARS characters, escaped."""
    clipped = text if len(text) <= MAX_ECHOED_CHARS else text[: MAX_ECHOED_CHARS - 1] + "…"
    return repr(clipped)


def id_problem(value: str) -> str | None:
    """Why `value` cannot be an account id, or None."""
    if not value:
        return "must not be empty"
    if _CONTROL.search(value):
        return "must not contain control characters"
    if value != value.strip():
        return "must not start or end with whitespace"
    if java_len(value) > MAX_ACCOUNT_ID_CHARS:
        return f"at most {MAX_ACCOUNT_ID_CHARS} characters"
    return None


def _bad_id_positions(ids: Sequence[str], census: IdCensus | None = None) -> list[int]:
    """Positions of invalid ids; a few C-speed passes when all are valid (the usual case)."""
    if not ids:
        return []
    census = census or IdCensus.of(ids)
    # Printable ASCII has no control character and no whitespace but the space: with no
    # space at all, no empty id and every length in range, every id is valid.
    if (
        census.printable_ascii
        and " " not in census.joined
        and all(ids)
        and census.longest <= MAX_ACCOUNT_ID_CHARS
    ):
        return []
    return [position for position, value in enumerate(ids) if id_problem(value) is not None]


def recipient_violations(
    recipient_ids: Sequence[str], field: str = "recipient_ids", census: IdCensus | None = None
) -> list[FieldViolation]:
    """The invalid ids, each named `field[position]` (the first few, then how many);
    `census`: IdCensus.of(recipient_ids), when the caller has it."""
    bad_positions = _bad_id_positions(recipient_ids, census)
    problems = [
        FieldViolation(f"{field}[{position}]", id_problem(recipient_ids[position]) or _ID_RULE)
        for position in bad_positions[:_MAX_LISTED_BAD_IDS]
    ]
    if len(bad_positions) > _MAX_LISTED_BAD_IDS:
        problems.append(
            FieldViolation(field, f"{len(bad_positions)} invalid ids in all (first ones listed)")
        )
    return problems


def validate_common(
    request: pb.BatchSendRequest,
    recipient_ids: Sequence[str],
    config: GatewayConfig,
    census: IdCensus | None = None,
) -> list[FieldViolation]:
    """Problems that do not depend on the vendor (`recipient_ids`: the request's, as a list;
    `census`: IdCensus.of(recipient_ids), when the caller has it)."""
    problems: list[FieldViolation] = []
    if config.backend(request.backend) is None:
        known = ", ".join(b.name for b in config.backends)
        problems.append(
            FieldViolation("backend", f"unknown backend {echo(request.backend)} (known: {known})")
        )
    count = len(recipient_ids)
    if count == 0:
        problems.append(FieldViolation("recipient_ids", "at least one recipient is required"))
    elif count > config.max_recipients_per_request:
        problems.append(
            FieldViolation(
                "recipient_ids",
                f"{count} recipients; at most {config.max_recipients_per_request} per request",
            )
        )
    problems.extend(recipient_violations(recipient_ids, census=census))
    # An empty sender is the vendor's business (Tencent: the admin; Yunxin: refused).
    sender_problem = id_problem(request.sender_id) if request.sender_id else None
    if sender_problem:
        problems.append(FieldViolation("sender_id", sender_problem))
    if request.request_id and (
        len(request.request_id) > MAX_REQUEST_ID_CHARS
        or any(c.isspace() for c in request.request_id)
        or _CONTROL.search(request.request_id)
    ):
        problems.append(
            FieldViolation(
                "request_id",
                f"at most {MAX_REQUEST_ID_CHARS} characters, none of them whitespace or"
                " control characters",
            )
        )
    if not request.HasField("message") or request.message.WhichOneof("content") is None:
        problems.append(FieldViolation("message", "message content is required"))
    return problems


def validate_for_vendor(
    request: pb.BatchSendRequest,
    recipient_ids: Sequence[str],
    translator: Translator,
    census: IdCensus | None = None,
) -> list[FieldViolation]:
    """Problems specific to the backend's vendor (`census` as for validate_common)."""
    problems: list[FieldViolation] = []
    if translator.sender_required and not request.sender_id:
        problems.append(FieldViolation("sender_id", f"required on {translator.vendor} backends"))
    if request.message.WhichOneof("content") is not None:
        problems.extend(translator.validate(request, recipient_ids, census))
    return problems


MAX_REQUEST_ID_CHARS = 128


def validate_request_id(request_id: str) -> list[FieldViolation]:
    """CONTRACT.md rule 11: at most 128 characters, none of them whitespace or control."""
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        return [FieldViolation("request_id", f"at most {MAX_REQUEST_ID_CHARS} characters")]
    if any(char.isspace() or not char.isprintable() for char in request_id):
        return [FieldViolation("request_id", "must not contain whitespace or control characters")]
    return []
