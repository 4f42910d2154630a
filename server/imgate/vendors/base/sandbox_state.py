"""In-process sandbox state: delivery log, counters, sliding rate windows, blocks, faults.

One `VendorState` per emulated vendor (each vendor counts on its own, so the two Yunxin
APIs never share a window), gathered in a `SandboxState` that tests read directly and the
`/sandbox/...` control endpoints serve as JSON.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

from imgate.vendors.base.emulation import (
    AccountRules,
    Clock,
    FaultRule,
    SandboxConfig,
    VendorSettings,
)
from imgate.vendors.base.faults import FaultPlan


def _flat_json(record: Delivery | Withdrawal) -> dict[str, Any]:
    """A record of plain fields (str, int, float, bool) as a JSON object, by its slots (in
    field order). asdict deep-copies each field: 6 us a delivery, 6 s of the sandbox's CPU
    for a million-recipient audience's log read back."""
    return {name: getattr(record, name) for name in record.__slots__}


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message handed to one recipient by an emulated vendor."""

    vendor: str
    call_id: int
    """Sandbox-wide sequence number of the vendor call that delivered it."""
    sender: str
    recipient: str
    message_type: str
    """The vendor's own type: Yunxin `type` number, Tencent MsgType names joined by ","."""
    fingerprint: str
    """Hash of the message content (not of ids, options or signatures)."""
    message_id: str
    """The id the vendor answered with (Yunxin msgid / message_server_id, Tencent MsgKey)."""
    time: float
    """Wall-clock time of the delivery (Unix seconds)."""
    duplicate: bool
    """Whether the same vendor+sender+recipient+fingerprint was delivered before."""

    def to_json(self) -> dict[str, Any]:
        """The delivery as a JSON object."""
        return _flat_json(self)


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """One delivered message taken back from one recipient by an emulated recall API."""

    vendor: str
    call_id: int
    """Sandbox-wide sequence number of the recall call that withdrew it."""
    sender: str
    recipient: str
    message_id: str
    """The id the send answered with (Yunxin msgid / message_server_id, Tencent MsgKey)."""
    time: float
    """Wall-clock time of the withdrawal (Unix seconds)."""
    delivered_time: float
    """When the message was delivered."""

    def to_json(self) -> dict[str, Any]:
        """The withdrawal as a JSON object."""
        return _flat_json(self)


@dataclass(slots=True)
class SentMessage:
    """A delivered message as a recall API finds it: by (message id, recipient)."""

    sender: str
    time_ms: int
    """The vendor's time of the message (what the send answer said), ms."""
    delivered_time: float
    withdrawn: bool = False


@dataclass(frozen=True, slots=True)
class VendorStats:
    """Counters of one emulated vendor since start-up or the last reset."""

    vendor: str
    calls_received: int
    """Every HTTP request to the vendor path, refused ones included."""
    calls_processed: int
    """Calls that passed every check and were executed (whatever the recipients' fate)."""
    refusals: dict[str, int]
    """Calls answered without processing, by vendor code (e.g. "416", "60007") or by
    "fault:refuse_502" / "fault:drop"."""
    faults_applied: dict[str, int]
    """Fault rules applied, by kind."""
    deliveries: int
    duplicate_deliveries: int
    """Deliveries that repeated an earlier vendor+sender+recipient+content."""
    peak_calls_in_window: int
    """Most accepted calls seen in any window of `call_window_s`."""
    peak_recipients_in_window: int
    """Most recipients of accepted calls seen in any window of `recipient_window_s`."""
    blocked_for_s: float
    """How much longer the current rate block lasts (0 = not blocked)."""
    recall_calls_processed: int = 0
    """Recall calls that passed every check and were executed."""
    withdrawals: int = 0
    """Delivered messages withdrawn (each at most once)."""
    repeated_withdrawals: int = 0
    """Recalls of a message that was withdrawn already (nothing withdrawn again)."""
    peak_recall_calls_in_window: int = 0
    """Most accepted recall calls seen in any window of `recall_call_window_s`."""
    recall_blocked_for_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The stats as a JSON object."""
        return asdict(self)


class SlidingWindow:
    """Amounts stamped with monotonic times; totals over the last `window_s` seconds.

    The window is (now - window_s, now]. `peak` is the largest total ever seen at the
    moment of an addition, which is the largest total over every window position.
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._events: deque[tuple[float, int]] = deque()
        self._total = 0
        self.peak = 0

    def total(self, now: float) -> int:
        """Sum of the amounts added within the window ending at `now`."""
        horizon = now - self.window_s
        while self._events and self._events[0][0] <= horizon:
            self._total -= self._events.popleft()[1]
        return self._total

    def add(self, now: float, amount: int) -> None:
        """Count `amount` at time `now`."""
        self._events.append((now, amount))
        self._total += amount
        self.peak = max(self.peak, self.total(now))


