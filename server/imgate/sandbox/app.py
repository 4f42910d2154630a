"""App assembly: the emulators' vendor paths plus the `/sandbox/...` control endpoints.

Control endpoints (JSON; no vendor uses the /sandbox prefix):
    GET  /sandbox/             this list, with each endpoint's URL
    GET  /sandbox/info         credentials, limits and paths of every emulator, account rules
    GET  /sandbox/deliveries   the delivery log, paged: ?vendor= and ?recipient= (one
                               account's inbox) to filter, ?after=SEQ&limit=N (default
                               1000, at most 10000); the newest `max_logged_deliveries` are
                               kept
    GET  /sandbox/withdrawals  the recall APIs' withdrawal log, paged as the deliveries
    GET  /sandbox/stats        counters per vendor (?vendor= to filter)
    POST /sandbox/reset        clear log, counters, windows, blocks, faults (?vendor= for one)
    GET  /sandbox/faults       fault rules per vendor, with remaining uses
    PUT  /sandbox/faults       {"vendor": [rule, ...], ...} replaces the named vendors' rules
    ...  /sandbox/webhooks/... the webhook inbox (sandbox/inbox.py); reset without ?vendor=
                               clears it too
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from aiohttp import web

from imgate.sandbox.inbox import Inboxes
from imgate.vendors.base.emulation import FaultRule, SandboxConfig
from imgate.vendors.base.emulator import EmulatorClass, emulator_settings
from imgate.vendors.base.faults import fault_rule_from_json, fault_rule_to_json
from imgate.vendors.base.sandbox_state import SandboxState

STATE_KEY = web.AppKey("imgate_sandbox_state", SandboxState)
"""Where an app built by `create_app` keeps its SandboxState."""
INBOXES_KEY = web.AppKey("imgate_sandbox_inboxes", Inboxes)
"""Where it keeps its webhook inboxes."""

# Large enough for any vendor call (Tencent's own 12 KB cap is the emulator's to enforce,
# with its own error code, so aiohttp must not refuse first).
_CLIENT_MAX_SIZE = 8 * 1024 * 1024


def build_app(config: SandboxConfig, emulators: Sequence[EmulatorClass]) -> web.Application:
    """The sandbox application for `emulators`, configured by `config`."""
    apis = [(e.spec.vendor, e.api) for e in emulators]
    routes = [e.route() for e in emulators]
    if len(set(apis)) != len(apis) or len(set(routes)) != len(routes):
        raise ValueError(f"emulators must have distinct vendor APIs and routes: {apis}")
    settings = emulator_settings(emulators, dict(config.vendors))
    state = SandboxState(config, settings)

    app = web.Application(client_max_size=_CLIENT_MAX_SIZE)
    app[STATE_KEY] = state
    for emulator_class in emulators:
        emulator = emulator_class(settings[emulator_class.spec.vendor], state)
        app.router.add_route(*emulator_class.route(), emulator.handle)
    inboxes = app[INBOXES_KEY] = Inboxes()
    _Control(state, emulators, inboxes).register(app.router)
    inboxes.register(app.router)

    async def on_startup(_: web.Application) -> None:
        state.closing.clear()

    async def on_shutdown(_: web.Application) -> None:
        state.closing.set()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return app


class _Control:
    """Handlers of the /sandbox/... endpoints."""

    def __init__(
        self, state: SandboxState, emulators: Sequence[EmulatorClass], inboxes: Inboxes
    ) -> None:
        self._state = state
        self._emulators = emulators
        self._inboxes = inboxes

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/sandbox/", self.index)
        router.add_get("/sandbox", self.index)
        router.add_get("/sandbox/info", self.info)
        router.add_get("/sandbox/deliveries", self.deliveries)
        router.add_get("/sandbox/withdrawals", self.withdrawals)
        router.add_get("/sandbox/stats", self.stats)
        router.add_post("/sandbox/reset", self.reset)
        router.add_get("/sandbox/faults", self.get_faults)
        router.add_put("/sandbox/faults", self.put_faults)

    def _vendor_filter(self, request: web.Request) -> tuple[str, ...]:
        vendor = request.query.get("vendor")
        if vendor is None:
            return self._state.vendors
        if vendor not in self._state.vendors:
            raise _bad_request(f"unknown vendor {vendor!r}; have {list(self._state.vendors)}")
        return (vendor,)

    async def index(self, request: web.Request) -> web.Response:
        base = "/sandbox"  # relative: the gateway's HTTP port serves these too
        return web.json_response(
            {
                "sandbox": "imgate vendor emulators: nothing here reaches a real vendor",
                "vendors": list(self._state.vendors),
                "endpoints": {
                    "info": f"GET {base}/info",
                    "deliveries": f"GET {base}/deliveries?vendor=&recipient=&after=&limit=",
                    "stats": f"GET {base}/stats?vendor=",
                    "faults": f"GET|PUT {base}/faults",
                    "reset": f"POST {base}/reset?vendor=",
                    "webhooks": f"GET|POST|PUT|DELETE {base}/webhooks/INBOX",
                },
            }
        )

    async def info(self, request: web.Request) -> web.Response:
        vendors: dict[str, Any] = {}
        for emulator in sorted(self._emulators, key=lambda e: e.api != "send"):
            vendor = emulator.spec.vendor
            method, path = emulator.route()
            if emulator.api != "send":  # the vendor's other API: its route, beside
                vendors.setdefault(vendor, {})[emulator.api] = {"method": method, "path": path}
                continue
            settings = self._state.vendor(vendor).settings
            credentials = settings.credentials()
            limits = {
                name: value
                for name, value in asdict(settings).items()
                if name != "faults" and name not in credentials
            }
            vendors[vendor] = {
                "method": method,
                "path": path,
                "credentials": credentials,
                "limits": limits,
            }
        accounts = {
            name: sorted(value) if isinstance(value, frozenset) else value
            for name, value in asdict(self._state.accounts).items()
        }
        return web.json_response({"vendors": vendors, "accounts": accounts})

    async def deliveries(self, request: web.Request) -> web.Response:
        vendors = self._vendor_filter(request)
        after = _query_int(request, "after", 0, 0, None)
        limit = _query_int(request, "limit", _PAGE_DEFAULT, 1, _PAGE_MAX)
        recipient = request.query.get("recipient", "")
        page, next_after, truncated = self._state.delivery_page(vendors, after, limit, recipient)
        log = [{"seq": sequence, **d.to_json()} for sequence, d in page]
        return web.json_response(
            {"deliveries": log, "next_after": next_after, "truncated": truncated}
        )

    async def withdrawals(self, request: web.Request) -> web.Response:
        vendors = self._vendor_filter(request)
        after = _query_int(request, "after", 0, 0, None)
        limit = _query_int(request, "limit", _PAGE_DEFAULT, 1, _PAGE_MAX)
        page, next_after, truncated = self._state.withdrawal_page(vendors, after, limit)
        log = [{"seq": sequence, **w.to_json()} for sequence, w in page]
        return web.json_response(
            {"withdrawals": log, "next_after": next_after, "truncated": truncated}
        )

    async def stats(self, request: web.Request) -> web.Response:
        vendors = self._vendor_filter(request)
        return web.json_response({v: self._state.stats(v).to_json() for v in vendors})

    async def reset(self, request: web.Request) -> web.Response:
        vendors = self._vendor_filter(request)
        self._state.reset(vendors)
        if "vendor" not in request.query:
            self._inboxes.clear()
        return web.json_response({"reset": list(vendors)})

    def _faults_json(self) -> dict[str, Any]:
        return {
            vendor: [fault_rule_to_json(rule) for rule in self._state.faults(vendor)]
            for vendor in self._state.vendors
        }

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self._faults_json())

    async def put_faults(self, request: web.Request) -> web.Response:
        try:
            doc = await request.json()
        except ValueError:
            raise _bad_request("body must be JSON") from None
        if not isinstance(doc, dict):
            raise _bad_request('body must be {"vendor": [rule, ...], ...}')
        parsed: dict[str, list[FaultRule]] = {}
        for vendor, rules in doc.items():
            if vendor not in self._state.vendors:
                raise _bad_request(f"unknown vendor {vendor!r}; have {list(self._state.vendors)}")
            if not isinstance(rules, list):
                raise _bad_request(f"{vendor}: rules must be a list")
            try:
                parsed[vendor] = [fault_rule_from_json(rule) for rule in rules]
            except ValueError as exc:
                raise _bad_request(f"{vendor}: {exc}") from None
        # Validate everything before changing anything: a bad PUT leaves the rules as they were.
        for vendor, fault_rules in parsed.items():
            self._state.set_faults(vendor, fault_rules)
        return web.json_response(self._faults_json())


_PAGE_DEFAULT = 1000
_PAGE_MAX = 10_000


def _query_int(request: web.Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < low or (high is not None and int(raw) > high):
        bound = f"{low}..{high}" if high is not None else f">= {low}"
        raise _bad_request(f"{name} must be an integer {bound}, got {raw!r}")
    return int(raw)


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")
