"""RongCloud's answers: what its codes mean and how an answer becomes one result per
recipient (RC-CODES, RC-GO, RC-JAVA; docs/vendor-mapping.md "RongCloud answers").

A refusal comes with an HTTP 4xx/5xx status and a JSON body `{"code": N, "errorMessage":
"..."}`; success is HTTP 200 `{"code": 200, "messageUIDs": [{"userId", "messageUID"}]}`.
The answer names no recipient that failed: an unregistered toUserId is ACCEPTED as far as
the vendor says (unverified, spec: reports_unknown_recipients=False).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.common import as_int, load_answer, short
from imgate.vendors.base.translator import (
    AcceptedAlike,
    CallResult,
    Disposition,
    Reason,
    RecipientResult,
    classify_code,
    classify_http_status,
    request_verdict,
    uncertain_all,
    uncertain_result,
    unreadable_answer,
)
from imgate.vendors.rongcloud import rules
from imgate.vendors.rongcloud.spec import SPEC

_DONE = Disposition.DONE
_AMBIGUOUS = Disposition.AMBIGUOUS
_AUTH = pb.FAILURE_REASON_AUTH_FAILED
_INVALID = pb.FAILURE_REASON_MESSAGE_INVALID
_VENDOR = pb.FAILURE_REASON_VENDOR_ERROR

CODES: Final[Mapping[int, tuple[Disposition, Reason]]] = {
    # No such endpoint: a wrong base_url or path; nothing was processed.
    rules.NOT_FOUND: (_DONE, _VENDOR),
    # "Internal logic error, retry later" and the internal timeout: nothing says the call
    # was not processed.
    rules.INTERNAL_ERROR: (_AMBIGUOUS, _VENDOR),
    rules.INTERNAL_TIMEOUT: (_AMBIGUOUS, _VENDOR),
    # Credentials and app state: fixing them takes an operator.
    rules.APP_SECRET_WRONG: (_DONE, _AUTH),
    rules.SIGNATURE_FAILED: (_DONE, _AUTH),
    rules.APP_LOCKED: (_DONE, _AUTH),
    rules.METHOD_RESTRICTED: (_DONE, _AUTH),  # method or caller IP restricted
    rules.SERVICE_NOT_ENABLED: (_DONE, _VENDOR),
    # Our request refused as it is.
    rules.PARAMETER_ERROR: (_DONE, _INVALID),
    rules.NO_POST_DATA: (_DONE, _INVALID),
    rules.PARAMETER_TOO_LONG: (_DONE, _INVALID),
    # Refused for rate, not processed.
    rules.RATE_LIMITED: (Disposition.RATE_LIMITED, pb.FAILURE_REASON_RATE_LIMITED),
}
"""Business code → (disposition, reason). Codes not listed are AMBIGUOUS: undocumented for
this API, so nothing says the call was not processed (CONTRACT §8 rule 24)."""


def parse_answer(recipients: Sequence[str], status: int, body: bytes) -> CallResult:
    """Classify RongCloud's answer to a call for `recipients`."""
    verdict = classify_http_status(recipients, status, SPEC.refusal_statuses.statuses)
    if verdict is not None:
        return verdict
    answer = load_answer(body)
    code = None if answer is None else as_int(answer.get("code"))
    if answer is None or code is None:
        if status != 200:
            # A documented status whose body is not the vendor's (a proxy's page): the
            # status alone decides (429 a rate refusal, the rest may have been processed).
            return classify_http_status(recipients, status) or uncertain_all(
                f"HTTP {status} without the vendor's answer"
            )
        return unreadable_answer("not a JSON object" if answer is None else "no numeric code")
    if code != rules.SUCCESS:
        disposition, reason = classify_code(CODES, code)
        detail = short(answer.get("errorMessage"))
        return request_verdict(recipients, disposition, reason, str(code), detail)
    if status != 200:
        return uncertain_all(f"HTTP {status} with code 200: the answer contradicts itself", "200")
    return _accepted(recipients, answer)


def _accepted(recipients: Sequence[str], answer: Mapping[str, Any]) -> CallResult:
    """A success: every recipient ACCEPTED, each with its messageUID when the answer has
    them (older servers answer `{"code":200}` alone)."""
    entries = answer.get("messageUIDs")
    if entries is None:
        single = answer.get("messageUID")
        if len(recipients) == 1 and isinstance(single, str) and single:
            only = RecipientResult(recipients[0], True, vendor_message_id=single)
            return CallResult(_DONE, (only,))
        return CallResult(_DONE, AcceptedAlike(recipients, RecipientResult("", True)))
    if not isinstance(entries, list):
        return uncertain_all("messageUIDs is not a list", "200")
    wanted = set(recipients)
    ids: dict[str, str] = {}
    for entry in entries:
        user = entry.get("userId") if isinstance(entry, dict) else None
        uid = entry.get("messageUID") if isinstance(entry, dict) else None
        if not (isinstance(user, str) and user in wanted and isinstance(uid, str) and uid):
            return uncertain_all("messageUIDs does not match the call's recipients", "200")
        if ids.setdefault(user, uid) != uid:
            return uncertain_all("messageUIDs gives one recipient two message ids", "200")
    return CallResult(
        _DONE,
        tuple(
            RecipientResult(recipient, True, vendor_message_id=ids[recipient])
            if recipient in ids
            else uncertain_result(
                recipient, _VENDOR, "200", "the answer's messageUIDs leave this recipient out"
            )
            for recipient in recipients
        ),
    )
