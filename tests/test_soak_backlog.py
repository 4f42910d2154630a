"""The backlog of test_soak.py: 20,000 one-recipient batches submitted behind a stalled
vendor cost the gateway at most 30 MB, and so does a restart (kill -9) with them queued;
all are sent once the vendor answers, none twice (a module of its own: a worker of its
own)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from imgate.v1 import gateway_pb2 as pb
from tests._procs import SandboxProcess, free_port
from tests._soak import QUEUED, rss_mb, soak_gateway, submit_many, until_all_ended

pytestmark = pytest.mark.slow


def test_a_backlog_behind_a_stalled_vendor_waits_in_the_store(tmp_path: Path) -> None:
    sandbox = SandboxProcess({"tencent": {"call_limit": None, "recipient_limit": None}})
    metrics_port = free_port()
    store_url = f"sqlite://{tmp_path}/imgate.db"
    # A vendor that holds every call for a minute: the first batches' calls stay in
    # flight, everything else queues.
    sandbox.set_faults({"tencent": [{"kind": "latency", "delay_s": 30}]})
    extra = "request_timeout_s = 120\n"
    gateway = soak_gateway(sandbox, tmp_path, store_url, metrics_port, extra)
    try:
        gateway.wait_serving()
        idle = rss_mb(gateway.pid)
        batch_ids = asyncio.run(submit_many(gateway.target, QUEUED))
        assert len(set(batch_ids)) == QUEUED
        backlog = rss_mb(gateway.pid)
        assert backlog - idle <= 30.0, (idle, backlog)
        gateway.kill()  # kill -9 with the backlog queued and calls in flight
        sandbox.set_faults({"tencent": []})  # the vendor answers again
        gateway = soak_gateway(sandbox, tmp_path, store_url, metrics_port, extra)
        gateway.wait_serving()
        time.sleep(2)  # draining the backlog (it loaded all of it at once: 367 MB)
        restarted = rss_mb(gateway.pid)
        assert restarted - idle <= 30.0, (idle, restarted)
        batches = until_all_ended(gateway, batch_ids)
        assert {batch.state for batch in batches.values()} == {pb.BATCH_STATE_DONE}
        assert sandbox.duplicates("tencent") == 0
        in_flight_at_kill = sum(1 for batch in batches.values() if batch.uncertain)
        assert in_flight_at_kill <= 64  # max_running_batches: the rest waited in the store
        # Everything not in flight at the kill is sent once the vendor answers.
        assert sandbox.stats("tencent")["deliveries"] >= QUEUED - in_flight_at_kill
    finally:
        gateway.stop()
        sandbox.stop()
