"""Several `imgate serve` replicas on one PostgreSQL schema (CONTRACT.md §5, rules 9, 15).

Real processes: the vendor sandbox in one (its delivery log outlives every replica),
three gateways started with the same `[store] url` and a small `lease_s`, each with its
in-process limiter (the sandbox's quotas are off: windows are not what is tested here).
The checks are rule 9's, across replicas: every batch reaches DONE without a caller's
help, every recipient has exactly one outcome, nobody is delivered twice, and
ACCEPTED <= delivered <= ACCEPTED | UNCERTAIN (as sets); watchers on other replicas see every
outcome once.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imgate.v1 import gateway_pb2 as pb
from tests import _postgres
from tests._procs import SANDBOX_CREDENTIALS, GatewayProcess, SandboxProcess

LEASE_S = 3.0
MAX_IN_FLIGHT = 2
PER_CALL = 500
# Slow enough calls that a batch of 40,000 takes several seconds on one replica.
LATENCY_S = 0.25
VENDORS = ("tencent", "yunxin_v1")


class _Sandbox(SandboxProcess):
    def __init__(self) -> None:
        unlimited = {"call_limit": None, "recipient_limit": None}
        # A log of every delivery of the test (200,000 and more).
        super().__init__(
            {vendor: unlimited for vendor in VENDORS}, ["--max-logged-deliveries", "1000000"]
        )

    def reset(self) -> None:
        super().reset()
        latency = [{"kind": "latency", "delay_s": LATENCY_S}]
        self.set_faults({vendor: latency for vendor in VENDORS})

    def recipients(self) -> list[str]:
        """Every logged delivery since the last reset, all vendors."""
        return [d["recipient"] for vendor in VENDORS for d in self.deliveries(vendor)]

    def all_duplicates(self) -> int:
        return sum(self.duplicates(vendor) for vendor in VENDORS)


@pytest.fixture(scope="module")
def vendor_sandbox() -> Iterator[_Sandbox]:
    sandbox = _Sandbox()
    yield sandbox
    sandbox.stop()


class _Replica(GatewayProcess):
    def __init__(self, name: str, sandbox: _Sandbox, store_url: str, state_dir: Path) -> None:
        state_dir.mkdir()
        config = state_dir / "imgate.toml"
        text = f'default_backend = "tencent"\n[store]\nurl = "{store_url}"\nlease_s = {LEASE_S}\n'
        for vendor in VENDORS:
            text += (
                f'[backends.{vendor}]\nvendor = "{vendor}"\nbase_url = "{sandbox.url}"\n'
                f"{SANDBOX_CREDENTIALS[vendor]}recipients_per_call = {PER_CALL}\n"
                f"max_in_flight = {MAX_IN_FLIGHT}\ncall_limit = 1000000\n"
            )
            if vendor == "tencent":
                text += "recipient_limit = 0\n"
        config.write_text(text)
        super().__init__(
            name, config, state_dir / "gateway.log", {"IMGATE_STATE_DIR": str(state_dir)}
        )

    def get(self, batch_id: str) -> pb.Batch:
        return self.stub.GetBatch(pb.GetBatchRequest(batch_id=batch_id), timeout=10)


@pytest.fixture
async def store_url() -> Any:
    base = await _postgres.reachable_or_skip()
    schema = _postgres.new_schema()
    yield _postgres.with_schema(base, schema)
    await _postgres.drop_schema(base, schema)


@pytest.fixture
def replicas(vendor_sandbox: _Sandbox, store_url: str, tmp_path: Path) -> Iterator[list[_Replica]]:
    """Three replicas on one fresh schema; the first starts alone (it migrates), the
    others together."""
    vendor_sandbox.reset()
    started = [_Replica("r0", vendor_sandbox, store_url, tmp_path / "r0")]
    started[0].wait_serving()
    started += [_Replica(f"r{n}", vendor_sandbox, store_url, tmp_path / f"r{n}") for n in (1, 2)]
    try:
        for replica in started:
            replica.wait_serving()
        yield started
    finally:
        for replica in started:
            replica.stop()


def _submit(replica: _Replica, vendor: str, prefix: str, count: int, request_id: str = "") -> str:
    request = pb.SubmitBatchRequest(
        backend=vendor,
        request_id=request_id,
        sender_id="replica_sender",
        recipient_ids=[f"{prefix}{n:06d}" for n in range(count)],
        message=pb.Message(text=pb.TextContent(text="replica test")),
    )
    return str(replica.stub.SubmitBatch(request, timeout=30).batch_id)


def _until(replica: _Replica, batch_id: str, state: int, timeout_s: float = 120) -> pb.Batch:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = replica.get(batch_id)
        if batch.state == state:
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} did not reach {pb.BatchState.Name(state)}")


class _Watcher(threading.Thread):
    """WatchBatch to the end on one replica, in a thread of its own."""

    def __init__(self, replica: _Replica, batch_id: str) -> None:
        super().__init__(daemon=True)
        self.replica, self.batch_id = replica, batch_id
        self.outcomes: list[pb.RecipientOutcome] = []
        self.summary: pb.BatchSummary | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            request = pb.WatchBatchRequest(batch_id=self.batch_id)
            for message in self.replica.stub.WatchBatch(request, timeout=150):
                self.outcomes.extend(message.outcomes)
                if message.HasField("summary"):
                    self.summary = message.summary
        except BaseException as exc:
            self.error = exc


def _check_rule_9(
    batch: pb.Batch, outcomes: list[pb.RecipientOutcome], delivered: set[str]
) -> None:
    ids = [o.recipient_id for o in outcomes]
    assert len(ids) == len(set(ids)) == batch.total, "not exactly one outcome per recipient"
    accepted = {o.recipient_id for o in outcomes if o.state == pb.DELIVERY_STATE_ACCEPTED}
    uncertain = {o.recipient_id for o in outcomes if o.state == pb.DELIVERY_STATE_UNCERTAIN}
    assert accepted <= delivered
    assert {i for i in ids if i in delivered} <= accepted | uncertain
    assert batch.accepted + batch.failed + batch.uncertain == batch.total


def _wait_progress(replica: _Replica, batch_id: str, at_least: int) -> pb.Batch:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        batch = replica.get(batch_id)
        if batch.accepted >= at_least:
            assert batch.pending > 0, "the batch ended before the test could interrupt it"
            return batch
        time.sleep(0.02)
    raise AssertionError(f"batch {batch_id} made no progress")


def _until_adopted(replica: _Replica, batch_ids: list[str], pending: dict[str, int]) -> float:
    """Seconds until a replica records anything for the dead owner's batches again."""
    started = time.monotonic()
    while time.monotonic() - started < 60:
        if any(replica.get(b).pending < pending[b] for b in batch_ids):
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError("nobody adopted the dead replica's batches")


@pytest.mark.slow
def test_kill_9_one_replica_the_others_take_its_batches_over(
    vendor_sandbox: _Sandbox, replicas: list[_Replica]
) -> None:
    r0, r1, r2 = replicas
    count = 40_000  # five batches: 200,000 recipients
    plan = [(r0, "tencent"), (r1, "yunxin_v1"), (r2, "tencent"), (r0, "yunxin_v1"), (r1, "tencent")]
    batch_ids = [
        _submit(replica, vendor, f"b{n}_", count) for n, (replica, vendor) in enumerate(plan)
    ]
    # Watchers on replicas that neither own the batch nor die.
    watchers = [
        _Watcher(r1 if replica is not r1 else r2, batch_id)
        for batch_id, (replica, _) in zip(batch_ids, plan, strict=True)
    ]
    dead_ones = [batch_ids[0], batch_ids[3]]
    _wait_progress(r1, batch_ids[0], count // 10)
    r0.kill()
    killed_at = time.monotonic()
    pending = {b: r1.get(b).pending for b in dead_ones}
    assert all(pending.values()), "r0 had finished before it was killed"
    adopted_after = _until_adopted(r2, dead_ones, pending)
    # Adoption needs the lease to run out, then a sweep (every lease_s / 3).
    assert adopted_after <= LEASE_S + 5, adopted_after
    batches = [_until(r2, batch_id, pb.BATCH_STATE_DONE) for batch_id in batch_ids]
    for watcher in watchers:
        watcher.join(60)
        assert watcher.error is None, watcher.error
        assert watcher.summary is not None
    delivered_list = vendor_sandbox.recipients()
    delivered = set(delivered_list)
    assert len(delivered_list) == len(delivered), "someone was delivered twice"
    assert vendor_sandbox.all_duplicates() == 0
    for batch, watcher in zip(batches, watchers, strict=True):
        _check_rule_9(batch, watcher.outcomes, delivered)
        assert watcher.summary is not None
        assert watcher.summary.accepted == batch.accepted
    # Only calls in flight at the kill are UNCERTAIN: at most r0's permits' worth, and
    # none in the batches of replicas that stayed alive (no live replica was adopted).
    uncertain = {batch.batch_id: batch.uncertain for batch in batches}
    assert sum(uncertain[b] for b in dead_ones) <= len(VENDORS) * MAX_IN_FLIGHT * PER_CALL
    assert all(uncertain[b] == 0 for b in batch_ids if b not in dead_ones), uncertain
    assert sum(b.accepted for b in batches) >= 5 * count - len(VENDORS) * MAX_IN_FLIGHT * PER_CALL
    print(
        f"takeover: {5 * count} recipients, adopted {adopted_after:.2f}s after the kill "
        f"(lease_s {LEASE_S}), all DONE {time.monotonic() - killed_at:.1f}s after it; "
        f"uncertain {sum(uncertain.values())}, delivered {len(delivered_list)}"
    )


@pytest.mark.slow
def test_one_request_id_raced_on_two_replicas_is_one_batch(
    vendor_sandbox: _Sandbox, replicas: list[_Replica]
) -> None:
    _, r1, r2 = replicas
    rounds = 8
    answers: dict[tuple[int, str], str] = {}
    barrier = threading.Barrier(2)

    def race(replica: _Replica) -> None:
        for n in range(rounds):
            barrier.wait(30)
            answers[(n, replica.name)] = _submit(
                replica, "tencent", f"race{n}_", 1000, request_id=f"same-{n}"
            )

    threads = [threading.Thread(target=race, args=(r,)) for r in (r1, r2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(answers) == 2 * rounds
    for n in range(rounds):
        assert answers[(n, "r1")] == answers[(n, "r2")]
    listed = replicas[0].stub.ListBatches(pb.ListBatchesRequest(page_size=100), timeout=10)
    assert len(listed.batches) == rounds
    for n in range(rounds):
        _until(r2, answers[(n, "r1")], pb.BATCH_STATE_DONE)
    delivered = vendor_sandbox.recipients()
    assert len(delivered) == len(set(delivered)) == rounds * 1000
    assert vendor_sandbox.all_duplicates() == 0


@pytest.mark.slow
def test_a_cancel_on_another_replica_reaches_the_owner(
    vendor_sandbox: _Sandbox, replicas: list[_Replica]
) -> None:
    r0, r1, r2 = replicas
    batch_id = _submit(r0, "tencent", "cancel_", 40_000)
    _wait_progress(r1, batch_id, 2000)
    cancelled = r1.stub.CancelBatch(pb.CancelBatchRequest(batch_id=batch_id), timeout=10)
    assert cancelled.state in (pb.BATCH_STATE_CANCELLING, pb.BATCH_STATE_CANCELLED)
    batch = _until(r2, batch_id, pb.BATCH_STATE_CANCELLED, timeout_s=30)
    assert batch.failed > 0  # the unsent recipients: NOT_ATTEMPTED
    outcomes = [
        o
        for m in r2.stub.WatchBatch(pb.WatchBatchRequest(batch_id=batch_id), timeout=60)
        for o in m.outcomes
    ]
    delivered = vendor_sandbox.recipients()
    assert len(delivered) == len(set(delivered))
    _check_rule_9(batch, outcomes, set(delivered))
    # Closed by its owner, which is alive: nothing was adopted, nothing is UNCERTAIN.
    assert batch.uncertain == 0
    assert r0.serving()


@pytest.mark.slow
def test_a_replica_presumed_dead_that_wakes_up_changes_nothing(
    vendor_sandbox: _Sandbox, replicas: list[_Replica]
) -> None:
    """SIGSTOP the owner mid-batch (its calls in flight reach the vendor meanwhile), let
    another replica adopt the batch, SIGCONT it: its late answers are fenced off."""
    r0, r1, r2 = replicas
    batch_id = _submit(r0, "tencent", "zombie_", 40_000)
    _wait_progress(r1, batch_id, 4000)
    r0.process.send_signal(signal.SIGSTOP)
    try:
        pending = {batch_id: r1.get(batch_id).pending}
        adopted_after = _until_adopted(r1, [batch_id], pending)
        assert adopted_after <= LEASE_S + 5, adopted_after
    finally:
        r0.process.send_signal(signal.SIGCONT)
    batch = _until(r2, batch_id, pb.BATCH_STATE_DONE)
    outcomes = [
        o
        for m in r2.stub.WatchBatch(pb.WatchBatchRequest(batch_id=batch_id), timeout=60)
        for o in m.outcomes
    ]
    delivered = vendor_sandbox.recipients()
    assert len(delivered) == len(set(delivered)), "someone was delivered twice"
    assert vendor_sandbox.all_duplicates() == 0
    _check_rule_9(batch, outcomes, set(delivered))
    assert batch.uncertain <= MAX_IN_FLIGHT * PER_CALL
    # The zombie lives on as a replica (it gave the batch up, not its life).
    deadline = time.monotonic() + 10
    while not r0.serving():
        assert time.monotonic() < deadline, "r0 did not come back"
        time.sleep(0.1)
    assert "taken over by another replica" in r0.log_path.read_text()
