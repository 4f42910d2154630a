"""A batch's life after submit (CONTRACT §9 rules 26, 27) on real processes: `imgate serve`
killed with -9 and restarted, the vendor sandbox in a process of its own (its delivery and
withdrawal logs outlive every gateway).

Scheduled sends: nothing is sent before send_after, across a kill -9 and a restart, then
everything once, within 2 s after it (by the restarted owner, or by the replica that took
over a dead one's batches); a batch cancelled while scheduled sends nothing.

Recall, on each vendor, batches of 2,000: recalled after their end and mid-run, each
delivered recipient is withdrawn exactly once and nothing is sent after the recall began;
killed -9 during the recall and restarted, no recipient is recalled twice and every
recipient of the recall batch has one outcome; a backend that cannot recall answers
FAILED_PRECONDITION and nothing is sent. The recall APIs keep their quotas, scaled down
tenfold in time on both sides (RECALL_SCALE), and the gateway never trips them.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from imgate.v1 import gateway_pb2 as pb
from imgate.vendors.registry import BY_VENDOR
from tests import _postgres
from tests._procs import SANDBOX_CREDENTIALS, GatewayProcess, SandboxProcess

VENDORS = ("yunxin_v1", "yunxin_v2", "tencent")
PER_CALL = 100
RECALL_SCALE = 10.0
"""The recall APIs' windows and blocks last a tenth of the vendors' (both sides)."""


def _recall_windows(vendor: str, block: str) -> dict[str, float]:
    """A vendor's recall window and `block` (the vendor's, or the gateway's pause) scaled."""
    recall = BY_VENDOR[vendor].spec.recall
    assert recall is not None
    return {
        "recall_call_window_s": recall.call_window_s / RECALL_SCALE,
        "recall_block_s": getattr(recall, block) / RECALL_SCALE,
    }


MAX_IN_FLIGHT = 4


class _Sandbox(SandboxProcess):
    def __init__(self) -> None:
        # Send quotas off (not what is tested here); the recall APIs keep theirs, scaled.
        super().__init__(
            {
                vendor: {
                    "call_limit": None,
                    "recipient_limit": None,
                    **_recall_windows(vendor, "vendor_block_s"),
                }
                for vendor in VENDORS
            }
        )

    def delivered(self, vendor: str) -> list[dict[str, Any]]:
        return self.deliveries(vendor)


@pytest.fixture(scope="module")
def vendor_sandbox() -> Iterator[_Sandbox]:
    sandbox = _Sandbox()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def sandbox(vendor_sandbox: _Sandbox) -> _Sandbox:
    vendor_sandbox.reset()
    return vendor_sandbox


class _Gateway(GatewayProcess):
    """`imgate serve` on `store_url` (the same after every restart), one backend per
    vendor at the sandbox."""

    def __init__(
        self, sandbox: _Sandbox, store_url: str, state_dir: Path, name: str = "gateway", **more: Any
    ) -> None:
        state_dir.mkdir(exist_ok=True)
        config = state_dir / "imgate.toml"
        text = f'default_backend = "tencent"\n[store]\nurl = "{store_url}"\n'
        text += f"lease_s = {more.pop('lease_s', 30)}\n"
        for vendor in VENDORS:
            text += (
                f'[backends.{vendor}]\nvendor = "{vendor}"\nbase_url = "{sandbox.url}"\n'
                f"{SANDBOX_CREDENTIALS[vendor]}recipients_per_call = {PER_CALL}\n"
                f"max_in_flight = {MAX_IN_FLIGHT}\ncall_limit = 1000000\n"
                f"recallable = {'false' if vendor in more.get('not_recallable', ()) else 'true'}\n"
            )
            for key, value in _recall_windows(vendor, "block_s").items():
                text += f"{key} = {value}\n"
            if vendor == "tencent":
                text += "recipient_limit = 0\n"
        config.write_text(text)
        super().__init__(
            name, config, state_dir / f"{name}.log", {"IMGATE_STATE_DIR": str(state_dir)}
        )
        self.wait_serving()

    def get(self, batch_id: str) -> pb.Batch:
        return self.stub.GetBatch(pb.GetBatchRequest(batch_id=batch_id), timeout=10)

    def until(self, batch_id: str, *states: int, within_s: float = 60) -> pb.Batch:
        deadline = time.monotonic() + within_s
        while True:
            batch = self.get(batch_id)
            if batch.state in states:
                return batch
            if time.monotonic() > deadline:
                raise AssertionError(f"batch {batch_id} is {batch.state}, not {states}")
            time.sleep(0.05)

    def outcomes(self, batch_id: str) -> list[pb.RecipientOutcome]:
        stream = self.stub.WatchBatch(pb.WatchBatchRequest(batch_id=batch_id), timeout=60)
        return [o for m in stream for o in m.outcomes]


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path}/imgate.db"


