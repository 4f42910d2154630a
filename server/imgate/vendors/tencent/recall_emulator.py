"""Emulator of Tencent's recall of a one-to-one message, `POST /v4/openim/admin_msgwithdraw`
(tencent/recall.py; notes/recall.md §A).

Checks, answered as the vendor does (HTTP 200, `{"ActionStatus":"FAIL","ErrorCode":N,
"ErrorInfo":"..."}`): the URL and UserSig as batchsendmsg; rate: its own 200 calls per
second (60007, no block); body: not a JSON object → 90001; `From_Account` missing,
invalid or unknown → 90008; `To_Account` likewise → 90003; `MsgKey` not a string of the
form `seq_random_time` → 90054. Then the message: only one this vendor delivered to
`To_Account` from `From_Account` under that MsgKey can be withdrawn (else 20022), once
(then 20023); any time after it was sent (no window). Answer `{"ActionStatus":"OK",
"ErrorInfo":"","ErrorCode":0}`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from aiohttp import web

from imgate.vendors.base.checks import NotJson, strict_json
from imgate.vendors.base.emulation import VendorSettings
from imgate.vendors.base.emulator import Emulator, ParsedCall, VendorError
from imgate.vendors.base.sandbox_state import SandboxState
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.tencent.emulator import TencentEmulator, TencentSettings
from imgate.vendors.tencent.recall import BAD_MSG_KEY, NO_SUCH_MESSAGE, WITHDRAWN_ALREADY
from imgate.vendors.tencent.spec import RECALL, SPEC

_MSG_KEY = re.compile(r"\d+_\d+_\d+")


@dataclass(frozen=True)
class _Withdraw(ParsedCall):
    msg_key: str


class TencentRecallEmulator(Emulator[TencentSettings, _Withdraw]):
    """Tencent Cloud IM `v4/openim/admin_msgwithdraw`."""

    spec: ClassVar[VendorSpec] = SPEC
    api: ClassVar[Literal["send", "recall"]] = "recall"
    settings_type: ClassVar[type[TencentSettings]] = TencentSettings
    rate_limit_code: ClassVar[int] = RECALL.rate_limit_code
    internal_error: ClassVar[tuple[int, str]] = (91000, "internal error, retry")

    def __init__(self, settings: TencentSettings, sandbox: SandboxState) -> None:
        super().__init__(settings, sandbox)
        self._send = TencentEmulator(settings, sandbox)  # whose URL and UserSig checks apply

    @classmethod
    def default_settings(cls) -> VendorSettings:
        return TencentSettings()

    def authenticate(self, request: web.Request, body: bytes) -> None:
        self._send.authenticate(request, body)

    def error_body(self, code: int, message: str) -> dict[str, Any]:
        return {"ActionStatus": "FAIL", "ErrorCode": code, "ErrorInfo": message}

    def parse(self, request: web.Request, body: bytes) -> _Withdraw:
        try:
            doc = strict_json(body.decode("utf-8"))
        except (UnicodeDecodeError, NotJson):
            raise VendorError(90001, "Fail to Parse json data of body, Please check it") from None
        if not isinstance(doc, dict):
            raise VendorError(90001, "request body must be a JSON object")
        sender = _account(doc, "From_Account", 90008, self.sandbox)
        recipient = _account(doc, "To_Account", 90003, self.sandbox)
        msg_key = doc.get("MsgKey")
        if not isinstance(msg_key, str) or not _MSG_KEY.fullmatch(msg_key):
            raise VendorError(BAD_MSG_KEY, "MsgKey is not valid")
        return _Withdraw(
            sender=sender,
            recipients=(recipient,),
            message_type="withdraw",
            fingerprint="",
            msg_key=msg_key,
        )

    def process(self, call: _Withdraw, call_id: int) -> dict[str, Any]:
        recipient = call.recipients[0]
        sent = self.state.sent.get((call.msg_key, recipient))
        if sent is None or sent.sender != call.sender:
            return self.error_body(NO_SUCH_MESSAGE, "the message to recall does not exist")
        if not self.state.withdraw(call_id, call.msg_key, recipient):
            return self.error_body(WITHDRAWN_ALREADY, "the message has been recalled already")
        return {"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0}


def _account(doc: Mapping[str, Any], field: str, code: int, sandbox: SandboxState) -> str:
    value = doc.get(field)
    if not (isinstance(value, str) and value and SPEC.id_rule.fits(value)):
        raise VendorError(code, f"{field} is missing or invalid")
    if not sandbox.accounts.exists(value):
        raise VendorError(code, f"{field} does not exist")
    return value
