"""The dispatcher: the only gateway module that does vendor I/O.

Per backend it owns one aiohttp session (bounded connections, explicit timeouts), the
quota limiter and the in-flight permits. Per batch it walks the planned chunks, and for
each takes a permit, then quota, then starts the vendor call inside the batch's
TaskGroup, so that a cancelled RPC cancels every vendor call it started. Each chunk ends
in exactly one outcome per recipient, whatever happens to the others:

- DONE: the vendor's per-recipient answer.
- RETRY / RATE_LIMITED / REFRESH_AUTH: the call was not processed; it is sent again (after
  backoff, the backend pause, or a credential refresh) while `max_attempts` and the
  caller's deadline allow, else FAILED with the last reason.
- AMBIGUOUS: it may have been processed; never resent; UNCERTAIN.
- Never sent (deadline, cancellation, shutdown): FAILED / NOT_ATTEMPTED.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
import types
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from imgate import __version__
from imgate._answers import AuthFailureLog, connection_detail, oversized_answer, read_bounded
from imgate._config import BackendConfig
from imgate._endpoints import Endpoints
from imgate._planner import UniqueRecipients, iter_chunk_sizes
from imgate._ratelimit import BackendLimiter, Grant, QuotaWaitTooLong
from imgate._registry import BY_VENDOR
from imgate.translators._base import (
    CallResult,
    Disposition,
    Reason,
    Translator,
    count_states,
    fail_all,
    fill_outcome,
)
from imgate.v1 import gateway_pb2 as pb

log = logging.getLogger("imgate.dispatch")

# Outcomes leave as one ready-to-stream message per finished chunk: each outcome is built
# once, in place, and never copied into another list or message on the way out.
Emit = Callable[[pb.BatchSendResponse], Awaitable[None]]

_BACKOFF_BASE_S = 0.2
_BACKOFF_CAP_S = 5.0
# Outcomes must reach the caller before its deadline: stop starting calls this early.
_DEADLINE_MARGIN_S = 0.25


@dataclass
class BatchCounters:
    """What a batch did, for its summary."""

    vendor_calls: int = 0
    accepted: int = 0
    failed: int = 0
    uncertain: int = 0

    def add(self, state: pb.DeliveryState.ValueType, count: int) -> None:
        if state == pb.DELIVERY_STATE_ACCEPTED:
            self.accepted += count
        elif state == pb.DELIVERY_STATE_UNCERTAIN:
            self.uncertain += count
        else:
            self.failed += count


@dataclass
class _Chunk:
    key: str
    indexes: Sequence[int]
    recipients: Sequence[str]
    attempts: int = 0
    last: CallResult | None = None
    refreshed_auth: bool = False
    in_flight: bool = False
    finished: bool = False

    def abandoned(self, counters: BatchCounters) -> pb.BatchSendResponse:
        """Outcomes for a chunk whose batch was cancelled before it finished."""
        if self.in_flight:
            state, reason = pb.DELIVERY_STATE_UNCERTAIN, pb.FAILURE_REASON_TIMEOUT
            code, detail = "", "cancelled while the vendor call was in flight"
        elif self.last is not None:
            state, reason = pb.DELIVERY_STATE_FAILED, self.last.reason
            code, detail = self.last.vendor_code, self.last.detail
        else:
            state, reason = pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_NOT_ATTEMPTED
            code, detail = "", "cancelled before it was sent"
        counters.add(state, len(self.recipients))
        return self.same_for_all(state, reason, code, detail)

    # Outcomes are filled field by field: with the upb runtime, add() followed by plain
    # attribute sets costs under half of add(**fields) (0.36 vs 0.84 µs, measured).
    def same_for_all(
        self, state: pb.DeliveryState.ValueType, reason: Reason, vendor_code: str, detail: str
    ) -> pb.BatchSendResponse:
        """Every recipient of the chunk with the same outcome."""
        response = pb.BatchSendResponse()
        add = response.outcomes.add
        attempts = self.attempts
        for index, recipient in zip(self.indexes, self.recipients, strict=True):
            outcome = add()
            outcome.recipient_id = recipient
            outcome.index = index
            outcome.state = state
            outcome.reason = reason
            outcome.vendor_code = vendor_code
            outcome.detail = detail
            outcome.attempts = attempts
        return response

    def vendor_results(self, result: CallResult) -> pb.BatchSendResponse:
        """The vendor's per-recipient answer (DONE)."""
        response = pb.BatchSendResponse()
        add = response.outcomes.add
        attempts = self.attempts
        for index, item in zip(self.indexes, result.results, strict=True):
            outcome = add()
            outcome.recipient_id = item.recipient_id
            outcome.index = index
            outcome.attempts = attempts
            fill_outcome(outcome, item)
        return response


