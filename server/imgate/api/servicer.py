"""The GatewayService implementation: validate, then submit or attach, then stream.

Thin on purpose: batches are the BatchService's, outcomes the store's. Every stream reads
outcome pages from the store at the reader's own pace (a slow reader costs one message of
memory, never a growing queue) and leaves them coalesced, a few thousand per message: one
message per outcome costs 10-20x more CPU.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeAlias

import grpc
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from imgate.api.callers import current_caller
from imgate.api.validate import (
    echo,
    recipient_violations,
    validate_common,
    validate_for_vendor,
    validate_request_id,
)
from imgate.config.load import GatewayConfig
from imgate.observability.logs import set_log_context
from imgate.pipeline.batches import Backlogged, BatchService, GatewayStopping
from imgate.pipeline.dispatch import DEADLINE_MARGIN_S, Backend, BatchRun
from imgate.pipeline.planner import dedupe
from imgate.store.base import BatchRow, ListRow, OutcomePage
from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc
from imgate.vendors.base.chars import IdCensus
from imgate.vendors.base.translator import FieldViolation

log = logging.getLogger("imgate.servicer")

_Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"

MAX_OUTCOMES_PER_MESSAGE = 2000  # ~100 KB per message, far under gRPC's 4 MB default
_DEFAULT_PAGE_SIZE = 50
_MAX_PAGE_SIZE = 1000


class GatewayServicer(pb_grpc.GatewayServiceServicer):
    """imgate.v1.GatewayService."""

    def __init__(
        self,
        config: GatewayConfig,
        backends: Mapping[str, Backend],
        batches: BatchService,
    ) -> None:
        self._config = config
        self._backends = backends
        self._batches = batches
        self._cancels: set[asyncio.Task[Any]] = set()

    @property
    def cancel_tasks(self) -> int:
        """Cancels of bound batches whose caller went away, still running."""
        return len(self._cancels)

    async def ListBackends(
        self, request: pb.ListBackendsRequest, context: _Context
    ) -> pb.ListBackendsResponse:
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
            )
            blocked_until = backend.blocked_until_wall()
            if blocked_until is not None:
                item.state = pb.BACKEND_STATE_BLOCKED
                item.blocked_until.CopyFrom(_timestamp(blocked_until))
        return response

    # -- submitting ---------------------------------------------------------------------

    async def _submit(
        self,
        request: pb.BatchSendRequest | pb.SubmitBatchRequest,
        context: _Context,
        *,
        bound: bool,
        send_before: float | None,
        call_deadline: float | None = None,
        small: bool = False,
    ) -> tuple[BatchRow, tuple[BatchRun, asyncio.Task[None]] | None]:
        """Validate and store the batch (or find it by request_id); aborts on any error.
        `small`: a batch that fits one vendor call takes the short path (send_small),
        and its run is returned with it."""
        if self._batches.stopping.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the gateway is shutting down")
        # Read the repeated field once: every read builds 100,000 new strings.
        recipient_ids = list(request.recipient_ids)
        as_send = _as_send_request(request)
        problems = validate_request_id(request.request_id)
        recipients = None
        if isinstance(request, pb.SubmitBatchRequest) and request.recipient_list:
            recipients = await self._own_list(request.recipient_list, context)
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
        backend_config = self._config.backend(request.backend)
        if backend_config is not None:
            translator = self._backends[backend_config.name].translator
            problems.extend(validate_for_vendor(as_send, recipient_ids, translator, census))
        if recipients is not None:
            problems = [_in_list(problem, recipients) for problem in problems]
        if problems or backend_config is None:
            await _abort_invalid(context, problems)
            raise AssertionError("unreachable")  # abort raises
        backend = backend_config.name
        caller = current_caller.get()
        if not caller.may_use(backend):
            # Before anything is stored: nothing is sent (rule 17).
            log.warning(
                "refused caller %s on backend %s: not in its backends", caller.name, backend
            )
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"caller {caller.name} may not use backend {backend}",
            )
        set_log_context(backend=backend, request_id=request.request_id, caller=caller.name)
        unique = dedupe([] if recipients is not None else recipient_ids)
        spec = pb.BatchSendRequest(sender_id=request.sender_id, backend=backend)
        spec.message.CopyFrom(request.message)
        if request.HasField("options"):
            spec.options.CopyFrom(request.options)
        row = BatchRow(
            batch_id=uuid.uuid4().hex,
            caller=caller.name,
            request_id=request.request_id,
            fingerprint=_fingerprint(request, backend),
            backend=backend,
            spec=spec.SerializeToString(),
            bound=bound,
            total=len(unique) if recipients is None else recipients.count,
            duplicates_removed=(
                unique.duplicates_removed if recipients is None else recipients.duplicates_removed
            ),
            create_time=self._batches.clock(),
            send_before=send_before,
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
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the gateway is shutting down")
            raise AssertionError("unreachable") from None
        except Backlogged as exc:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
            raise AssertionError("unreachable") from None
        except LookupError:  # purged between the check and the copy
            await _abort_no_list(context, recipients.list_id if recipients else "")
            raise AssertionError("unreachable") from None
        if not created and stored.fingerprint != row.fingerprint:
            await _abort_invalid(
                context,
                [
                    FieldViolation(
                        "request_id", "already used for a different request; nothing was sent"
                    )
                ],
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

    async def SubmitBatch(self, request: pb.SubmitBatchRequest, context: _Context) -> pb.Batch:
        send_before = None
        if request.HasField("send_before"):
            send_before = request.send_before.ToNanoseconds() / 1e9
        row, _ = await self._submit(request, context, bound=False, send_before=send_before)
        return _batch_message(row)

    # Streams with context.write() rather than as an async generator: a generator suspended
    # at `yield` would not unwind cleanly when the client goes away.
    async def BatchSend(  # type: ignore[override]
        self, request: pb.BatchSendRequest, context: _Context
    ) -> None:
        remaining = context.time_remaining()
        send_before = call_deadline = None
        if remaining is not None:
            # No call starts so late that its outcome could miss the caller's deadline.
            send_before = time.time() + remaining - DEADLINE_MARGIN_S
            call_deadline = time.monotonic() + remaining
        row, running = await self._submit(
            request,
            context,
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
                    last = pb.BatchSendResponse(batch_id=row.batch_id, cursor=str(sink.last_seq))
                    last.summary.CopyFrom(_summary(sink.row))
                    await context.write(sink.last_page + last.SerializeToString())
                    return
            await self._stream(row.batch_id, 0, context, pb.BatchSendResponse, row.batch_id)
        except asyncio.CancelledError:
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
        context: _Context,
        message_type: type[pb.BatchSendResponse] | type[pb.WatchBatchResponse],
        with_batch_id: str = "",
    ) -> None:
        """Every outcome after `after_seq`, as recorded, then the summary."""
        streams = self._batches.metrics.watch_streams
        streams.inc()
        try:
            async for pages, ended in self._batches.watch(batch_id, after_seq):
                for group in _groups(pages):
                    # Stored pages are serialized messages with only `outcomes`, and
                    # serialized messages concatenate into one (repeated fields merge):
                    # each message is the pages' bytes plus the cursor field, written as
                    # bytes, never parsed and serialized again (issue 20).
                    tail = message_type(cursor=str(group[-1].seq))
                    if with_batch_id and isinstance(tail, pb.BatchSendResponse):
                        tail.batch_id = with_batch_id
                    data = [page.data for page in group]
                    data.append(tail.SerializeToString())
                    await context.write(b"".join(data))
                    after_seq = group[-1].seq
                if ended is not None:
                    last = message_type(cursor=str(after_seq))
                    last.summary.CopyFrom(_summary(ended))
                    if with_batch_id and isinstance(last, pb.BatchSendResponse):
                        last.batch_id = with_batch_id
                    await context.write(last)
                    return
        except GatewayStopping:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the gateway is shutting down before batch {batch_id} ended; follow it with "
                f"WatchBatch from cursor {after_seq!s} once a gateway serves it",
            )
        finally:
            streams.dec()

    async def _own_batch(self, batch_id: str, context: _Context) -> BatchRow:
        row = await self._batches.store.get_batch(batch_id) if batch_id else None
        # Another caller's batch is indistinguishable from one that does not exist.
        if row is None or row.caller != current_caller.get().name:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no batch {batch_id[:64]!r}")
            raise AssertionError("unreachable")
        return row

    async def WatchBatch(  # type: ignore[override]
        self, request: pb.WatchBatchRequest, context: _Context
    ) -> None:
        after_seq = 0
        if request.cursor:
            if not request.cursor.isdigit() or len(request.cursor) > 18:
                await _abort_invalid(
                    context, [FieldViolation("cursor", "not a cursor from this batch's stream")]
                )
            after_seq = int(request.cursor)
        row = await self._own_batch(request.batch_id, context)
        await self._stream(row.batch_id, after_seq, context, pb.WatchBatchResponse)

    async def GetBatch(self, request: pb.GetBatchRequest, context: _Context) -> pb.Batch:
        return _batch_message(await self._own_batch(request.batch_id, context))

    async def CancelBatch(self, request: pb.CancelBatchRequest, context: _Context) -> pb.Batch:
        row = await self._own_batch(request.batch_id, context)
        cancelled = await self._batches.cancel(row.batch_id)
        return _batch_message(cancelled or row)

    async def ListBatches(
        self, request: pb.ListBatchesRequest, context: _Context
    ) -> pb.ListBatchesResponse:
        size = request.page_size or _DEFAULT_PAGE_SIZE
        if size < 0:
            await _abort_invalid(context, [FieldViolation("page_size", "must not be negative")])
        size = min(size, _MAX_PAGE_SIZE)
        before = None
        if request.page_token:
            created, _, batch_id = request.page_token.partition("/")
            try:
                before = (float(created), batch_id)
            except ValueError:
                await _abort_invalid(
                    context, [FieldViolation("page_token", "not a token from ListBatches")]
                )
        rows = await self._batches.store.list_batches(current_caller.get().name, size + 1, before)
        response = pb.ListBatchesResponse(batches=[_batch_message(r) for r in rows[:size]])
        if len(rows) > size:
            last = rows[size - 1]
            response.next_page_token = f"{last.create_time!r}/{last.batch_id}"
        return response

    async def _own_list(self, list_id: str, context: _Context) -> ListRow:
        found = await self._batches.store.get_list(list_id)
        # Another caller's list, or one still uploading, is one that does not exist.
        if found is None or found.ready_time is None or found.caller != current_caller.get().name:
            await _abort_no_list(context, list_id)
            raise AssertionError("unreachable")
        return found

    async def UploadRecipients(
        self, request_iterator: AsyncIterator[pb.UploadRecipientsRequest], context: _Context
    ) -> pb.RecipientList:
        """Pages go to the store as they come: the gateway holds one page, never the list.
        A bad page fails the upload and the store forgets everything it had received."""
        if self._batches.stopping.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the gateway is shutting down")
        store = self._batches.store
        caller = current_caller.get()
        row = ListRow(uuid.uuid4().hex, caller.name, self._batches.clock())
        limit = self._config.max_recipients_per_list
        digest = hashlib.sha256()
        widest, widest_bytes = "", -1
        await store.create_list(row)
        kept = False

        async def reject(problems: list[FieldViolation]) -> None:
            # Forgotten before the caller hears of it: nothing of a failed upload is kept.
            await store.delete_list(row.list_id)
            await _abort_invalid(context, problems)

        try:
            page_number = -1
            async for page in request_iterator:
                page_number += 1
                problems: list[FieldViolation] = []
                if page_number == 0:
                    row.request_id = page.request_id
                    problems += validate_request_id(page.request_id)
                elif page.request_id and page.request_id != row.request_id:
                    problems.append(
                        FieldViolation(f"pages[{page_number}].request_id", "first message only")
                    )
                ids = list(page.recipient_ids)
                problems += recipient_violations(ids, f"pages[{page_number}].recipient_ids")
                if problems:
                    await reject(problems)
                row.count += await store.add_to_list(row.list_id, ids)
                if row.count > limit:
                    await reject(
                        [
                            FieldViolation(
                                f"pages[{page_number}].recipient_ids",
                                f"over {limit} unique recipients; at most"
                                f" {limit} per list (max_recipients_per_list)",
                            )
                        ],
                    )
                digest.update("\n".join(ids).encode())
                digest.update(b"\n")  # no id holds a control character: an unambiguous join
                page_widest, page_widest_bytes, position = _widest(ids)
                if page_widest_bytes > widest_bytes:  # the first of equals keeps its place
                    widest, widest_bytes = page_widest, page_widest_bytes
                    row.widest_index = row.received + position
                row.received += len(ids)
            if row.count == 0:
                await reject(
                    [FieldViolation("recipient_ids", "at least one recipient is required")]
                )
            row.widest_id, row.fingerprint = widest, digest.digest()
            row.ready_time = self._batches.clock()
            finished, created = await store.finish_list(row)
            kept = True
            if not created and finished.fingerprint != row.fingerprint:
                await _abort_invalid(
                    context,
                    [FieldViolation("request_id", "already used for a different recipient list")],
                )
            set_log_context(request_id=finished.request_id, caller=caller.name)
            if created:
                log.info(
                    "recipient list of %d recipients (%d duplicates removed)",
                    finished.count,
                    finished.duplicates_removed,
                )
            return pb.RecipientList(
                recipient_list=finished.list_id,
                count=finished.count,
                duplicates_removed=finished.duplicates_removed,
            )
        finally:
            if not kept:
                await store.delete_list(row.list_id)


def _widest(ids: list[str]) -> tuple[str, int, int]:
    """(id, bytes, position) of the first id taking the most bytes in a JSON body."""
    if not ids:
        return "", -1, 0
    joined = "".join(ids)
    if joined.isascii() and '"' not in joined and "\\" not in joined:
        sizes = list(map(len, ids))  # one byte per character, nothing escaped
    else:
        sizes = [len(i.encode()) + i.count('"') + i.count("\\") for i in ids]
    position = max(range(len(ids)), key=sizes.__getitem__)
    return ids[position], sizes[position], position


def _in_list(problem: FieldViolation, recipients: ListRow) -> FieldViolation:
    """A violation found on the list's widest id, named as the list's."""
    if not problem.field.startswith("recipient_ids"):
        return problem
    return FieldViolation(
        "recipient_list",
        f"recipient {recipients.widest_index} of the list: {problem.description}",
    )


async def _abort_no_list(context: _Context, list_id: str) -> None:
    await context.abort(
        grpc.StatusCode.NOT_FOUND, f"no recipient list {echo(list_id)} (UploadRecipients)"
    )


def _groups(pages: list[OutcomePage]) -> list[list[OutcomePage]]:
    """Consecutive pages, up to MAX_OUTCOMES_PER_MESSAGE outcomes a group (at least one)."""
    groups: list[list[OutcomePage]] = []
    count = 0
    for page in pages:
        if not groups or count + page.count > MAX_OUTCOMES_PER_MESSAGE:
            groups.append([])
            count = 0
        groups[-1].append(page)
        count += page.count
    return groups


def _as_send_request(request: pb.BatchSendRequest | pb.SubmitBatchRequest) -> pb.BatchSendRequest:
    """The request as the validators take it: a SubmitBatchRequest's fields 1-6 without the
    recipients (the caller holds them as a list)."""
    if isinstance(request, pb.BatchSendRequest):
        return request
    send = pb.BatchSendRequest(
        request_id=request.request_id, backend=request.backend, sender_id=request.sender_id
    )
    if request.HasField("message"):
        send.message.CopyFrom(request.message)
    if request.HasField("options"):
        send.options.CopyFrom(request.options)
    return send


def _fingerprint(request: pb.BatchSendRequest | pb.SubmitBatchRequest, backend: str) -> bytes:
    """Digest of the payload: everything but request_id and send_before, backend resolved.
    Fields 1-6 have the same numbers in both messages, so BatchSend and SubmitBatch with one
    payload serialize alike and are the same batch."""
    # Serialized in place, the excluded fields set aside and put back: a copy of the
    # request would copy its 100,000 ids once more (about 3 MB of peak memory).
    request_id, requested_backend = request.request_id, request.backend
    send_before = None
    if isinstance(request, pb.SubmitBatchRequest) and request.HasField("send_before"):
        send_before = timestamp_pb2.Timestamp()
        send_before.CopyFrom(request.send_before)
        request.ClearField("send_before")
    request.request_id, request.backend = "", backend
    try:
        return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
    finally:
        request.request_id, request.backend = request_id, requested_backend
        if send_before is not None:
            assert isinstance(request, pb.SubmitBatchRequest)
            request.send_before.CopyFrom(send_before)


def _summary(row: BatchRow) -> pb.BatchSummary:
    end = row.end_time if row.end_time is not None else row.update_time
    return pb.BatchSummary(
        total=row.total,
        accepted=row.accepted,
        failed=row.failed,
        uncertain=row.uncertain,
        duplicates_removed=row.duplicates_removed,
        vendor_calls=row.vendor_calls,
        elapsed_ms=max(0, int((end - row.create_time) * 1000)),
    )


def _batch_message(row: BatchRow) -> pb.Batch:
    batch = pb.Batch(
        batch_id=row.batch_id,
        request_id=row.request_id,
        backend=row.backend,
        state=pb.BatchState.ValueType(row.state),
        total=row.total,
        accepted=row.accepted,
        failed=row.failed,
        uncertain=row.uncertain,
        pending=row.pending,
        create_time=_timestamp(row.create_time),
        update_time=_timestamp(row.update_time),
    )
    if row.ended:
        batch.summary.CopyFrom(_summary(row))
    return batch


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
