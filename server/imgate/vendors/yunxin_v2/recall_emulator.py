"""Emulator of Yunxin v2's recall of a P2P message,
`DELETE /im/v2/conversations/{conversation_id}/messages/{message_server_id}?type=N`
(yunxin_v2/recall.py; notes/recall.md §B).

Checks, answered as the vendor does (HTTP 200, `{"code": N, "msg": "...", "data": {}}`):
the auth headers as the batch send (403); rate: its own 50 calls per second, then every
recall refused for 10 s (416; both unverified); path: `conversation_id` a P2P
conversation `sender|1|receiver` of two account ids, `message_server_id` an integer;
query: `type` 1, 2 or 3, the Java SDK's (`description`, `push_content`, `push_payload`,
`route_environment`, `attach`, `check_team_member_valid`, `message_time`,
`ignore_revoke_time`) and the Go SDK's (`server_extension`, `notify`) tolerated (414 naming
what is wrong). Then the message: one this vendor delivered to the receiver from the
sender with that id is withdrawn (one-way, two-way or deleted alike), within 30 days for
types 1 and 3 and the app's two-way window (`recall_window_s`, 2 minutes by default) for
type 2, else 508; one it does not hold answers 404 (both codes unverified); a second
recall of it answers 200 and withdraws nothing. Answer `{"code":200,"msg":"success",
"data":{}}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from aiohttp import web

from imgate.vendors._yunxin import emulator as yx
from imgate.vendors._yunxin.recall import NOT_FOUND, THIRTY_DAYS_S, WINDOW_PASSED
from imgate.vendors.base.emulation import VendorSettings
from imgate.vendors.base.emulator import Emulator, ParsedCall, VendorError
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.yunxin_v2.emulator import YunxinV2Settings
from imgate.vendors.yunxin_v2.recall import P2P_CONVERSATION
from imgate.vendors.yunxin_v2.spec import RECALL, SPEC

_TYPES = ("1", "2", "3")
_TWO_WAY = "2"


@dataclass(frozen=True)
class _Withdraw(ParsedCall):
    message_id: str
    kind: str


class YunxinV2RecallEmulator(Emulator[YunxinV2Settings, _Withdraw]):
    """Yunxin v2 `DELETE conversations/{conversation_id}/messages/{message_server_id}`."""

    spec: ClassVar[VendorSpec] = SPEC
    api: ClassVar[Literal["send", "recall"]] = "recall"
    settings_type: ClassVar[type[YunxinV2Settings]] = YunxinV2Settings
    rate_limit_code: ClassVar[int] = RECALL.rate_limit_code
    internal_error: ClassVar[tuple[int, str]] = yx.INTERNAL_ERROR

    @classmethod
    def default_settings(cls) -> VendorSettings:
        return YunxinV2Settings()

    def authenticate(self, request: web.Request, body: bytes) -> None:
        yx.check_auth(request, self.settings, self.sandbox.clock.wall())

    def error_body(self, code: int, message: str) -> dict[str, Any]:
        return {"code": code, "msg": message, "data": {}}

    def parse(self, request: web.Request, body: bytes) -> _Withdraw:
        parts = request.match_info["conversation_id"].split("|")
        if len(parts) != 3 or parts[1] != P2P_CONVERSATION:
            raise VendorError(
                yx.PARAM_ERROR, "conversation_id must be a P2P conversation sender|1|receiver"
            )
        sender = yx.check_account_id(parts[0], "conversation_id sender")
        recipient = yx.check_account_id(parts[2], "conversation_id receiver")
        message_id = request.match_info["message_server_id"]
        if not (message_id.isascii() and message_id.isdigit()):
            raise VendorError(yx.PARAM_ERROR, "message_server_id must be an integer")
        query = request.rel_url.query
        kind = query.get("type", "")
        if kind not in _TYPES:
            raise VendorError(yx.PARAM_ERROR, "type must be 1, 2 or 3")
        for name, cap in (("description", 128), ("push_content", 500), ("attach", 5000)):
            if name in query:
                yx.check_chars(query[name], name, cap)
        if query.get("push_payload"):
            yx.check_json_object_text(query["push_payload"], "push_payload", 2048)
        return _Withdraw(
            sender=sender,
            recipients=(recipient,),
            message_type="withdraw",
            fingerprint="",
            message_id=message_id,
            kind=kind,
        )

    def process(self, call: _Withdraw, call_id: int) -> dict[str, Any]:
        recipient = call.recipients[0]
        sent = self.state.sent.get((call.message_id, recipient))
        if sent is None or sent.sender != call.sender:
            return self.error_body(NOT_FOUND, "message not found")
        window_s = self.settings.recall_window_s if call.kind == _TWO_WAY else THIRTY_DAYS_S
        if self.sandbox.clock.wall() * 1000 - sent.time_ms > window_s * 1000:
            return self.error_body(WINDOW_PASSED, "the message can no longer be withdrawn")
        self.state.withdraw(call_id, call.message_id, recipient)  # once; again: nothing
        return {"code": 200, "msg": "success", "data": {}}
