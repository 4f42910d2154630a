"""Tencent's answers: what its ErrorCodes mean and how an answer becomes one result per
recipient (vendors.md §7.3, §8.2; docs/vendor-mapping.md "Answers").

Every ACCEPTED outcome has a caveat: batchsendmsg has been seen answering OK with no
ErrorList while an account did not exist (vendors.md §7.3, §12), so an ACCEPTED
recipient is not proof that the account exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.common import as_int, coded_answer, short
from imgate.vendors.base.translator import (
    AcceptedAlike,
    CallResult,
    Disposition,
    Reason,
    RecipientResult,
    classify_code,
    names_rate_refusal,
    recipient_verdict,
    request_verdict,
    uncertain_all,
)
from imgate.vendors.tencent.spec import SPEC

_SUCCESS_CODE: Final = 0

_DONE = Disposition.DONE
_AMBIGUOUS = Disposition.AMBIGUOUS
_RATE = Disposition.RATE_LIMITED
_AUTH = pb.FAILURE_REASON_AUTH_FAILED
_INVALID = pb.FAILURE_REASON_MESSAGE_INVALID
_VENDOR = pb.FAILURE_REASON_VENDOR_ERROR

CODES: Final[Mapping[int, tuple[Disposition, Reason]]] = {
    # Request refused as malformed (our request, not the message content per se).
    60002: (_DONE, _INVALID),  # URL parse error (e.g. random not a uint32)
    60003: (_DONE, _INVALID),  # request JSON parse error
    60009: (_DONE, _INVALID),  # bad resource / URL
    # Credentials and app state: fixing them takes an operator.
    60004: (_DONE, _AUTH),  # identifier or UserSig wrong
    60005: (_DONE, _AUTH),
    60006: (_DONE, _AUTH),  # SDKAppID invalid
    60010: (_DONE, _AUTH),  # identifier is not an app admin
    60012: (_DONE, _AUTH),  # SDKAppID missing
    60015: (_DONE, _AUTH),  # identifier not a string
    60016: (_DONE, _AUTH),  # SDKAppID disabled
    60017: (_DONE, _AUTH),  # request disabled
    60020: (_DONE, _AUTH),  # package expired / not yet effective
    60021: (_DONE, _AUTH),  # caller IP not allowed
    70002: (_DONE, _AUTH),  # UserSig empty
    70003: (_DONE, _AUTH),  # UserSig not decodable
    70005: (_DONE, _AUTH),
    70009: (_DONE, _AUTH),  # signed with another key / SDKAppID
    70013: (_DONE, _AUTH),  # identifier does not match the UserSig
    70014: (_DONE, _AUTH),  # SDKAppID does not match the UserSig
    70016: (_DONE, _AUTH),  # key not found (often: wrong region host)
    70020: (_DONE, _AUTH),  # SDKAppID not found
    70051: (_DONE, _AUTH),  # the (admin) account is blacklisted
    70403: (_DONE, _AUTH),  # admin required
    90009: (_DONE, _AUTH),  # admin permission required
    # Expired or invalid sig: re-sign once and resend; nothing was processed.
    70001: (Disposition.REFRESH_AUTH, _AUTH),
    70052: (Disposition.REFRESH_AUTH, _AUTH),
    # Refused for rate, not processed (CONTRACT §1.5); 70050 asks for a minute's pause.
    60007: (_RATE, pb.FAILURE_REASON_RATE_LIMITED),
    60011: (_RATE, pb.FAILURE_REASON_RATE_LIMITED),
    60018: (_RATE, pb.FAILURE_REASON_RATE_LIMITED),
    60019: (_RATE, pb.FAILURE_REASON_RATE_LIMITED),
    70050: (_RATE, pb.FAILURE_REASON_RATE_LIMITED),
    # Internal errors and timeouts "retry later": nothing says the call was not processed.
    # An internal timeout is still an answer, so the reason is VENDOR_ERROR; TIMEOUT is
    # for a vendor that did not answer us in time.
    60008: (_AMBIGUOUS, _VENDOR),  # service timeout
    60013: (_AMBIGUOUS, _VENDOR),  # internal response parse error
    60014: (_AMBIGUOUS, _VENDOR),  # account exchange timeout
    70169: (_AMBIGUOUS, _VENDOR),  # CONTRACT §1.6
    70202: (_AMBIGUOUS, _VENDOR),
    70500: (_AMBIGUOUS, _VENDOR),
    90992: (_AMBIGUOUS, _VENDOR),  # CONTRACT §1.6
    90994: (_AMBIGUOUS, _VENDOR),
    90995: (_AMBIGUOUS, _VENDOR),
    91000: (_AMBIGUOUS, _VENDOR),  # CONTRACT §1.6
    20004: (_AMBIGUOUS, _VENDOR),  # network error (sendmsg family)
    20005: (_AMBIGUOUS, _VENDOR),  # internal error (sendmsg family)
    # The message or request parameters.
    70402: (_DONE, _INVALID),
    80002: (_DONE, _INVALID),  # packet too long
    90001: (_DONE, _INVALID),
    90002: (_DONE, _INVALID),
    90003: (_DONE, _INVALID),
    90004: (_DONE, _INVALID),
    90005: (_DONE, _INVALID),
    90007: (_DONE, _INVALID),
    90010: (_DONE, _INVALID),
    90011: (_DONE, _INVALID),  # over 500 recipients
    90026: (_DONE, _INVALID),
    90031: (_DONE, _INVALID),
    90044: (_DONE, _INVALID),
    93000: (_DONE, _INVALID),  # over 12 KB
    80001: (_DONE, pb.FAILURE_REASON_CONTENT_REJECTED),
    # Parties.
    90008: (_DONE, pb.FAILURE_REASON_SENDER_NOT_FOUND),
    90012: (_DONE, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND),  # no recipient exists
    70107: (_DONE, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND),
    90048: (_DONE, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND),
    # sendmsg-family checks batchsendmsg does not make; classified should they appear.
    20007: (_DONE, pb.FAILURE_REASON_RECIPIENT_INVALID),  # blacklisted by the recipient
    20009: (_DONE, pb.FAILURE_REASON_RECIPIENT_INVALID),  # not friends
    20010: (_DONE, pb.FAILURE_REASON_RECIPIENT_INVALID),
    20011: (_DONE, pb.FAILURE_REASON_RECIPIENT_INVALID),
    20012: (_DONE, pb.FAILURE_REASON_SENDER_MUTED),
}
"""Request-level ErrorCode → (disposition, reason). Codes not listed are AMBIGUOUS: the
vendor does not document them, so nothing says the call was not processed (rule 24)."""

RECIPIENT_REASONS: Final[Mapping[int, Reason]] = {
    70107: pb.FAILURE_REASON_RECIPIENT_NOT_FOUND,
    90048: pb.FAILURE_REASON_RECIPIENT_NOT_FOUND,
}
"""ErrorList code → reason: 70107 is the only code the batchsendmsg page documents in
ErrorList (TX-1612). Other codes are classified by CODES: FAILED when the request table
refuses with them for good, else UNCERTAIN (recipient_verdict): the rate codes
60007/60011/60018/60019/70050 are documented for a whole call only, so one in ErrorList is
an undocumented answer for that recipient (it pauses the backend, nothing is resent)."""


def parse_answer(recipients: Sequence[str], status: int, body: bytes) -> CallResult:
    """Classify batchsendmsg's answer to a call for `recipients`."""
    read = coded_answer(recipients, status, body, SPEC, "ErrorCode")
    if isinstance(read, CallResult):
        return read
    answer, code = read.fields, read.code
    failed = _error_list(answer.get("ErrorList"), recipients)
    if failed is None:
        return uncertain_all("the ErrorList does not match the call's recipients")
    if code == _SUCCESS_CODE:
        return _success(recipients, answer, failed)
    disposition, reason = classify_code(CODES, code)
    verdict = request_verdict(
        recipients, disposition, reason, str(code), short(answer.get("ErrorInfo"))
    )
    if disposition is Disposition.DONE and failed:
        # A failed call may still say per account why; that is more precise.
        return CallResult(
            Disposition.DONE,
            tuple(
                _failed_recipient(result.recipient_id, failed[result.recipient_id])
                if result.recipient_id in failed
                else result
                for result in verdict.results
            ),
            rate_refused=names_rate_refusal(CODES, failed.values()),
        )
    return verdict


