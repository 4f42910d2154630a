"""What the sync and async outcome streams share: unbatching responses and the summary."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

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
        self._batch_id = ""

    @property
    def cursor(self) -> str:
        """Where the stream is: ``watch_batch(batch_id, cursor=...)`` resumes after it."""
        return self._cursor

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
