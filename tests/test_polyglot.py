"""Go and Java callers, built from the proto with Debian's toolchain, against `imgate serve`.

`scripts/build_polyglot.sh` generates the stubs and builds `examples/go` and
`examples/java`. Without the toolchains these tests skip, unless IMGATE_REQUIRE_POLYGLOT=1
(set by .ci/run, which installs them) turns the skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import gen_lock
from tests.test_process import _free_port, _imgate, _wait_serving

ROOT = Path(__file__).resolve().parent.parent
TOOLS = {"go": ("protoc", "go", "protoc-gen-go", "protoc-gen-go-grpc"), "java": ("protoc", "javac")}


_BUILT: set[str] = set()


def _build(language: str) -> None:
    """Generate and build once per test session (a few seconds each)."""
    if language in _BUILT or _up_to_date(language):
        return
    missing = [tool for tool in TOOLS[language] if shutil.which(tool) is None]
    if missing:
        if os.environ.get("IMGATE_REQUIRE_POLYGLOT") == "1":
            pytest.fail(f"{language} toolchain missing: {missing}")
        pytest.skip(f"{language} toolchain not installed ({', '.join(missing)})")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build_polyglot.sh"), language],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    _BUILT.add(language)


def _up_to_date(language: str) -> bool:
    """Whether gen/ holds this language's build, newer than everything it is built from
    (test_docs may have run scripts/build_polyglot.sh just before: once is enough)."""
    output = ROOT / "gen" / ("bin/sendbatch-go" if language == "go" else "java.classpath")
    if not output.exists():
        return False
    sources = [
        ROOT / "scripts" / "build_polyglot.sh",
        *(ROOT / "protos").rglob("*.proto"),
        *(ROOT / "examples" / language).rglob("*"),
    ]
    built = output.stat().st_mtime
    return all(source.stat().st_mtime < built for source in sources)


@pytest.fixture(scope="module", autouse=True)
def _gen() -> Iterator[None]:
    """gen/ is ours while this module builds and runs from it (test_docs builds it too)."""
    with gen_lock():
        yield


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    target = f"127.0.0.1:{_free_port()}"
    process = _imgate("serve", "--listen", target, "--sandbox-listen", "127.0.0.1:0")
    try:
        _wait_serving(target)
        yield target
    finally:
        process.kill()
        process.communicate()


def _caller(language: str, target: str, *args: str) -> list[str]:
    if language == "go":
        return [str(ROOT / "gen" / "bin" / "sendbatch-go"), "-target", target, *args]
    classpath = (ROOT / "gen" / "java.classpath").read_text().strip()
    return ["java", "-cp", classpath, "io.imgate.examples.SendBatch", target, *args]


def _args(language: str, recipients: str, backend: str = "", sender: str = "") -> list[str]:
    if language == "go":
        return ["-to", recipients, "-text", "hi", "-backend", backend, "-from", sender]
    return [recipients, "hi", backend, sender]


@pytest.mark.parametrize("language", ["go", "java"])
@pytest.mark.parametrize(
    ("backend", "sender"), [("", ""), ("yunxin_v1", "alice"), ("yunxin_v2", "alice")]
)
def test_generated_client_gets_one_outcome_per_recipient(
    language: str, backend: str, sender: str, gateway: str
) -> None:
    _build(language)
    result = subprocess.run(
        _caller(language, gateway, *_args(language, "bob,carol,ghost1,bob", backend, sender)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "bob  DELIVERY_STATE_ACCEPTED",
        "carol  DELIVERY_STATE_ACCEPTED",
        "ghost1  DELIVERY_STATE_FAILED  FAILURE_REASON_RECIPIENT_NOT_FOUND",
        "total=3 accepted=2 failed=1 uncertain=0 duplicates_removed=1",
    ]


@pytest.mark.parametrize("language", ["go", "java"])
def test_generated_client_sees_invalid_argument(language: str, gateway: str) -> None:
    _build(language)
    result = subprocess.run(
        _caller(language, gateway, *_args(language, "bob", "yunxin_v1")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "sender_id" in result.stderr