class RateRefused(Exception):
    """The vendor's rate control refuses the call (it is neither processed nor counted)."""


class RateGate:
    """A vendor's rate control: calls and/or recipients per sliding window, optional block.

    The check happens before a call is processed and the call is recorded only when it is
    accepted, so refused calls never count. When `block_s` > 0 the refusal that trips a
    limit starts a block of `block_s` from that moment; calls during the block are refused
    too and do not extend it (Yunxin: "blocked for 1 minute, then callable again").
    """

    @classmethod
    def of_recall(cls, settings: VendorSettings) -> RateGate:
        """The gate of the vendor's recall API: its own calls per window and block."""
        return cls(
            replace(
                settings,
                call_limit=settings.recall_call_limit,
                call_window_s=settings.recall_call_window_s,
                recipient_limit=None,
                block_s=settings.recall_block_s,
            )
        )

    def __init__(self, settings: VendorSettings) -> None:
        self._settings = settings
        self.calls = SlidingWindow(settings.call_window_s)
        self.recipients = SlidingWindow(settings.recipient_window_s)
        self.blocked_until: float | None = None

    def check_call(self, now: float) -> None:
        """Refuse when blocked or when one more call would exceed the call limit."""
        if self.blocked_until is not None:
            if now < self.blocked_until:
                raise RateRefused("blocked after exceeding the rate limit")
            self.blocked_until = None
        limit = self._settings.call_limit
        if limit is not None and self.calls.total(now) + 1 > limit:
            self._trip(now)
            raise RateRefused(f"more than {limit} calls in {self._settings.call_window_s:g} s")

    def check_recipients(self, now: float, count: int) -> None:
        """Refuse when `count` more recipients would exceed the recipient limit."""
        limit = self._settings.recipient_limit
        if limit is not None and self.recipients.total(now) + count > limit:
            self._trip(now)
            raise RateRefused(
                f"more than {limit} recipients in {self._settings.recipient_window_s:g} s"
            )

    def blocked_for(self, now: float) -> float:
        """Seconds left of the current block (0 = not blocked)."""
        if self.blocked_until is None:
            return 0.0
        return max(0.0, self.blocked_until - now)

    def record(self, now: float, recipients: int) -> None:
        """Count an accepted call."""
        self.calls.add(now, 1)
        self.recipients.add(now, recipients)

    def _trip(self, now: float) -> None:
        if self._settings.block_s > 0:
            self.blocked_until = now + self._settings.block_s


