"""The translator interface: what every vendor plugin declares and does.

A translator is pure. It turns (message, chunk of recipients) into one vendor HTTP
request and turns the vendor's answer into one result per recipient, classified so the
dispatcher knows what it may do next:

    CallResult.disposition
    ├── DONE          final: `results` holds one RecipientResult per recipient, each
    │                 accepted, failed, or uncertain (the vendor's answer for it may
    │                 mean "processed": never resent); AcceptedAlike when most were
    │                 accepted alike, so that no object is made per recipient
    ├── RETRY         certainly not processed (HTTP 502, ...): safe to resend after backoff
    ├── RATE_LIMITED  refused for rate, not processed: pause the backend, then resend
    ├── REFRESH_AUTH  stale credentials, not processed: refresh once, then resend
    └── AMBIGUOUS     may have been processed: never resend; recipients end UNCERTAIN

It opens no sockets, reads no clock (time and nonces are passed in) and holds no state
beyond a credential cache. Vendor facts are read from the spec (vendors/<name>/spec.py).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, TypeAlias

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.chars import IdCensus
from imgate.vendors.base.spec import VendorSpec

Reason: TypeAlias = pb.FailureReason.ValueType


class Disposition(enum.Enum):
    """What the dispatcher may do after a vendor answer (see the module docstring)."""

    DONE = "done"
    RETRY = "retry"
    RATE_LIMITED = "rate_limited"
    REFRESH_AUTH = "refresh_auth"
    AMBIGUOUS = "ambiguous"


# Not frozen: one is made per recipient, and frozen dataclasses cost ~2x to construct.
@dataclass(slots=True)
class RecipientResult:
    """The vendor's final word on one recipient of a call.

    `accepted` False with `uncertain` True: the vendor's answer for this recipient may
    mean it was processed (or the answer does not account for it), so it ends UNCERTAIN
    with `reason` and is never resent. `uncertain` is ignored when `accepted`.
    """

    recipient_id: str
    accepted: bool
    reason: Reason = pb.FAILURE_REASON_UNSPECIFIED
    vendor_code: str = ""
    detail: str = ""
    vendor_message_id: str = ""
    vendor_time_ms: int = 0
    """The vendor's server time of the message (Yunxin timetag / create_time), ms."""
    uncertain: bool = False

    @property
    def state(self) -> pb.DeliveryState.ValueType:
        """The outcome state this result gives its recipient."""
        if self.accepted:
            return pb.DELIVERY_STATE_ACCEPTED
        return pb.DELIVERY_STATE_UNCERTAIN if self.uncertain else pb.DELIVERY_STATE_FAILED


def uncertain_result(
    recipient_id: str, reason: Reason, vendor_code: str = "", detail: str = ""
) -> RecipientResult:
    """A recipient whose fate the vendor's answer leaves open (UNCERTAIN, never resent)."""
    return RecipientResult(recipient_id, False, reason, vendor_code, detail, uncertain=True)


def fill_outcome(outcome: pb.RecipientOutcome, item: RecipientResult) -> None:
    """Set an outcome's state and vendor fields from the vendor's result for it (the
    dispatcher sets recipient_id, index and attempts)."""
    if item.accepted:
        outcome.state = pb.DELIVERY_STATE_ACCEPTED
        outcome.vendor_message_id = item.vendor_message_id
        if item.vendor_time_ms:
            outcome.vendor_time_ms = item.vendor_time_ms
        if item.detail:
            outcome.detail = item.detail
        return
    outcome.state = pb.DELIVERY_STATE_UNCERTAIN if item.uncertain else pb.DELIVERY_STATE_FAILED
    outcome.reason = item.reason
    outcome.vendor_code = item.vendor_code
    outcome.detail = item.detail