def _success(
    recipients: Sequence[str], answer: Mapping[str, Any], failed: Mapping[str, int]
) -> CallResult:
    """ErrorCode 0: someone got it, whatever ActionStatus says ("SomeError" on partial
    success, vendors.md §7.3). Listed accounts failed, the rest were accepted."""
    msg_key = answer.get("MsgKey", "")
    if not isinstance(msg_key, str):
        return uncertain_all("MsgKey is not a string")
    if not failed and answer.get("ActionStatus") != "OK":
        # The vendor says something failed but not for whom.
        return uncertain_all("the answer reports an error but lists no account")
    # One MsgKey for the call: the accepted share every field but their id.
    exceptions = {
        position: _failed_recipient(recipient, failed[recipient])
        for position, recipient in (enumerate(recipients) if failed else ())
        if recipient in failed
    }
    shared = RecipientResult("", True, vendor_message_id=msg_key)
    return CallResult(
        Disposition.DONE,
        AcceptedAlike(recipients, shared, exceptions),
        rate_refused=bool(failed) and names_rate_refusal(CODES, failed.values()),
    )


def _error_list(items: object, recipients: Sequence[str]) -> dict[str, int] | None:
    """ErrorList as account → its ErrorCode; None when the list is not one the vendor
    documents for this call (wrong types, accounts not in the call): then the answer does
    not account for the recipients (CONTRACT §8 rule 24)."""
    if items is None:
        return {}
    if not isinstance(items, list):
        return None
    failed: dict[str, int] = {}
    if not items:
        return failed
    wanted = set(recipients)
    for item in items:
        if not isinstance(item, dict):
            return None
        account = item.get("To_Account")
        code = as_int(item.get("ErrorCode"))
        if not isinstance(account, str) or account not in wanted or code is None:
            return None
        failed[account] = code
    return failed


def _failed_recipient(recipient: str, code: int) -> RecipientResult:
    """A recipient the ErrorList names: its code decides FAILED or UNCERTAIN (70169,
    90992, 91000 and undocumented codes may mean it was processed)."""
    detail = "account does not exist" if code in RECIPIENT_REASONS else ""
    return recipient_verdict(
        recipient,
        code,
        str(code),
        detail or "listed in the vendor's ErrorList",
        CODES,
        RECIPIENT_REASONS,
    )
