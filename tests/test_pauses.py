"""CONTRACT §11 rule 32 on real processes: a backend that cannot send for a reason of the
gateway's own shows it (ListBackends PAUSED with paused_until and pause_reason), logs its
start and end, names it in the detail of the outcomes it causes, and `imgate send` says
why it waits.

One `imgate serve` with `[quota] url` on a fresh `redis-server` (a Redis that never held
the app's state: the first window + lease_s after start is a pause), a Yunxin legacy
backend with its window scaled to 2 s, the sandbox in a process of its own. Then Redis
stops: PAUSED without an end, and a send's outcomes name Redis.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imgate.v1 import gateway_pb2 as pb
from tests._procs import SANDBOX_CREDENTIALS, GatewayProcess, SandboxProcess
from tests._redis import RedisServer

WINDOW_S = 16.0
REQUEST_TIMEOUT_S = 1.0  # in-flight lease: 1 + 2 s of margin = 3 s
PAUSE_S = WINDOW_S + 3.0  # a lost (here: never held) state: one window + lease


@dataclass
class _Setup:
    redis: RedisServer
    sandbox: SandboxProcess
    gateway: GatewayProcess
    started: float

    def backend(self) -> pb.Backend:
        reply = self.gateway.stub.ListBackends(pb.ListBackendsRequest(), timeout=10)
        (backend,) = reply.backends
        return backend

    def log(self) -> str:
        return self.gateway.log_path.read_text()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Setup]:
    redis = RedisServer()
    sandbox = SandboxProcess({})
    workdir = tmp_path_factory.mktemp("pauses")
    config = workdir / "imgate.toml"
    config.write_text(
        '[store]\nurl = "memory"\nlease_s = 1\n'
        f'[quota]\nurl = "{redis.url}"\nkey_prefix = "pauses"\n'
        f'[backends.yx]\nvendor = "yunxin_v1"\nbase_url = "{sandbox.url}"\n'
        f"{SANDBOX_CREDENTIALS['yunxin_v1']}"
        f"call_window_s = {WINDOW_S}\nrequest_timeout_s = {REQUEST_TIMEOUT_S}\n"
    )
    started = time.time()
    gateway = GatewayProcess("gw", config, workdir / "gw.log")
    try:
        gateway.wait_serving()
        yield _Setup(redis, sandbox, gateway, started)
    finally:
        gateway.stop()
        sandbox.stop()
        redis.stop()


def _send(setup: _Setup, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IMGATE_TARGET": setup.gateway.target}
    env.pop("IMGATE_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "imgate", "send", "--from", "alice", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _wait_for(predicate: object, timeout_s: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s}s: {what}")


def test_the_first_window_on_a_fresh_redis_is_a_pause_shown_logged_and_named(
    setup: _Setup,
) -> None:
    # Seen before any call waits for it: start-up reads the app's state from Redis.
    backend = setup.backend()
    assert backend.state == pb.BACKEND_STATE_PAUSED, backend
    until = backend.paused_until.ToMicroseconds() / 1e6
    assert setup.started < until <= time.time() + PAUSE_S + 0.5
    assert "holds no state" in backend.pause_reason
    assert "one window + lease_s" in backend.pause_reason
    assert re.search(
        r"backend yx paused for [\d.]+s \(until [\d:]+\): the shared quota", setup.log()
    )

    # The rest needs a pause whose end is far enough on a loaded machine: Redis loses
    # the state (FLUSHALL), and the next look (the health loop's, every 2 s) starts a new
    # one of the whole length.
    setup.redis.flush()

    def fresh_pause() -> bool:
        backend = setup.backend()
        left = backend.paused_until.ToMicroseconds() / 1e6 - time.time()
        return backend.state == pb.BACKEND_STATE_PAUSED and left > PAUSE_S - 3

    _wait_for(fresh_pause, 10, "a new pause after FLUSHALL")

    # A send whose deadline comes before the pause ends: not attempted, and the detail
    # says which pause. `imgate send` says why it waits.
    result = _send(setup, "--to", "bob,carol", "--text", "hi", "--timeout", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("bob  FAILED  NOT_ATTEMPTED  (send_before"), lines
    assert "the backend was paused: the shared quota's Redis holds no state" in lines[0]

    # A submitted batch's pending recipients: `imgate batch get` says why they wait.
    env = {**os.environ, "IMGATE_TARGET": setup.gateway.target}
    env.pop("IMGATE_CONFIG", None)
    imgate = [sys.executable, "-m", "imgate", "batch"]
    submitted = subprocess.run(
        [*imgate, "submit", "--from", "alice", "--to", "frank", "--text", "hi"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    batch_id = submitted.stdout.strip()
    got = subprocess.run(
        [*imgate, "get", batch_id], env=env, capture_output=True, text=True, timeout=60
    )
    assert "pending=1" in got.stdout, got.stdout + got.stderr
    assert "imgate batch get: waiting: backend yx is paused until" in got.stderr

    # One that may wait: it says why on stderr, then sends once the pause ends.
    result = _send(setup, "--to", "erin", "--text", "hi", "--timeout", "30")
    assert result.stdout.startswith("erin  ACCEPTED"), result.stdout + result.stderr
    assert "imgate send: waiting: backend yx is paused until" in result.stderr
    assert "holds no state" in result.stderr

    # The end is logged, and ListBackends says SERVING again.
    _wait_for(lambda: "backend yx sends again" in setup.log(), 5, "the end is logged")
    assert setup.backend().state == pb.BACKEND_STATE_SERVING
    assert not setup.backend().pause_reason


def test_redis_unreachable_is_a_pause_without_an_end_and_outcomes_name_it(
    setup: _Setup,
) -> None:
    _wait_for(lambda: setup.backend().state == pb.BACKEND_STATE_SERVING, PAUSE_S + 2, "serving")
    setup.redis.stop()
    try:
        _wait_for(
            lambda: setup.backend().state == pb.BACKEND_STATE_PAUSED, 10, "paused on Redis down"
        )
        backend = setup.backend()
        assert not backend.HasField("paused_until")  # no end known: until Redis answers
        assert "Redis" in backend.pause_reason
        assert "unreachable" in backend.pause_reason
        assert re.search(r"backend yx paused: the shared quota's Redis \(redis://", setup.log())

        result = _send(setup, "--to", "dave", "--text", "hi", "--timeout", "4")
        assert result.returncode == 0, result.stderr
        line = result.stdout.splitlines()[0]
        assert line.startswith("dave  FAILED  NOT_ATTEMPTED  (send_before"), line
        assert "Redis" in line, line
        assert "unreachable" in line, line
        assert "is paused: the shared quota's Redis" in result.stderr
    finally:
        setup.redis.start()
    # Back: the unreachable pause ends (logged); the restarted Redis lost the state, so
    # that pause follows, with its end known.
    _wait_for(lambda: "reachable again: sending resumes" in setup.log(), 10, "Redis is back")
    assert re.search(
        r"backend yx sends again after [\d.]+s: over: the shared quota's Redis \(", setup.log()
    )
    backend = setup.backend()
    assert backend.state == pb.BACKEND_STATE_PAUSED
    assert backend.HasField("paused_until")
    assert "holds no state" in backend.pause_reason


def test_a_vendor_block_is_blocked_with_its_reason(tmp_path: Path) -> None:
    """The vendor's own block stays BLOCKED (blocked_until), now with a pause_reason that
    names the vendor code; its start and end are logged too."""
    sandbox = SandboxProcess({"yunxin_v1": {"call_limit": 1, "call_window_s": 60, "block_s": 2}})
    config = tmp_path / "imgate.toml"
    config.write_text(
        '[store]\nurl = "memory"\n'
        f'[backends.yx]\nvendor = "yunxin_v1"\nbase_url = "{sandbox.url}"\n'
        f"{SANDBOX_CREDENTIALS['yunxin_v1']}"
        # The gateway thinks it may send 10 calls a minute; the vendor takes 1, then blocks.
        "call_limit = 10\ncall_window_s = 60\nblock_s = 2\nrecipients_per_call = 1\n"
    )
    gateway = GatewayProcess("gw", config, tmp_path / "gw.log")
    try:
        gateway.wait_serving()
        request = pb.SubmitBatchRequest(
            backend="yx",
            sender_id="alice",
            recipient_ids=["a", "b"],
            message=pb.Message(text=pb.TextContent(text="hi")),
        )
        gateway.stub.SubmitBatch(request, timeout=10)
        deadline = time.monotonic() + 10
        backend = pb.Backend()
        while time.monotonic() < deadline:
            (backend,) = gateway.stub.ListBackends(pb.ListBackendsRequest(), timeout=5).backends
            if backend.state == pb.BACKEND_STATE_BLOCKED:
                break
            time.sleep(0.05)
        assert backend.state == pb.BACKEND_STATE_BLOCKED
        assert backend.HasField("blocked_until")
        assert "the vendor refused a call for rate (code 416)" in backend.pause_reason
        deadline = time.monotonic() + 10
        while "backend yx sends again" not in gateway.log_path.read_text():
            assert time.monotonic() < deadline, gateway.log_path.read_text()
            time.sleep(0.1)
        assert "backend yx paused for" in gateway.log_path.read_text()
    finally:
        gateway.stop()
        sandbox.stop()
