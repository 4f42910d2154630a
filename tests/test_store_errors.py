"""A store that cannot write for a while (issue 22, item 2), on a real full disk.

The SQLite file lives on a small tmpfs; a filler file takes the rest of it, so SQLite's
writes fail ("database or disk is full") while reads go on, as on a full disk; deleting
the filler gives the space back. While writes fail: SubmitBatch answers UNAVAILABLE with
a plain message (nothing was stored: a retry is safe), health is NOT_SERVING, attached
streams end UNAVAILABLE instead of hanging to their deadline. Once space is back, in
the same process: every batch ends, each recipient with one outcome, none sent twice.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgate.sandbox import FaultRule, SandboxServer
from imgate.store.sqlite import SQLiteStore
from imgate.v1 import gateway_pb2 as pb
from tests.conftest import RunningGateway, StartGateway, text_request

DISK_BYTES = 32 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_BYTES mounted for this test (root only, as in CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        if os.environ.get("IMGATE_REQUIRE_SERVICES") == "1":
            pytest.fail("a full-disk test needs root to mount a tmpfs")
        pytest.skip("mounting a tmpfs needs root (CI runs these as root)")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


class Disk:
    """Fills and frees the small disk."""

    def __init__(self, mount: Path) -> None:
        self.filler = mount / "filler"

    def fill(self) -> None:
        with self.filler.open("wb") as out:
            try:
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
            except OSError:
                pass  # full

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


async def _health(gateway: RunningGateway) -> int:
    stub = health_pb2_grpc.HealthStub(gateway.channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(reply.status)


async def _read_to_the_end(call: grpc.aio.UnaryStreamCall[object, object]) -> None:
    while await call.read() is not grpc.aio.EOF:
        pass


@pytest.fixture
async def gateway_on_small_disk(
    small_disk: Path, sandbox: SandboxServer, start_gateway: StartGateway
) -> AsyncIterator[tuple[RunningGateway, Disk, SandboxServer]]:
    store = SQLiteStore(small_disk / "imgate.db")
    # One recipient per call, each call 50 ms: a batch of 60 takes a while.
    sandbox.state.set_faults("tencent", [FaultRule(kind="latency", delay_s=0.05)])
    gateway = await start_gateway({"recipients_per_call": 1, "max_in_flight": 2}, store=store)
    disk = Disk(small_disk)
    yield gateway, disk, sandbox
    disk.free()


async def test_a_full_disk_refuses_new_batches_plainly_and_then_recovers(
    gateway_on_small_disk: tuple[RunningGateway, Disk, SandboxServer],
) -> None:
    gateway, disk, _ = gateway_on_small_disk
    disk.fill()
    # More than the WAL may still hold room for (up to 1 MiB is kept between bursts), so
    # that the write needs the disk.
    request = pb.SubmitBatchRequest(
        backend="tencent",
        request_id="full-disk-1",
        recipient_ids=[f"full-disk-recipient-{n:08d}" for n in range(50_000)],
        message=pb.Message(text=pb.TextContent(text="x" * 2000)),
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.stub.SubmitBatch(request)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    details = refused.value.details() or ""
    assert "nothing was stored" in details
    assert "Error" not in details
    assert "<class" not in details
    disk.free()
    batch = await gateway.stub.SubmitBatch(request)  # the retry is safe: a new batch
    assert batch.total == 50_000
    # It runs (one recipient a call here: it would take long); cancelled, it ends.
    await gateway.stub.CancelBatch(pb.CancelBatchRequest(batch_id=batch.batch_id))
    async for _ in gateway.stub.WatchBatch(pb.WatchBatchRequest(batch_id=batch.batch_id)):
        pass
    done = await gateway.stub.GetBatch(pb.GetBatchRequest(batch_id=batch.batch_id))
    assert done.state == pb.BATCH_STATE_CANCELLED
    assert done.pending == 0


async def test_batches_stopped_by_a_full_disk_end_in_the_same_process(
    gateway_on_small_disk: tuple[RunningGateway, Disk, SandboxServer],
) -> None:
    gateway, disk, sandbox = gateway_on_small_disk
    big = "y" * 4000  # pages of outcomes fill the disk sooner
    durable = await gateway.stub.SubmitBatch(
        pb.SubmitBatchRequest(
            backend="tencent",
            request_id="durable-1",
            recipient_ids=[f"d{n}" for n in range(60)],
            message=pb.Message(text=pb.TextContent(text=big)),
        )
    )
    attached = gateway.stub.BatchSend(
        text_request([f"a{n}" for n in range(60)], "tencent", text=big), timeout=120
    )
    await attached.read()  # under way
    started = time.monotonic()
    disk.fill()
    # The attached stream ends UNAVAILABLE soon, not at its 120 s deadline.
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await _read_to_the_end(attached)
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 30
    assert await _health(gateway) == health_pb2.HealthCheckResponse.NOT_SERVING
    await asyncio.sleep(1.0)
    disk.free()
    deadline = time.monotonic() + 60
    while True:
        batches = (await gateway.stub.ListBatches(pb.ListBatchesRequest())).batches
        if batches and all(
            b.state in (pb.BATCH_STATE_DONE, pb.BATCH_STATE_CANCELLED) for b in batches
        ):
            break
        assert time.monotonic() < deadline, [(b.request_id, b.state, b.pending) for b in batches]
        await asyncio.sleep(0.2)
    assert await _health(gateway) == health_pb2.HealthCheckResponse.SERVING
    for batch in batches:
        assert batch.pending == 0
        assert batch.accepted + batch.failed + batch.uncertain == batch.total
    resumed = next(b for b in batches if b.batch_id == durable.batch_id)
    assert resumed.accepted >= 1  # it went on sending after the disk came back
    assert sandbox.state.stats("tencent").duplicate_deliveries == 0
