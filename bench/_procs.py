"""The processes of a run: sandbox, gateway, stream floor, HTTP client; their CPU and memory.

Every server runs in a process of its own on a free loopback port and logs to
`bench/out/logs/`. CPU is read from `/proc/<pid>/stat` (utime + stime, every thread, in
clock ticks), peak RSS from `/proc/<pid>/status` (VmHWM).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench._workload import Backend, gateway_toml, sandbox_json

OUT = Path(__file__).resolve().parent / "out"
LOGS = OUT / "logs"
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 20.0


class BenchError(Exception):
    """The benchmark itself could not run or produced a run it cannot trust."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Proc:
    """A child process with its CPU and peak memory readable while it runs."""

    def __init__(self, name: str, args: Sequence[str]) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOGS / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("IMGATE_CONFIG", None)
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                [sys.executable, *args], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.pid = self.popen.pid

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process so far (all its threads)."""
        with open(f"/proc/{self.pid}/stat") as stat:
            # Fields after the ")" that ends the command name: utime is the 12th, stime 13th.
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S

    def peak_rss_mb(self) -> float:
        """Peak resident memory (VmHWM) in MiB."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise BenchError(f"{self.name}: no VmHWM in /proc/{self.pid}/status")

    def rss_mb(self) -> float:
        """Resident memory now (VmRSS) in MiB."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise BenchError(f"{self.name}: no VmRSS in /proc/{self.pid}/status")

    def check_running(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited with {self.popen.returncode}; {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"log {self.log_path}:\n" + "\n".join(text)

    def stop(self) -> None:
        """SIGTERM (the gateway drains), then SIGKILL if it takes too long."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def wait_until(proc: Proc, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        proc.check_running()
        try:
            if ready():
                return
        except (OSError, grpc.RpcError, grpc.FutureTimeoutError):
            pass
        time.sleep(0.05)
    proc.stop()
    raise BenchError(f"{proc.name} did not become {what} in {_START_TIMEOUT_S:.0f}s")


class Sandbox(Proc):
    """`bench._sandbox_proc` with control calls over HTTP."""

    def __init__(
        self, name: str, backends: Sequence[Backend], max_logged_deliveries: int = 100_000
    ) -> None:
        """`max_logged_deliveries`: the delivery log's ring, over every reset (a stage that
        reads call times back must not have let it overflow since the sandbox started)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            name,
            [
                "-m",
                "bench._sandbox_proc",
                "--port",
                str(self.port),
                "--config",
                sandbox_json(backends),
                "--max-logged-deliveries",
                str(max_logged_deliveries),
            ],
        )

    def wait_ready(self) -> None:
        wait_until(self, lambda: self.control("GET", "/sandbox/info") is not None, "ready")

    def control(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self, vendor: str) -> dict[str, Any]:
        """The vendor's counters (`GET /sandbox/stats?vendor=`)."""
        stats: dict[str, Any] = self.control("GET", f"/sandbox/stats?vendor={vendor}")[vendor]
        return stats

    def reset(self) -> None:
        """Clear the delivery log, counters, windows and faults."""
        self.control("POST", "/sandbox/reset")

    def set_faults(self, vendor: str, rules: Sequence[dict[str, Any]]) -> None:
        self.control("PUT", "/sandbox/faults", {vendor: list(rules)})


