"""Whole-request validation: what makes a BatchSendRequest wrong before anything is sent.

Checks common to every vendor live here; vendor field limits come from the backend's
translator. Every problem is a FieldViolation naming the request field.
"""

from __future__ import annotations

from collections.abc import Sequence

from imgate._chars import java_len
from imgate._config import GatewayConfig
from imgate.translators._base import FieldViolation, Translator
from imgate.v1 import gateway_pb2 as pb

MAX_ACCOUNT_ID_CHARS = 32  # Yunxin accid (UTF-16 units); Tencent also caps bytes (§5)
_MAX_LISTED_BAD_IDS = 10  # a huge bad list should not make a huge error


def validate_common(
    request: pb.BatchSendRequest, recipient_ids: Sequence[str], config: GatewayConfig
) -> list[FieldViolation]:
    """Problems that do not depend on the vendor (`recipient_ids`: the request's, as a list)."""
    problems: list[FieldViolation] = []
    if config.backend(request.backend) is None:
        known = ", ".join(b.name for b in config.backends)
        problems.append(
            FieldViolation("backend", f"unknown backend {request.backend!r} (known: {known})")
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
    ids = recipient_ids
    # ASCII ids (the usual case) count one unit a character: check the extremes only.
    lengths = list(map(len, ids))
    if ids and "".join(ids).isascii() and 0 < min(lengths) <= max(lengths) <= MAX_ACCOUNT_ID_CHARS:
        bad_positions: list[int] = []
    else:
        bad_positions = [
            position
            for position, recipient in enumerate(ids)
            if not recipient or java_len(recipient) > MAX_ACCOUNT_ID_CHARS
        ]
    for position in bad_positions[:_MAX_LISTED_BAD_IDS]:
        problems.append(
            FieldViolation(
                f"recipient_ids[{position}]",
                f"account ids must be 1 to {MAX_ACCOUNT_ID_CHARS} characters",
            )
        )
    if len(bad_positions) > _MAX_LISTED_BAD_IDS:
        problems.append(
            FieldViolation(
                "recipient_ids", f"{len(bad_positions)} invalid ids in all (first ones listed)"
            )
        )
    if java_len(request.sender_id) > MAX_ACCOUNT_ID_CHARS:
        problems.append(FieldViolation("sender_id", f"at most {MAX_ACCOUNT_ID_CHARS} characters"))
    if not request.HasField("message") or request.message.WhichOneof("content") is None:
        problems.append(FieldViolation("message", "message content is required"))
    return problems


def validate_for_vendor(
    request: pb.BatchSendRequest, recipient_ids: Sequence[str], translator: Translator
) -> list[FieldViolation]:
    """Problems specific to the backend's vendor."""
    problems: list[FieldViolation] = []
    if translator.sender_required and not request.sender_id:
        problems.append(FieldViolation("sender_id", f"required on {translator.vendor} backends"))
    if request.message.WhichOneof("content") is not None:
        problems.extend(translator.validate(request, recipient_ids))
    return problems


MAX_REQUEST_ID_CHARS = 128


def validate_request_id(request_id: str) -> list[FieldViolation]:
    """CONTRACT.md rule 11: at most 128 characters, none of them whitespace or control."""
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        return [FieldViolation("request_id", f"at most {MAX_REQUEST_ID_CHARS} characters")]
    if any(char.isspace() or not char.isprintable() for char in request_id):
        return [FieldViolation("request_id", "must not contain whitespace or control characters")]
    return []
