"""The emulator base class: one vendor endpoint and the order every call goes through.

    read body ─► authenticate ─► rate: calls ─► parse + validate ─► rate: recipients
      ─► draw fault ─► count in windows ─► process (deliver) ─► answer

Each step may refuse with the vendor's own error body, at the HTTP status the spec's
`refusal_statuses` gives its code (200 for Yunxin and Tencent); refused calls are never
processed and never counted in the rate windows. Faults apply only to calls that passed
every check. A vendor subclass points `spec` at its vendor's facts, declares its settings
type and rate code, and implements `authenticate`, `parse`, `process` and `error_body`.

An emulator serves one API of its vendor: the send API, or (`api = "recall"`) the recall
API of the spec's RecallSpec, with its own rate windows and faults but the vendor's
accounts and deliveries (only a delivered message can be withdrawn).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

from aiohttp import web

from imgate.vendors.base.emulation import UNPROCESSED_FAULTS, FaultRule, VendorSettings
from imgate.vendors.base.sandbox_state import RateGate, RateRefused, SandboxState, VendorState
from imgate.vendors.base.spec import VendorSpec

logger = logging.getLogger("imgate.sandbox")

_HTML_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_HTML_PAGE = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Service notice</title>'
    "</head>\n<body><h1>The service is under maintenance</h1>"
    "<p>Please try again later.</p></body></html>\n"
)


OVERSIZED_ANSWER_BYTES = 5 << 20
"""Size of an `oversized` fault's answer: over the gateway's default 4 MiB bound."""


class VendorError(Exception):
    """A refusal in the vendor's own terms: its error code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ParsedCall:
    """A call that passed validation; vendor subclasses add what `process` needs."""

    sender: str
    recipients: tuple[str, ...]
    """Recipients as sent, duplicates included (the vendors count the list as sent)."""
    message_type: str
    fingerprint: str

    def unique_recipients(self) -> list[str]:
        """Recipients in first-occurrence order: each is delivered to once."""
        return list(dict.fromkeys(self.recipients))


SettingsT = TypeVar("SettingsT", bound=VendorSettings)
CallT = TypeVar("CallT", bound=ParsedCall)


