"""Yunxin legacy recall of a one-to-one message: `POST /nimserver/msg/recall.action`, a form
of `deleteMsgid`, `timetag`, `type=7`, `from`, `to` and `ignoreTime=1` (the spec's
RecallSpec; notes/recall.md §C).

`deleteMsgid` is the recipient's id from sendBatchMsg's `msgids`, which it returns only
with `returnMsgid=true` (a `recallable` backend asks for it); `timetag` is that call's.
`ignoreTime=1` lifts the app's two-way window (2 minutes by default) to about 30 days.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final
from urllib.parse import urlencode

from imgate.vendors._yunxin.recall import RECALL_REASONS, parse_recall
from imgate.vendors._yunxin.translator import CODES, trace_id
from imgate.vendors.base.auth import yunxin_headers
from imgate.vendors.base.recall import RecallTarget, RecallTranslator
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.base.translator import CallResult, CodeTable, VendorRequest
from imgate.vendors.yunxin_v1.spec import RECALL, SPEC
from imgate.vendors.yunxin_v1.translator import YunxinV1Translator

P2P_RECALL: Final = "7"
"""recall.action `type`: 7 a P2P message, 8 a team's."""
RECALL_CODES: Final[CodeTable] = {**CODES, **RECALL_REASONS}


class YunxinV1RecallTranslator(RecallTranslator):
    """NetEase Yunxin legacy `msg/recall.action`."""

    spec: ClassVar[VendorSpec] = SPEC

    def __init__(self, credentials: Mapping[str, Any]) -> None:
        super().__init__(credentials)
        self._app_key = str(credentials["app_key"])
        self._app_secret = str(credentials["app_secret"])

    def build_recall(
        self, target: RecallTarget, chunk_key: str, now: float, nonce: str
    ) -> VendorRequest:
        form = {
            "deleteMsgid": target.message_id,
            "timetag": str(target.time_ms),
            "type": P2P_RECALL,
            "from": target.sender_id,
            "to": target.recipient_id,
            "ignoreTime": "1",
        }
        headers = yunxin_headers(self._app_key, self._app_secret, nonce, now)
        headers["Content-Type"] = YunxinV1Translator.content_type
        headers[YunxinV1Translator.trace_header] = trace_id(chunk_key)
        return VendorRequest(RECALL.method, RECALL.path, headers, urlencode(form).encode())

    def parse_recall(self, recipient: str, status: int, body: bytes) -> CallResult:
        return parse_recall(SPEC, recipient, status, body, RECALL_CODES, "desc")
