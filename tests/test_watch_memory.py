"""A watcher that reads nothing costs the gateway no memory beyond a small constant.

Two hundred watchers open WatchBatch on a 100,000-recipient batch and then read nothing
while the batch runs to its end; the gateway's RSS is compared with the same batch run
with no watcher (CONTRACT.md rule 13: a slow watcher is served from the store at its own
pace; issue 20: 1,000 such watchers once took 1.7 MB each, reading 64 pages ahead and
parsing them). Then every watcher reads on and sees every outcome exactly once, in order.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc
from tests._procs import free_port

RECIPIENTS = 100_000
WATCHERS = 200
HOLD_S = 10.0
MAX_GROWTH_MB = 40.0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _serve(state_dir: str) -> tuple[subprocess.Popen[bytes], str]:
    target = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "IMGATE_STATE_DIR": state_dir}
    env.pop("IMGATE_CONFIG", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imgate",
            "serve",
            "--listen",
            target,
            "--sandbox-listen",
            "127.0.0.1:0",
            "--sandbox-time-scale",
            "600",
            "--store",
            f"sqlite://{state_dir}/imgate.db",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return process, target
            except grpc.RpcError:
                time.sleep(0.1)
    process.kill()
    raise AssertionError("the gateway did not start")


def _run(watchers: int) -> float:
    """RSS growth (MB) of a fresh gateway over one batch with `watchers` stalled readers."""
    process, target = _serve(tempfile.mkdtemp(prefix="imgate-watch-"))
    try:
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.GatewayServiceStub(channel)
            warm = pb.SubmitBatchRequest(
                backend="tencent",
                recipient_ids=[f"w{n}" for n in range(2000)],
                message=pb.Message(text=pb.TextContent(text="warm")),
            )
            warm_id = stub.SubmitBatch(warm, timeout=30).batch_id
            for _ in stub.WatchBatch(pb.WatchBatchRequest(batch_id=warm_id), timeout=60):
                pass
            before = _rss_mb(process.pid)
            request = pb.SubmitBatchRequest(
                backend="tencent",
                recipient_ids=[f"user{n:07d}" for n in range(RECIPIENTS)],
                message=pb.Message(text=pb.TextContent(text="watch me slowly")),
            )
            batch_id = stub.SubmitBatch(request, timeout=30).batch_id
            calls = [
                stub.WatchBatch(pb.WatchBatchRequest(batch_id=batch_id), timeout=120)
                for _ in range(watchers)
            ]
            firsts = [next(call) for call in calls]  # connected, then never read again
            deadline = time.monotonic() + 120
            while stub.GetBatch(pb.GetBatchRequest(batch_id=batch_id)).state != (
                pb.BATCH_STATE_DONE
            ):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            time.sleep(HOLD_S)  # the watchers still read nothing
            after = _rss_mb(process.pid)
            for first, call in zip(firsts, calls, strict=True):
                _read_the_rest(first, call)
            return after - before
    finally:
        process.kill()
        process.wait()


def _read_the_rest(first: pb.WatchBatchResponse, call: Iterator[pb.WatchBatchResponse]) -> None:
    """The watcher reads on after its `first` message: every outcome once, with cursors
    that only grow (the order recorded), then the summary."""
    seen = bytearray(RECIPIENTS)
    cursors: list[int] = []
    summary = None
    for message in itertools.chain([first], call):
        for outcome in message.outcomes:
            seen[outcome.index] += 1
        cursors.append(int(message.cursor))
        if message.HasField("summary"):
            summary = message.summary
    assert summary is not None
    assert summary.total == RECIPIENTS
    assert all(a < b for a, b in itertools.pairwise(cursors[:-1]))  # in order
    assert seen == bytearray([1]) * RECIPIENTS


@pytest.mark.slow
def test_stalled_watchers_cost_no_memory_growth() -> None:
    alone = _run(0)
    watched = _run(WATCHERS)
    assert watched - alone <= MAX_GROWTH_MB, (alone, watched)
