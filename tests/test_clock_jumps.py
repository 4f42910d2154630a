"""The wall clock jumps (issue 22, item 4), on a real gateway process under libfaketime.

The gateway's wall clock is moved while it runs (FAKETIME_TIMESTAMP_FILE, read again
every second; the monotonic clock is left alone). Retention and timestamps follow the
process's steady clock, so a forward jump past retention forgets no request_id (the same
request is the same batch: nothing sent twice) and a backward jump lets no purge delete
a batch that has just ended.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgate.v1 import gateway_pb2 as pb
from tests._procs import SANDBOX_CREDENTIALS, GatewayProcess, SandboxProcess

RETENTION_S = 30  # purge runs every 3 s
DAY = 86_400


def _faketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    if not found:
        message = "libfaketime is not installed (Debian: apt-get install faketime)"
        if os.environ.get("IMGATE_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found[0]


@pytest.fixture
def sandbox() -> Iterator[SandboxProcess]:
    process = SandboxProcess({})
    yield process
    process.stop()


class JumpingGateway:
    """A gateway whose wall clock the test moves."""

    def __init__(self, sandbox: SandboxProcess, state_dir: Path) -> None:
        self.offset_file = state_dir / "faketime"
        self.jump(0)
        config = state_dir / "imgate.toml"
        config.write_text(
            f'[store]\nurl = "sqlite://{state_dir}/imgate.db"\n'
            f"batch_retention_s = {RETENTION_S}\n"
            f'[backends.tencent]\nvendor = "tencent"\nbase_url = "{sandbox.url}"\n'
            f"{SANDBOX_CREDENTIALS['tencent']}"
        )
        self.process = GatewayProcess(
            "gateway",
            config,
            state_dir / "gateway.log",
            {
                "LD_PRELOAD": _faketime(),
                "FAKETIME_TIMESTAMP_FILE": str(self.offset_file),
                "FAKETIME_CACHE_DURATION": "1",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1",
                "IMGATE_STATE_DIR": str(state_dir),
            },
        )
        self.process.wait_serving()

    def jump(self, seconds: int) -> None:
        """Set the process's wall clock `seconds` away from the real one."""
        self.offset_file.write_text(f"{seconds:+d}\n")
        time.sleep(1.5)  # read again within a second

    def submit(self, request_id: str, recipients: int = 50) -> pb.Batch:
        request = pb.SubmitBatchRequest(
            backend="tencent",
            request_id=request_id,
            recipient_ids=[f"{request_id}-{n}" for n in range(recipients)],
            message=pb.Message(text=pb.TextContent(text="clock jump")),
        )
        batch: pb.Batch = self.process.stub.SubmitBatch(request, timeout=30)
        return batch

    def until_done(self, batch_id: str) -> pb.Batch:
        deadline = time.monotonic() + 30
        while True:
            batch: pb.Batch = self.process.stub.GetBatch(
                pb.GetBatchRequest(batch_id=batch_id), timeout=10
            )
            if batch.state == pb.BATCH_STATE_DONE:
                return batch
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_a_forward_jump_past_retention_forgets_no_request_id(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    gateway = JumpingGateway(sandbox, tmp_path)
    try:
        first = gateway.submit("jump-forward")
        gateway.until_done(first.batch_id)
        gateway.jump(+2 * DAY)
        time.sleep(8)  # two purges at least
        again = gateway.submit("jump-forward")
        assert again.batch_id == first.batch_id  # the same batch: nothing sent again
        assert sandbox.duplicates("tencent") == 0
        assert sandbox.stats("tencent")["deliveries"] == 50
    finally:
        gateway.process.stop()


def test_a_backward_jump_lets_no_purge_delete_a_batch_that_just_ended(
    sandbox: SandboxProcess, tmp_path: Path
) -> None:
    gateway = JumpingGateway(sandbox, tmp_path)
    try:
        gateway.jump(-2 * DAY)
        batch = gateway.submit("jump-back")
        gateway.until_done(batch.batch_id)
        gateway.jump(0)  # the clock is put right again
        time.sleep(8)  # two purges at least
        kept = gateway.process.stub.GetBatch(pb.GetBatchRequest(batch_id=batch.batch_id))
        assert kept.state == pb.BATCH_STATE_DONE
        assert gateway.submit("jump-back").batch_id == batch.batch_id
        assert sandbox.duplicates("tencent") == 0
    finally:
        gateway.process.stop()