def _stamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _submit(gateway: _Gateway, vendor: str, recipients: list[str], **fields: Any) -> pb.Batch:
    request = pb.SubmitBatchRequest(
        backend=vendor,
        sender_id="lifecycle_sender",
        recipient_ids=recipients,
        message=pb.Message(text=pb.TextContent(text="lifecycle")),
        **fields,
    )
    return gateway.stub.SubmitBatch(request, timeout=30)


# -- scheduled sends -------------------------------------------------------------------


def test_a_scheduled_batch_sends_nothing_before_its_time_across_a_kill_then_all_once(
    sandbox: _Sandbox, tmp_path: Path
) -> None:
    recipients = [f"sched{n:05d}" for n in range(2000)]
    gateway = _Gateway(sandbox, _sqlite(tmp_path), tmp_path)
    at = time.time() + 10
    batch = _submit(gateway, "tencent", recipients, send_after=_stamp(at))
    assert batch.state == pb.BATCH_STATE_SCHEDULED
    time.sleep(1)
    gateway.kill()
    gateway = _Gateway(sandbox, _sqlite(tmp_path), tmp_path)
    ready = time.time()
    try:
        if ready < at:  # the restart came before its time (a slow machine may be later)
            assert gateway.get(batch.batch_id).state == pb.BATCH_STATE_SCHEDULED
        done = gateway.until(batch.batch_id, pb.BATCH_STATE_DONE)
        assert (done.accepted, done.pending) == (len(recipients), 0)
        delivered = sandbox.delivered("tencent")
        assert Counter(d["recipient"] for d in delivered) == Counter(recipients)  # once each
        first = min(d["time"] for d in delivered)
        assert at <= first < max(at, ready) + 2, first - at
    finally:
        gateway.stop()


def test_a_batch_cancelled_while_scheduled_sends_nothing_across_a_kill(
    sandbox: _Sandbox, tmp_path: Path
) -> None:
    gateway = _Gateway(sandbox, _sqlite(tmp_path), tmp_path)
    at = time.time() + 3
    batch = _submit(gateway, "yunxin_v2", ["x1", "x2", "x3"], send_after=_stamp(at))
    gateway.stub.CancelBatch(pb.CancelBatchRequest(batch_id=batch.batch_id), timeout=10)
    gateway.kill()
    gateway = _Gateway(sandbox, _sqlite(tmp_path), tmp_path)
    try:
        ended = gateway.until(batch.batch_id, pb.BATCH_STATE_CANCELLED)
        assert (ended.failed, ended.pending) == (3, 0)
        assert {(o.state, o.reason) for o in gateway.outcomes(batch.batch_id)} == {
            (pb.DELIVERY_STATE_FAILED, pb.FAILURE_REASON_NOT_ATTEMPTED)
        }
        time.sleep(max(0.0, at + 1 - time.time()))
        assert sandbox.delivered("yunxin_v2") == []
    finally:
        gateway.stop()


@pytest.fixture
async def postgres_url() -> Any:
    base = await _postgres.reachable_or_skip()
    schema = _postgres.new_schema()
    yield _postgres.with_schema(base, schema)
    await _postgres.drop_schema(base, schema)


