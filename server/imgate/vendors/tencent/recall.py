"""Tencent recall of a one-to-one message: `POST /v4/openim/admin_msgwithdraw` with
`{From_Account, To_Account, MsgKey}` and the admin's UserSig in the query, one message to
one recipient per call (the spec's RecallSpec; notes/recall.md §A).

The MsgKey is the batchsendmsg call's, shared by its recipients; `To_Account` says whose
copy. An empty sender was the app admin. Codes (the recall page): 20022 no such message
(FAILED/NOT_RECALLABLE), 20023 withdrawn already (ACCEPTED: it is gone), 90054 a MsgKey
it refuses (NOT_RECALLABLE), 90003 / 90008 unknown recipient / sender, 91000 internal
error (UNCERTAIN: it may have been withdrawn); the REST platform's auth and rate codes as
for batchsendmsg; any other code UNCERTAIN (CONTRACT §8 rule 24).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.common import coded_answer, compact_json, short
from imgate.vendors.base.recall import RecallTarget, RecallTranslator, withdrawn
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.base.translator import (
    CallResult,
    Disposition,
    Reason,
    VendorRequest,
    classify_code,
    request_verdict,
)
from imgate.vendors.tencent.admin import AdminAuth
from imgate.vendors.tencent.answers import CODES
from imgate.vendors.tencent.spec import RECALL, SPEC

NO_SUCH_MESSAGE: Final = 20022
WITHDRAWN_ALREADY: Final = 20023
BAD_MSG_KEY: Final = 90054

_DONE = Disposition.DONE
RECALL_CODES: Final[Mapping[int, tuple[Disposition, Reason]]] = {
    # The REST platform's codes (URL, UserSig, admin, rate) mean what they mean for any API.
    **{code: verdict for code, verdict in CODES.items() if 60000 <= code < 80000},
    NO_SUCH_MESSAGE: (_DONE, pb.FAILURE_REASON_NOT_RECALLABLE),
    BAD_MSG_KEY: (_DONE, pb.FAILURE_REASON_NOT_RECALLABLE),
    90001: (_DONE, pb.FAILURE_REASON_MESSAGE_INVALID),
    90003: (_DONE, pb.FAILURE_REASON_RECIPIENT_NOT_FOUND),
    90008: (_DONE, pb.FAILURE_REASON_SENDER_NOT_FOUND),
    90009: (_DONE, pb.FAILURE_REASON_AUTH_FAILED),
    91000: (Disposition.AMBIGUOUS, pb.FAILURE_REASON_VENDOR_ERROR),
}
"""admin_msgwithdraw's codes → (disposition, reason); 20023 is a withdrawal."""

_DETAILS: Final[Mapping[int, str]] = {
    NO_SUCH_MESSAGE: "the vendor has no such message for this recipient",
    BAD_MSG_KEY: "the vendor refuses the MsgKey",
}


class TencentRecallTranslator(RecallTranslator):
    """Tencent Cloud IM `admin_msgwithdraw`."""

    spec: ClassVar[VendorSpec] = SPEC

    def __init__(self, credentials: Mapping[str, Any]) -> None:
        super().__init__(credentials)
        self._auth = AdminAuth(credentials)

    def build_recall(
        self, target: RecallTarget, chunk_key: str, now: float, nonce: str
    ) -> VendorRequest:
        body = {
            "From_Account": target.sender_id or self._auth.admin,  # empty: the admin sent it
            "To_Account": target.recipient_id,
            "MsgKey": target.message_id,
        }
        query = self._auth.query(now, nonce)
        return VendorRequest(
            method=RECALL.method,
            path=RECALL.path,
            headers={"Content-Type": "application/json"},
            body=compact_json(body).encode(),
            query=query,
        )

    def invalidate_credentials(self) -> None:
        self._auth.forget()

    def parse_recall(self, recipient: str, status: int, body: bytes) -> CallResult:
        read = coded_answer([recipient], status, body, SPEC, "ErrorCode")
        if isinstance(read, CallResult):
            return read
        answer, code = read.fields, read.code
        if code == 0:
            return withdrawn(recipient)
        if code == WITHDRAWN_ALREADY:
            return withdrawn(recipient, f"withdrawn already ({WITHDRAWN_ALREADY})")
        disposition, reason = classify_code(RECALL_CODES, code)
        detail = _DETAILS.get(code) or short(answer.get("ErrorInfo"))
        return request_verdict([recipient], disposition, reason, str(code), detail)