class Emulator(abc.ABC, Generic[SettingsT, CallT]):
    """One emulated vendor endpoint. Subclasses are listed in `imgate.vendors.registry.VENDORS`."""

    spec: ClassVar[VendorSpec]
    """The vendor's declared facts: id, path, limits, id rule, credentials, statuses."""
    api: ClassVar[Literal["send", "recall"]] = "send"
    """Which of the vendor's APIs this emulates."""
    method: ClassVar[str] = "POST"
    settings_type: ClassVar[type[VendorSettings]]
    """The settings class this emulator takes (checked when the app is built)."""
    rate_limit_code: ClassVar[int]
    """The vendor code for a call refused by rate control."""
    internal_error: ClassVar[tuple[int, str]]
    """The vendor's internal-error code and message (the `error_500` fault)."""

    def __init__(self, settings: SettingsT, sandbox: SandboxState) -> None:
        self.settings = settings
        self.sandbox = sandbox

    @classmethod
    @abc.abstractmethod
    def default_settings(cls) -> VendorSettings:
        """Settings with the vendor's published limits and the sandbox credentials."""

    @classmethod
    def route(cls) -> tuple[str, str]:
        """(method, path) of the API this emulates."""
        if cls.api == "recall":
            if cls.spec.recall is None:
                raise ValueError(f"{cls.spec.vendor} declares no recall API")
            return cls.spec.recall.method, cls.spec.recall.path
        return cls.method, cls.spec.path

    @property
    def state(self) -> VendorState:
        """This vendor's counters, windows and faults."""
        return self.sandbox.vendor(self.spec.vendor)

    @property
    def gate(self) -> RateGate:
        """The rate control of this API (the recall API's is its own)."""
        state = self.state
        return state.recall_rate if self.api == "recall" else state.rate

    @abc.abstractmethod
    def authenticate(self, request: web.Request, body: bytes) -> None:
        """Check the vendor's credentials; raise VendorError with the vendor's code."""

    @abc.abstractmethod
    def parse(self, request: web.Request, body: bytes) -> CallT:
        """Parse and validate the call, senders included; raise VendorError when wrong."""

    @abc.abstractmethod
    def process(self, call: CallT, call_id: int) -> dict[str, Any]:
        """Deliver to the recipients (via `deliver`) and return the vendor's answer body."""

    @abc.abstractmethod
    def error_body(self, code: int, message: str) -> dict[str, Any]:
        """The vendor's error answer for `code`."""

    def without_failures(self, answer: dict[str, Any]) -> dict[str, Any]:
        """`answer` as if every recipient had been delivered (the silent_unknown fault)."""
        return answer

    def deliver(
        self,
        call: CallT,
        call_id: int,
        recipient: str,
        message_id: str,
        time_ms: int | None = None,
    ) -> None:
        """Log one delivery of `call` to `recipient` (`time_ms`: the vendor's time of the
        message, as its answer gives it; default now)."""
        self.state.deliver(
            call_id,
            call.sender,
            recipient,
            call.message_type,
            call.fingerprint,
            message_id,
            time_ms,
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler of the vendor path."""
        state, gate = self.state, self.gate
        refusal_prefix = "" if self.api == "send" else f"{self.api}:"
        call_id = state.receive()
        body = await request.read()
        now = self.sandbox.clock.monotonic()
        try:
            self.authenticate(request, body)
            self._rate_checked(gate.check_call, now)
            call = self.parse(request, body)
            self._rate_checked(gate.check_recipients, now, len(call.recipients))
        except VendorError as refusal:
            state.refuse(f"{refusal_prefix}{refusal.code}")
            logger.debug(
                "%s call %d %s refused %d: %s",
                self.spec.vendor,
                call_id,
                request.path,
                refusal.code,
                refusal.message,
            )
            return self._refusal(refusal.code, refusal.message)

        fault = state.faults.draw(self.api)
        if fault is not None:
            state.faults_applied[fault.kind] += 1
            logger.debug(
                "%s call %d %s fault %s", self.spec.vendor, call_id, request.path, fault.kind
            )
            if fault.kind in UNPROCESSED_FAULTS:
                state.refuse(f"{refusal_prefix}fault:{fault.kind}")
                return _unprocessed_fault(request, fault)
        gate.record(now, len(call.recipients))
        if fault is not None and fault.kind == "latency":
            await self._pause(fault.effective_delay_s)
        answer = self.process(call, call_id)
        if self.api == "recall":
            state.recall_calls_processed += 1
        else:
            state.calls_processed += 1
        logger.debug(
            "%s call %d %s processed: %d recipients",
            self.spec.vendor,
            call_id,
            request.path,
            len(call.recipients),
        )
        if fault is None or fault.kind == "latency":
            return _json(answer)
        return await self._processed_fault(fault, answer)

    def _refusal(self, code: int, message: str) -> web.Response:
        return _json(self.error_body(code, message), self.spec.refusal_statuses.of(code))

    def _rate_checked(self, check: Callable[..., None], *args: Any) -> None:
        try:
            check(*args)
        except RateRefused as exc:
            raise VendorError(self.rate_limit_code, str(exc)) from None

    async def _processed_fault(self, fault: FaultRule, answer: dict[str, Any]) -> web.Response:
        if fault.kind == "hang":
            await self._pause(fault.effective_delay_s)
            return _json(answer)
        if fault.kind == "error_500":
            return self._refusal(*self.internal_error)
        if fault.kind == "malformed":
            text = _dumps(answer)
            return web.Response(
                text=text[: len(text) // 2], content_type="application/json", charset="utf-8"
            )
        if fault.kind == "html":
            return web.Response(text=_HTML_PAGE, content_type="text/html", charset="utf-8")
        if fault.kind == "oversized":
            text = _dumps(answer)
            padding = " " * max(0, OVERSIZED_ANSWER_BYTES - len(text))
            return web.Response(
                text=text[:-1] + padding + "}", content_type="application/json", charset="utf-8"
            )
        if fault.kind == "silent_unknown":
            return _json(self.without_failures(answer))
        raise AssertionError(f"unhandled fault kind {fault.kind}")

    async def _pause(self, seconds: float) -> None:
        # Shutdown cuts every pause short, so a hanging answer never holds the server.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):  # not wait_for: it can swallow a cancel
                await self.sandbox.closing.wait()


def _unprocessed_fault(request: web.Request, fault: FaultRule) -> web.Response:
    if fault.kind == "drop":
        # Closing the transport is the whole answer: the client sees the connection end
        # with no response; the Response returned below is never written.
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=204)
    return web.Response(status=502, text=_HTML_502, content_type="text/html", charset="utf-8")


def _dumps(doc: Any) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _json(doc: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(doc, status=status, dumps=_dumps)


def content_fingerprint(content: Any) -> str:
    """A stable hash of message content (canonical JSON, keys sorted)."""
    canonical = json.dumps(content, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def emulator_settings(
    emulators: Sequence[type[Emulator[Any, Any]]], configured: dict[str, VendorSettings]
) -> dict[str, VendorSettings]:
    """Each emulator's settings: configured ones checked for type, defaults for the rest."""
    known = {e.spec.vendor for e in emulators}
    unknown = set(configured) - known
    if unknown:
        raise ValueError(f"settings for unknown vendors {sorted(unknown)}; have {sorted(known)}")
    settings: dict[str, VendorSettings] = {}
    for emulator in emulators:
        vendor = emulator.spec.vendor
        if vendor in settings:  # its other API's emulator: one vendor, one settings
            continue
        chosen = configured.get(vendor)
        if chosen is None:
            chosen = emulator.default_settings()
        if not isinstance(chosen, emulator.settings_type):
            raise TypeError(
                f"settings for {vendor} must be {emulator.settings_type.__name__}, "
                f"not {type(chosen).__name__}"
            )
        settings[vendor] = chosen
    return settings


EmulatorClass = type[Emulator[Any, Any]]
"""An emulator class, as the registry lists them and the sandbox serves them."""