class VendorState:
    """Counters, windows, block and fault plan of one emulated vendor."""

    def __init__(self, vendor: str, settings: VendorSettings, sandbox: SandboxState) -> None:
        self.vendor = vendor
        self.settings = settings
        self._sandbox = sandbox
        self.faults = FaultPlan(sandbox.rng)
        self._clear()
        self.faults.set_rules(settings.faults)

    def _clear(self) -> None:
        self.rate = RateGate(self.settings)
        self.recall_rate = RateGate.of_recall(self.settings)
        self.faults.set_rules(())
        self.calls_received = 0
        self.calls_processed = 0
        self.recall_calls_processed = 0
        self.withdrawals = 0
        self.repeated_withdrawals = 0
        # What a recall API can find: each delivery by (message id, recipient), the oldest
        # forgotten first past the sandbox's max_recallable_messages. An OrderedDict: a
        # plain dict's first key is found by skipping every key deleted before it, which
        # made a sandbox past the limit spend 29 s forgetting in a million deliveries (with a
        # limit of 100,000; 0.4 s so).
        self.sent: OrderedDict[tuple[str, str], SentMessage] = OrderedDict()
        self.refusals: Counter[str] = Counter()
        self.faults_applied: Counter[str] = Counter()
        self.deliveries = 0
        self.duplicate_deliveries = 0
        # Every (sender, recipient, content) delivered since the last reset, kept apart from
        # the bounded log so that duplicate detection stays exact when the log drops entries.
        self._delivered: set[tuple[str, str, str]] = set()

    def receive(self) -> int:
        """Count an incoming call and give it a sandbox-wide call id."""
        self.calls_received += 1
        return next(self._sandbox.call_ids)

    def refuse(self, code: str) -> None:
        """Count a call answered without processing."""
        self.refusals[code] += 1

    def deliver(
        self,
        call_id: int,
        sender: str,
        recipient: str,
        message_type: str,
        fingerprint: str,
        message_id: str,
        time_ms: int | None = None,
    ) -> Delivery:
        """Log one delivery, noting whether it repeats an earlier one, and keep it for the
        recall API (`time_ms`: the vendor's time of the message, default now)."""
        key = (sender, recipient, fingerprint)
        duplicate = key in self._delivered
        self._delivered.add(key)
        self.deliveries += 1
        self.duplicate_deliveries += int(duplicate)
        delivery = Delivery(
            vendor=self.vendor,
            call_id=call_id,
            sender=sender,
            recipient=recipient,
            message_type=message_type,
            fingerprint=fingerprint,
            message_id=message_id,
            time=self._sandbox.clock.wall(),
            duplicate=duplicate,
        )
        self._sandbox.record(delivery)
        if time_ms is None:
            time_ms = int(delivery.time * 1000)
        self.sent[(message_id, recipient)] = SentMessage(sender, time_ms, delivery.time)
        if len(self.sent) > self._sandbox.config.max_recallable_messages:
            self.sent.popitem(last=False)
        return delivery

    def withdraw(self, call_id: int, message_id: str, recipient: str) -> bool:
        """Withdraw a delivered message from its recipient (it must be in `sent`): True
        when it was withdrawn now, False when it had been already."""
        sent = self.sent[(message_id, recipient)]
        if sent.withdrawn:
            self.repeated_withdrawals += 1
            return False
        sent.withdrawn = True
        self.withdrawals += 1
        self._sandbox.record_withdrawal(
            Withdrawal(
                vendor=self.vendor,
                call_id=call_id,
                sender=sent.sender,
                recipient=recipient,
                message_id=message_id,
                time=self._sandbox.clock.wall(),
                delivered_time=sent.delivered_time,
            )
        )
        return True

    def stats(self) -> VendorStats:
        """A snapshot of the counters."""
        return VendorStats(
            vendor=self.vendor,
            calls_received=self.calls_received,
            calls_processed=self.calls_processed,
            refusals=dict(self.refusals),
            faults_applied=dict(self.faults_applied),
            deliveries=self.deliveries,
            duplicate_deliveries=self.duplicate_deliveries,
            peak_calls_in_window=self.rate.calls.peak,
            peak_recipients_in_window=self.rate.recipients.peak,
            blocked_for_s=self.rate.blocked_for(self._sandbox.clock.monotonic()),
            recall_calls_processed=self.recall_calls_processed,
            withdrawals=self.withdrawals,
            repeated_withdrawals=self.repeated_withdrawals,
            peak_recall_calls_in_window=self.recall_rate.calls.peak,
            recall_blocked_for_s=self.recall_rate.blocked_for(self._sandbox.clock.monotonic()),
        )


def _sequence_of(entry: tuple[int, Any]) -> int:
    return entry[0]


Logged = TypeVar("Logged", Delivery, Withdrawal)


def _page(
    ring: deque[tuple[int, Logged]],
    overflowed_through: int,
    vendors: Iterable[str],
    after: int,
    limit: int,
    recipient: str = "",
) -> tuple[list[tuple[int, Logged]], int, bool]:
    """Up to `limit` entries of `vendors` (to `recipient` only, if given) in `ring`
    numbered above `after`; see SandboxState.delivery_page."""
    wanted = set(vendors)
    page: list[tuple[int, Logged]] = []
    next_after = after
    # Sequence numbers grow along the ring (resets only remove entries): bisect to the
    # cursor instead of walking the entries before it.
    start = bisect.bisect_right(ring, after, key=_sequence_of)
    for sequence, entry in itertools.islice(ring, start, None):
        next_after = sequence
        if entry.vendor in wanted and (not recipient or entry.recipient == recipient):
            page.append((sequence, entry))
            if len(page) >= limit:
                break
    return page, next_after, overflowed_through > after


