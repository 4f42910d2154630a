"""Real processes for the tests that need them: the vendor sandbox and `imgate serve`.

The crash, replica, shared-quota and audience tests run the gateway as a real process (so
that kill -9, SIGSTOP and several replicas are what they are in production) and the
sandbox in another (its delivery log outlives every gateway). This module is the one
place that knows how to start, reach, wait for and stop them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgate.v1 import gateway_pb2_grpc as pb_grpc
from imgate.vendors.registry import VENDORS

SANDBOX_CREDENTIALS = {
    plugin.vendor: "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in plugin.spec.sandbox_credentials.items()
    )
    for plugin in VENDORS
}
"""Each vendor's sandbox credentials (declared by its spec) as TOML lines of a backend."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_json(url: str, method: str = "GET", body: Any = None, timeout: float = 60) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


class SandboxProcess:
    """`python -m bench._sandbox_proc` on a free loopback port.

    `config`: per vendor, overrides of its limits (bench._sandbox_proc's JSON, e.g.
    `{"tencent": {"call_limit": None}}`); `args`: more of its options.
    """

    def __init__(self, config: Mapping[str, Mapping[str, Any]], args: Sequence[str] = ()) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "bench._sandbox_proc"),
                *("--port", str(port), "--config", json.dumps(config), *args),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.control("/sandbox/info")
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("the sandbox did not start")

    def control(self, path: str, method: str = "GET", body: Any = None) -> Any:
        return http_json(self.url + path, method, body)

    def reset(self) -> None:
        """Clear the delivery log, counters, windows and faults."""
        self.control("/sandbox/reset", "POST", {})

    def set_faults(self, rules: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        self.control("/sandbox/faults", "PUT", rules)

    def stats(self, vendor: str) -> dict[str, Any]:
        stats: dict[str, Any] = self.control(f"/sandbox/stats?vendor={vendor}")[vendor]
        return stats

    def duplicates(self, vendor: str) -> int:
        """The sandbox's exact count of recipients delivered more than once."""
        return int(self.stats(vendor)["duplicate_deliveries"])

    def deliveries(self, vendor: str) -> list[dict[str, Any]]:
        """Every logged delivery of `vendor` since the last reset, read page by page."""
        found: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.control(f"/sandbox/deliveries?vendor={vendor}&after={after}&limit=10000")
            assert not page["truncated"], "the delivery log overflowed its ring"
            if not page["deliveries"]:
                return found
            found += page["deliveries"]
            after = page["next_after"]

    def withdrawals(self, vendor: str) -> list[dict[str, Any]]:
        """Every logged withdrawal (recall) of `vendor` since the last reset."""
        found: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.control(f"/sandbox/withdrawals?vendor={vendor}&after={after}&limit=10000")
            assert not page["truncated"], "the withdrawal log overflowed its ring"
            if not page["withdrawals"]:
                return found
            found += page["withdrawals"]
            after = page["next_after"]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


class GatewayProcess:
    """`imgate serve --config CONFIG --listen 127.0.0.1:<free>`, its output in `log_path`.

    `env`: variables added to this process's environment (IMGATE_CONFIG is never passed
    on: the config is the one given).
    """

    def __init__(
        self,
        name: str,
        config: Path,
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.target = f"127.0.0.1:{free_port()}"
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        environment.pop("IMGATE_CONFIG", None)
        self.log_path = log_path
        self.log = log_path.open("a")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "imgate", "serve"),
                *("--config", str(config), "--listen", self.target),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=environment,
        )
        self.channel = grpc.insecure_channel(self.target)
        self.stub = pb_grpc.GatewayServiceStub(self.channel)

    @property
    def pid(self) -> int:
        return self.process.pid

    def serving(self) -> bool:
        health = health_pb2_grpc.HealthStub(self.channel)
        try:
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def wait_serving(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log_path.read_text()}")
            if self.serving():
                return
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not become SERVING")

    def kill(self) -> None:
        """kill -9: nothing of the process runs after this."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.channel.close()
        self.log.close()

    def stop(self) -> None:
        """SIGTERM (after SIGCONT, should a test have stopped it), then wait for the drain."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.channel.close()
        self.log.close()
