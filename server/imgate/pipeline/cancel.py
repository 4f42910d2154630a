"""Cancel and recall: `Cancelling`, the part of BatchService that stops a batch's run
(cancelled here, on another replica, or found so at adoption) or closes it when it is not
running, and that makes a batch's recall batch (pipeline.recall) and starts it.
"""

from __future__ import annotations

from imgate.pipeline.recall import (
    NotRecallable,
    end_wait_s,
    recall_row,
    until_ended,
    why_not_recallable,
)
from imgate.pipeline.replicas import ReplicaLoops
from imgate.pipeline.running import BatchRunning
from imgate.store.records import (
    BatchRow,
)
from imgate.v1 import gateway_pb2 as pb


class Cancelling(BatchRunning):
    """Cancels and recalls of the batch service's batches."""

    replica: ReplicaLoops

    def _cancelled_elsewhere(self, batch_id: str) -> None:
        """A shared store's notification: `batch_id` was just cancelled. Its run here
        stops starting calls at once (its write-ahead would be refused anyway); a queued
        one of this replica is closed by the poll, now."""
        running = self._runs.get(batch_id)
        if running is not None:
            running[0].cancelled.set()
        else:
            self.replica.poke()

    def cancel_here(self, row: BatchRow) -> None:
        """A cancel asked on another replica (or found at adoption): stop the batch's run
        here, or close it when it is not running."""
        running = self._runs.get(row.batch_id)
        if running is not None:
            running[0].cancelled.set()
        elif self.may_run(row) and not self.stopping.is_set():
            self._launch(row, send=False)

    async def cancel(self, batch_id: str) -> BatchRow | None:
        row = await self.store.get_batch(batch_id)
        if row is None or row.ended:
            return row
        row = await self.store.set_state(batch_id, pb.BATCH_STATE_CANCELLING)
        running = self._runs.get(batch_id)
        if running is not None:
            running[0].cancelled.set()
        elif row is not None and not (row.ended or self.stopping.is_set() or self.store.shared):
            self._launch(row, send=False)  # not running here: close it now
        # A shared store's batch not running here is closed by its owner, which polls for
        # cancelled batches (_cancel_poll_loop), or, if the owner is dead, by its adopter.
        return row

    async def recall(
        self, original: BatchRow, request_id: str, wait_s: float | None = None
    ) -> tuple[BatchRow, bool]:
        """The recall batch of `original` (see pipeline.recall): (row, True) when made
        now; (row, False) when it had one, or the caller's `request_id` names another
        batch (that batch). Cancels `original` first if it has not ended, and waits up to
        `wait_s` (default: the backend's request timeout and a margin) for it to end.
        Raises NotRecallable, StillEnding, GatewayStopping, Backlogged."""
        if original.recalled_by:
            found = await self.store.get_batch(original.recalled_by)
            if found is not None:
                return found, False
        backend = self.backends.get(original.backend)
        why = why_not_recallable(original, backend)
        if why is not None:
            raise NotRecallable(why)
        assert backend is not None
        if not original.ended:
            await self.cancel(original.batch_id)
            wait_s = end_wait_s(backend) if wait_s is None else wait_s
            original = await until_ended(self.store, original.batch_id, wait_s)
        row = recall_row(original, request_id, self.clock())
        original_id = original.batch_id

        def launch(stored: BatchRow) -> None:
            self._launch(stored, slot_taken=True)

        return await self._submit(
            row, lambda: self.store.create_recall(row, original_id, owner=self.owner), launch
        )