class Backend:
    """A configured backend at run time: translator, HTTP session, quota and permits."""

    # Deadlines arrive on time.monotonic (the servicer's clock), so the limiter uses it too.
    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self.translator: Translator = BY_VENDOR[config.vendor].translator(config.credentials)
        self.endpoints = Endpoints(
            config.name, config.base_url, config.backup_base_url, self.translator.path
        )
        self.limiter = BackendLimiter(
            config.call_limit,
            config.call_window_s,
            config.recipient_limit,
            config.recipient_window_s,
        )
        self.permits = asyncio.Semaphore(config.max_in_flight)
        self.auth_log = AuthFailureLog(config.name)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.config.max_in_flight,
                # Shorter than common server keep-alives (nginx: 75 s), so we rarely write a
                # request onto a connection the vendor is closing: that would be UNCERTAIN.
                keepalive_timeout=15,
            )
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(_mark_written)
            self._session = aiohttp.ClientSession(
                connector=connector,
                trace_configs=[trace],
                timeout=aiohttp.ClientTimeout(total=self.config.request_timeout_s),
                headers={"User-Agent": f"imgate/{__version__}"},
            )
        return self._session

    def blocked_until_wall(self) -> float | None:
        """Wall-clock end of the current pause, or None when serving."""
        remaining = self.limiter.blocked_until - time.monotonic()
        return time.time() + remaining if remaining > 0 else None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, prepared: Any, chunk: _Chunk, timeout_s: float) -> CallResult:
        """One HTTP request for `chunk`, classified. Never raises but for cancellation."""
        try:
            request = self.translator.build(
                prepared, chunk.recipients, chunk.key, time.time(), secrets.token_hex(16)
            )
        except Exception:
            # A translator bug must cost this chunk only, and nothing was sent.
            log.exception("backend %s: cannot build the vendor request", self.config.name)
            return fail_all(
                chunk.recipients, pb.FAILURE_REASON_NOT_ATTEMPTED, "", "gateway error; not sent"
            )
        trace_ctx = types.SimpleNamespace(written=False)
        try:
            async with self.session.request(
                request.method,
                self.endpoints.url,
                params=request.query,
                headers=request.headers,
                data=request.body,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                trace_request_ctx=trace_ctx,
            ) as response:
                body = await read_bounded(
                    response.content, response.content_length, self.config.max_response_bytes
                )
                status = response.status
        except TimeoutError:
            return _transport_failure(
                trace_ctx.written,
                pb.FAILURE_REASON_TIMEOUT,
                "timeout",
                f"no answer within {timeout_s:.1f}s",
            )
        except aiohttp.ClientError:
            # Refused or reset: retryable only if it happened before the request went out.
            return _transport_failure(
                trace_ctx.written,
                pb.FAILURE_REASON_VENDOR_ERROR,
                "connection",
                connection_detail(trace_ctx.written),
            )
        log.debug("%s %s -> HTTP %s", request.method, request.path, status)
        if body is None:
            return oversized_answer(self.config.max_response_bytes)
        try:
            result = self.translator.parse(chunk.recipients, status, body)
        except Exception:
            # The vendor answered, so it may have processed the call: never resend.
            log.exception("backend %s: cannot read the vendor's answer", self.config.name)
            return CallResult(
                Disposition.AMBIGUOUS,
                reason=pb.FAILURE_REASON_VENDOR_ERROR,
                vendor_code=f"http_{status}",
                detail="unreadable answer",
            )
        self.auth_log.observe(result)
        return result

    async def run_batch(
        self,
        request: pb.BatchSendRequest,
        unique: UniqueRecipients,
        emit: Emit,
        counters: BatchCounters,
        deadline: float | None,
        stop: asyncio.Event,
        abandon: Callable[[list[pb.BatchSendResponse]], None] | None = None,
    ) -> None:
        """Send the unique recipients and emit one outcome per recipient.

        `deadline` is on the monotonic clock (None = no deadline); `stop` is set on
        shutdown: no new call starts, calls in flight finish. If the batch is cancelled,
        `abandon` receives the outcomes of the unfinished chunks (in flight: UNCERTAIN).
        """
        translator = self.translator
        prepared = translator.prepare(request)
        per_call = translator.recipients_per_call(prepared, self.config.recipients_per_call)
        if self.config.recipient_limit:
            per_call = min(per_call, self.config.recipient_limit)
        ids, indexes = unique.ids, unique.indexes
        batch_key = uuid.uuid4().hex
        # Chunks are planned as they are sent, so the first call does not wait for the
        # whole batch to be planned; `planned` is what has been cut so far.
        planned: list[_Chunk] = []

        def plan() -> Iterator[_Chunk]:
            start = 0
            sizes = iter_chunk_sizes(translator, prepared, ids, per_call)
            for number, size in enumerate(sizes):
                end = start + size
                chunk = _Chunk(f"{batch_key}:{number}", indexes[start:end], ids[start:end])
                planned.append(chunk)
                yield chunk
                start = end

        def not_planned(chunk_size: int) -> Iterator[_Chunk]:
            """The rest of the batch, cut only to bound the size of its outcome messages."""
            done = sum(len(chunk.recipients) for chunk in planned)
            for start in range(done, len(ids), chunk_size):
                end = start + chunk_size
                yield _Chunk("", indexes[start:end], ids[start:end])

        sender = _ChunkSender(self, prepared, emit, counters, deadline, stop)
        try:
            async with asyncio.TaskGroup() as group:
                for chunk in plan():
                    if sender.should_stop():
                        await sender.give_up(chunk)
                        for rest in not_planned(per_call):
                            await sender.give_up(rest)
                        break
                    await self.permits.acquire()
                    try:
                        grant = await sender.acquire_quota(chunk)
                    except BaseException:
                        self.permits.release()
                        raise
                    if grant is None:
                        self.permits.release()
                        await sender.give_up(chunk)
                        continue
                    group.create_task(sender.send(chunk, grant))
        except BaseException:
            if abandon is not None:
                left = [chunk for chunk in planned if not chunk.finished]
                left.extend(not_planned(per_call))
                abandon([chunk.abandoned(counters) for chunk in left])
            raise


