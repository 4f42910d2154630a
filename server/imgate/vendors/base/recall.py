"""Recall ("withdraw") of one-to-one messages: the translator base a vendor's recall calls
go through (CONTRACT §9 rule 27); the recall API's facts are its spec's (RecallSpec).

Every vendor's recall API takes one message to one recipient per call (notes: Tencent
`admin_msgwithdraw`, Yunxin v2 `DELETE .../messages/{id}`, Yunxin legacy `recall.action`),
so a recall batch's chunk is one recipient. Its quota is the recall API's own, apart from
the send API's.

A recall translator is a Translator (the dispatcher sends its calls as any others, with
their write-ahead, quota, retry policy and classification) whose `prepared` is per call: a
RecallTarget, the message to withdraw from one recipient.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.chars import IdCensus
from imgate.vendors.base.translator import (
    CallResult,
    Disposition,
    FieldViolation,
    RecipientResult,
    Translator,
    VendorRequest,
)


@dataclass(frozen=True, slots=True)
class RecallTarget:
    """One recall call: the message to withdraw from one recipient."""

    sender_id: str
    """The original's sender (empty: the app's admin, on Tencent)."""
    recipient_id: str
    message_id: str
    """The vendor's message id / key, as the send answer gave it."""
    time_ms: int
    """The vendor's server time of the message (Yunxin), 0 when it gave none."""


class RecallTranslator(Translator):
    """A vendor's recall API as a Translator: `build` and `parse` of one call for one
    RecallTarget. Subclasses implement `build_recall` and `parse_recall`."""

    def validate(
        self,
        request: pb.BatchSendRequest,
        recipient_ids: Sequence[str] | None = None,
        census: IdCensus | None = None,
    ) -> list[FieldViolation]:
        return []  # a recall batch is made by the gateway, never asked for field by field

    def prepare(self, request: pb.BatchSendRequest) -> str:
        """The original's sender: what every target of the batch shares."""
        return request.sender_id

    def recipients_per_call(self, prepared: Any, configured: int) -> int:
        return 1

    def build(
        self,
        prepared: Any,
        recipients: Sequence[str],
        chunk_key: str,
        now: float,
        nonce: str,
    ) -> VendorRequest:
        if not isinstance(prepared, RecallTarget) or list(recipients) != [prepared.recipient_id]:
            raise ValueError("a recall call is one RecallTarget for its one recipient")
        return self.build_recall(prepared, chunk_key, now, nonce)

    def parse(self, recipients: Sequence[str], status: int, body: bytes) -> CallResult:
        return self.parse_recall(recipients[0], status, body)

    @abc.abstractmethod
    def build_recall(
        self, target: RecallTarget, chunk_key: str, now: float, nonce: str
    ) -> VendorRequest:
        """The vendor request that withdraws `target` (`chunk_key`, `now`, `nonce` as for
        Translator.build)."""

    @abc.abstractmethod
    def parse_recall(self, recipient: str, status: int, body: bytes) -> CallResult:
        """The vendor's answer to a recall for `recipient`: DONE with its one result
        (accepted = withdrawn), or a disposition the dispatcher acts on."""


def withdrawn(recipient: str, detail: str = "") -> CallResult:
    """The vendor withdrew the message (ACCEPTED)."""
    return CallResult(Disposition.DONE, (RecipientResult(recipient, True, detail=detail),))


def not_recallable(recipient: str, vendor_code: str, detail: str) -> CallResult:
    """The vendor says the message cannot be withdrawn (FAILED/NOT_RECALLABLE)."""
    result = RecipientResult(
        recipient, False, pb.FAILURE_REASON_NOT_RECALLABLE, vendor_code, detail
    )
    return CallResult(Disposition.DONE, (result,))
