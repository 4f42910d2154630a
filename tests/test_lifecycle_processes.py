"""A batch's life after submit (CONTRACT §9 rules 26, 27) on real processes: `imgate serve`
killed with -9 and restarted, the vendor sandbox in a process of its own (its delivery and
withdrawal logs outlive every gateway).

Scheduled sends: nothing is sent before send_after, across a kill -9 and a restart, then
everything once, within 2 s after it (by the restarted owner, or by the replica that took
over a dead one's batches); a batch cancelled while scheduled sends nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from imgate.v1 import gateway_pb2 as pb
from tests import _postgres
from tests._procs import SANDBOX_CREDENTIALS, GatewayProcess, SandboxProcess

VENDORS = ("yunxin_v1", "yunxin_v2", "tencent")
PER_CALL = {"yunxin_v1": 100, "yunxin_v2": 100, "tencent": 500}


class _Sandbox(SandboxProcess):
    def __init__(self) -> None:
        # Send quotas off (not what is tested here); the recall APIs keep theirs.
        super().__init__(
            {vendor: {"call_limit": None, "recipient_limit": None} for vendor in VENDORS}
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
                f"{SANDBOX_CREDENTIALS[vendor]}recipients_per_call = {PER_CALL[vendor]}\n"
                "max_in_flight = 4\ncall_limit = 1000000\n"
            )
            if vendor == "tencent":
                text += "recipient_limit = 0\n"
            for key, value in more.get(vendor, {}).items():
                text += f"{key} = {value}\n"
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
