"""Whole-request validation: what makes a BatchSendRequest wrong before anything is sent.

Checks common to every vendor live here, with the facts they need (the id rule, what the
API can express, which options belong to another vendor) read from the backend's vendor
spec; vendor field limits come from its translator. Every problem is a FieldViolation
naming the request field.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from typing import Final

from imgate.config.model import GatewayConfig
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.chars import IdCensus
from imgate.vendors.base.common import capability_violations, unsupported_option
from imgate.vendors.base.spec import AnyIdRule, IdRule, IdUnit, VendorSpec
from imgate.vendors.base.translator import FieldViolation, Translator
from imgate.vendors.registry import BY_VENDOR, VENDORS

MAX_REQUEST_ID_CHARS = 128  # CONTRACT §4.1 rule 11
MAX_ECHOED_CHARS: Final = 64
"""Most characters of caller input an error text may repeat (CONTRACT §8 rule 23)."""
_MAX_LISTED_BAD_IDS = 10  # a huge bad list should not make a huge error

# Which unit lets more ids through at one length: each counts a character at least as
# often as the next (UTF-8 bytes >= UTF-16 units >= code points).
INVISIBLE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})
"""Never part of an id (CONTRACT §8 rule 23): control characters (Cc: C0, DEL, C1, a log
forger's tool), format characters (Cf: bidi overrides such as U+202E, zero-width U+200B,
the BOM U+FEFF: an id that looks like another) and the line and paragraph separators
(U+2028, U+2029: a line break to logs and JSON readers)."""
_ID_RULE: Final = (
    "account ids must be within the vendor's length, with no control, format or line"
    " separator characters and no leading or trailing whitespace"
)
LIST_ID_RULE: Final = AnyIdRule.of(plugin.spec.id_rule for plugin in VENDORS)
"""The id rule of an uploaded list, which is not bound to a backend: an id some registered
vendor takes. At submit, the list's longest id in the backend's unit is held to the
backend's own rule (list_id_violation)."""
IdLimit = IdRule | AnyIdRule


def longest_by_unit(ids: Sequence[str], census: IdCensus | None = None) -> dict[str, int]:
    """{unit name: position of the first id that is the longest in that unit} of `ids`."""
    if not ids:
        return {}
    census = census or IdCensus.of(ids)
    if census.printable_ascii:  # one unit a character, whatever the unit
        position = max(range(len(ids)), key=lambda p: len(ids[p]))
        return {unit.name: position for unit in IdUnit}
    found = {}
    for unit in IdUnit:
        measure = IdRule(0, unit).length
        found[unit.name] = max(range(len(ids)), key=lambda p: measure(ids[p]))
    return found


def list_id_violation(longest: str, rule: IdRule, field: str) -> FieldViolation | None:
    """Whether a list's longest id in `rule`'s unit (its `longest` record: {unit name:
    [length, index]}) breaks `rule`, named as the list's recipient."""
    if not longest:
        return None  # a list uploaded before lists kept it: its widest id was checked
    length, index = json.loads(longest).get(rule.unit.name, (0, 0))
    if length <= rule.max_length:
        return None
    return FieldViolation(field, f"recipient {index} of the list: {rule.describe()}")


def echo(text: str) -> str:
    """Caller input quoted in an error: at most MAX_ECHOED_CHARS characters, escaped."""
    clipped = text if len(text) <= MAX_ECHOED_CHARS else text[: MAX_ECHOED_CHARS - 1] + "…"
    return repr(clipped)


def has_invisible(value: str) -> bool:
    """Whether `value` holds a character of INVISIBLE_CATEGORIES (as the running Python's
    Unicode tables say). Every such character is one str.isprintable() refuses: the
    per-character look-up only runs on the rare id that is not printable."""
    return not value.isprintable() and any(
        unicodedata.category(char) in INVISIBLE_CATEGORIES
        for char in value
        if not char.isprintable()
    )


def id_problem(value: str, rule: IdLimit | None = LIST_ID_RULE) -> str | None:
    """Why `value` cannot be an account id under `rule` (None: any length), or None."""
    if not value:
        return "must not be empty"
    if has_invisible(value):
        return "must not contain control, format or line separator characters"
    if value != value.strip():
        return "must not start or end with whitespace"
    if rule is not None and not rule.fits(value):
        return rule.describe()
    return None


