"""Quota windows shared by every replica through Redis (CONTRACT §5 rules 14 and 16).

One vendor app (vendor + app key / SDKAppID, not the backend name) has, per window the
vendor counts (calls; recipients where it counts them), one sorted set of entries scored
by when they stop counting, and a running sum of their amounts, changed by one Lua script
(`SCRIPT`, in redis_script.py) so that every decision is atomic across replicas:

- take: an entry `i:<token>:<amount>` counts until now + lease + window while its call is
  in flight; `end` turns it into `e:<token>:<amount>` counting until end + window. The
  replica holding a grant renews its lease every lease / 3 (a grant may wait for an
  in-flight permit before its call starts); a replica killed with -9 renews nothing, so
  its entries lapse by themselves within lease + window.
- The lease is the backend's `request_timeout_s` + `LEASE_MARGIN_S`: a call that started
  ends within `request_timeout_s` (the HTTP client's total timeout), so its slot outlives
  it even when renewals stop because Redis became unreachable mid-call.
- Redis' `TIME` is the only clock: replicas' clocks never enter a decision.
- Expired entries leave the set in score order, their amounts subtracted from the sum, so
  a take is O(log n + what expired), whatever the number of entries in a window.
- An epoch key that never expires: when it is missing, Redis lost its state (restart,
  FLUSHDB, failover, or a Redis that never held it), and the script pauses the app for one
  window + lease (CONTRACT §5 rule 16: `[store] lease_s`, and never less than the in-flight
  lease, so the pause outlasts every call the lost entries stood for).
- A block key: one replica's vendor rate refusal pauses the app on all of them.

Fail closed: when Redis does not answer, nothing is granted; waiters ask again every
`RETRY_S` until it is back or their deadline passes. Ends and renewals that cannot reach
Redis are retried; one that never arrives only keeps its slot until its lease runs out
(under-use, never over). Residual risk, stated: a grant that waits for a permit while
Redis is unreachable for longer than its lease may start its call after its entry lapsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Sequence
from typing import Any

import redis.asyncio as redis_asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from imgate.config.model import BackendConfig
from imgate.config.redaction import hide_password, redacted_url
from imgate.quota.limiter import (
    QUOTA_STATE_LOST,
    QUOTA_UNREACHABLE,
    VENDOR_BLOCK,
    Limiter,
    Pauses,
    Take,
    counted,
)
from imgate.quota.redis_script import SCRIPT
from imgate.vendors.registry import BY_VENDOR

log = logging.getLogger("imgate.quota")

LEASE_MARGIN_S = 2.0
"""Added to `request_timeout_s`: the time between a lease renewal and the call's start."""
RETRY_S = 0.5
"""How often a waiter asks again while Redis is unreachable."""
SOCKET_TIMEOUT_S = 2.0
_US = 1_000_000


class QuotaUnavailable(Exception):
    """Redis did not answer (or answered with an error); nothing may be granted."""


