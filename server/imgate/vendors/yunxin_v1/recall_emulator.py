"""Emulator of Yunxin's legacy recall, `POST /nimserver/msg/recall.action` (yunxin_v1/recall.py;
notes/recall.md §C).

Checks, answered as the vendor does (HTTP 200, `{"code": N, "desc": "..."}`): the auth
headers as sendBatchMsg (403); rate: its own 100 calls per second, then every recall
refused for 10 s (416); form: `deleteMsgid` and `timetag` integers, `type` 7 or 8, `from`
and `to` account ids, `msg` ≤ 128, `ignoreTime` only "1", `pushcontent` ≤ 500, `payload`
JSON ≤ 2048, `attach` ≤ 5000, `env` ≤ 32 (414 naming the field). Then the message: one
this vendor delivered to `to` from `from` with that id and timetag is withdrawn, within
the app's two-way window (`recall_window_s`, 2 minutes by default; about 30 days with
`ignoreTime=1`), else 508 (unverified). A message it does not hold, a team message (the
sandbox has no teams) and one withdrawn already answer 200 and withdraw nothing, as the
vendor documents for messages it does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from aiohttp import web

from imgate.vendors._yunxin import emulator as yx
from imgate.vendors._yunxin.recall import THIRTY_DAYS_S, WINDOW_PASSED
from imgate.vendors.base.emulation import VendorSettings
from imgate.vendors.base.emulator import Emulator, ParsedCall, VendorError
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.yunxin_v1.emulator import YunxinV1Settings, _form_fields, _required
from imgate.vendors.yunxin_v1.recall import P2P_RECALL
from imgate.vendors.yunxin_v1.spec import RECALL, SPEC

_TEAM_RECALL = "8"


@dataclass(frozen=True)
class _Recall(ParsedCall):
    message_id: str
    timetag: int
    team: bool
    ignore_time: bool


class YunxinV1RecallEmulator(Emulator[YunxinV1Settings, _Recall]):
    """Yunxin legacy `msg/recall.action`."""

    spec: ClassVar[VendorSpec] = SPEC
    api: ClassVar[Literal["send", "recall"]] = "recall"
    settings_type: ClassVar[type[YunxinV1Settings]] = YunxinV1Settings
    rate_limit_code: ClassVar[int] = RECALL.rate_limit_code
    internal_error: ClassVar[tuple[int, str]] = yx.INTERNAL_ERROR

    @classmethod
    def default_settings(cls) -> VendorSettings:
        return YunxinV1Settings()

    def authenticate(self, request: web.Request, body: bytes) -> None:
        yx.check_auth(request, self.settings, self.sandbox.clock.wall())

    def error_body(self, code: int, message: str) -> dict[str, Any]:
        return {"code": code, "desc": message}

    def parse(self, request: web.Request, body: bytes) -> _Recall:
        form = _form_fields(request, body)
        message_id = _integer(form, "deleteMsgid")
        timetag = int(_integer(form, "timetag"))
        kind = _required(form, "type")
        if kind not in (P2P_RECALL, _TEAM_RECALL):
            raise VendorError(yx.PARAM_ERROR, "type must be 7 or 8")
        sender = yx.check_account_id(_required(form, "from"), "from")
        recipient = yx.check_account_id(_required(form, "to"), "to")
        if "msg" in form:
            yx.check_chars(form["msg"], "msg", 128)
        if form.get("ignoreTime") not in (None, "1"):
            raise VendorError(yx.PARAM_ERROR, "ignoreTime must be 1")
        if "pushcontent" in form:
            yx.check_chars(form["pushcontent"], "pushcontent", 500)
        if form.get("payload"):
            yx.check_json_object_text(form["payload"], "payload", 2048)
        if "attach" in form:
            yx.check_chars(form["attach"], "attach", 5000)
        if "env" in form:
            yx.check_chars(form["env"], "env", 32)
        return _Recall(
            sender=sender,
            recipients=(recipient,),
            message_type="recall",
            fingerprint="",
            message_id=message_id,
            timetag=timetag,
            team=kind == _TEAM_RECALL,
            ignore_time=form.get("ignoreTime") == "1",
        )

    def process(self, call: _Recall, call_id: int) -> dict[str, Any]:
        recipient = call.recipients[0]
        sent = self.state.sent.get((call.message_id, recipient))
        if call.team or sent is None or (sent.sender, sent.time_ms) != (call.sender, call.timetag):
            return {"code": 200}  # "按撤回成功处理": a message it does not hold
        window_s = THIRTY_DAYS_S if call.ignore_time else self.settings.recall_window_s
        if self.sandbox.clock.wall() * 1000 - sent.time_ms > window_s * 1000:
            return self.error_body(WINDOW_PASSED, "the message can no longer be recalled")
        self.state.withdraw(call_id, call.message_id, recipient)  # once; again: nothing
        return {"code": 200}


def _integer(form: dict[str, str], name: str) -> str:
    value = _required(form, name)
    if not (value.isascii() and value.isdigit()):
        raise VendorError(yx.PARAM_ERROR, f"{name} must be an integer")
    return value
