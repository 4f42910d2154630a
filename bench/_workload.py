"""What the stages send: recipients, the message, quotas, and the configs built from them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.registry import BY_VENDOR
from imgate.vendors.registry import VENDORS as REGISTERED

VENDORS = tuple(plugin.vendor for plugin in REGISTERED)
"""Every registered vendor (sandbox mode names a backend after each)."""
SENDER = "bench_sender"
TEXT = "imgate benchmark message"
MAX_IN_FLIGHT = 8
"""The gateway's `max_in_flight`, and the HTTP floor's concurrency."""
REQUEST_TIMEOUT_S = 30.0
WARM_RECIPIENTS = 2_000
"""One untimed batch this size warms each gateway backend and each HTTP client."""

# "Quotas off": far above anything two cores can send, so the limiter never waits.
_UNLIMITED_CALLS = 1_000_000


def recipient_ids(count: int) -> list[str]:
    """`count` distinct, valid account ids (none starts with the sandbox's "ghost")."""
    return [f"u{number:07d}" for number in range(count)]


def batch_request(backend: str, count: int) -> pb.BatchSendRequest:
    """One text message from SENDER to `count` recipients on `backend`."""
    return pb.BatchSendRequest(
        backend=backend,
        sender_id=SENDER,
        recipient_ids=recipient_ids(count),
        message=pb.Message(text=pb.TextContent(text=TEXT)),
    )


@dataclass(frozen=True)
class Quota:
    """A vendor quota, enforced by the sandbox and configured identically in the gateway."""

    call_limit: int
    call_window_s: float
    recipient_limit: int = 0
    """0 = recipients are not counted."""
    recipient_window_s: float = 1.0
    block_s: float = 1.0
    sandbox_block_s: float | None = None
    """The sandbox's block after a refusal, when not `block_s` (the gateway's pause must be
    > 0; Tencent does not block: 0)."""


@dataclass(frozen=True)
class Backend:
    """One vendor as both the sandbox and the gateway see it in a stage."""

    vendor: str
    quota: Quota | None = None
    """None = quotas off on both sides."""
    faults: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    """Sandbox fault rules in force from start-up (the /sandbox/faults JSON form)."""
    request_timeout_s: float = REQUEST_TIMEOUT_S
    """The gateway's `request_timeout_s` (a shared quota's lease follows it)."""
    max_in_flight: int | None = MAX_IN_FLIGHT
    """The gateway's `max_in_flight`; None = not written, so the gateway derives it from
    the call quota and the measured round trip (stage 14)."""


def sandbox_json(backends: Sequence[Backend]) -> str:
    """The `--config` argument of `bench._sandbox_proc` for these backends."""
    vendors: dict[str, dict[str, Any]] = {}
    for backend in backends:
        quota = backend.quota
        settings: dict[str, Any] = {"faults": list(backend.faults)}
        if quota is None:
            settings.update(call_limit=None, recipient_limit=None, block_s=0.0)
        else:
            settings.update(
                call_limit=quota.call_limit,
                call_window_s=quota.call_window_s,
                recipient_limit=quota.recipient_limit or None,
                recipient_window_s=quota.recipient_window_s,
                block_s=quota.block_s if quota.sandbox_block_s is None else quota.sandbox_block_s,
            )
        vendors[backend.vendor] = settings
    return json.dumps(vendors)


# Stage 10's callers: name -> bearer token (bench-only values, never real ones).
CALLER_TOKENS = {"bulk": "bench-bulk-token", "alerts": "bench-alerts-token"}


def gateway_toml(
    sandbox_url: str, backends: Sequence[Backend], callers: Mapping[str, str] | None = None
) -> str:
    """A gateway configuration with one backend per vendor, named after it, and with
    `callers` (name -> token) a [callers.NAME] table each."""
    lines = [f"default_backend = {_toml(backends[0].vendor)}", ""]
    for name, token in (callers or {}).items():
        digest = hashlib.sha256(token.encode()).hexdigest()
        lines += [f"[callers.{name}]", f"token_sha256 = {_toml(digest)}", ""]
    for backend in backends:
        translator = BY_VENDOR[backend.vendor].translator
        quota = backend.quota
        values: dict[str, Any] = {
            "vendor": backend.vendor,
            "base_url": sandbox_url,
            **translator.spec.sandbox_credentials,
            "request_timeout_s": backend.request_timeout_s,
        }
        if backend.max_in_flight is not None:
            values["max_in_flight"] = backend.max_in_flight
        if quota is None:
            values.update(call_limit=_UNLIMITED_CALLS, call_window_s=1.0, recipient_limit=0)
        else:
            values.update(
                call_limit=quota.call_limit,
                call_window_s=quota.call_window_s,
                recipient_limit=quota.recipient_limit,
                recipient_window_s=quota.recipient_window_s,
                block_s=quota.block_s,
            )
        lines.append(f"[backends.{backend.vendor}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"no TOML form for {value!r}")
    return repr(value)