class Gateway(Proc):
    """`imgate serve` with a configuration generated for `backends` (kept in bench/out/)."""

    def __init__(
        self,
        name: str,
        sandbox: Sandbox,
        backends: Sequence[Backend],
        store: str = "memory",
        observed: bool = False,
        callers: Mapping[str, str] | None = None,
        quota_url: str = "",
        metrics: bool = False,
    ) -> None:
        """`store`: "memory", "sqlite" for a fresh SQLite file in bench/out/, or a store
        URL passed as it is (postgresql://...);
        `quota_url`: the `[quota] url` quotas are shared through (empty: in process);
        `observed`: serve /metrics (on `metrics_port`) and log JSON at INFO;
        `metrics`: serve /metrics only (logs stay text at WARNING);
        `callers` (name -> token): configured callers; calls use the first one's token
        (`metadata`) unless given another."""
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.config_path = OUT / f"{name}.toml"
        self.metrics_port = free_port() if observed or metrics else 0
        OUT.mkdir(parents=True, exist_ok=True)
        toml = gateway_toml(sandbox.url, backends, callers)
        if quota_url:
            toml += f'\n[quota]\nurl = "{quota_url}"\nkey_prefix = "bench"\n'
            # A fresh Redis pauses each app one window + lease_s (rule 16): keep lease_s
            # at the in-flight lease's scale, so the stage's warm-up stays short.
            toml += "\n[store]\nlease_s = 3\n"
        if self.metrics_port:
            toml += f'\n[metrics]\nlisten = "127.0.0.1:{self.metrics_port}"\n'
        if observed:
            toml += '\n[log]\nformat = "json"\nlevel = "info"\n'
        self.config_path.write_text(toml)
        first = next(iter((callers or {}).values()), None)
        self.metadata = None if first is None else (("authorization", f"Bearer {first}"),)
        serve = [
            "-m",
            "imgate",
            "serve",
            "--config",
            str(self.config_path),
            "--listen",
            self.target,
            "--log-level",
            "INFO" if observed else "WARNING",
            "--store",
            store,
        ]
        if store == "sqlite":
            db = OUT / f"{name}.db"
            for stale in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
                stale.unlink(missing_ok=True)
            serve[-1] = f"sqlite://{db.resolve()}"
        super().__init__(name, serve)
        self.channel = grpc.insecure_channel(
            self.target, options=[("grpc.max_receive_message_length", 16 << 20)]
        )

    def wait_ready(self) -> None:
        health = health_pb2_grpc.HealthStub(self.channel)

        def serving() -> bool:
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        wait_until(self, serving, "SERVING")

    def stop(self) -> None:
        self.channel.close()
        super().stop()


class RedisServer:
    """A throwaway `redis-server` on a free loopback port, nothing kept on disk (stage 12)."""

    def __init__(self, name: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("stage 12 needs redis-server (Debian: apt-get install redis-server)")
        LOGS.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        with open(LOGS / f"{name}.log", "wb") as log:
            flags = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            self.popen = subprocess.Popen(
                [binary, "--port", str(self.port), *flags],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise BenchError(f"redis-server exited with {self.popen.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise BenchError("redis-server did not start")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


class StreamServer(Proc):
    """`bench._stream_proc`: floor 2."""

    def __init__(self, name: str) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        super().__init__(name, ["-m", "bench._stream_proc", "--port", str(self.port)])
        self.channel = grpc.insecure_channel(self.target)

    def wait_ready(self) -> None:
        wait_until(
            self,
            lambda: grpc.channel_ready_future(self.channel).result(timeout=1) is None,
            "ready",
        )

    def stop(self) -> None:
        self.channel.close()
        super().stop()


class JsonLinesChild:
    """A bench process spoken to in JSON lines: an order on its stdin, one result line on
    its stdout; its first line says it is ready."""

    def __init__(self, module: str, args: Sequence[str]) -> None:
        self._module = module
        self.popen = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._read()  # {"ready": true}, after any warm-up of its own

    def ask(self, order: dict[str, Any]) -> dict[str, Any]:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(order) + "\n")
        self.popen.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline()
        if not line:
            raise BenchError(f"{self._module} exited with {self.popen.wait()}")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        try:
            self.popen.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


class HttpClient(JsonLinesChild):
    """`bench._http_client` for one vendor: each `send` is one timed round."""

    def __init__(self, sandbox: Sandbox, vendor: str, concurrency: int) -> None:
        self._sandbox = sandbox
        super().__init__(
            "bench._http_client",
            ["--url", sandbox.url, "--vendor", vendor, "--concurrency", str(concurrency)],
        )

    def send(self, recipients: int, backoff_s: float | None = None) -> dict[str, Any]:
        """Send one batch; the client's JSON plus the sandbox's CPU meanwhile. With
        `backoff_s`: stage 7's loop, rate refusals slept out (`bench._http_client`)."""
        sandbox_cpu = self._sandbox.cpu_s()
        order: dict[str, Any] = {"recipients": recipients}
        if backoff_s is not None:
            order["backoff_s"] = backoff_s
        result = self.ask(order)
        result["sandbox_cpu_s"] = self._sandbox.cpu_s() - sandbox_cpu
        return result

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
