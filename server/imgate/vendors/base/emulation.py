"""Sandbox configuration: frozen settings shared by every emulator, accounts, faults, clocks.

Per-vendor settings classes subclass `VendorSettings` next to their emulator; the
sandbox-wide `SandboxConfig` maps vendor ids to them, so a new vendor needs no change here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal, TypeVar, get_args

FaultKind = Literal[
    "latency",
    "refuse_502",
    "hang",
    "error_500",
    "malformed",
    "html",
    "drop",
    "oversized",
    "silent_unknown",
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

# Kinds that answer before the vendor processes anything: the call never delivers.
UNPROCESSED_FAULTS = frozenset({"refuse_502", "drop"})

_DEFAULT_DELAY_S: Mapping[str, float] = {"latency": 1.0, "hang": 3600.0}


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRule:
    """Misbehave on the next matching vendor calls (valid calls only: after auth/validation).

    latency: wait `delay_s` (default 1 s), then answer normally.
    refuse_502: HTTP 502 with an HTML page; nothing processed.
    hang: process and deliver, then wait `delay_s` (default 3600 s) before answering.
    error_500: process and deliver, then answer the vendor's internal-error body.
    malformed: process and deliver, then answer HTTP 200 with truncated JSON.
    html: process and deliver, then answer HTTP 200 with an HTML page.
    oversized: process and deliver, then answer the normal body padded
      to 5 MiB (over the gateway's default 4 MiB max_response_bytes).
    silent_unknown: process (unknown accounts get nothing) but answer as if everyone got
      it: Tencent OK without ErrorList (a documented vendor quirk, vendors.md §7.3), Yunxin
      legacy an empty unregister, v2 no failed_list.
    drop: close the connection without an answer; nothing processed.
    """

    kind: FaultKind
    api: Literal["send", "recall"] | None = None
    """Only calls of this API (the vendor's send or recall endpoint); None = both."""
    delay_s: float | None = None
    """Seconds to wait (latency, hang); None = the kind's default."""
    times: int | None = None
    """Apply to the next `times` calls the rule is drawn for; None = every call."""
    probability: float = 1.0
    """Chance that the rule applies to a call (drawn from the sandbox's seeded RNG)."""

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.api not in (None, "send", "recall"):
            raise ValueError("api must be 'send', 'recall' or None")
        if self.delay_s is not None and not (math.isfinite(self.delay_s) and self.delay_s >= 0):
            raise ValueError("delay_s must be a finite number >= 0")
        if self.times is not None and self.times < 0:
            raise ValueError("times must be >= 0 or None")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be within 0..1")

    @property
    def effective_delay_s(self) -> float:
        """The delay this rule waits, defaults applied (0 for kinds that do not wait)."""
        if self.delay_s is not None:
            return self.delay_s
        return _DEFAULT_DELAY_S.get(self.kind, 0.0)


@dataclass(frozen=True, kw_only=True)
class VendorSettings:
    """What every emulated vendor has: per-call cap, rate windows, block, initial faults.

    Subclasses take their defaults from the vendor's spec (its limits and sandbox
    credentials) and add the credentials; `credential_fields` names them.
    """

    credential_fields: ClassVar[tuple[str, ...]] = ()

    recipients_per_call: int
    """Most recipients one call may name (the list as sent, duplicates included)."""
    call_limit: int | None
    """Most accepted calls in any window of `call_window_s`; None = calls are not limited."""
    call_window_s: float = 60.0
    recipient_limit: int | None = None
    """Most recipients of accepted calls in any window of `recipient_window_s`; None = no limit."""
    recipient_window_s: float = 60.0
    block_s: float = 0.0
    """After a rate refusal, refuse every call for this long (0 = the vendor does not block)."""
    recall_call_limit: int | None = None
    """Most accepted recall calls in any window of `recall_call_window_s` (the recall API's
    own quota); None = not limited."""
    recall_call_window_s: float = 1.0
    recall_block_s: float = 0.0
    """After a recall refused for rate, refuse every recall for this long."""
    recall_window_s: float = 120.0
    """The app's recall window where the vendor has one set in its console (Yunxin's
    two-way recall: 2 minutes by default, at most 7 days)."""
    faults: tuple[FaultRule, ...] = ()
    """Fault rules active from start-up (and cleared by a reset)."""

    def __post_init__(self) -> None:
        if self.recipients_per_call < 1:
            raise ValueError("recipients_per_call must be >= 1")
        for name in ("call_limit", "recipient_limit", "recall_call_limit"):
            limit = getattr(self, name)
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be >= 1 or None")
        for name in ("call_window_s", "recipient_window_s", "recall_call_window_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("block_s", "recall_block_s", "recall_window_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    def credentials(self) -> dict[str, str | int]:
        """The credentials a client signs with (sandbox credentials are public)."""
        return {name: getattr(self, name) for name in self.credential_fields}


VendorSettingsT = TypeVar("VendorSettingsT", bound=VendorSettings)


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountRules:
    """Which account ids exist and in what state; explicit sets override the prefixes.

    By default every id exists except those starting with "ghost"; senders starting with
    "banned" are disabled and those starting with "muted" are muted (CONTRACT.md §2).
    """

    missing_prefix: str | None = "ghost"
    banned_prefix: str | None = "banned"
    muted_prefix: str | None = "muted"
    existing: frozenset[str] = frozenset()
    """Ids that exist even if they carry the missing prefix."""
    missing: frozenset[str] = frozenset()
    """Ids that do not exist."""
    banned: frozenset[str] = frozenset()
    muted: frozenset[str] = frozenset()

    def exists(self, account_id: str) -> bool:
        """Whether the account is registered with the vendor."""
        if account_id in self.missing:
            return False
        if account_id in self.existing:
            return True
        return not _has_prefix(account_id, self.missing_prefix)

    def is_banned(self, account_id: str) -> bool:
        """Whether the account is disabled (Yunxin 422 as a sender)."""
        return account_id in self.banned or _has_prefix(account_id, self.banned_prefix)

    def is_muted(self, account_id: str) -> bool:
        """Whether the account is muted (Yunxin 423 as a sender)."""
        return account_id in self.muted or _has_prefix(account_id, self.muted_prefix)


def _has_prefix(account_id: str, prefix: str | None) -> bool:
    return bool(prefix) and account_id.startswith(prefix or "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Clock:
    """Time sources: monotonic for rate windows and blocks, wall for signatures and stamps."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """Everything the sandbox can be told at start-up.

    `vendors` maps a vendor id to its emulator's settings type (e.g. "tencent" to
    `TencentSettings`); a vendor left out runs with its emulator's defaults (the
    published limits and sandbox credentials of its spec).
    """

    vendors: Mapping[str, VendorSettings] = field(default_factory=dict)
    accounts: AccountRules = AccountRules()
    seed: int | None = None
    """Seed of the RNG that draws fault probabilities; None = unpredictable."""
    clock: Clock = Clock()
    time_scale: float = 1.0
    """Rate windows and blocks last `1 / time_scale` of the vendor's figures: at 60, Tencent's
    12,000 recipients per minute become 12,000 per second and Yunxin's one-minute block one
    second. Limits (counts) stay the vendor's. `imgate sandbox --sandbox-time-scale`."""
    max_logged_deliveries: int = 100_000
    """The delivery log keeps the newest this many deliveries (a ring), the withdrawal log
    as many withdrawals; counters, stats and duplicate detection keep counting every one."""
    max_recallable_messages: int = 1_000_000
    """The recall APIs find the newest this many deliveries per vendor; an older one is a
    message the vendor does not know (each kept costs about 200 bytes)."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ValueError("time_scale must be a finite number > 0")
        if self.max_logged_deliveries < 1 or self.max_recallable_messages < 1:
            raise ValueError("max_logged_deliveries and max_recallable_messages must be >= 1")

    def scaled(self, settings: VendorSettingsT) -> VendorSettingsT:
        """`settings` with its rate windows and block divided by `time_scale`."""
        if self.time_scale == 1.0:
            return settings
        return replace(
            settings,
            call_window_s=settings.call_window_s / self.time_scale,
            recipient_window_s=settings.recipient_window_s / self.time_scale,
            block_s=settings.block_s / self.time_scale,
            recall_call_window_s=settings.recall_call_window_s / self.time_scale,
            recall_block_s=settings.recall_block_s / self.time_scale,
        )
