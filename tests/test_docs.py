"""The documentation runs: every block marked ``<!-- docs-test -->`` is executed.

Marked blocks in README.md, docs/*.md, examples/README.md and clients/*/README.md run
against a sandbox gateway (`imgate serve`) and a standalone `imgate sandbox`, each on free
ports: the documented addresses (127.0.0.1:50051, 127.0.0.1:50052, 127.0.0.1:50053,
127.0.0.1:8080) are rewritten to them, and ``IMGATE_TARGET`` points `imgate send` there.
``sh`` blocks must exit 0; ``console`` blocks must print what they show (``elapsed_ms``
and message ids aside); ``python`` blocks must run. ``<!-- docs-test needs=tool,... -->``
skips a block when a tool is missing, unless IMGATE_REQUIRE_POLYGLOT=1 (CI).

The quick start itself (a fresh clone, the README's first command) runs when
IMGATE_DOCS_FRESH_CLONE=1 (.ci/run sets it; it installs from the package index).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pytest

import imgate_client
from tests.conftest import gen_lock
from tests.test_process import _free_port, _imgate, _wait_serving

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted(
    [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        ROOT / "examples" / "README.md",
        *(ROOT / "clients").glob("*/README.md"),
    ]
)
_MARK = re.compile(r"^<!-- docs-test(?: needs=(?P<needs>[\w,.-]+))? -->\s*$")
_FENCE = re.compile(r"^```(?P<lang>\w+)\s*$")


@dataclass(frozen=True)
class Block:
    document: Path
    line: int
    lang: str
    code: str
    needs: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def marked_blocks(document: Path) -> list[Block]:
    """The fenced blocks right after a docs-test mark."""
    lines = document.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    for number, line in enumerate(lines):
        mark = _MARK.match(line)
        if not mark or number + 1 >= len(lines):
            continue
        fence = _FENCE.match(lines[number + 1])
        assert fence, f"{document}:{number + 1}: a docs-test mark must precede a fenced block"
        end = lines.index("```", number + 2)
        needs = tuple(filter(None, (mark.group("needs") or "").split(",")))
        code = "\n".join(lines[number + 2 : end]) + "\n"
        blocks.append(Block(document, number + 2, fence.group("lang"), code, needs))
    return blocks


BLOCKS = [block for document in DOCUMENTS for block in marked_blocks(document)]


@dataclass(frozen=True)
class Sandboxes:
    target: str
    serve_sandbox: str
    standalone: str
    http: str

    def rewrite(self, code: str) -> str:
        for host in ("127.0.0.1", "localhost"):
            code = code.replace(f"{host}:50051", self.target)
            code = code.replace(f"{host}:50052", self.serve_sandbox)
            code = code.replace(f"{host}:50053", self.http)
            code = code.replace(f"{host}:8080", self.standalone)
        return code

    def env(self) -> dict[str, str]:
        env = {**os.environ, "IMGATE_TARGET": self.target, "PYTHONUNBUFFERED": "1"}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.pop("IMGATE_CONFIG", None)
        return env


@pytest.fixture(scope="module")
def sandboxes() -> Iterator[Sandboxes]:
    target, sandbox, standalone, http = (f"127.0.0.1:{_free_port()}" for _ in range(4))
    processes = [
        _imgate("serve", "--listen", target, "--sandbox-listen", sandbox, "--http-listen", http),
        _imgate("sandbox", "--listen", standalone),
    ]
    try:
        _wait_serving(target)
        _wait_port(standalone)
        _wait_port(http)
        yield Sandboxes(target, sandbox, standalone, http)
    finally:
        for process in processes:
            process.kill()
            process.communicate()


def _wait_port(address: str, timeout_s: float = 20) -> None:
    import socket

    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {address}")


def _reset(sandboxes: Sandboxes) -> None:
    # Each block starts from a clean sandbox: no leftover faults, deliveries or windows.
    for address in (sandboxes.serve_sandbox, sandboxes.standalone):
        subprocess.run(
            ["curl", "-fsS", "-X", "POST", f"http://{address}/sandbox/reset"],
            check=True,
            capture_output=True,
            timeout=10,
        )


def _normalise(text: str) -> str:
    text = re.sub(r"elapsed_ms(=|\": )\d+", r"elapsed_ms\1N", text)
    # The same in protobuf JSON (HTTP/JSON answers).
    text = re.sub(r"\"(elapsedMs|vendorTimeMs|vendorMessageId)\":\"[^\"]*\"", r'"\1":"X"', text)
    text = re.sub(r"send_after=\S+", "send_after=TIME", text)  # scheduled from now
    text = re.sub(r"\b[0-9a-f]{32}\b", "BATCH_ID", text)  # batch ids are new each run
    text = re.sub(
        r"\"vendor_time_ms\": \d+", '"vendor_time_ms": T', text
    )  # batch ids are new each run
    text = re.sub(r"\"cursor\": \"[^\"]*\"", '"cursor": "C"', text)
    return re.sub(r"\"vendor_message_id\": \"[^\"]+\"", '"vendor_message_id": "ID"', text)


def _console_steps(code: str) -> list[tuple[str, str]]:
    steps: list[tuple[str, str]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], ""))
        elif steps and line:
            command, expected = steps[-1]
            steps[-1] = (command, expected + line + "\n")
    return steps


def test_every_document_is_found_and_some_blocks_are_marked() -> None:
    assert ROOT / "README.md" in DOCUMENTS
    assert (ROOT / "docs" / "api.md") in DOCUMENTS
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.name)
def test_marked_block_runs(block: Block, sandboxes: Sandboxes) -> None:
    missing = [tool for tool in block.needs if shutil.which(tool) is None]
    if missing:
        if os.environ.get("IMGATE_REQUIRE_POLYGLOT") == "1":
            pytest.fail(f"{block.name}: needs {missing}")
        pytest.skip(f"needs {', '.join(missing)}")
    _reset(sandboxes)
    # Blocks that build into gen/ never overlap test_polyglot's use of it.
    with gen_lock() if "gen/" in block.code or "build_polyglot" in block.code else nullcontext():
        _run_block(block, sandboxes)


def _run_block(block: Block, sandboxes: Sandboxes) -> None:
    code = sandboxes.rewrite(block.code)
    env = sandboxes.env()
    if block.lang == "sh":
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{block.name}\n{result.stdout}\n{result.stderr}"
    elif block.lang == "console":
        for command, expected in _console_steps(code):
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=120,
            )
            assert _normalise(result.stdout) == _normalise(expected), f"{block.name}: {command}"
    elif block.lang == "python":
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{block.name}\n{result.stdout}\n{result.stderr}"
    else:
        pytest.fail(f"{block.name}: no runner for {block.lang!r} blocks")


def test_the_client_docstring_example_runs(sandboxes: Sandboxes) -> None:
    doc = imgate_client.__doc__ or ""
    example = "\n".join(
        line[4:] for line in doc.splitlines() if line.startswith("    ") or not line.strip()
    ).strip()
    ast.parse(example)  # the indented lines are the example, whole
    result = subprocess.run(
        [sys.executable, "-c", sandboxes.rewrite(example)],
        env=sandboxes.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == ["alice ACCEPTED", "bob ACCEPTED"]


def test_the_client_readmes_can_run_one_after_the_other(sandboxes: Sandboxes) -> None:
    # Same request_id with another payload is refused: the two READMEs must use their own.
    ids = [
        re.findall(r"request_?[iI]d[=:] ?['\"]([^'\"]+)", path.read_text(encoding="utf-8"))
        for path in (ROOT / "clients" / "python" / "README.md", ROOT / "clients/node/README.md")
    ]
    assert all(ids)
    assert not set(ids[0]) & set(ids[1])


@pytest.mark.skipif(
    os.environ.get("IMGATE_DOCS_FRESH_CLONE") != "1",
    reason="installs from the package index; set IMGATE_DOCS_FRESH_CLONE=1 (CI does)",
)
def test_quick_start_first_command_in_a_fresh_clone(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = re.search(r"# 1\. set up and run the gateway[^\n]*\n(?P<cmd>[^\n]+)\n", readme)
    assert first, "the quick start's first command is gone"
    clone = tmp_path / "imgate"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    target = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "IMGATE_LISTEN": target}
    env.pop("IMGATE_CONFIG", None)
    for attempt in range(2):
        process = subprocess.Popen(
            ["bash", "-c", first.group("cmd")],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        if _wait_serving(target, timeout_s=600, process=process):
            break
        _, stderr = process.communicate(timeout=60)
        # The command keeps the sandbox's documented port, 127.0.0.1:50052. It lies in
        # Linux's range of ephemeral ports, so one of the suite's own connections can hold
        # it for a moment (a full run once hit this): then, and only then, once more.
        assert attempt == 0, stderr[-2000:]
        assert "address already in use" in stderr, stderr[-2000:]
    try:
        send = subprocess.run(
            [str(clone / ".venv/bin/imgate"), "send", "--to", "bob", "--text", "hi"],
            env={**env, "IMGATE_TARGET": target},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert send.returncode == 0, send.stderr
        assert send.stdout.startswith("bob  ACCEPTED\n")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert "SANDBOX MODE" in stderr


_BARE_COMMAND = re.compile(r"(?:^\$ |^|\$\(|\| |; |&& )(imgate|python|pip)\b")


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.name)
def test_marked_blocks_run_as_written_after_the_quick_start(block: Block) -> None:
    """The blocks run with the virtual environment's bin/ on PATH, but a reader's shell
    has no such thing after the quick start: commands it installed are written
    `.venv/bin/imgate`, `.venv/bin/python` (issue 25)."""
    for number, line in enumerate(block.code.splitlines()):
        if block.lang == "console" and not line.startswith("$ "):
            continue  # output
        found = _BARE_COMMAND.search(line.split(" #")[0])
        assert found is None, f"{block.name}+{number}: write .venv/bin/{found.group(1)}: {line}"