def _bad_id_positions(
    ids: Sequence[str], census: IdCensus | None = None, rule: IdLimit | None = LIST_ID_RULE
) -> list[int]:
    """Positions of invalid ids; a few C-speed passes when all are valid (the usual case)."""
    if not ids:
        return []
    census = census or IdCensus.of(ids)
    # Printable ASCII has no control character and no whitespace but the space, and is
    # one byte and one UTF-16 unit a character: with no space at all, no empty id and
    # every length in range, every id is valid.
    if (
        census.printable_ascii
        and " " not in census.joined
        and all(ids)
        and (rule is None or census.longest <= rule.max_length)
    ):
        return []
    return [position for position, value in enumerate(ids) if id_problem(value, rule) is not None]


def recipient_violations(
    recipient_ids: Sequence[str],
    field: str = "recipient_ids",
    census: IdCensus | None = None,
    rule: IdLimit | None = LIST_ID_RULE,
) -> list[FieldViolation]:
    """The invalid ids, each named `field[position]` (the first few, then how many);
    `census`: IdCensus.of(recipient_ids), when the caller has it; `rule`: the backend's
    id rule (None: lengths are not checked)."""
    bad_positions = _bad_id_positions(recipient_ids, census, rule)
    problems = [
        FieldViolation(
            f"{field}[{position}]", id_problem(recipient_ids[position], rule) or _ID_RULE
        )
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
    backend = config.backend(request.backend)
    # An unknown backend has no id rule: its lengths wait until one is named.
    rule = None if backend is None else BY_VENDOR[backend.vendor].spec.id_rule
    if backend is None:
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
    problems.extend(recipient_violations(recipient_ids, census=census, rule=rule))
    # An empty sender is the vendor's business (the spec's sender_required).
    sender_problem = id_problem(request.sender_id, rule) if request.sender_id else None
    if sender_problem:
        problems.append(FieldViolation("sender_id", sender_problem))
    if request.request_id and (
        len(request.request_id) > MAX_REQUEST_ID_CHARS
        or any(c.isspace() for c in request.request_id)
        or not request.request_id.isprintable()
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
    spec = translator.spec
    problems: list[FieldViolation] = []
    if spec.sender_required and not request.sender_id:
        problems.append(FieldViolation("sender_id", f"required on {spec.vendor} backends"))
    problems += capability_violations(spec, request)
    problems += _foreign_options(spec, request.options)
    if request.message.WhichOneof("content") is not None:
        problems.extend(translator.validate(request, recipient_ids, census))
    return problems


def _foreign_options(spec: VendorSpec, options: pb.SendOptions) -> list[FieldViolation]:
    """SendOptions fields another registered vendor owns (its spec's own_options)."""
    return [
        unsupported_option(spec.vendor, name, f"{plugin.spec.display_name} only")
        for plugin in VENDORS
        if plugin.spec is not spec
        for name in plugin.spec.own_options
        if name not in spec.own_options and options.HasField(name)  # type: ignore[arg-type]
    ]


def validate_request_id(request_id: str) -> list[FieldViolation]:
    """CONTRACT.md rule 11: at most 128 characters, none of them whitespace or control."""
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        return [FieldViolation("request_id", f"at most {MAX_REQUEST_ID_CHARS} characters")]
    if any(char.isspace() or not char.isprintable() for char in request_id):
        return [FieldViolation("request_id", "must not contain whitespace or control characters")]
    return []


def schedule_violations(
    send_after: float | None, send_before: float | None, now: float, max_ahead_s: float
) -> list[FieldViolation]:
    """SubmitBatchRequest.send_after's window (CONTRACT §9 rule 26): at most
    `max_ahead_s` (max_schedule_ahead_s) after `now`, and before send_before."""
    if send_after is None:
        return []
    if send_after - now > max_ahead_s:
        return [
            FieldViolation(
                "send_after",
                f"is more than {max_ahead_s:,.0f} s ahead (max_schedule_ahead_s);"
                " nothing was stored",
            )
        ]
    if send_before is not None and send_after >= send_before:
        return [FieldViolation("send_after", "must be before send_before")]
    return []