def test_a_replica_that_took_over_sends_the_dead_ones_scheduled_batch_in_time(
    sandbox: _Sandbox, postgres_url: str, tmp_path: Path
) -> None:
    owner = _Gateway(sandbox, postgres_url, tmp_path / "a", "a", lease_s=2)
    heir = _Gateway(sandbox, postgres_url, tmp_path / "b", "b", lease_s=2)
    try:
        recipients = [f"heir{n:04d}" for n in range(500)]
        at = time.time() + 6
        batch = _submit(owner, "yunxin_v1", recipients, send_after=_stamp(at))
        owner.kill()  # its batch waits SCHEDULED in the store, owned by a dead replica
        done = heir.until(batch.batch_id, pb.BATCH_STATE_DONE, within_s=30)
        assert done.accepted == len(recipients)
        delivered = sandbox.delivered("yunxin_v1")
        assert Counter(d["recipient"] for d in delivered) == Counter(recipients)
        first = min(d["time"] for d in delivered)
        assert at <= first < at + 2, first - at
    finally:
        heir.stop()


# -- recall ----------------------------------------------------------------------------

RECIPIENTS = 2000
VENDOR_PARAMS = pytest.mark.parametrize("vendor", VENDORS)


def _audience(prefix: str) -> list[str]:
    return [f"{prefix}{n:05d}" for n in range(RECIPIENTS)]


def _recall_of(gateway: _Gateway, batch_id: str) -> pb.Batch:
    request = pb.RecallBatchRequest(batch_id=batch_id)
    recall = gateway.stub.RecallBatch(request, timeout=60)
    assert recall.recall_of == batch_id
    return recall


def _quota_kept(sandbox: _Sandbox, vendor: str) -> None:
    """The gateway never went over the recall API's quota (nothing refused for rate)."""
    stats = sandbox.stats(vendor)
    recall = BY_VENDOR[vendor].spec.recall
    assert recall is not None
    assert stats["refusals"] == {}, stats["refusals"]
    assert 0 < stats["peak_recall_calls_in_window"] <= recall.call_limit


@VENDOR_PARAMS
def test_a_recall_after_the_end_withdraws_each_delivered_recipient_once(
    sandbox: _Sandbox, tmp_path: Path, vendor: str
) -> None:
    gateway = _Gateway(sandbox, _sqlite(tmp_path), tmp_path)
    try:
        recipients = _audience("after")
        batch = _submit(gateway, vendor, recipients)
        original = gateway.until(batch.batch_id, pb.BATCH_STATE_DONE)
        assert original.accepted == RECIPIENTS
        recall = _recall_of(gateway, batch.batch_id)
        assert recall.total == RECIPIENTS
        ended = gateway.until(recall.batch_id, pb.BATCH_STATE_DONE, within_s=120)
        assert (ended.accepted, ended.pending) == (RECIPIENTS, 0)
        outcomes = gateway.outcomes(recall.batch_id)
        assert Counter(o.recipient_id for o in outcomes) == Counter(recipients)
        delivered = sandbox.delivered(vendor)
        withdrawn = sandbox.withdrawals(vendor)
        assert Counter(w["recipient"] for w in withdrawn) == Counter(
            d["recipient"] for d in delivered
        )  # each delivered recipient withdrawn exactly once
        assert max(d["time"] for d in delivered) <= min(w["time"] for w in withdrawn)
        assert sandbox.stats(vendor)["repeated_withdrawals"] == 0
        _quota_kept(sandbox, vendor)
        again = _recall_of(gateway, batch.batch_id)
        assert again.batch_id == recall.batch_id
    finally:
        gateway.stop()


@VENDOR_PARAMS
def test_a_recall_mid_run_cancels_then_withdraws_what_was_delivered(
    sandbox: _Sandbox, tmp_path: Path, vendor: str
) -> None:
    # Sends slow enough that a batch of 2,000 runs a few seconds (20 calls, 4 at a time).
    sandbox.set_faults({vendor: [{"kind": "latency", "api": "send", "delay_s": 0.4}]})
    gateway = _Gateway(sandbox, _sqlite(tmp_path), tmp_path)
    try:
        batch = _submit(gateway, vendor, _audience("mid"))
        time.sleep(0.7)
        began = time.time()
        recall = _recall_of(gateway, batch.batch_id)
        original = gateway.get(batch.batch_id)
        assert original.state == pb.BATCH_STATE_CANCELLED
        assert 0 < original.accepted < RECIPIENTS
        assert original.recalled_by == recall.batch_id
        assert recall.total == original.accepted + original.uncertain
        ended = gateway.until(recall.batch_id, pb.BATCH_STATE_DONE, within_s=120)
        assert ended.pending == 0
        delivered = sandbox.delivered(vendor)
        withdrawn = sandbox.withdrawals(vendor)
        assert Counter(w["recipient"] for w in withdrawn) == Counter(
            d["recipient"] for d in delivered
        )
        # Nothing sent after the recall began: only calls already in flight delivered
        # after it, and every withdrawal came after the last delivery.
        late_calls = {d["call_id"] for d in delivered if d["time"] > began}
        assert len(late_calls) <= MAX_IN_FLIGHT
        assert max(d["time"] for d in delivered) <= min(w["time"] for w in withdrawn)
        assert len(delivered) == original.accepted
        _quota_kept(sandbox, vendor)
    finally:
        gateway.stop()


