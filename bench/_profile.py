"""Sampling a running process with py-spy, summarised as the top functions by CPU.

py-spy attaches to the gateway only while a measured batch runs (idle samples are
dropped), so the summary shows where that batch's CPU went: by self time (the function
itself was on the stack top) and by total time (anywhere on the stack).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench._procs import BenchError

_RATE_HZ = 250
# On (nearly) every stack, so they say nothing in the inclusive table.
_ENTRY_FRAMES = (
    "<frozen runpy>",
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
    "imgate/__main__.py",
    "(imgate/cli/main.py)",
    "(imgate/cli/serve.py)",
    "threading.py",
)


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise BenchError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


class Sampler:
    """`with Sampler(pid, raw_path):` records collapsed stacks of `pid` meanwhile."""

    def __init__(self, pid: int, raw_path: Path) -> None:
        self._args = [
            _py_spy(),
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(_RATE_HZ),
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(raw_path),
        ]
        self._popen: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Sampler:
        self._popen = subprocess.Popen(
            self._args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._popen is not None
        self._popen.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        _, stderr = self._popen.communicate(timeout=60)
        if self._popen.returncode not in (0, -signal.SIGINT):
            raise BenchError(f"py-spy failed: {stderr.decode(errors='replace')[-1000:]}")


def summarize(raw_path: Path, top: int = 25) -> str:
    """The top functions of collapsed stacks, by self and by total samples."""
    self_samples: Counter[str] = Counter()
    total_samples: Counter[str] = Counter()
    samples = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        samples += count
        self_samples[frames[-1]] += count
        for frame in set(frames):
            total_samples[frame] += count
    if not samples:
        return "no samples\n"
    inclusive = Counter(
        {
            frame: count
            for frame, count in total_samples.items()
            if not any(marker in frame for marker in _ENTRY_FRAMES)
        }
    )
    lines = [f"{samples} samples at {_RATE_HZ} Hz (idle excluded)", ""]
    for title, counter in (
        ("self", self_samples),
        ("total (inclusive; event loop and entry frames left out)", inclusive),
    ):
        lines.append(f"top {top} by {title}:")
        for frame, count in counter.most_common(top):
            lines.append(f"  {100 * count / samples:5.1f}%  {frame}")
        lines.append("")
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "send (/x/server/imgate/pipeline/dispatch.py:284)" -> "send (imgate/pipeline/dispatch.py)":
    # without the line number, samples anywhere in a function add up.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/server/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name