class SandboxState:
    """All emulated vendors' state; what tests inspect in-process.

    `deliveries(vendor)`, `stats(vendor)`, `faults(vendor)`, `set_faults(vendor, rules)`
    and `reset()` are the same data the `/sandbox/...` endpoints serve.
    """

    def __init__(self, config: SandboxConfig, settings: Mapping[str, VendorSettings]) -> None:
        self.config = config
        self.clock: Clock = config.clock
        self.accounts: AccountRules = config.accounts
        self.rng = random.Random(config.seed)
        # The newest deliveries, each with its sandbox-wide sequence number (1, 2, ...):
        # a ring, so that a long-running sandbox keeps flat memory and fast answers.
        self._log: deque[tuple[int, Delivery]] = deque(maxlen=config.max_logged_deliveries)
        self._sequence = itertools.count(1)
        self._overflowed_through = 0
        """Highest sequence number the ring has dropped."""
        # Withdrawals, the same way (a ring of its own, numbered from 1).
        self._withdrawals: deque[tuple[int, Withdrawal]] = deque(
            maxlen=config.max_logged_deliveries
        )
        self._withdrawal_sequence = itertools.count(1)
        self._withdrawals_overflowed_through = 0
        self.call_ids = itertools.count(1)
        # Message ids keep growing across resets so an id is never handed out twice.
        self._message_ids = itertools.count(1_000_000_000_001)
        # Set on shutdown so that hanging answers end at once instead of blocking it.
        self.closing = asyncio.Event()
        self._vendors = {
            vendor: VendorState(vendor, config.scaled(s), self) for vendor, s in settings.items()
        }

    @property
    def vendors(self) -> tuple[str, ...]:
        """The emulated vendor ids."""
        return tuple(self._vendors)

    def vendor(self, vendor: str) -> VendorState:
        """The state of one vendor; KeyError names the unknown vendor."""
        try:
            return self._vendors[vendor]
        except KeyError:
            raise KeyError(f"no emulated vendor {vendor!r}; have {self.vendors}") from None

    def next_message_id(self) -> int:
        """A fresh numeric message id (Yunxin-style 13-digit ids)."""
        return next(self._message_ids)

    @property
    def log(self) -> list[Delivery]:
        """The deliveries still in the log, oldest first."""
        return [delivery for _, delivery in self._log]

    def record(self, delivery: Delivery) -> int:
        """Append a delivery to the log (dropping the oldest when full); its sequence number."""
        sequence = next(self._sequence)
        if len(self._log) == self._log.maxlen:
            self._overflowed_through = self._log[0][0]
        self._log.append((sequence, delivery))
        return sequence

    def record_withdrawal(self, withdrawal: Withdrawal) -> int:
        """Append a withdrawal to its log (dropping the oldest when full); its number."""
        sequence = next(self._withdrawal_sequence)
        if len(self._withdrawals) == self._withdrawals.maxlen:
            self._withdrawals_overflowed_through = self._withdrawals[0][0]
        self._withdrawals.append((sequence, withdrawal))
        return sequence

    def withdrawals(self, vendor: str | None = None) -> list[Withdrawal]:
        """The withdrawal log in order, optionally of one vendor only."""
        if vendor is not None:
            self.vendor(vendor)
        return [w for _, w in self._withdrawals if vendor is None or w.vendor == vendor]

    def withdrawal_page(
        self, vendors: Iterable[str], after: int = 0, limit: int = 1000
    ) -> tuple[list[tuple[int, Withdrawal]], int, bool]:
        """As `delivery_page`, of the withdrawal log."""
        return _page(self._withdrawals, self._withdrawals_overflowed_through, vendors, after, limit)

    def deliveries(self, vendor: str | None = None) -> list[Delivery]:
        """The delivery log in order, optionally of one vendor only."""
        if vendor is None:
            return self.log
        self.vendor(vendor)  # unknown vendors are an error, not an empty log
        return [d for _, d in self._log if d.vendor == vendor]

    def delivery_page(
        self, vendors: Iterable[str], after: int = 0, limit: int = 1000, recipient: str = ""
    ) -> tuple[list[tuple[int, Delivery]], int, bool]:
        """Up to `limit` logged deliveries of `vendors` (to `recipient` only, if given: an
        account's inbox) with a sequence number above `after`.

        Returns (page, next_after, truncated): `next_after` is the cursor of the following
        page; `truncated` says that deliveries after `after` already left the ring (the
        reader fell behind; counters in `stats` still count them).
        """
        return _page(self._log, self._overflowed_through, vendors, after, limit, recipient)

    def stats(self, vendor: str) -> VendorStats:
        """Counters of one vendor."""
        return self.vendor(vendor).stats()

    def all_stats(self) -> dict[str, VendorStats]:
        """Counters of every vendor, by vendor id."""
        return {vendor: state.stats() for vendor, state in self._vendors.items()}

    def faults(self, vendor: str) -> list[FaultRule]:
        """The vendor's fault rules still in force, with their remaining `times`."""
        return self.vendor(vendor).faults.rules()

    def set_faults(self, vendor: str, rules: Sequence[FaultRule]) -> None:
        """Replace the vendor's fault rules."""
        self.vendor(vendor).faults.set_rules(rules)

    def reset(self, vendors: Iterable[str] | None = None) -> None:
        """Clear the log, counters, windows, blocks and faults (of all vendors by default).

        The RNG is re-seeded so that a seeded sandbox replays the same fault draws.
        """
        names = tuple(self._vendors) if vendors is None else tuple(vendors)
        for name in names:
            self.vendor(name)._clear()
        kept = [(seq, d) for seq, d in self._log if d.vendor not in names]
        self._log = deque(kept, maxlen=self.config.max_logged_deliveries)
        withdrawn = [(seq, w) for seq, w in self._withdrawals if w.vendor not in names]
        self._withdrawals = deque(withdrawn, maxlen=self.config.max_logged_deliveries)
        self.rng.seed(self.config.seed)