@VENDOR_PARAMS
def test_a_kill_during_the_recall_recalls_nobody_twice(
    sandbox: _Sandbox, tmp_path: Path, vendor: str
) -> None:
    gateway = _Gateway(sandbox, _sqlite(tmp_path), tmp_path)
    recipients = _audience("kill")
    batch = _submit(gateway, vendor, recipients)
    gateway.until(batch.batch_id, pb.BATCH_STATE_DONE)
    # Recall calls slow enough that the recall runs a few seconds (4 at a time).
    sandbox.set_faults({vendor: [{"kind": "latency", "api": "recall", "delay_s": 0.005}]})
    recall = _recall_of(gateway, batch.batch_id)
    time.sleep(1.5)
    gateway.kill()
    at_kill = len(sandbox.withdrawals(vendor))
    assert 0 < at_kill < RECIPIENTS, at_kill  # killed mid-recall
    gateway = _Gateway(sandbox, _sqlite(tmp_path), tmp_path)
    try:
        ended = gateway.until(recall.batch_id, pb.BATCH_STATE_DONE, within_s=120)
        assert (ended.total, ended.pending) == (RECIPIENTS, 0)
        outcomes = gateway.outcomes(recall.batch_id)
        assert Counter(o.recipient_id for o in outcomes) == Counter(recipients)  # one each
        withdrawn = Counter(w["recipient"] for w in sandbox.withdrawals(vendor))
        assert max(withdrawn.values()) == 1  # nobody recalled twice
        assert sandbox.stats(vendor)["repeated_withdrawals"] == 0
        by_state = {
            state: {o.recipient_id for o in outcomes if o.state == state}
            for state in (pb.DELIVERY_STATE_ACCEPTED, pb.DELIVERY_STATE_UNCERTAIN)
        }
        assert by_state[pb.DELIVERY_STATE_ACCEPTED] <= set(withdrawn)
        assert (
            set(withdrawn)
            <= by_state[pb.DELIVERY_STATE_ACCEPTED] | by_state[pb.DELIVERY_STATE_UNCERTAIN]
        )
        # Only the calls in flight at the kill are unknown; every other one was made once.
        assert len(by_state[pb.DELIVERY_STATE_UNCERTAIN]) <= MAX_IN_FLIGHT
        assert ended.accepted >= RECIPIENTS - MAX_IN_FLIGHT
        _quota_kept(sandbox, vendor)
    finally:
        gateway.stop()


def test_a_backend_that_cannot_recall_is_failed_precondition_and_sends_nothing(
    sandbox: _Sandbox, tmp_path: Path
) -> None:
    gateway = _Gateway(sandbox, _sqlite(tmp_path), tmp_path, not_recallable=("yunxin_v1",))
    try:
        batch = _submit(gateway, "yunxin_v1", _audience("no"))
        gateway.until(batch.batch_id, pb.BATCH_STATE_DONE)
        received = sandbox.stats("yunxin_v1")["calls_received"]
        with pytest.raises(grpc.RpcError) as caught:
            gateway.stub.RecallBatch(pb.RecallBatchRequest(batch_id=batch.batch_id), timeout=30)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "recallable" in (caught.value.details() or "")
        stats = sandbox.stats("yunxin_v1")
        assert (stats["calls_received"], stats["recall_calls_processed"]) == (received, 0)
        assert sandbox.withdrawals("yunxin_v1") == []
        assert gateway.get(batch.batch_id).recalled_by == ""
    finally:
        gateway.stop()
