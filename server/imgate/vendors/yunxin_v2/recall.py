"""Yunxin v2 recall of a one-to-one message:
`DELETE /im/v2/conversations/{sender|1|recipient}/messages/{message_server_id}?type=1`, no
body (the spec's RecallSpec; notes/recall.md §B).

`message_server_id` is the recipient's from the batch send's success_list. `type=1` is the
one-way recall: the receiver's copies are deleted and it is notified, within 30 days;
`type=2` (two-way) works only within the app's window, 2 minutes by default. The
conversation id's `|` are percent-encoded in the path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final
from urllib.parse import quote

from imgate.vendors._yunxin.recall import RECALL_REASONS, parse_recall
from imgate.vendors._yunxin.translator import V2_CODES, trace_id
from imgate.vendors.base.auth import yunxin_headers
from imgate.vendors.base.recall import RecallTarget, RecallTranslator
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.base.translator import CallResult, CodeTable, VendorRequest
from imgate.vendors.yunxin_v2.spec import RECALL, SPEC
from imgate.vendors.yunxin_v2.translator import YunxinV2Translator

P2P_CONVERSATION: Final = "1"
"""The conversation type in a conversation id `sender|type|receiver`: 1 = P2P."""
ONE_WAY: Final = "1"
"""`type`: 1 one-way recall, 2 two-way recall, 3 delete."""
RECALL_CODES: Final[CodeTable] = {**V2_CODES, **RECALL_REASONS}


def conversation_id(sender: str, recipient: str) -> str:
    """A P2P conversation's id, as the v2 API names it."""
    return f"{sender}|{P2P_CONVERSATION}|{recipient}"


class YunxinV2RecallTranslator(RecallTranslator):
    """NetEase Yunxin v2 withdraw of a P2P message."""

    spec: ClassVar[VendorSpec] = SPEC

    def __init__(self, credentials: Mapping[str, Any]) -> None:
        super().__init__(credentials)
        self._app_key = str(credentials["app_key"])
        self._app_secret = str(credentials["app_secret"])

    def build_recall(
        self, target: RecallTarget, chunk_key: str, now: float, nonce: str
    ) -> VendorRequest:
        path = RECALL.path.format(
            conversation_id=quote(conversation_id(target.sender_id, target.recipient_id), ""),
            message_server_id=quote(target.message_id, ""),
        )
        headers = yunxin_headers(self._app_key, self._app_secret, nonce, now)
        headers[YunxinV2Translator.trace_header] = trace_id(chunk_key)
        return VendorRequest(RECALL.method, path, headers, b"", {"type": ONE_WAY})

    def parse_recall(self, recipient: str, status: int, body: bytes) -> CallResult:
        return parse_recall(SPEC, recipient, status, body, RECALL_CODES, "msg")