class RedisQuota:
    """The gateway's connection to the shared quota: one client, one script, the
    reachability state and its log lines. `limiter(backend)` per backend."""

    def __init__(
        self, url: str, key_prefix: str = "imgate", state_loss_lease_s: float = 0.0
    ) -> None:
        """`state_loss_lease_s`: the `[store] lease_s` a lost Redis state pauses each app for,
        beyond one window (at least the in-flight lease)."""
        self.shown_url = redacted_url(url)
        self.state_loss_lease_s = state_loss_lease_s
        self._url = url  # only to hide its password in error texts
        self.key_prefix = key_prefix
        self.replica = secrets.token_hex(6)
        """Prefix of this process's entry tokens (tells replicas' entries apart)."""
        self._tokens = itertools.count(1)
        # One retry: a pooled connection the restarted Redis closed fails once, then a
        # new one is made. Ops are idempotent (entries are named by token), so a retry
        # after a lost answer changes nothing.
        self._client = redis_asyncio.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(NoBackoff(), 1),
        )
        self._script = self._client.register_script(SCRIPT)
        self.reachable: bool | None = None
        """Whether the last call reached Redis (None: not tried yet)."""
        self._windows: list[RedisWindows] = []
        self._commands: set[asyncio.Future[Any]] = set()  # running; see _call

    def next_token(self) -> str:
        return f"{self.replica}.{next(self._tokens)}"

    def limiter(self, config: BackendConfig, api: str = "send") -> Limiter:
        """A backend's limiter over its vendor app's shared windows of `api`: its send
        API's, or ("recall") its recall API's, a quota of its own."""
        windows = RedisWindows(self, config, api)
        self._windows.append(windows)
        return Limiter(windows)

    async def ping(self) -> bool:
        """Whether Redis answers now (logged like every other call)."""
        try:
            await self._call(self._client.ping())
        except QuotaUnavailable:
            return False
        return True

    async def refresh(self) -> bool:
        """Whether Redis answers now; each app's pauses are read again (a state lost in
        Redis starts its pause here, before any call waits for it)."""
        if not await self.ping():
            return False
        for windows in self._windows:
            with contextlib.suppress(QuotaUnavailable):
                await windows.refresh()
        return bool(self.reachable)

    async def run(self, keys: Sequence[str], args: Sequence[str | int]) -> list[Any]:
        """The script's reply; QuotaUnavailable when Redis cannot be used."""
        reply = await self._call(self._script(keys=list(keys), args=list(args)))
        assert isinstance(reply, list)
        return reply

    async def _call(self, awaitable: Awaitable[Any]) -> Any:
        # redis-py's asyncio client is not safe to cancel mid-command: with 8.2 a task
        # cancelled in `ping()` or a script call went on waiting or lost its CancelledError
        # (tests/test_quota_redis.py: a limiter's task ran on after cancel() and hung the
        # test). So each command runs in a task of its own that is never cancelled, and a
        # cancelled caller stops waiting for it at once; what the command took is the
        # caller's to give back (RedisWindows.take forgets its token), and close() lets the
        # commands still running end before it disconnects.
        command = asyncio.ensure_future(awaitable)
        self._commands.add(command)
        command.add_done_callback(self._command_done)
        try:
            result = await asyncio.shield(command)
        except (redis.exceptions.RedisError, OSError) as exc:
            if self.reachable is not False:
                # An error answer (a script error, OOM, a read-only replica) stops sending
                # just the same; say which it was.
                answered = isinstance(exc, redis.exceptions.ResponseError)
                log.error(
                    "quota store %s %s (%s): no vendor call is sent until it is back",
                    self.shown_url,
                    "refused the quota script" if answered else "unreachable",
                    self._scrubbed(exc),
                )
            self.reachable = False
            reason = (
                f"the shared quota's Redis ({self.shown_url}) is unreachable"
                f" ({self._scrubbed(exc)}): no vendor call until it answers"
            )
            for windows in self._windows:
                windows.pauses.start(QUOTA_UNREACHABLE, reason, None)
            raise QuotaUnavailable(self._scrubbed(exc)) from None
        if self.reachable is False:
            log.warning("quota store %s reachable again: sending resumes", self.shown_url)
        self.reachable = True
        for windows in self._windows:
            windows.pauses.end(QUOTA_UNREACHABLE)
        return result

    def _command_done(self, command: asyncio.Future[Any]) -> None:
        self._commands.discard(command)
        if not command.cancelled():
            command.exception()  # retrieved: a caller that stopped waiting never reads it

    def _scrubbed(self, exc: BaseException) -> str:
        return hide_password(f"{type(exc).__name__}: {exc}", self._url)

    async def close(self) -> None:
        """Send the ends and blocks still pending (briefly), then disconnect."""
        for windows in self._windows:
            await windows.close()
        if self._commands:
            await asyncio.wait(self._commands, timeout=SOCKET_TIMEOUT_S)
        await self._client.aclose()


