"""The GatewayService operations, whatever the transport: gRPC (api.servicer) and
HTTP/JSON call the same methods.

Thin on purpose: batches are the BatchService's, outcomes the store's. Each operation
takes the request message and returns the response message, or for streams an async
iterator of serialized response messages; a failure is an ApiError. The caller is
`api.callers.current_caller`, set by the transport. Streams read outcome pages from the
store at the reader's own pace (a slow reader costs one message of memory, never a
growing queue) and leave them coalesced, a few thousand per message: one message per
outcome costs 10-20x more CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, Mapping
from typing import Any

import grpc

from imgate.api import messages
from imgate.api.callers import current_caller
from imgate.api.errors import ApiError, invalid, not_found, unavailable
from imgate.api.requests import as_send_request, fingerprint, in_list
from imgate.api.upload import upload_recipients
from imgate.api.validate import (
    echo,
    list_id_violation,
    schedule_violations,
    validate_common,
    validate_for_vendor,
    validate_request_id,
)
from imgate.config.model import GatewayConfig
from imgate.observability.logs import set_log_context
from imgate.pipeline.backend import Backend
from imgate.pipeline.batches import BatchService
from imgate.pipeline.dispatch import DEADLINE_MARGIN_S, BatchRun
from imgate.pipeline.planner import dedupe
from imgate.pipeline.queue import Backlogged
from imgate.pipeline.recall import NotRecallable, StillEnding
from imgate.pipeline.watch import BatchStalled, GatewayStopping
from imgate.store.records import BatchRow, ListRow
from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.base.chars import IdCensus
from imgate.vendors.base.translator import FieldViolation

log = logging.getLogger("imgate.servicer")

_DEFAULT_PAGE_SIZE = 50
_MAX_PAGE_SIZE = 1000
_Running = tuple[BatchRun, asyncio.Task[None]]


class GatewayApi:
    """imgate.v1.GatewayService's operations."""

    def __init__(
        self, config: GatewayConfig, backends: Mapping[str, Backend], batches: BatchService
    ) -> None:
        self._config = config
        self._backends = backends
        self._batches = batches
        self._cancels: set[asyncio.Task[Any]] = set()

    @property
    def cancel_tasks(self) -> int:
        """Cancels of bound batches whose caller went away, still running."""
        return len(self._cancels)

    async def list_backends(self, request: pb.ListBackendsRequest) -> pb.ListBackendsResponse:
        response = pb.ListBackendsResponse(default_backend=self._config.default_backend)
        caller = current_caller.get()
        for backend in self._backends.values():
            cfg = backend.config
            if not caller.may_use(cfg.name):
                continue  # a caller sees only the backends it may use
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
                    max_in_flight=backend.permits.limit,
                    request_timeout_s=cfg.request_timeout_s,
                    max_attempts=cfg.max_attempts,
                ),
                state=pb.BACKEND_STATE_SERVING,
                recallable=backend.recall is not None,
            )
            paused = backend.pause()
            if paused is not None:
                # CONTRACT §11 rule 32: the vendor's block is BLOCKED, the gateway's own
                # pauses (shared quota unreachable or without state) are PAUSED.
                pause, until = paused
                item.pause_reason = pause.reason
                if pause.vendor:
                    item.state = pb.BACKEND_STATE_BLOCKED
                    if until is not None:
                        item.blocked_until.CopyFrom(messages.timestamp(until))
                else:
                    item.state = pb.BACKEND_STATE_PAUSED
                    if until is not None:
                        item.paused_until.CopyFrom(messages.timestamp(until))
            else:
                blocked_until = backend.blocked_until_wall()
                if blocked_until is not None:
                    item.state = pb.BACKEND_STATE_BLOCKED
                    item.blocked_until.CopyFrom(messages.timestamp(blocked_until))
        return response

    # -- submitting ---------------------------------------------------------------------

    async def _submit(
        self,
        request: pb.BatchSendRequest | pb.SubmitBatchRequest,
        *,
        bound: bool,
        send_before: float | None,
        call_deadline: float | None = None,
        small: bool = False,
        send_after: float | None = None,
    ) -> tuple[BatchRow, _Running | None]:
        """Validate and store the batch (or find it by request_id). `small`: a batch that
        fits one vendor call takes the short path (send_small), and its run is returned
        with it."""
        if self._batches.stopping.is_set():
            raise unavailable()
        # Read the repeated field once: every read builds 100,000 new strings.
        recipient_ids = list(request.recipient_ids)
        as_send = as_send_request(request)
        problems = validate_request_id(request.request_id)
        recipients = None
        if isinstance(request, pb.SubmitBatchRequest) and request.recipient_list:
            recipients = await self._own_list(request.recipient_list)
            if recipient_ids:
                problems.append(
                    FieldViolation(
                        "recipient_list", "give recipient_ids or recipient_list, not both"
                    )
                )
            # Every id was checked on upload; what depends on the vendor (its id rule, a
            # body that must fit with one recipient) is decided by the widest one.
            recipient_ids = [recipients.widest_id]
        census = IdCensus.of(recipient_ids)  # one scan for every id check below
        problems.extend(validate_common(as_send, recipient_ids, self._config, census))
        problems.extend(
            schedule_violations(
                send_after, send_before, self._batches.clock(), self._config.max_schedule_ahead_s
            )
        )
        backend_config = self._config.backend(request.backend)
        if backend_config is not None:
            translator = self._backends[backend_config.name].translator
            problems.extend(validate_for_vendor(as_send, recipient_ids, translator, census))
        if recipients is not None:
            problems = [in_list(problem, recipients) for problem in problems]
            if backend_config is not None:
                # Every id fits some vendor; the list's longest in this backend's unit
                # must fit its rule (an id Yunxin refuses may be one RongCloud takes).
                rule = self._backends[backend_config.name].translator.spec.id_rule
                too_long = list_id_violation(recipients.longest, rule, "recipient_list")
                if too_long is not None and not any(p.field == "recipient_list" for p in problems):
                    problems.append(too_long)
        if problems or backend_config is None:
            raise invalid(problems)
        backend = backend_config.name
        caller = current_caller.get()
        if not caller.may_use(backend):
            # Before anything is stored: nothing is sent (rule 17).
            log.warning(
                "refused caller %s on backend %s: not in its backends", caller.name, backend
            )
            raise ApiError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"caller {caller.name} may not use backend {backend}",
            )
        set_log_context(backend=backend, request_id=request.request_id, caller=caller.name)
        unique = dedupe([] if recipients is not None else recipient_ids)
        spec = pb.BatchSendRequest(sender_id=request.sender_id, backend=backend)
        spec.message.CopyFrom(request.message)
        if request.HasField("options"):
            spec.options.CopyFrom(request.options)
        vendor_recall = self._backends[backend].translator.spec.recall
        if (
            backend_config.recallable
            and vendor_recall is not None
            and vendor_recall.ids_on_request
            and not spec.options.HasField("return_message_ids")
        ):
            # What a recall of this batch will need: the vendor's id of each message.
            spec.options.return_message_ids = True
        row = BatchRow(
            batch_id=uuid.uuid4().hex,
            caller=caller.name,
            request_id=request.request_id,
            fingerprint=fingerprint(request, backend),
            backend=backend,
            spec=spec.SerializeToString(),
            bound=bound,
            total=len(unique) if recipients is None else recipients.count,
            duplicates_removed=(
                unique.duplicates_removed if recipients is None else recipients.duplicates_removed
            ),
            create_time=self._batches.clock(),
            send_before=send_before,
            send_after=send_after,
        )
        indexes = None if isinstance(unique.indexes, range) else unique.indexes
        running = None
        try:
            if recipients is not None:
                stored, created = await self._batches.submit_from_list(row, recipients.list_id)
            elif small and len(unique.ids) <= backend_config.recipients_per_call:
                runtime = self._backends[backend]
                prepared = runtime.translator.prepare(spec)
                if runtime.fits_one_call(prepared, unique.ids):
                    stored, created, running = await self._batches.send_small(
                        row, unique.ids, indexes, prepared, call_deadline
                    )
                else:
                    stored, created = await self._batches.submit(
                        row, unique.ids, indexes, call_deadline, prepared
                    )
            else:
                stored, created = await self._batches.submit(
                    row, unique.ids, indexes, call_deadline
                )
        except GatewayStopping:
            raise unavailable() from None
        except Backlogged as exc:
            raise ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
        except LookupError:  # purged between the check and the copy
            raise _no_list(recipients.list_id if recipients else "") from None
        if not created and stored.fingerprint != row.fingerprint:
            raise invalid(
                [
                    FieldViolation(
                        "request_id", "already used for a different request; nothing was sent"
                    )
                ]
            )
        set_log_context(batch_id=stored.batch_id)
        if created:
            # DEBUG: the audit line at its end is the batch's one INFO line (issue 20).
            log.debug(
                "batch of %d recipients (%d duplicates removed)",
                stored.total,
                stored.duplicates_removed,
            )
        return stored, running

    async def submit_batch(self, request: pb.SubmitBatchRequest) -> pb.Batch:
        send_before = send_after = None
        if request.HasField("send_before"):
            send_before = request.send_before.ToNanoseconds() / 1e9
        if request.HasField("send_after"):
            send_after = request.send_after.ToNanoseconds() / 1e9
        row, _ = await self._submit(
            request, bound=False, send_before=send_before, send_after=send_after
        )
        return messages.batch_message(row)

    async def batch_send(
        self, request: pb.BatchSendRequest, time_remaining: float | None
    ) -> AsyncGenerator[bytes, None]:
        """Submit and stream; `time_remaining`: seconds to the caller's deadline. When the
        consumer goes away (cancelled, or the iterator closed), a batch bound to its
        caller is cancelled (rule 10); one with a request_id goes on."""
        send_before = call_deadline = None
        if time_remaining is not None:
            # No call starts so late that its outcome could miss the caller's deadline.
            send_before = self._batches.clock() + time_remaining - DEADLINE_MARGIN_S
            call_deadline = time.monotonic() + time_remaining
        row, running = await self._submit(
            request,
            bound=not request.request_id,
            send_before=send_before,
            call_deadline=call_deadline,
            small=True,
        )
        # The recipients are in the store now: do not hold 100,000 ids for the whole stream.
        request.ClearField("recipient_ids")
        try:
            if running is not None:
                run, task = running
                await asyncio.shield(task)  # the run goes on if the caller goes away
                sink = run.sink
                if sink.ended and sink.pages == 1:
                    # One call, one page: the whole answer in one message, from memory.
                    yield messages.last_message(
                        sink.row,
                        sink.last_seq,
                        pb.BatchSendResponse,
                        row.batch_id,
                        page=sink.last_page,
                    )
                    return
            stream = self._stream(row.batch_id, 0, pb.BatchSendResponse, row.batch_id)
            async with contextlib.aclosing(stream):
                async for message in stream:
                    yield message
        except (asyncio.CancelledError, GeneratorExit):
            if row.bound:
                # The caller went away: a bound batch goes with it (rule 10).
                cancel = asyncio.create_task(self._batches.cancel(row.batch_id))
                self._cancels.add(cancel)
                cancel.add_done_callback(self._cancels.discard)
            raise

    # -- reading ------------------------------------------------------------------------

    async def _stream(
        self,
        batch_id: str,
        after_seq: int,
        message_type: messages.StreamType,
        with_batch_id: str = "",
    ) -> AsyncGenerator[bytes, None]:
        """Every outcome after `after_seq`, as recorded, then the summary."""
        streams = self._batches.metrics.watch_streams
        streams.inc()
        try:
            async for pages, ended in self._batches.watch(batch_id, after_seq):
                for group in messages.groups(pages):
                    yield messages.outcomes_message(group, message_type, with_batch_id)
                    after_seq = group[-1].seq
                if ended is not None:
                    yield messages.last_message(ended, after_seq, message_type, with_batch_id)
                    return
        except GatewayStopping:
            raise unavailable(
                f"the gateway is shutting down before batch {batch_id} ended; follow it with "
                f"WatchBatch from cursor {after_seq!s} once a gateway serves it"
            ) from None
        except BatchStalled:
            raise unavailable(
                f"the store cannot be written now: batch {batch_id} goes on once it can;"
                f" follow it with WatchBatch from cursor {after_seq!s}"
            ) from None
        finally:
            streams.dec()

    async def _own_batch(self, batch_id: str) -> BatchRow:
        row = await self._batches.store.get_batch(batch_id) if batch_id else None
        # Another caller's batch is indistinguishable from one that does not exist.
        if row is None or row.caller != current_caller.get().name:
            raise not_found(f"no batch {batch_id[:64]!r}")
        return row

    async def watch_batch(self, request: pb.WatchBatchRequest) -> AsyncGenerator[bytes, None]:
        after_seq = 0
        if request.cursor:
            if not request.cursor.isdigit() or len(request.cursor) > 18:
                raise invalid([FieldViolation("cursor", "not a cursor from this batch's stream")])
            after_seq = int(request.cursor)
        row = await self._own_batch(request.batch_id)
        stream = self._stream(row.batch_id, after_seq, pb.WatchBatchResponse)
        async with contextlib.aclosing(stream):
            async for message in stream:
                yield message

    async def get_batch(self, request: pb.GetBatchRequest) -> pb.Batch:
        return messages.batch_message(await self._own_batch(request.batch_id))

    async def cancel_batch(self, request: pb.CancelBatchRequest) -> pb.Batch:
        row = await self._own_batch(request.batch_id)
        cancelled = await self._batches.cancel(row.batch_id)
        return messages.batch_message(cancelled or row)

    async def recall_batch(
        self, request: pb.RecallBatchRequest, time_remaining: float | None = None
    ) -> pb.Batch:
        """The batch's recall batch (CONTRACT §9 rule 27; pipeline.recall). `time_remaining`:
        seconds to the caller's deadline, the most it waits for a cancelled batch to end."""
        if self._batches.stopping.is_set():
            raise unavailable()
        problems = validate_request_id(request.request_id)
        if problems:
            raise invalid(problems)
        row = await self._own_batch(request.batch_id)
        caller = current_caller.get()
        if not caller.may_use(row.backend):
            raise ApiError(
                grpc.StatusCode.PERMISSION_DENIED,
                f"caller {caller.name} may not use backend {row.backend}",
            )
        set_log_context(backend=row.backend, request_id=request.request_id, caller=caller.name)
        wait_s = None if time_remaining is None else max(0.0, time_remaining - DEADLINE_MARGIN_S)
        try:
            stored, created = await self._batches.recall(row, request.request_id, wait_s)
        except NotRecallable as exc:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION, f"{exc}; nothing was sent"
            ) from None
        except StillEnding as exc:
            raise unavailable(str(exc)) from None
        except GatewayStopping:
            raise unavailable() from None
        except Backlogged as exc:
            raise ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
        except LookupError:  # purged meanwhile
            raise not_found(f"no batch {request.batch_id[:64]!r}") from None
        if not created and stored.recall_of != row.batch_id:
            raise invalid(
                [
                    FieldViolation(
                        "request_id", "already used for a different request; nothing was sent"
                    )
                ]
            )
        set_log_context(batch_id=stored.batch_id)
        if created:
            log.info("recall of batch %s: %d recipients", row.batch_id, stored.total)
        return messages.batch_message(stored)

    async def list_batches(self, request: pb.ListBatchesRequest) -> pb.ListBatchesResponse:
        size = request.page_size or _DEFAULT_PAGE_SIZE
        if size < 0:
            raise invalid([FieldViolation("page_size", "must not be negative")])
        size = min(size, _MAX_PAGE_SIZE)
        before = None
        if request.page_token:
            created, _, batch_id = request.page_token.partition("/")
            try:
                before = (float(created), batch_id)
            except ValueError:
                raise invalid(
                    [FieldViolation("page_token", "not a token from ListBatches")]
                ) from None
        rows = await self._batches.store.list_batches(current_caller.get().name, size + 1, before)
        response = pb.ListBatchesResponse(batches=[messages.batch_message(r) for r in rows[:size]])
        if len(rows) > size:
            last = rows[size - 1]
            response.next_page_token = f"{last.create_time!r}/{last.batch_id}"
        return response

    async def _own_list(self, list_id: str) -> ListRow:
        found = await self._batches.store.get_list(list_id)
        # Another caller's list, or one still uploading, is one that does not exist.
        if found is None or found.ready_time is None or found.caller != current_caller.get().name:
            raise _no_list(list_id)
        return found

    async def upload_recipients(
        self, pages: AsyncIterable[pb.UploadRecipientsRequest]
    ) -> pb.RecipientList:
        if self._batches.stopping.is_set():
            raise unavailable()
        return await upload_recipients(
            self._batches.store,
            pages,
            self._config.max_recipients_per_list,
            self._batches.clock,
        )


def _no_list(list_id: str) -> ApiError:
    return not_found(f"no recipient list {echo(list_id)} (UploadRecipients)")