class AcceptedAlike(Sequence[RecipientResult]):
    """A call's results where every recipient was accepted with the same vendor fields
    (`accepted`, its recipient_id ignored) but those at the positions in `exceptions`.

    The usual answer (Tencent's one MsgKey for the call, Yunxin legacy's one timetag) in
    the form the sink turns into outcomes without a RecipientResult per recipient (about
    a third of the gateway's per-recipient cost of an outcome). Reads like the tuple of
    results it stands for.
    """

    __slots__ = ("accepted", "exceptions", "recipients")

    def __init__(
        self,
        recipients: Sequence[str],
        accepted: RecipientResult,
        exceptions: Mapping[int, RecipientResult] | None = None,
    ) -> None:
        if not accepted.accepted:
            raise ValueError("AcceptedAlike's shared result must be accepted")
        self.recipients = recipients
        self.accepted = accepted
        self.exceptions: Mapping[int, RecipientResult] = exceptions or {}

    def __len__(self) -> int:
        return len(self.recipients)

    def _at(self, position: int) -> RecipientResult:
        found = self.exceptions.get(position)
        if found is not None:
            return found
        shared = self.accepted
        return RecipientResult(
            self.recipients[position],
            True,
            detail=shared.detail,
            vendor_message_id=shared.vendor_message_id,
            vendor_time_ms=shared.vendor_time_ms,
        )

    def __getitem__(self, position: Any) -> Any:
        if isinstance(position, slice):
            return tuple(self._at(p) for p in range(*position.indices(len(self))))
        if position < 0:
            position += len(self)
        if not 0 <= position < len(self):
            raise IndexError(position)
        return self._at(position)

    def __iter__(self) -> Iterator[RecipientResult]:
        return (self._at(position) for position in range(len(self)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return tuple(self) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, like a list

    def __repr__(self) -> str:
        return f"AcceptedAlike({len(self)} recipients, {len(self.exceptions)} exceptions)"


def not_accepted(results: Sequence[RecipientResult]) -> Iterator[RecipientResult]:
    """The results that are not ACCEPTED (AcceptedAlike: only its exceptions are read)."""
    items = results.exceptions.values() if isinstance(results, AcceptedAlike) else results
    return (item for item in items if not item.accepted)


def count_states(results: Sequence[RecipientResult]) -> tuple[int, int, int]:
    """(accepted, failed, uncertain) among `results`."""
    if isinstance(results, AcceptedAlike):
        rejected = list(not_accepted(results))
        uncertain = sum(1 for item in rejected if item.uncertain)
        return len(results) - len(rejected), len(rejected) - uncertain, uncertain
    accepted = uncertain = 0
    for item in results:
        if item.accepted:
            accepted += 1
        elif item.uncertain:
            uncertain += 1
    return accepted, len(results) - accepted - uncertain, uncertain


@dataclass(frozen=True, slots=True)
class CallResult:
    """What one vendor answer means for the chunk it covered.

    For DONE, `results` has one entry per recipient of the chunk, in chunk order (a tuple,
    or an AcceptedAlike). For the other dispositions `reason`, `vendor_code` and `detail`
    say what the recipients end with if the call is not (or may not be) sent again.
    """

    disposition: Disposition
    results: Sequence[RecipientResult] = ()
    reason: Reason = pb.FAILURE_REASON_UNSPECIFIED
    vendor_code: str = ""
    detail: str = ""
    rate_refused: bool = False
    """A final (DONE) answer that names a recipient with the vendor's rate-refusal code:
    the vendor is refusing for rate, so the backend pauses as after a refused call (that
    recipient ends UNCERTAIN and nothing is resent)."""
    vendor_unavailable: bool = False
    """The vendor answered that its service is busy or unavailable (Yunxin 503/514): the
    backend's later calls go to the other endpoint, although this call may have been
    processed and is not resent."""


@dataclass(frozen=True, slots=True)
class VendorRequest:
    """One HTTP request to the vendor. `query` may carry secrets: log `path`, never a URL."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """A whole-request error, named by the request field (google.rpc.BadRequest)."""

    field: str
    description: str


class Translator(abc.ABC):
    """A vendor plugin. Subclasses point `spec` at their vendor's facts and implement
    the methods."""

    spec: ClassVar[VendorSpec]
    """The vendor's declared facts (limits, id rule, credentials, capabilities)."""

    def __init__(self, credentials: Mapping[str, Any]) -> None:
        self.credentials = credentials

    @abc.abstractmethod
    def validate(
        self,
        request: pb.BatchSendRequest,
        recipient_ids: Sequence[str] | None = None,
        census: IdCensus | None = None,
    ) -> list[FieldViolation]:
        """Vendor-specific whole-request checks (field limits, formats). Empty = valid.

        `recipient_ids` is `request.recipient_ids` already converted to a list, when the
        caller has it: reading a 100,000-id repeated field builds 100,000 new strings;
        `census` is IdCensus.of(recipient_ids), when the caller has it.

        Checks common to every vendor (recipients present and within the spec's id rule,
        content set, backend known, what the spec's capabilities refuse) are done before
        this is called.
        """

    @abc.abstractmethod
    def prepare(self, request: pb.BatchSendRequest) -> Any:
        """Encode the per-batch part of the vendor body once; passed back to build()."""

    def recipients_per_call(self, prepared: Any, configured: int) -> int:
        """Recipient cap for this message (e.g. lower when per-recipient ids are asked)."""
        return configured

    def base_body_bytes(self, prepared: Any) -> int:
        """Upper bound of the body size with no recipients (for byte-capped vendors)."""
        return 0

    def recipient_body_bytes(self, recipient_id: str) -> int:
        """Upper bound of what one more recipient adds to the body, separator included."""
        return 0

    def recipients_body_bytes(self, recipient_ids: Sequence[str]) -> list[int]:
        """`recipient_body_bytes` of each id, in order (the planner's bulk form).

        Byte-capped vendors override it with a vectorised fast path: the planner calls it
        on up to max_recipients_per_request ids per batch.
        """
        return [self.recipient_body_bytes(recipient_id) for recipient_id in recipient_ids]

    @abc.abstractmethod
    def build(
        self,
        prepared: Any,
        recipients: Sequence[str],
        chunk_key: str,
        now: float,
        nonce: str,
    ) -> VendorRequest:
        """The vendor request for one chunk.

        `chunk_key` is stable for the chunk across resends: de-duplication material (trace
        ids, Tencent MsgSeq/MsgRandom) is derived from it. `now` and `nonce` are fresh per
        attempt (signatures).
        """

    @abc.abstractmethod
    def parse(self, recipients: Sequence[str], status: int, body: bytes) -> CallResult:
        """Classify the vendor's answer to a request for `recipients`."""

    def invalidate_credentials(self) -> None:  # noqa: B027 - optional hook
        """Drop cached credentials (called once on REFRESH_AUTH before the resend)."""


def fail_all(
    recipients: Sequence[str], reason: Reason, vendor_code: str = "", detail: str = ""
) -> CallResult:
    """A final answer that failed every recipient of the call the same way."""
    return CallResult(
        Disposition.DONE,
        tuple(RecipientResult(r, False, reason, vendor_code, detail) for r in recipients),
    )


CodeTable: TypeAlias = Mapping[int, tuple[Disposition, Reason]]
"""Vendor code → (disposition, reason)."""

UNDOCUMENTED: Final = pb.FAILURE_REASON_VENDOR_ERROR
"""Reason given with a code the vendor's documentation does not list (then UNCERTAIN)."""


def recipient_verdict(
    recipient: str,
    code: int | None,
    vendor_code: str,
    detail: str,
    codes: CodeTable,
    recipient_reasons: Mapping[int, Reason],
) -> RecipientResult:
    """One recipient the vendor listed as not delivered, with its own code.

    A per-recipient code (`recipient_reasons`), or a request-level code (`codes`) that
    refuses for good (DONE), is FAILED with its reason. Every other code is UNCERTAIN
    (CONTRACT §8 rule 24): one that may mean "processed" (the vendor's "internal error,
    retry"), one the vendor does not document, and a request-level code that would have
    the call sent again (rate refusals, "busy", stale credentials): no vendor documents
    what such a code means for one recipient, and FAILED with a transient reason would
    invite the caller to send it again.
    """
    if code is not None and code in recipient_reasons:
        return RecipientResult(recipient, False, recipient_reasons[code], vendor_code, detail)
    if code is None:
        disposition, reason = Disposition.AMBIGUOUS, UNDOCUMENTED
    else:
        disposition, reason = classify_code(codes, code)
    if disposition is Disposition.DONE:
        return RecipientResult(recipient, False, reason, vendor_code, detail)
    if disposition is Disposition.RATE_LIMITED:
        detail = detail or "refused for rate: the vendor does not document it for one recipient"
        return uncertain_result(recipient, pb.FAILURE_REASON_RATE_LIMITED, vendor_code, detail)
    return uncertain_result(
        recipient,
        pb.FAILURE_REASON_VENDOR_ERROR,
        vendor_code,
        detail or "the vendor's code for this recipient may mean it was processed",
    )


def names_rate_refusal(codes: CodeTable, recipient_codes: Iterable[int | None]) -> bool:
    """Whether a per-recipient code is the vendor's rate-refusal code for a call (then the
    backend pauses: CallResult.rate_refused)."""
    return any(
        code is not None and classify_code(codes, code)[0] is Disposition.RATE_LIMITED
        for code in recipient_codes
    )


def classify_code(codes: CodeTable, code: int) -> tuple[Disposition, Reason]:
    """A request-level vendor code's (disposition, reason); an undocumented code is
    AMBIGUOUS: the answer does not say whether the call was processed (rule 24)."""
    return codes.get(code, (Disposition.AMBIGUOUS, UNDOCUMENTED))


def classify_http_status(
    recipients: Sequence[str], status: int, answered: frozenset[int] = frozenset({200})
) -> CallResult | None:
    """The verdict for an HTTP status that is not the vendor's answer, or None when the
    body must be read (`answered`: the spec's RefusalStatuses.statuses).

    502 means the vendor's front end refused before processing (retry); 429 is a rate
    refusal, also unprocessed. Yunxin and Tencent answer every business error with HTTP
    200 (vendors.md §1, §7.3), so any other status is not a documented answer: it may
    have been processed (ambiguous, CONTRACT §8 rule 24).
    """
    if status in answered:
        return None
    if status == 429:
        return CallResult(
            Disposition.RATE_LIMITED,
            reason=pb.FAILURE_REASON_RATE_LIMITED,
            vendor_code="http_429",
            detail="HTTP 429 from the vendor",
        )
    if status == 502:
        return CallResult(
            Disposition.RETRY,
            reason=pb.FAILURE_REASON_VENDOR_UNAVAILABLE,
            vendor_code="http_502",
            detail="HTTP 502 from the vendor",
        )
    if 300 <= status < 400:
        # The dispatcher never follows redirects: whoever answered may have processed it.
        return CallResult(
            Disposition.AMBIGUOUS,
            reason=pb.FAILURE_REASON_VENDOR_ERROR,
            vendor_code=f"http_{status}",
            detail=f"HTTP {status} redirect from the vendor's address, not followed;"
            " the call may have been processed",
        )
    return CallResult(
        Disposition.AMBIGUOUS,
        reason=pb.FAILURE_REASON_VENDOR_ERROR,
        vendor_code=f"http_{status}",
        detail=f"HTTP {status} from the vendor",
    )


def request_verdict(
    recipients: Sequence[str],
    disposition: Disposition,
    reason: Reason,
    vendor_code: str = "",
    detail: str = "",
) -> CallResult:
    """The result of a vendor answer that covers the whole call the same way.

    DONE fails every recipient with `reason`; the other dispositions leave the recipients
    to the dispatcher, which applies `reason` if the call is not (or may not be) resent.
    """
    if disposition is Disposition.DONE:
        return fail_all(recipients, reason, vendor_code, detail)
    return CallResult(disposition, reason=reason, vendor_code=vendor_code, detail=detail)


def uncertain_all(detail: str, vendor_code: str = "") -> CallResult:
    """An answer that does not account for the call's recipients (CONTRACT §8 rule 24):
    the vendor may have processed it, so every recipient ends UNCERTAIN."""
    return CallResult(
        Disposition.AMBIGUOUS,
        reason=pb.FAILURE_REASON_VENDOR_ERROR,
        vendor_code=vendor_code,
        detail=detail,
    )


def unreadable_answer(detail: str) -> CallResult:
    """An HTTP 200 whose body we cannot read: the vendor may have processed the call."""
    return CallResult(
        Disposition.AMBIGUOUS,
        reason=pb.FAILURE_REASON_VENDOR_ERROR,
        detail=f"unreadable vendor answer: {detail}",
    )