@dataclass
class _ChunkSender:
    """Sends the chunks of one batch, each to exactly one set of outcomes."""

    backend: Backend
    prepared: Any
    emit: Emit
    counters: BatchCounters
    deadline: float | None
    stop: asyncio.Event
    rng: random.Random = field(default_factory=random.Random)

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def should_stop(self) -> bool:
        remaining = self.remaining()
        return self.stop.is_set() or (remaining is not None and remaining <= _DEADLINE_MARGIN_S)

    async def acquire_quota(self, chunk: _Chunk) -> Grant | None:
        """Quota for one call of `chunk`, or None when the deadline or shutdown comes first."""
        deadline = None if self.deadline is None else self.deadline - _DEADLINE_MARGIN_S
        # Shutdown must not wait out a long quota wait: race the limiter against `stop`.
        acquire = asyncio.ensure_future(
            self.backend.limiter.acquire(len(chunk.recipients), deadline)
        )
        stopped = asyncio.ensure_future(self.stop.wait())
        try:
            done, _ = await asyncio.wait({acquire, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if acquire in done:
            try:
                return acquire.result()
            except QuotaWaitTooLong:
                return None
        acquire.cancel()
        try:
            grant = await acquire
        except (asyncio.CancelledError, QuotaWaitTooLong):
            return None
        grant.release()
        return None

    async def give_up(self, chunk: _Chunk) -> None:
        """End a chunk that will not be (re)sent with its last failure or NOT_ATTEMPTED."""
        last = chunk.last
        if last is None:
            why = "shutting down" if self.stop.is_set() else "the caller's deadline came first"
            await self._emit_all(
                chunk, pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_NOT_ATTEMPTED, "", why
            )
        else:
            await self._emit_all(
                chunk, pb.DELIVERY_STATE_FAILED, last.reason, last.vendor_code, last.detail
            )

    async def send(self, chunk: _Chunk, grant: Grant) -> None:
        """Call the vendor for `chunk` until it has a final answer; holds one permit."""
        backend = self.backend
        try:
            while True:
                chunk.attempts += 1
                self.counters.vendor_calls += 1
                remaining = self.remaining()
                timeout = backend.config.request_timeout_s
                if remaining is not None:
                    timeout = max(0.05, min(timeout, remaining - _DEADLINE_MARGIN_S))
                # Stays set if the batch is cancelled mid-call: that call may have landed.
                chunk.in_flight = True
                try:
                    result = await backend._call(self.prepared, chunk, timeout)
                finally:
                    grant.release()
                backend.endpoints.observe(result)
                chunk.in_flight = False
                chunk.last = result
                if result.disposition is Disposition.DONE:
                    await self._emit_results(chunk, result)
                    return
                if result.disposition is Disposition.AMBIGUOUS:
                    await self._emit_all(
                        chunk,
                        pb.DELIVERY_STATE_UNCERTAIN,
                        result.reason,
                        result.vendor_code,
                        result.detail,
                    )
                    return
                if not await self._prepare_resend(chunk, result):
                    await self.give_up(chunk)
                    return
                next_grant = await self.acquire_quota(chunk)
                if next_grant is None:
                    await self.give_up(chunk)
                    return
                grant = next_grant
        finally:
            backend.permits.release()

    async def _prepare_resend(self, chunk: _Chunk, result: CallResult) -> bool:
        """Get ready to send a not-processed chunk again; False when it must not be."""
        backend = self.backend
        if result.disposition is Disposition.REFRESH_AUTH:
            if chunk.refreshed_auth:
                return False
            chunk.refreshed_auth = True
            backend.translator.invalidate_credentials()
            log.warning(
                "backend %s: credentials refreshed after vendor code %s",
                backend.config.name,
                result.vendor_code,
            )
            return True
        if result.disposition is Disposition.RATE_LIMITED:
            # The vendor pauses the whole app: pause the whole backend, not just this batch,
            # even when this chunk has no attempt left.
            backend.limiter.block(backend.config.block_s)
            log.warning(
                "backend %s: vendor refused for rate (code %s); paused %.1fs",
                backend.config.name,
                result.vendor_code,
                backend.config.block_s,
            )
            return chunk.attempts < backend.config.max_attempts
        if chunk.attempts >= backend.config.max_attempts:
            return False
        # RETRY: exponential backoff with full jitter, within the deadline.
        delay = self.rng.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**chunk.attempts))
        remaining = self.remaining()
        if remaining is not None and delay >= remaining - _DEADLINE_MARGIN_S:
            return False
        try:
            await asyncio.wait_for(self.stop.wait(), delay)
            return False  # shutting down
        except TimeoutError:
            return True

    async def _emit_results(self, chunk: _Chunk, result: CallResult) -> None:
        accepted, failed, uncertain = count_states(result.results)
        self.counters.add(pb.DELIVERY_STATE_ACCEPTED, accepted)
        self.counters.add(pb.DELIVERY_STATE_FAILED, failed)
        self.counters.add(pb.DELIVERY_STATE_UNCERTAIN, uncertain)
        await self._emit(chunk, chunk.vendor_results(result))

    async def _emit_all(
        self,
        chunk: _Chunk,
        state: pb.DeliveryState.ValueType,
        reason: Reason,
        vendor_code: str,
        detail: str,
    ) -> None:
        self.counters.add(state, len(chunk.recipients))
        await self._emit(chunk, chunk.same_for_all(state, reason, vendor_code, detail))

    async def _emit(self, chunk: _Chunk, response: pb.BatchSendResponse) -> None:
        chunk.finished = True
        await self.emit(response)


def _transport_failure(
    written: bool, ambiguous_reason: Reason, code: str, detail: str
) -> CallResult:
    # Once the request's headers went out, the vendor may have processed it.
    if written:
        return CallResult(
            Disposition.AMBIGUOUS, reason=ambiguous_reason, vendor_code=code, detail=detail
        )
    return CallResult(
        Disposition.RETRY,
        reason=pb.FAILURE_REASON_VENDOR_UNAVAILABLE,
        vendor_code=code,
        detail=detail,
    )


async def _mark_written(
    session: aiohttp.ClientSession,
    ctx: types.SimpleNamespace,
    params: aiohttp.TraceRequestHeadersSentParams,
) -> None:
    if ctx.trace_request_ctx is not None:
        ctx.trace_request_ctx.written = True
