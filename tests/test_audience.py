"""An audience of a million: UploadRecipients + SubmitBatch(recipient_list) end to end.

A real `imgate serve` (SQLite store) and the vendor sandbox in processes of their own, as
in tests/_crash.py; Tencent's quotas scaled up on both sides (the limiter stays in the
path). The Python client uploads 1,000,000 generated ids with duplicates and a few
`ghost` ids, submits the list and watches the batch: every unique recipient gets exactly
one outcome, duplicates are counted, ghosts end FAILED/RECIPIENT_NOT_FOUND, and the
sandbox's delivery log is exactly the accepted set (nobody delivered twice).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imgate_client import GatewayClient, gateway_pb2, text
from tests._procs import free_port, http_json

IDS = 1_000_000
DUPLICATE_EVERY = 50  # every 50th id repeats one seen a little earlier
GHOST_EVERY = 200_001  # a handful of accounts that do not exist
# Tencent's figures (200 calls/s, 12,000 recipients/min) scaled up alike on both sides.
QUOTA = {"call_limit": 4000, "call_window_s": 1.0, "recipient_limit": 1_200_000}
QUOTA_WINDOW_S = 60.0


def _audience() -> Iterator[str]:
    """IDS ids, generated as they are uploaded (the client never holds them all)."""
    for n in range(IDS):
        if n % DUPLICATE_EVERY == DUPLICATE_EVERY - 1:
            yield f"user{n - 7:07d}"
        elif n % GHOST_EVERY == 3:
            yield f"ghost{n}"
        else:
            yield f"user{n:07d}"


def _first_indexes() -> dict[str, int]:
    first: dict[str, int] = {}
    for index, recipient in enumerate(_audience()):
        first.setdefault(recipient, index)
    return first


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(sandbox URL, gateway target) of a fresh sandbox and gateway."""
    sandbox_port, gateway_port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    settings = {"tencent": {**QUOTA, "recipient_window_s": QUOTA_WINDOW_S}}
    log = (tmp_path / "processes.log").open("w")
    sandbox = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench._sandbox_proc",
            "--port",
            str(sandbox_port),
            "--config",
            json.dumps(settings),
            "--max-logged-deliveries",
            str(IDS + 1000),
        ],
        stdout=log,
        stderr=log,
    )
    config = tmp_path / "imgate.toml"
    config.write_text(
        f'[store]\nurl = "sqlite://{tmp_path}/imgate.db"\n'
        f'[backends.tencent]\nvendor = "tencent"\nbase_url = "{sandbox_url}"\n'
        'sdk_app_id = 1400000000\nsecret_key = "sandbox-secret-key"\n'
        'admin_identifier = "administrator"\n'
        f"call_limit = {QUOTA['call_limit']}\ncall_window_s = {QUOTA['call_window_s']}\n"
        f"recipient_limit = {QUOTA['recipient_limit']}\n"
        f"recipient_window_s = {QUOTA_WINDOW_S}\nmax_in_flight = 8\n"
    )
    env = {**os.environ, "IMGATE_STATE_DIR": str(tmp_path)}
    env.pop("IMGATE_CONFIG", None)
    target = f"127.0.0.1:{gateway_port}"
    gateway = subprocess.Popen(
        [sys.executable, "-m", "imgate", "serve", "--config", str(config), "--listen", target],
        stdout=log,
        stderr=log,
        env=env,
    )
    try:
        for _ in range(300):
            try:
                http_json(f"{sandbox_url}/sandbox/info")
                break
            except OSError:
                time.sleep(0.1)
        yield sandbox_url, target
    finally:
        for process in (gateway, sandbox):
            process.kill()
            process.wait()
        log.close()


def _delivered(sandbox_url: str) -> list[str]:
    recipients: list[str] = []
    after = 0
    while True:
        page = http_json(
            f"{sandbox_url}/sandbox/deliveries?vendor=tencent&after={after}&limit=10000"
        )
        assert not page["truncated"], "the delivery log overflowed its ring"
        if not page["deliveries"]:
            return recipients
        recipients += [d["recipient"] for d in page["deliveries"]]
        after = page["next_after"]


@pytest.mark.slow
def test_a_million_recipients_from_a_list(processes: tuple[str, str]) -> None:
    sandbox_url, target = processes
    first = _first_indexes()
    ghosts = {recipient for recipient in first if recipient.startswith("ghost")}
    assert 3 <= len(ghosts) <= 10
    with GatewayClient(target) as client:
        for _ in range(300):  # until the gateway serves
            try:
                client.list_backends(timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        uploaded = client.upload_recipients(_audience(), request_id="everyone")
        assert uploaded.count == len(first)
        assert uploaded.duplicates_removed == IDS - len(first)
        batch = client.submit_batch(uploaded, text("hello, everyone"), sender_id="notices")
        assert batch.total == len(first)
        seen: set[str] = set()
        accepted: set[str] = set()
        with client.watch_batch(batch.batch_id, timeout=300) as stream:
            for outcome in stream:
                recipient = outcome.recipient_id
                assert recipient not in seen, f"two outcomes for {recipient}"
                seen.add(recipient)
                assert outcome.index == first[recipient]
                if recipient in ghosts:
                    assert outcome.state == gateway_pb2.DELIVERY_STATE_FAILED
                    assert outcome.reason == gateway_pb2.FAILURE_REASON_RECIPIENT_NOT_FOUND
                else:
                    assert outcome.state == gateway_pb2.DELIVERY_STATE_ACCEPTED, outcome
                    accepted.add(recipient)
            summary = stream.summary
    assert len(seen) == len(first)
    assert (summary.total, summary.accepted, summary.failed, summary.uncertain) == (
        len(first),
        len(first) - len(ghosts),
        len(ghosts),
        0,
    )
    assert summary.duplicates_removed == IDS - len(first)
    delivered = _delivered(sandbox_url)
    assert len(delivered) == len(accepted)  # nobody twice
    assert set(delivered) == accepted
    stats = http_json(f"{sandbox_url}/sandbox/stats?vendor=tencent")["tencent"]
    assert stats["duplicate_deliveries"] == 0
