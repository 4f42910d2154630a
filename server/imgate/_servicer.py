"""The GatewayService implementation: validate, hand the batch to its backend, stream.

Outcomes flow from the dispatcher through a bounded queue (the back-pressure from a slow
reader to the vendor calls) and leave coalesced, many per message: one message per
outcome costs 10-20x more CPU.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, TypeAlias

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from imgate._config import GatewayConfig
from imgate._dispatch import Backend, BatchCounters
from imgate._logging import log_context
from imgate._planner import UniqueRecipients, dedupe
from imgate._replay import BatchRecord, RequestIdStore, payload_fingerprint
from imgate._validate import validate_common, validate_for_vendor
from imgate.translators._base import FieldViolation
from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc

log = logging.getLogger("imgate.servicer")

_Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

MAX_OUTCOMES_PER_MESSAGE = 2000  # ~100 KB per message, far under gRPC's 4 MB default
_QUEUE_CHUNKS = 64
_DONE = None


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    """imgate.v1.GatewayService."""

    def __init__(
        self,
        config: GatewayConfig,
        backends: Mapping[str, Backend],
        stop: asyncio.Event,
    ) -> None:
        self._config = config
        self._backends = backends
        self._stop = stop
        self._request_ids = RequestIdStore(
            config.request_id_retention_s, config.request_id_max_outcomes
        )

    async def ListBackends(
        self, request: pb.ListBackendsRequest, context: _Context
    ) -> pb.ListBackendsResponse:
        response = pb.ListBackendsResponse(default_backend=self._config.default_backend)
        for backend in self._backends.values():
            cfg = backend.config
            item = response.backends.add(
                name=cfg.name,
                vendor=cfg.vendor,
                sandbox=cfg.sandbox,
                limits=pb.BackendLimits(
                    recipients_per_call=cfg.recipients_per_call,
                    call_limit=cfg.call_limit,
                    call_window_s=cfg.call_window_s,
                    recipient_limit=cfg.recipient_limit,
                    recipient_window_s=cfg.recipient_window_s,
                    block_s=cfg.block_s,
                    max_in_flight=cfg.max_in_flight,
                    request_timeout_s=cfg.request_timeout_s,
                    max_attempts=cfg.max_attempts,
                ),
                state=pb.BACKEND_STATE_SERVING,
            )
            blocked_until = backend.blocked_until_wall()
            if blocked_until is not None:
                item.state = pb.BACKEND_STATE_BLOCKED
                item.blocked_until.CopyFrom(_timestamp(blocked_until))
        return response

    # Streams with context.write() rather than as an async generator: a generator suspended
    # at `yield` inside the TaskGroup would not unwind cleanly when the client goes away.
    async def BatchSend(  # type: ignore[override]
        self, request: pb.BatchSendRequest, context: _Context
    ) -> None:
        started = time.monotonic()
        if self._stop.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the gateway is shutting down")
        # Read the repeated field once: every read builds 100,000 new strings.
        recipient_ids = list(request.recipient_ids)
        problems = validate_common(request, recipient_ids, self._config)
        backend = None
        backend_config = self._config.backend(request.backend)
        if backend_config is not None:
            backend = self._backends[backend_config.name]
            problems.extend(validate_for_vendor(request, recipient_ids, backend.translator))
        if problems or backend is None:
            await _abort_invalid(context, problems)
            return
        log_context.set(f"backend={backend.config.name} request_id={request.request_id or '-'}")
        unique = dedupe(recipient_ids)
        remaining = context.time_remaining()
        deadline = None if remaining is None else started + remaining

        record: BatchRecord | None = None
        if request.request_id:
            fingerprint = payload_fingerprint(request, backend.config.name)
            existing = self._request_ids.get(request.request_id)
            if existing is not None:
                if existing.fingerprint != fingerprint:
                    await _abort_invalid(
                        context,
                        [
                            FieldViolation(
                                "request_id",
                                "already used for a different request; nothing was sent",
                            )
                        ],
                    )
                    return
                await _follow(existing, context)
                return
            record = self._request_ids.start(request.request_id, fingerprint)

        log.info(
            "batch of %d recipients (%d duplicates removed)",
            len(unique),
            unique.duplicates_removed,
        )
        counters = BatchCounters()
        queue: asyncio.Queue[pb.BatchSendResponse | None] = asyncio.Queue(_QUEUE_CHUNKS)

        async def emit(response: pb.BatchSendResponse) -> None:
            if record is not None:
                record.append(response)
            else:
                await queue.put(response)

        def summary() -> pb.BatchSummary:
            done = pb.BatchSummary(
                total=len(unique),
                accepted=counters.accepted,
                failed=counters.failed,
                uncertain=counters.uncertain,
                duplicates_removed=unique.duplicates_removed,
                vendor_calls=counters.vendor_calls,
                elapsed_ms=int((time.monotonic() - started) * 1000),
            )
            log.info(
                "batch done: accepted=%d failed=%d uncertain=%d vendor_calls=%d in %d ms",
                done.accepted,
                done.failed,
                done.uncertain,
                done.vendor_calls,
                done.elapsed_ms,
            )
            return done

        async def run() -> None:
            try:
                await backend.run_batch(
                    request,
                    unique,
                    emit,
                    counters,
                    deadline,
                    self._stop,
                    abandon=None if record is None else record.extend,
                )
            except BaseException:
                if record is not None:
                    # Followers must not wait forever for a batch whose caller went away.
                    _close_unreported(record, unique, counters)
                    record.finish(summary(), time.monotonic())
                raise
            if record is None:
                await queue.put(_DONE)
            else:
                record.finish(summary(), time.monotonic())

        async with asyncio.TaskGroup() as group:
            group.create_task(run())
            if record is None:
                await _stream_queue(queue, context)
                await context.write(pb.BatchSendResponse(summary=summary()))
            else:
                # Every caller of a request_id batch, the first one included, reads the record.
                await _follow(record, context)


async def _follow(record: BatchRecord, context: _Context) -> None:
    """Stream a recorded batch: what is done at once, the rest as it comes, then the summary."""
    async for response in record.follow():
        await context.write(response)
    assert record.summary is not None
    await context.write(pb.BatchSendResponse(summary=record.summary))


async def _stream_queue(
    queue: asyncio.Queue[pb.BatchSendResponse | None], context: _Context
) -> None:
    """Write chunk messages as they arrive, merging whatever is already waiting."""
    while True:
        response = await queue.get()
        if response is _DONE:
            return
        finished = False
        while len(response.outcomes) < MAX_OUTCOMES_PER_MESSAGE and not queue.empty():
            more = queue.get_nowait()
            if more is _DONE:
                finished = True
                break
            response.MergeFrom(more)
        await context.write(response)
        if finished:
            return


def _close_unreported(
    record: BatchRecord, unique: UniqueRecipients, counters: BatchCounters
) -> None:
    # The dispatcher reports every chunk it started; what is left was never sent.
    done = {outcome.index for response in record.responses for outcome in response.outcomes}
    response = pb.BatchSendResponse()
    for index, recipient in zip(unique.indexes, unique.ids, strict=True):
        if index not in done:
            response.outcomes.add(
                recipient_id=recipient,
                index=index,
                state=pb.DELIVERY_STATE_FAILED,
                reason=pb.FAILURE_REASON_NOT_ATTEMPTED,
                detail="the batch ended before it was sent",
            )
    counters.add(pb.DELIVERY_STATE_FAILED, len(response.outcomes))
    if response.outcomes:
        record.append(response)


async def _abort_invalid(context: _Context, problems: list[FieldViolation]) -> None:
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=p.field, description=p.description)
            for p in problems
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(bad_request)
    message = "; ".join(f"{p.field}: {p.description}" for p in problems[:5])
    status = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message=message or "invalid request", details=[detail]
    )
    grpc_status = rpc_status.to_status(status)
    await context.abort(grpc_status.code, grpc_status.details, grpc_status.trailing_metadata)


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp
