"""The crash scenario of test_crash_<vendor>.py: kill -9 a real `imgate serve` mid-batch,
restart it, and hold it to rule 9.

The vendor sandbox runs in a process of its own (its delivery log survives the gateway),
the gateway with a SQLite store in a fresh state_dir per run. Each run, on a seeded
random schedule: submit batches of 20,000 recipients, kill -9 the gateway at a random
moment (sometimes a second time right after the restart), restart it, and without any
caller action every batch must reach DONE with exactly one outcome per recipient, nobody
delivered twice, ACCEPTED a subset of what was delivered, and at most `max_in_flight`
chunks' worth of recipients UNCERTAIN per kill. One module per vendor, so that parallel
workers run the three matrices side by side (issue 25).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imgate.v1 import gateway_pb2 as pb
from tests._procs import SANDBOX_CREDENTIALS, GatewayProcess, SandboxProcess

RECIPIENTS = 20_000
MAX_IN_FLIGHT = 4
PER_CALL = {"yunxin_v1": 500, "yunxin_v2": 100, "tencent": 500}
RUNS_PER_BACKEND = 7  # 21 runs in all, 7 in each vendor's module


class CrashSandbox(SandboxProcess):
    def __init__(self) -> None:
        # No quotas: the windows are not what is tested here.
        super().__init__(
            {vendor: {"call_limit": None, "recipient_limit": None} for vendor in PER_CALL}
        )

    def recipients(self, vendor: str) -> list[str]:
        return [d["recipient"] for d in self.deliveries(vendor)]

    def reset(self) -> None:
        """A fresh delivery log; every call a little slow, so that a batch is still
        sending when the kill comes: 80 ms a call of 500, shorter for smaller calls, so
        a batch takes about as long on each vendor (yunxin_v2's 200 calls took 4 s of
        waiting a batch at 80 ms, past the kills' window of 1.2 s)."""
        super().reset()
        self.set_faults(
            {
                vendor: [{"kind": "latency", "delay_s": 0.08 * per_call / 500}]
                for vendor, per_call in PER_CALL.items()
            }
        )


def vendor_sandbox() -> Iterator[CrashSandbox]:
    """A module's sandbox (its fixture yields from this)."""
    sandbox = CrashSandbox()
    yield sandbox
    sandbox.stop()


def _gateway(sandbox: CrashSandbox, state_dir: Path) -> GatewayProcess:
    """A gateway on the run's SQLite file (the same one after every restart)."""
    config = state_dir / "imgate.toml"
    text = f'default_backend = "tencent"\n[store]\nurl = "sqlite://{state_dir}/imgate.db"\n'
    for vendor, per_call in PER_CALL.items():
        text += (
            f'[backends.{vendor}]\nvendor = "{vendor}"\nbase_url = "{sandbox.url}"\n'
            f"{SANDBOX_CREDENTIALS[vendor]}recipients_per_call = {per_call}\n"
            f"max_in_flight = {MAX_IN_FLIGHT}\ncall_limit = 1000000\n"
        )
        if vendor == "tencent":
            text += "recipient_limit = 0\n"
    config.write_text(text)
    return GatewayProcess(
        "gateway", config, state_dir / "gateway.log", {"IMGATE_STATE_DIR": str(state_dir)}
    )


def _submit(gateway: GatewayProcess, vendor: str, prefix: str) -> str:
    request = pb.SubmitBatchRequest(
        backend=vendor,
        sender_id="crash_sender",
        recipient_ids=[f"{prefix}{n:06d}" for n in range(RECIPIENTS)],
        message=pb.Message(text=pb.TextContent(text="crash test")),
    )
    return str(gateway.stub.SubmitBatch(request, timeout=30).batch_id)


def _until_done(gateway: GatewayProcess, batch_id: str) -> pb.Batch:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        batch = gateway.stub.GetBatch(pb.GetBatchRequest(batch_id=batch_id), timeout=10)
        if batch.state == pb.BATCH_STATE_DONE:
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} did not reach DONE")


Seen = list[tuple[int, int, int]]
"""(pending at the kill, delivered in all, uncertain at the end) of each run of a module,
so that its last test can check the kills really landed mid-batch, not before or after."""


def run(sandbox: CrashSandbox, vendor: str, seed: int, state_dir: Path, seen: Seen) -> None:
    rng = random.Random(seed)
    sandbox.reset()
    gateway = _gateway(sandbox, state_dir)
    gateway.wait_serving()
    batch_ids = [_submit(gateway, vendor, f"s{seed}a")]
    if rng.random() < 0.5:
        batch_ids.append(_submit(gateway, vendor, f"s{seed}b"))
    kills = 1
    time.sleep(rng.uniform(0.0, 1.2))
    at_kill = gateway.stub.GetBatch(pb.GetBatchRequest(batch_id=batch_ids[0]), timeout=10)
    gateway.kill()
    gateway = _gateway(sandbox, state_dir)
    if rng.random() < 0.3:  # and once more while it recovers or resumes
        time.sleep(rng.uniform(0.3, 1.5))
        gateway.kill()
        kills += 1
        gateway = _gateway(sandbox, state_dir)
    gateway.wait_serving()
    try:
        # Nobody watches or retries: every batch must get to DONE by itself.
        batches = [_until_done(gateway, batch_id) for batch_id in batch_ids]
        delivered_list = sandbox.recipients(vendor)
        delivered = set(delivered_list)
        for batch in batches:
            request = pb.WatchBatchRequest(batch_id=batch.batch_id)
            outcomes = [o for m in gateway.stub.WatchBatch(request, timeout=60) for o in m.outcomes]
            ids = [o.recipient_id for o in outcomes]
            assert len(ids) == len(set(ids)) == RECIPIENTS == batch.total
            accepted = {o.recipient_id for o in outcomes if o.state == pb.DELIVERY_STATE_ACCEPTED}
            uncertain = {o.recipient_id for o in outcomes if o.state == pb.DELIVERY_STATE_UNCERTAIN}
            assert accepted <= delivered
            assert {i for i in ids if i in delivered} <= accepted | uncertain
            assert len(uncertain) <= kills * MAX_IN_FLIGHT * PER_CALL[vendor]
            assert batch.accepted + batch.failed + batch.uncertain == RECIPIENTS
        assert len(delivered_list) == len(set(delivered_list)), "someone was delivered twice"
        assert sandbox.duplicates(vendor) == 0
        seen.append((at_kill.pending, len(delivered_list), sum(b.uncertain for b in batches)))
    finally:
        gateway.stop()


def check_kills_landed_mid_batch(seen: Seen) -> None:
    """Half the runs or more were killed mid-batch, and some kill hit calls in flight."""
    mid_batch = [one for one in seen if 0 < one[0] < RECIPIENTS]
    assert len(mid_batch) >= len(seen) // 2, seen
    assert any(uncertain for _, _, uncertain in seen), seen


def matrix(vendor: str) -> tuple[Any, Any, Any]:
    """(the sandbox fixture, the runs' test, the mid-batch check) of `vendor`'s module:
    `sandbox, test_kill_9_mid_batch_then_restart, test_the_kills_landed_mid_batch =
    matrix("tencent")` collects them there, one module-scoped sandbox and list of runs
    each."""
    seen: Seen = []

    @pytest.fixture(scope="module")
    def sandbox() -> Iterator[CrashSandbox]:
        yield from vendor_sandbox()

    @pytest.mark.slow
    @pytest.mark.parametrize("number", range(RUNS_PER_BACKEND))
    def test_kill_9_mid_batch_then_restart(
        sandbox: CrashSandbox, number: int, tmp_path: Path
    ) -> None:
        run(sandbox, vendor, seed=number * 31 + len(vendor), state_dir=tmp_path, seen=seen)

    @pytest.mark.slow
    def test_the_kills_landed_mid_batch() -> None:
        if len(seen) < RUNS_PER_BACKEND:
            pytest.skip("runs only after the whole matrix of this module")
        check_kills_landed_mid_batch(seen)

    return sandbox, test_kill_9_mid_batch_then_restart, test_the_kills_landed_mid_batch
