"""A throwaway `redis-server` on a free loopback port, for tests that need a real Redis.

Each test module starts its own (the state-loss tests flush and restart it), keeping
nothing on disk. Without the binary the tests skip with a message, unless
IMGATE_REQUIRE_SERVICES=1 (CI), where a missing service is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from tests._procs import free_port


class RedisServer:
    """`redis-server --port P --save '' --appendonly no`, restartable on the same port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server is not installed (Debian: apt-get install redis-server)"
            if os.environ.get("IMGATE_REQUIRE_SERVICES") == "1":
                pytest.fail(message + "; IMGATE_REQUIRE_SERVICES=1 needs it")
            pytest.skip(message)
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.command("PING") == "+PONG":
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def command(self, *words: str) -> str | None:
        """One inline command over a raw socket (no client state to go stale): the first
        reply line, or None when the server does not answer."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall((" ".join(words) + "\r\n").encode())
                return sock.recv(65536).decode().split("\r\n", 1)[0]
        except OSError:
            return None

    def flush(self) -> None:
        assert self.command("FLUSHALL") == "+OK"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
