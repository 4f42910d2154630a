"""A configured backend at run time: the only gateway module that does vendor I/O.

Per backend, `Backend` owns one aiohttp session (bounded connections, explicit timeouts),
the quota limiter and the in-flight permits, and the recall lane of a recallable vendor.
`Backend.call` is one vendor call, classified: built by the translator, sent without
following redirects, its answer read within a byte bound and parsed by the translator. A
call that failed before its request went out is RETRY; once the request was written, it
is AMBIGUOUS (the vendor may have processed it).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import secrets
import time
import types
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from imgate import __version__
from imgate.config.model import BackendConfig
from imgate.observability.metrics import Metrics, timer
from imgate.observability.tracing import AttributeValue, Tracing
from imgate.pipeline.answers import (
    AuthFailureLog,
    connection_detail,
    oversized_answer,
    read_bounded,
)
from imgate.pipeline.endpoints import Endpoints
from imgate.pipeline.permits import Permits
from imgate.pipeline.planner import chunk_size
from imgate.quota.limiter import BackendLimiter, Limiter, Pause
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.translator import CallResult, Disposition, Reason, Translator, fail_all
from imgate.vendors.registry import BY_VENDOR

log = logging.getLogger("imgate.dispatch")


class Backend:
    """A configured backend at run time: translator, HTTP session, quota and permits."""

    def __init__(
        self,
        config: BackendConfig,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        caller_weights: Mapping[str, int] | None = None,
        limiter: Limiter | None = None,
        recall_limiter: Limiter | None = None,
        translator: Translator | None = None,
    ) -> None:
        """`metrics` and `tracing`: the gateway's (a Backend alone gets its own).
        `caller_weights`: each caller's share of the quota (rule 19); others weigh 1.
        `limiter`: the shared quota (`[quota] url`); None = counted in this process;
        `recall_limiter` the same of the vendor's recall API. `translator`: other than
        the vendor's send translator (the recall lane's)."""
        self.config = config
        self.metrics = metrics or Metrics()
        self.tracing = tracing or Tracing()
        self.in_flight = 0
        self.caller_weights = dict(caller_weights or {})
        plugin = BY_VENDOR[config.vendor]
        self.translator: Translator = translator or plugin.translator(config.credentials)
        self.endpoints = Endpoints(config.name, config.base_url, config.backup_base_url)
        self.limiter = limiter or BackendLimiter(
            config.call_limit,
            config.call_window_s,
            config.recipient_limit,
            config.recipient_window_s,
            backend=config.name,
        )
        self.permits = Permits(
            config.max_in_flight,
            config.call_limit / config.call_window_s,
            config.request_timeout_s,
        )
        self.auth_log = AuthFailureLog(config.name)
        self.rng = random.Random()
        """Backoff jitter (one per backend: seeding one per batch cost a small send)."""
        self._session: aiohttp.ClientSession | None = None
        self.recall: Backend | None = None
        """The backend's recall lane (recallable backends): the vendor's recall API as a
        backend of its own, one recipient a call, with the recall API's quota."""
        if translator is None and config.recallable and plugin.recall_translator is not None:
            lane = dataclasses.replace(
                config,
                recipients_per_call=1,
                call_limit=config.recall_call_limit,
                call_window_s=config.recall_call_window_s,
                recipient_limit=0,
                block_s=config.recall_block_s,
                recallable=False,
            )
            self.recall = Backend(
                lane,
                self.metrics,
                self.tracing,
                caller_weights,
                recall_limiter,
                translator=plugin.recall_translator(config.credentials),
            )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.permits.most,
                # Shorter than common server keep-alives (nginx: 75 s), so we rarely write a
                # request onto a connection the vendor is closing: that would be UNCERTAIN.
                keepalive_timeout=15,
            )
            trace = aiohttp.TraceConfig()
            trace.on_request_headers_sent.append(_mark_written)
            self._session = aiohttp.ClientSession(
                connector=connector,
                # With tracing on, each request is also a CLIENT span (rule 33).
                trace_configs=[trace, *self.tracing.http_trace_configs()],
                timeout=aiohttp.ClientTimeout(total=self.config.request_timeout_s),
                headers={"User-Agent": f"imgate/{__version__}"},
            )
        return self._session

    def per_call(self, prepared: Any) -> int:
        """Most recipients one call of this prepared message may take."""
        config = self.config
        per_call = self.translator.recipients_per_call(prepared, config.recipients_per_call)
        if config.recipient_limit:
            per_call = min(per_call, config.recipient_limit)
        return max(1, per_call)

    def fits_one_call(self, prepared: Any, ids: Sequence[str]) -> bool:
        """Whether `ids` go in one vendor call of `prepared` (issue 20's short path)."""
        return len(ids) <= self.per_call(prepared) and (
            chunk_size(self.translator, prepared, ids) == len(ids)
        )

    def blocked_until_wall(self) -> float | None:
        """Wall-clock end of the current pause, or None when serving."""
        remaining = self.limiter.blocked_until - time.monotonic()
        return time.time() + remaining if remaining > 0 else None

    def pause(self) -> tuple[Pause, float | None] | None:
        """Why the backend is not sending now, with the wall-clock end of that pause
        (None: not known), or None when it sends (CONTRACT §11 rule 32)."""
        pause = self.limiter.pause()
        if pause is None:
            return None
        if pause.until is None:
            return pause, None
        return pause, time.time() + max(0.0, pause.until - time.monotonic())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.recall is not None:
            await self.recall.close()

    async def call(
        self,
        prepared: Any,
        recipients: Sequence[str],
        chunk_key: str,
        timeout_s: float,
        attempt: int = 1,
    ) -> CallResult:
        """One HTTP request for a chunk, classified. Never raises but for cancellation.

        Counted and timed (whatever the outcome) and traced as a child of the batch's span.
        """
        config = self.config
        attributes: dict[str, AttributeValue] = {
            "imgate.backend": config.name,
            "imgate.vendor": config.vendor,
            "imgate.recipients": len(recipients),
            "imgate.attempt": attempt,
        }
        elapsed = timer()
        self.in_flight += 1
        result_label = "cancelled"
        with self.tracing.span("vendor call", attributes) as span:
            try:
                result = await self._call(prepared, recipients, chunk_key, timeout_s)
                result_label = result.disposition.value
                span.set(
                    {
                        "imgate.result": result_label,
                        "imgate.vendor_code": result.vendor_code,
                    }
                )
                return result
            finally:
                self.in_flight -= 1
                took = elapsed()
                self.permits.observe(took)
                self.metrics.vendor_call(config.name, config.vendor, result_label, took)

    async def _call(
        self, prepared: Any, recipients: Sequence[str], chunk_key: str, timeout_s: float
    ) -> CallResult:
        try:
            request = self.translator.build(
                prepared, recipients, chunk_key, time.time(), secrets.token_hex(16)
            )
        except Exception:
            # A translator bug must cost this chunk only, and nothing was sent.
            log.exception("backend %s: cannot build the vendor request", self.config.name)
            return fail_all(
                recipients, pb.FAILURE_REASON_NOT_ATTEMPTED, "", "gateway error; not sent"
            )
        trace_ctx = types.SimpleNamespace(written=False)
        try:
            async with self.session.request(
                request.method,
                self.endpoints.url(request.path),
                params=request.query,
                headers=request.headers,
                data=request.body,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                trace_request_ctx=trace_ctx,
                # A 3xx is read as the vendor's answer (UNCERTAIN), never followed: a 307
                # or 308 would send the call again (every recipient twice), to a host
                # that may not be the vendor's, with the signed body and credentials.
                allow_redirects=False,
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
            result = self.translator.parse(recipients, status, body)
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
