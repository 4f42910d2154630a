"""Webhooks (CONTRACT.md rule 28) across kill -9 and replicas, on real processes.

The vendor sandbox runs in a process of its own, each gateway is `imgate serve`, and the
receiver is an HTTP server in a thread of this test, on a port of its own so that it can
go down and come back. It checks every delivery with the Standard Webhooks library
(`standardwebhooks.Webhook.verify`), as a receiver should, and notes whether two attempts
of one event ever overlapped (one replica delivers an event at a time).

The checks: every event is delivered (at least once, always under the same `webhook-id`,
with the same bytes), each verified, none lost, and its `data` is what `GetBatch` answers.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from standardwebhooks import Webhook, WebhookVerificationError

from imgate.v1 import gateway_pb2 as pb
from tests import _postgres
from tests._procs import SANDBOX_CREDENTIALS, GatewayProcess, SandboxProcess, free_port

SECRET = "whsec_" + base64.b64encode(b"process-test-webhook-secret-0123").decode()
LEASE_S = 3.0


class Receiver:
    """Verifies each POST with Webhook.verify (401 when it fails); the first `fail_first`
    attempts of each webhook-id answer 500, the next ones 204; each answer takes `hold_s`."""

    def __init__(self, fail_first: int = 0, hold_s: float = 0.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self.fail_first, self.hold_s = fail_first, hold_s
        self.lock = threading.Lock()
        self.attempts: Counter[str] = Counter()
        self.delivered: dict[str, list[bytes]] = defaultdict(list)
        self.unverified = 0
        self.overlaps = 0
        self._in_flight: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.receive(dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        """Nothing listens on the port any more: connections are refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def receive(self, headers: dict[str, str], body: bytes) -> int:
        try:
            Webhook(SECRET).verify(body, headers)
        except WebhookVerificationError:
            with self.lock:
                self.unverified += 1
            return 401
        webhook_id = headers["webhook-id"]
        with self.lock:
            self._in_flight[webhook_id] += 1
            self.overlaps += self._in_flight[webhook_id] > 1
            self.attempts[webhook_id] += 1
            attempt = self.attempts[webhook_id]
        time.sleep(self.hold_s)
        with self.lock:
            self._in_flight[webhook_id] -= 1
            if attempt <= self.fail_first:
                return 500
            self.delivered[webhook_id].append(body)
        return 204

    def wait_for(self, webhook_ids: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if webhook_ids <= set(self.delivered):
                    return
            time.sleep(0.1)
        raise AssertionError(f"not delivered: {sorted(webhook_ids - set(self.delivered))}")


@pytest.fixture(scope="module")
def vendor_sandbox() -> Iterator[SandboxProcess]:
    sandbox = SandboxProcess({"tencent": {"call_limit": None, "recipient_limit": None}})
    yield sandbox
    sandbox.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver(fail_first=2, hold_s=0.05)
    yield found
    found.down()


def _gateway(
    name: str, sandbox: SandboxProcess, state_dir: Path, store_url: str, hook_url: str
) -> GatewayProcess:
    state_dir.mkdir(exist_ok=True)
    config = state_dir / "imgate.toml"
    config.write_text(
        f'[store]\nurl = "{store_url}"\nlease_s = {LEASE_S}\n'
        f'[backends.tencent]\nvendor = "tencent"\nbase_url = "{sandbox.url}"\n'
        f"{SANDBOX_CREDENTIALS['tencent']}recipient_limit = 0\ncall_limit = 1000000\n"
        f'[[webhooks]]\nurl = "{hook_url}"\nsecret = "${{IMGATE_WEBHOOK_SECRET}}"\n'
        'events = ["batch.ended", "recall.ended"]\ntimeout_s = 2\n'
    )
    env = {"IMGATE_STATE_DIR": str(state_dir), "IMGATE_WEBHOOK_SECRET": SECRET}
    return GatewayProcess(name, config, state_dir / "gateway.log", env)


def _submit(gateway: GatewayProcess, prefix: str) -> str:
    request = pb.SubmitBatchRequest(
        sender_id="hook_sender",
        recipient_ids=[f"{prefix}{n:03d}" for n in range(20)],
        message=pb.Message(text=pb.TextContent(text="webhook test")),
    )
    return str(gateway.stub.SubmitBatch(request, timeout=30).batch_id)


def _get(gateway: GatewayProcess, batch_id: str) -> pb.Batch:
    return gateway.stub.GetBatch(pb.GetBatchRequest(batch_id=batch_id), timeout=10)


def _until_ended(gateway: GatewayProcess, batch_id: str) -> pb.Batch:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        batch = _get(gateway, batch_id)
        if batch.state == pb.BATCH_STATE_DONE:
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not end")


def _check(receiver: Receiver, gateway: GatewayProcess, batch_ids: list[str]) -> None:
    """Every batch's event delivered, verified, the same bytes each time, data = GetBatch."""
    ids = {f"msg_{batch_id}" for batch_id in batch_ids}
    with receiver.lock:
        assert set(receiver.delivered) == ids  # none lost, none made up
        assert receiver.unverified == 0
        assert receiver.overlaps == 0  # never two attempts of one event at once
        delivered = dict(receiver.delivered)
    for batch_id in batch_ids:
        bodies = delivered[f"msg_{batch_id}"]
        assert len(set(bodies)) == 1  # a redelivery sends the same bytes
        event = json.loads(bodies[0])
        assert event["type"] == "batch.ended"
        assert event["data"] == json_format.MessageToDict(_get(gateway, batch_id))
    print(
        f"{len(ids)} events delivered and verified; {sum(receiver.attempts.values())} attempts"
        f" reached the receiver; {sum(map(len, delivered.values())) - len(ids)} redelivered"
    )


def _logs_hold_no_secret(*gateways: GatewayProcess) -> None:
    for gateway in gateways:
        text = gateway.log_path.read_text()
        assert SECRET.removeprefix("whsec_") not in text
        assert '"batchId"' not in text  # no body


@pytest.mark.slow
def test_kill_9_between_a_batchs_end_and_its_delivery_loses_no_event(
    vendor_sandbox: SandboxProcess, receiver: Receiver, tmp_path: Path
) -> None:
    store_url = f"sqlite://{tmp_path}/imgate.db"
    gateway = _gateway("gateway", vendor_sandbox, tmp_path, store_url, receiver.url)
    gateway.wait_serving()
    batch_ids = [_submit(gateway, f"k{n}_") for n in range(3)]
    for batch_id in batch_ids:
        _until_ended(gateway, batch_id)
    time.sleep(1.0)  # attempts fail meanwhile: the receiver is down
    gateway.kill()  # the batches have ended, their events are not delivered
    assert not receiver.delivered
    receiver.up()
    gateway = _gateway("restarted", vendor_sandbox, tmp_path, store_url, receiver.url)
    try:
        gateway.wait_serving()
        receiver.wait_for({f"msg_{b}" for b in batch_ids}, timeout_s=60)
        _check(receiver, gateway, batch_ids)
    finally:
        gateway.stop()
    _logs_hold_no_secret(gateway)


@pytest.fixture
async def postgres_url() -> Any:
    base = await _postgres.reachable_or_skip()
    schema = _postgres.new_schema()
    yield _postgres.with_schema(base, schema)
    await _postgres.drop_schema(base, schema)


@pytest.mark.slow
def test_two_replicas_a_receiver_down_for_a_while_and_a_kill_9_lose_no_event(
    vendor_sandbox: SandboxProcess, receiver: Receiver, postgres_url: str, tmp_path: Path
) -> None:
    receiver.up()
    r0 = _gateway("r0", vendor_sandbox, tmp_path / "r0", postgres_url, receiver.url)
    r0.wait_serving()  # it migrates the schema; then the other
    r1 = _gateway("r1", vendor_sandbox, tmp_path / "r1", postgres_url, receiver.url)
    r1.wait_serving()
    try:
        # Both replicas deliver from one outbox; the receiver fails each event's first
        # two attempts.
        batch_ids = [_submit(replica, f"a{n}_") for n, replica in enumerate([r0, r1] * 3)]
        for batch_id in batch_ids:
            _until_ended(r1, batch_id)
        # The receiver goes down for a while; batches end on both replicas meanwhile, and
        # r0 is killed with its events in the outbox, undelivered.
        receiver.down()
        down_ids = [_submit(replica, f"b{n}_") for n, replica in enumerate([r0, r1] * 3)]
        for batch_id in down_ids:
            _until_ended(r1, batch_id)
        time.sleep(1.0)
        r0.kill()
        assert not set(receiver.delivered) & {f"msg_{b}" for b in down_ids}
        time.sleep(2.0)
        receiver.up()
        batch_ids += down_ids
        batch_ids += [_submit(r1, f"c{n}_") for n in range(3)]
        receiver.wait_for({f"msg_{b}" for b in batch_ids}, timeout_s=90)
        _check(receiver, r1, batch_ids)
        with receiver.lock:
            assert all(receiver.attempts[f"msg_{b}"] >= 3 for b in batch_ids)
    finally:
        r1.stop()
        r0.stop()
    _logs_hold_no_secret(r0, r1)
