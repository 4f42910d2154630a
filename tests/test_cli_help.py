"""The command line as a newcomer meets it: every help has examples that parse, `imgate
config check` says what start-up would, and an environment variable that is wrong is
blamed by name (issue 25 item 5)."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from imgate.cli import health
from imgate.cli.main import _parser
from tests._procs import SANDBOX_CREDENTIALS, free_port
from tests.test_process import _wait_serving


def _parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found += _parsers(child, (*path, name))
    return found


def _example_argv(line: str) -> list[str]:
    words = shlex.split(line.split("  #")[0].split("| ")[-1])
    while words and "=" in words[0]:
        words.pop(0)  # VARIABLE=value before the command
    assert words[0].endswith("imgate"), line
    return words[1:]


PARSERS = _parsers(_parser())


@pytest.mark.parametrize(
    ("path", "parser"), PARSERS, ids=[" ".join(p) or "imgate" for p, _ in PARSERS]
)
def test_every_help_shows_examples_that_parse(
    path: tuple[str, ...], parser: argparse.ArgumentParser
) -> None:
    epilog = parser.epilog or ""
    assert epilog.startswith("examples:\n"), f"imgate {' '.join(path)} --help has no examples"
    assert "examples:" in parser.format_help()
    lines = [line.strip() for line in epilog.splitlines()[1:] if line.strip()]
    assert lines
    for line in lines:
        argv = _example_argv(line)
        assert argv[: len(path)] == list(path) or not path, line
        args = _parser().parse_args(argv)
        assert args.command == argv[0]


def test_imgate_health_alone_shows_the_same_examples() -> None:
    # `imgate health` bypasses the main parser (imgate.cli.entry keeps it light).
    assert health.HEALTH_EXAMPLES.startswith("examples:")
    parser = argparse.ArgumentParser()
    health.add_health_arguments(parser)
    for line in health.HEALTH_EXAMPLES.splitlines()[1:]:
        parser.parse_args(_example_argv(line)[1:])


def _imgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IMGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "imgate", *args],
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_config_check_exits_0_for_a_good_file_and_2_with_start_ups_message(
    tmp_path: Path,
) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        '[store]\nurl = "postgresql://imgate:s3cret@db.internal/imgate"\n'
        '[backends.tx]\nvendor = "tencent"\nbase_url = "http://127.0.0.1:9"\n'
        + SANDBOX_CREDENTIALS["tencent"]
    )
    result = _imgate("config", "check", "--config", str(good))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{good}: OK; listen 127.0.0.1:50051; backends tx (tencent)")
    assert "s3cret" not in result.stdout
    result = _imgate("config", "check", env={"IMGATE_CONFIG": str(good)})
    assert result.returncode == 0, result.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace("base_url =", "base_ur1 = 1\nbase_url ="))
    check = _imgate("config", "check", "--config", str(bad))
    serve = _imgate("serve", "--config", str(bad))
    assert check.returncode == serve.returncode == 2
    assert check.stderr == serve.stderr
    assert check.stderr.startswith("imgate: configuration error: backends.tx.base_ur1: unknown key")

    exposed = tmp_path / "exposed.toml"
    exposed.write_text('listen = "0.0.0.0:50051"\n' + good.read_text())
    check = _imgate("config", "check", "--config", str(exposed))
    assert check.returncode == 2
    assert "configuration error: allow_unauthenticated:" in check.stderr

    missing = _imgate("config", "check", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == 2
    assert "--config names" in missing.stderr
    assert _imgate("config", "check").returncode == 2


def test_a_wrong_environment_variable_is_blamed_not_the_flag(tmp_path: Path) -> None:
    result = _imgate("serve", env={"IMGATE_LISTEN": "nonsense"})
    assert result.returncode == 2
    assert "the environment variable IMGATE_LISTEN must be HOST:PORT" in result.stderr
    assert "argument --listen" not in result.stderr
    # The flag is blamed when it is the culprit.
    result = _imgate("serve", "--listen", "nonsense")
    assert result.returncode == 2
    assert "argument --listen" in result.stderr

    missing = str(tmp_path / "ca.pem")
    result = _imgate("send", "--to", "bob", "--text", "hi", env={"IMGATE_CA_FILE": missing})
    assert result.returncode == 2
    assert result.stderr == f"imgate send: $IMGATE_CA_FILE: cannot read {missing}\n"
    result = _imgate("health", env={"IMGATE_CA_FILE": missing})
    assert result.stderr == f"imgate health: $IMGATE_CA_FILE: cannot read {missing}\n"
    result = _imgate("send", "--to", "bob", "--text", "hi", "--ca-file", missing)
    assert result.stderr == f"imgate send: --ca-file: cannot read {missing}\n"


def test_sandbox_mode_turns_on_metrics_and_tracing_from_flags() -> None:
    # Bad values are refused by the flag's name before anything starts.
    result = _imgate("serve", "--metrics-listen", "nonsense")
    assert result.returncode == 2
    assert "argument --metrics-listen" in result.stderr
    result = _imgate("serve", "--otlp-endpoint", "grpc://collector")
    assert result.returncode == 2
    assert "argument --otlp-endpoint: must be http(s)://host[:port]" in result.stderr


def test_sandbox_mode_serves_metrics_on_metrics_listen() -> None:
    target, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("IMGATE_")}
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "imgate", "serve", "--listen", target),
            *("--sandbox-listen", "127.0.0.1:0", "--metrics-listen", metrics),
        ],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_serving(target)
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert "imgate_backend_blocked" in text
    finally:
        process.terminate()
        process.wait(30)
