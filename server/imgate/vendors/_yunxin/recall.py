"""What Yunxin's two recall APIs share: how an answer is read, and the codes the documents
leave open (notes/recall.md §B, §C).

Both answer `{"code": 200, ...}` when done. Legacy `recall.action` also answers 200 for a
message it does not hold (documented): ACCEPTED there means the vendor accepted the recall,
not proof of a withdrawal. Neither page gives the code of a recall past its window: 508
("expired" in Yunxin's general table) is assumed, unverified, and read as NOT_RECALLABLE;
the emulators answer it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors._yunxin.translator import SUCCESS_CODE, classify
from imgate.vendors.base.common import coded_answer
from imgate.vendors.base.recall import withdrawn
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.base.translator import (
    CallResult,
    CodeTable,
    Disposition,
    Reason,
)

WINDOW_PASSED: Final = 508
"""The recall window has passed (unverified: Yunxin's general "expired")."""
ANTISPAM_HIT: Final = 414
"""Legacy recall of a message its moderation stopped (documented); also "parameter error"."""
NOT_FOUND: Final = 404
"""v2: no such message (unverified: the common "object not found")."""

RECALL_REASONS: Final[Mapping[int, tuple[Disposition, Reason]]] = {
    WINDOW_PASSED: (Disposition.DONE, pb.FAILURE_REASON_NOT_RECALLABLE),
    ANTISPAM_HIT: (Disposition.DONE, pb.FAILURE_REASON_NOT_RECALLABLE),
    NOT_FOUND: (Disposition.DONE, pb.FAILURE_REASON_NOT_RECALLABLE),
}
"""Recall codes both APIs read alike, over their own tables (a 414 naming CheckSum or
AppKey stays AUTH_FAILED)."""

THIRTY_DAYS_S: Final = 30 * 86400.0


def parse_recall(
    spec: VendorSpec,
    recipient: str,
    status: int,
    body: bytes,
    codes: CodeTable,
    message_key: str,
) -> CallResult:
    """A Yunxin recall answer for `recipient` (`message_key`: where the answer's text is,
    legacy `desc`, v2 `msg`)."""
    recipients: Sequence[str] = (recipient,)
    read = coded_answer(recipients, status, body, spec, "code")
    if isinstance(read, CallResult):
        return read
    answer, code = read.fields, read.code
    if code == SUCCESS_CODE:
        return withdrawn(recipient)
    return classify(recipients, code, str(answer.get(message_key) or ""), codes)