class RedisWindows:
    """The shared windows of one backend's vendor app (a `QuotaWindows`)."""

    def __init__(self, quota: RedisQuota, config: BackendConfig, api: str = "send") -> None:
        self._quota = quota
        self._backend = config.name
        spec = BY_VENDOR[config.vendor].spec
        app = str(config.credentials[spec.app_id_field])
        self.app = f"{config.vendor}:{app}" + ("" if api == "send" else f":{api}")
        # One hash tag: every key of the app lives on one Redis Cluster slot.
        base = f"{quota.key_prefix}:{{{self.app}}}"
        if api == "recall":  # one recipient a call: calls are what the recall API counts
            config = dataclasses.replace(
                config,
                call_limit=config.recall_call_limit,
                call_window_s=config.recall_call_window_s,
                recipient_limit=0,
            )
        self.counts_recipients = config.recipient_limit > 0
        self._windows: list[tuple[str, int, float]] = [
            ("calls", config.call_limit, config.call_window_s)
        ]
        if self.counts_recipients:
            self._windows.append(("recipients", config.recipient_limit, config.recipient_window_s))
        self.lease_s = config.request_timeout_s + LEASE_MARGIN_S
        self.keys = [f"{base}:epoch", f"{base}:pause", f"{base}:block"]
        for name, _, _ in self._windows:
            self.keys += [f"{base}:{name}", f"{base}:{name}:sum"]
        # CONTRACT §5 rule 16: one window plus `lease_s` ([store]), and never less than
        # the in-flight lease, which is what every lost entry could still stand for.
        self.state_loss_lease_s = max(self.lease_s, quota.state_loss_lease_s)
        self._head = [str(round(self.lease_s * _US)), str(len(self._windows))]
        for _, limit, window_s in self._windows:
            self._head += [str(limit), str(round(window_s * _US))]
        self._head.append(str(round(self.state_loss_lease_s * _US)))
        self._shortest_s = min(window_s for _, _, window_s in self._windows)
        self._longest_s = max(window_s for _, _, window_s in self._windows)
        self.blocked_until = 0.0
        self.pauses = Pauses(config.name)
        self._local_block_until = 0.0  # this replica's own refusal, before Redis has it
        self._held_amounts = [0] * len(self._windows)
        self._epoch: bytes | None = None
        self._held: dict[str, list[int]] = {}  # this process's grants not yet ended
        self._unsure: dict[str, list[int]] = {}  # takes whose answer was lost
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewing: asyncio.Task[None] | None = None

    def amounts(self, recipients: int) -> list[int]:
        return [
            counted(recipients if name == "recipients" else 1, limit)
            for name, limit, _ in self._windows
        ]

    async def _run(self, op: str, now_us: int | None, extra: Sequence[str | int]) -> list[Any]:
        args = [op, "" if now_us is None else str(now_us), *self._head, *extra]
        reply = await self._quota.run(self.keys, args)
        epoch, lost_left_us, block_left_us = reply[0], int(reply[1]), int(reply[2])
        if self._epoch is not None and epoch != self._epoch:
            log.warning(
                "quota state of %s (backend %s) was lost in Redis (restart, flush or failover)",
                self.app,
                self._backend,
            )
        self._epoch = epoch
        self._note_pauses(lost_left_us / _US, block_left_us / _US)
        left_s = max(lost_left_us, block_left_us) / _US
        shared_until = time.monotonic() + left_s if left_s else 0.0
        self.blocked_until = max(shared_until, self._local_block_until)
        return reply

    def _note_pauses(self, lost_left_s: float, block_left_s: float) -> None:
        """Start or end the pauses Redis holds for the app (rule 32: shown, logged)."""
        if lost_left_s > 0:
            self.pauses.start(
                QUOTA_STATE_LOST,
                f"the shared quota's Redis holds no state for {self.app} (first use of this"
                " Redis, or it restarted, was flushed or failed over): no vendor call for one"
                f" window + lease_s ({self._longest_s + self.state_loss_lease_s:.0f}s), so"
                " that calls made before cannot overrun the vendor's quota",
                lost_left_s,
            )
        else:
            self.pauses.end(QUOTA_STATE_LOST)
        if block_left_s > 0:
            # Ours is started with its vendor code by Limiter.block; this is the shared one.
            self.pauses.start(
                VENDOR_BLOCK,
                "the vendor refused a call for rate (on another replica): the app is paused"
                " for block_s",
                block_left_s,
            )
        elif self._local_block_until <= time.monotonic():
            self.pauses.end(VENDOR_BLOCK)

    async def refresh(self) -> None:
        """Read the app's pauses from Redis (QuotaUnavailable when it does not answer)."""
        await self._run("peek", None, [])

    async def take(self, recipients: int, *, now_us: int | None = None) -> Take:
        """Hold room for one call, or say how long until it may fit. `now_us` replaces
        Redis' TIME: tests only."""
        own_block_s = self._local_block_until - time.monotonic()
        if own_block_s > 0:
            # Until Redis has this replica's block (sent in the background), it holds here.
            return Take(wait_s=own_block_s)
        token, amounts = self._quota.next_token(), self.amounts(recipients)
        try:
            reply = await self._run("take", now_us, [token, *amounts])
        except QuotaUnavailable:
            # The take may have reached Redis and its answer got lost: drop what it holds.
            self._forget(token, amounts)
            return Take(wait_s=RETRY_S, exact=False)
        except BaseException:
            self._forget(token, amounts)  # cancelled mid-call: the same
            raise
        self._held_amounts = [int(total) for total in reply[6:]]
        if int(reply[3]) == 1:
            self._held[token] = amounts
            if self._renewing is None or self._renewing.done():
                self._renewing = asyncio.get_running_loop().create_task(self._renew_loop())
            return Take(token=token)
        wait_s, exact = int(reply[4]) / _US, int(reply[5]) == 1
        if not exact:
            # A release by another replica can bring room forward, never nearer than one
            # window from now: asking again within a window misses nothing.
            wait_s = min(wait_s, self._shortest_s)
        return Take(wait_s=wait_s, exact=exact)

    def give_back(self, token: Any) -> None:
        amounts = self._held.pop(token, None)
        if amounts is not None:
            self._spawn(self._retried("end", token, amounts))

    async def end(self, token: str, *, now_us: int | None = None) -> None:
        """End a grant's call now (`give_back`'s work, awaited). `now_us`: tests only."""
        amounts = self._held.pop(token)
        await self._run("end", now_us, [token, *amounts])

    def block(self, seconds: float) -> None:
        self._local_block_until = max(self._local_block_until, time.monotonic() + seconds)
        self.blocked_until = max(self.blocked_until, self._local_block_until)
        self._spawn(self._retried("block", None, [round(seconds * _US)], give_up_s=seconds))

    async def block_shared(self, seconds: float, *, now_us: int | None = None) -> None:
        """`block`, awaited. `now_us`: tests only."""
        await self._run("block", now_us, [round(seconds * _US)])

    def usage(self) -> list[tuple[str, int, int]]:
        return [
            (name, held, limit)
            for (name, limit, _), held in zip(self._windows, self._held_amounts, strict=True)
        ]

    def _forget(self, token: str, amounts: list[int]) -> None:
        first = not self._unsure
        self._unsure[token] = amounts
        if first:
            self._spawn(self._forget_all())

    async def _forget_all(self) -> None:
        """Remove the entries of lost takes, all in one call, until Redis takes it (past
        the lease they have lapsed by themselves)."""
        deadline = time.monotonic() + self.lease_s
        while self._unsure and time.monotonic() < deadline:
            unsure = dict(self._unsure)
            args: list[str | int] = []
            for token, amounts in unsure.items():
                args += [token, *amounts]
            try:
                await self._run("forget", None, args)
            except QuotaUnavailable:
                await asyncio.sleep(RETRY_S)
                continue
            for token in unsure:
                self._unsure.pop(token, None)
        self._unsure.clear()

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retried(
        self, op: str, token: str | None, extra: Sequence[int], give_up_s: float | None = None
    ) -> None:
        """Run `op` until Redis takes it or it no longer matters (the lease ran out)."""
        args: list[str | int] = [*extra] if token is None else [token, *extra]
        deadline = time.monotonic() + (self.lease_s if give_up_s is None else give_up_s)
        while True:
            try:
                await self._run(op, None, args)
                return
            except QuotaUnavailable:
                if time.monotonic() + RETRY_S > deadline:
                    return
                await asyncio.sleep(RETRY_S)

    async def _renew_loop(self) -> None:
        """Keep this process's in-flight entries alive while it holds grants."""
        while self._held:
            await asyncio.sleep(self.lease_s / 3)
            held = list(self._held.items())
            if not held:
                return
            args: list[str | int] = []
            for token, amounts in held:
                args += [token, *amounts]
            with contextlib.suppress(QuotaUnavailable):
                await self._run("renew", None, args)

    async def close(self) -> None:
        """Send what is pending (ends, blocks) for a moment, then stop."""
        if self._renewing is not None:
            self._renewing.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=SOCKET_TIMEOUT_S)
            for task in pending:
                task.cancel()
