"""The `imgate` command line: argument checks and the errors a newcomer meets first."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from imgate.cli import main as cli
from imgate.cli.health import default_target
from imgate.config.load import sandbox_config
from tests.test_process import _free_port, _imgate, _wait_serving, stop_later

__all__ = ["stop_later"]  # the fixture, shared with test_process


@pytest.mark.parametrize(
    "listen",
    ["127.0.0.1:100000", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1", ":50051", "host:x"],
)
@pytest.mark.parametrize("command", ["serve", "sandbox"])
def test_listen_outside_the_port_range_is_refused_before_serving(
    command: str, listen: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main([command, "--listen", listen])
    assert raised.value.code == 2
    assert "HOST:PORT" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--sandbox-listen"])
def test_sandbox_listen_is_checked_too(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main(["serve", flag, "127.0.0.1:70000"])
    assert raised.value.code == 2


def test_sandbox_on_a_port_in_use_says_so_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = cli.main(["sandbox", "--listen", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert status == 1
    assert f"imgate sandbox: cannot listen on 127.0.0.1:{port}" in err
    assert "Traceback" not in err


def test_the_sandbox_default_backend_needs_no_sender() -> None:
    # Tencent: an empty sender is the app admin, so `imgate send --to bob --text hi` works.
    config = sandbox_config("http://127.0.0.1:1")
    assert config.default_backend == "tencent"


def test_health_imports_neither_the_gateway_nor_aiohttp(
    stop_later: list[subprocess.Popen[str]],
) -> None:
    # The container health check runs this every few seconds: it must stay light.
    target = f"127.0.0.1:{_free_port()}"
    stop_later.append(_imgate("serve", "--listen", target, "--sandbox-listen", "127.0.0.1:0"))
    _wait_serving(target)
    probe = (
        "import sys; from imgate.cli.entry import main; sys.argv = ['imgate', 'health'];"
        " status = main();"
        " heavy = {'aiohttp', 'imgate.cli.main', 'imgate.sandbox'} & set(sys.modules);"
        " print(status, sorted(heavy))"
    )
    env = {**os.environ, "IMGATE_LISTEN": "0.0.0.0:" + target.rpartition(":")[2]}
    env.pop("IMGATE_TARGET", None)
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=30
    )
    # The target came from IMGATE_LISTEN, its wildcard host turned into loopback.
    assert result.stdout.splitlines() == ["SERVING", "0 []"], result.stderr


def test_health_target_defaults() -> None:
    assert default_target({}) == "127.0.0.1:50051"
    assert default_target({"IMGATE_LISTEN": "0.0.0.0:6000"}) == "127.0.0.1:6000"
    assert default_target({"IMGATE_LISTEN": "[::]:6000"}) == "127.0.0.1:6000"
    assert default_target({"IMGATE_LISTEN": "10.0.0.2:6000", "IMGATE_TARGET": "h:1"}) == "h:1"


def test_serve_with_the_sandbox_port_in_use_names_the_flag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IMGATE_CONFIG", raising=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status = cli.main(
            ["serve", "--listen", "127.0.0.1:0", "--sandbox-listen", f"127.0.0.1:{port}"]
        )
    err = capsys.readouterr().err
    assert status == 1
    assert f"cannot listen on 127.0.0.1:{port} for the sandbox" in err
    assert "--sandbox-listen" in err
    assert "Traceback" not in err
