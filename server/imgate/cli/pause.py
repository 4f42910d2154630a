"""Say on stderr why a backend is not sending (paused or blocked, and until when): while a
send waits with no outcomes, and once for ``imgate batch get``."""

from __future__ import annotations

import threading
import time
from typing import TextIO

from imgate_client import GatewayClient, GatewayError, backend_state_name, gateway_pb2

# With no outcome for this long, ask the gateway whether the backend is paused, and say why
# on stderr (CONTRACT §11 rule 32): a send must never sit silent for minutes.
QUIET_BEFORE_ASKING_S = 3.0


class PauseWatch:
    """While a send waits with no outcome for `QUIET_BEFORE_ASKING_S`, asks ListBackends
    whether its backend is paused or blocked, and says so on stderr, once per pause."""

    def __init__(self, client: GatewayClient, backend: str, stderr: TextIO, command: str):
        self._client = client
        self._backend = backend
        self._stderr = stderr
        self._command = command
        self._last_outcome = time.monotonic()
        self._said: tuple[int, str] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pause-watch", daemon=True)

    def touch(self) -> None:
        """An outcome arrived: the send is moving."""
        self._last_outcome = time.monotonic()

    def __enter__(self) -> PauseWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            if time.monotonic() - self._last_outcome >= QUIET_BEFORE_ASKING_S:
                self.say_now()

    def say_now(self) -> None:
        """Ask once, and say why the backend is not sending if it is not."""
        try:
            backends = self._client.list_backends(timeout=2)
        except GatewayError:
            return  # only a hint: the command itself reports what matters
        name = self._backend or backends.default_backend
        for backend in backends.backends:
            if backend.name == name:
                self._say(backend)

    def _say(self, backend: gateway_pb2.Backend) -> None:
        if backend.state in (
            gateway_pb2.BACKEND_STATE_UNSPECIFIED,
            gateway_pb2.BACKEND_STATE_SERVING,
        ):
            self._said = None
            return
        until = backend.paused_until if backend.HasField("paused_until") else None
        if backend.HasField("blocked_until") and until is None:
            until = backend.blocked_until
        state = backend_state_name(backend.state).lower()
        when = ""
        if until is not None:
            left = max(0.0, until.ToMicroseconds() / 1e6 - time.time())
            clock = time.strftime("%H:%M:%S", time.localtime(until.seconds))
            when = f" until {clock} ({left:.0f}s from now)"
        reason = backend.pause_reason or "no reason given"
        line = f"{self._command}: waiting: backend {backend.name} is {state}{when}: {reason}"
        if (backend.state, reason) != self._said:
            self._said = (backend.state, reason)
            print(line, file=self._stderr, flush=True)
