"""The soak and backlog scenarios of test_soak*.py (issue 20), one module each so that
parallel workers run them side by side (issue 25)."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc

from imgate.v1 import gateway_pb2 as pb
from imgate.v1 import gateway_pb2_grpc as pb_grpc
from tests import _postgres
from tests._procs import SANDBOX_CREDENTIALS, GatewayProcess, SandboxProcess, free_port

SENDS = 20_000
CALLERS = 16
QUEUED = 20_000


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def tracked_entries(metrics_port: int) -> dict[str, float]:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("imgate_tracked_entries{"):
            name = line.split('structure="', 1)[1].split('"', 1)[0]
            found[name] = float(line.rsplit(" ", 1)[1])
    assert found, "no imgate_tracked_entries in /metrics"
    return found


def fast_sandbox() -> Iterator[SandboxProcess]:
    """Tencent with its quotas lifted: the gateway's own cost is what is soaked."""
    sandbox = SandboxProcess(
        {"tencent": {"call_limit": None, "recipient_limit": None}},
        ["--max-logged-deliveries", "1000"],
    )
    yield sandbox
    sandbox.stop()


def soak_gateway(
    sandbox: SandboxProcess, state_dir: Path, store_url: str, metrics_port: int, extra: str = ""
) -> GatewayProcess:
    config = state_dir / "imgate.toml"
    config.write_text(
        f'default_backend = "tencent"\n[store]\nurl = "{store_url}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n[log]\nlevel = "warning"\n'
        f'[backends.tencent]\nvendor = "tencent"\nbase_url = "{sandbox.url}"\n'
        f"{SANDBOX_CREDENTIALS['tencent']}call_limit = 1000000\nrecipient_limit = 0\n{extra}"
    )
    return GatewayProcess(
        "gateway", config, state_dir / "gateway.log", {"IMGATE_STATE_DIR": str(state_dir)}
    )


async def soak(target: str, pid: int) -> tuple[float, float, int]:
    """SENDS small BatchSends from CALLERS tasks: (RSS after 5,000, RSS at the end,
    outcomes) in MB; every request is checked to get one outcome per recipient."""
    sent = 0
    first_rss = 0.0
    outcomes = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GatewayServiceStub(channel)

        async def caller(number: int) -> None:
            nonlocal sent, first_rss, outcomes
            while sent < SENDS:
                n = sent
                sent += 1
                size = 1 if n % 2 else 10
                ids = [f"s{n}-{i}" for i in range(size)]
                request = pb.BatchSendRequest(
                    backend="tencent",
                    recipient_ids=ids,
                    message=pb.Message(text=pb.TextContent(text=f"caller {number}")),
                )
                if n % 5 == 0:
                    request.request_id = f"soak-{n}"
                got = [
                    o.recipient_id
                    async for m in stub.BatchSend(request, timeout=60)
                    for o in m.outcomes
                ]
                assert sorted(got) == sorted(ids), (n, got)
                outcomes += len(got)
                if n == 5_000:
                    first_rss = rss_mb(pid)

        await asyncio.gather(*(caller(n) for n in range(CALLERS)))
    return first_rss, rss_mb(pid), outcomes


async def submit_many(target: str, count: int) -> list[str]:
    ids: list[str] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.GatewayServiceStub(channel)
        position = 0

        async def submitter() -> None:
            nonlocal position
            while position < count:
                n = position
                position += 1
                batch = await stub.SubmitBatch(
                    pb.SubmitBatchRequest(
                        backend="tencent",
                        recipient_ids=[f"q{n}"],
                        message=pb.Message(text=pb.TextContent(text="queued")),
                    ),
                    timeout=60,
                )
                ids.append(batch.batch_id)

        await asyncio.gather(*(submitter() for _ in range(32)))
    return ids


def listed_batches(gateway: GatewayProcess) -> dict[str, pb.Batch]:
    """Every batch of the caller, by id: ListBatches' pages of 1,000 (20 calls for the
    backlog, where a GetBatch per batch took 40,000)."""
    found: dict[str, pb.Batch] = {}
    token = ""
    while True:
        page = gateway.stub.ListBatches(
            pb.ListBatchesRequest(page_size=1000, page_token=token), timeout=30
        )
        found.update((batch.batch_id, batch) for batch in page.batches)
        token = page.next_page_token
        if not token:
            return found


def until_all_ended(gateway: GatewayProcess, batch_ids: list[str]) -> dict[str, pb.Batch]:
    """`batch_ids`' batches once every one of them has ended."""
    deadline = time.monotonic() + 300
    ended = (pb.BATCH_STATE_DONE, pb.BATCH_STATE_CANCELLED)
    newest = batch_ids[-1]  # ends last: wait for it by GetBatch, then list them all
    while True:
        batch = gateway.stub.GetBatch(pb.GetBatchRequest(batch_id=newest), timeout=10)
        if batch.state in ended:
            listed = listed_batches(gateway)
            if all(listed[batch_id].state in ended for batch_id in batch_ids):
                return {batch_id: listed[batch_id] for batch_id in batch_ids}
        assert time.monotonic() < deadline, "the backlog did not drain"
        time.sleep(0.5)


def soak_test(store: str, fast_sandbox: SandboxProcess, tmp_path: Path) -> None:
    """The soak on `store` ("sqlite" or "postgres")."""
    if store == "sqlite":
        store_url = f"sqlite://{tmp_path}/imgate.db"
        schema = ""
    else:
        base = asyncio.run(_postgres.reachable_or_skip())
        schema = _postgres.new_schema()
        store_url = _postgres.with_schema(base, schema)
    metrics_port = free_port()
    gateway = soak_gateway(fast_sandbox, tmp_path, store_url, metrics_port)
    try:
        gateway.wait_serving()
        first, last, outcomes = asyncio.run(soak(gateway.target, gateway.pid))
        assert outcomes == sum(1 if n % 2 else 10 for n in range(SENDS))
        assert last - first <= 10.0, (first, last)
        tracked = tracked_entries(metrics_port)
        assert not any(tracked.values()), tracked
        if store == "sqlite":
            wal = tmp_path / "imgate.db-wal"
            wal_mb = wal.stat().st_size / 2**20 if wal.exists() else 0.0
            assert wal_mb <= 64.0, wal_mb
    finally:
        gateway.stop()
        if schema:
            asyncio.run(_postgres.drop_schema(base, schema))
