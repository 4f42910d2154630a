"""The outcome streams of ``BatchSend`` and ``WatchBatch``: blocking and asyncio."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import grpc
import grpc.aio

from imgate.v1 import gateway_pb2

from ._errors import GatewayError, error_from_rpc


@dataclass(frozen=True)
class BatchResult:
    """All outcomes of a batch, in arrival order, and its summary."""

    outcomes: Sequence[gateway_pb2.RecipientOutcome]
    summary: gateway_pb2.BatchSummary


class StreamState:
    """Outcomes received but not yet handed out, and the summary once it has come."""

    def __init__(self) -> None:
        self._pending: deque[gateway_pb2.RecipientOutcome] = deque()
        self._summary: gateway_pb2.BatchSummary | None = None
        self._finished = False
        self._cursor = ""
        self._cursor_before = ""  # before the message whose outcomes are being handed out
        self._batch_id = ""

    @property
    def cursor(self) -> str:
        """Where the stream is: ``watch_batch(batch_id, cursor=...)`` resumes after the
        last outcome handed out (never skipping one received but not yet handed out)."""
        return self._cursor_before if self._pending else self._cursor

    @property
    def batch_id(self) -> str:
        """The batch this stream follows (``BatchSend``: set by its first message)."""
        return self._batch_id

    @property
    def summary(self) -> gateway_pb2.BatchSummary:
        """The batch summary; available once every outcome has been iterated."""
        if not self._finished or self._summary is None:
            raise RuntimeError("the summary is available once the stream is exhausted")
        return self._summary

    @property
    def finished(self) -> bool:
        """Whether the RPC has ended (exhausted, failed or cancelled)."""
        return self._finished

    def _receive(
        self, response: gateway_pb2.BatchSendResponse | gateway_pb2.WatchBatchResponse
    ) -> None:
        self._pending.extend(response.outcomes)
        self._cursor_before = self._cursor
        if response.cursor:
            self._cursor = response.cursor
        if isinstance(response, gateway_pb2.BatchSendResponse) and response.batch_id:
            self._batch_id = response.batch_id
        if response.HasField("summary"):
            self._summary = response.summary

    def _end(self) -> None:
        self._finished = True
        if self._summary is None:
            raise GatewayError(
                grpc.StatusCode.INTERNAL, "the server ended the stream without a summary"
            )

    def _fail(self, error: grpc.RpcError) -> GatewayError:
        self._finished = True
        return error_from_rpc(error)

    def _fail_cancelled(self) -> GatewayError:
        # What the blocking client raises for a call cancelled by cancel(), for both flavours.
        self._finished = True
        return GatewayError(grpc.StatusCode.CANCELLED, "the call was cancelled by the client")


class BatchStream(StreamState):
    """The outcomes of one ``BatchSend`` or ``WatchBatch`` call, one at a time.

    ``for outcome in stream`` yields every outcome; afterwards ``stream.summary`` holds
    the ``BatchSummary``; ``stream.cursor`` is where a new ``watch_batch`` resumes.
    Leaving ``with stream`` early cancels the call (and a ``batch_send`` batch without
    ``request_id`` with it: rule 10; never a submitted batch). Iteration raises
    ``GatewayError`` (or ``InvalidRequestError``) when the call fails.
    """

    def __init__(
        self,
        call: grpc.CallIterator[gateway_pb2.BatchSendResponse]
        | grpc.CallIterator[gateway_pb2.WatchBatchResponse],
    ) -> None:
        super().__init__()
        self._call = call
        self._responses: Iterator[
            gateway_pb2.BatchSendResponse | gateway_pb2.WatchBatchResponse
        ] = iter(call)

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> gateway_pb2.RecipientOutcome:
        while not self._pending:
            if self.finished:
                raise StopIteration
            try:
                response = next(self._responses)
            except StopIteration:
                self._end()
                raise
            except grpc.RpcError as error:
                raise self._fail(error) from error
            self._receive(response)
        return self._pending.popleft()

    def collect(self) -> BatchResult:
        """Read the rest of the stream: every remaining outcome and the summary."""
        outcomes = list(self)
        return BatchResult(outcomes=outcomes, summary=self.summary)

    def cancel(self) -> None:
        """Cancel the call: the gateway starts no new vendor call for it."""
        self._call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leave it untyped

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.finished:
            self.cancel()


class AsyncBatchStream(StreamState):
    """The outcomes of one ``BatchSend`` or ``WatchBatch`` call, one at a time.

    ``async for outcome in stream`` yields every outcome; afterwards ``stream.summary``
    holds the ``BatchSummary``. Leaving ``async with stream`` early cancels the call.
    Iteration raises ``GatewayError`` (or ``InvalidRequestError``) when the call fails.
    """

    def __init__(
        self,
        call: grpc.aio.UnaryStreamCall[gateway_pb2.BatchSendRequest, gateway_pb2.BatchSendResponse]
        | grpc.aio.UnaryStreamCall[gateway_pb2.WatchBatchRequest, gateway_pb2.WatchBatchResponse],
    ) -> None:
        super().__init__()
        self._call = call
        self._responses: AsyncIterator[
            gateway_pb2.BatchSendResponse | gateway_pb2.WatchBatchResponse
        ] = call.__aiter__()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> gateway_pb2.RecipientOutcome:
        while not self._pending:
            if self.finished:
                raise StopAsyncIteration
            try:
                response = await anext(self._responses)
            except StopAsyncIteration:
                self._end()
                raise
            except grpc.RpcError as error:
                raise self._fail(error) from error
            except asyncio.CancelledError:
                # grpc.aio reports a call ended by cancel() as CancelledError; only the
                # cancellation of the caller's own task may travel as such.
                task = asyncio.current_task()
                if self._call.cancelled() and (task is None or not task.cancelling()):
                    raise self._fail_cancelled() from None
                raise
            self._receive(response)
        return self._pending.popleft()

    async def collect(self) -> BatchResult:
        """Read the rest of the stream: every remaining outcome and the summary."""
        outcomes = [outcome async for outcome in self]
        return BatchResult(outcomes=outcomes, summary=self.summary)

    def cancel(self) -> None:
        """Cancel the call: the gateway starts no new vendor call for it."""
        self._call.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.finished:
            self.cancel()
