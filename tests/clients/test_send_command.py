"""``imgate send`` (run_send) against the fake gateway in conftest."""

from __future__ import annotations

import argparse
import io
import json
import os
import pty
import re
import subprocess
import sys
import time

import pytest

from imgate.cli.send import add_send_arguments, run_send

from .conftest import ELAPSED_MS, FakeServer


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="imgate send")
    add_send_arguments(parser)
    return parser.parse_args(list(argv))


def _send(fake_server: FakeServer, *argv: str) -> int:
    return run_send(_args("--target", fake_server.target, *argv))


def test_prints_one_line_per_outcome_then_the_summary(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status = _send(
        fake_server, "--from", "ops", "--to", "alice,ghost1", "--to", "slow1,alice", "--text", "hi"
    )
    out, err = capsys.readouterr()
    assert status == 0
    assert out.splitlines() == [
        "alice  ACCEPTED",
        "ghost1  FAILED  RECIPIENT_NOT_FOUND  (70107: account does not exist)",
        "slow1  UNCERTAIN  TIMEOUT  (no answer within 10 s)",
        "total=3 accepted=1 failed=1 uncertain=1 duplicates_removed=1 vendor_calls=2 "
        f"elapsed_ms={ELAPSED_MS}",
    ]
    # Not a terminal: no progress bar, nothing else on stderr.
    assert err == ""
    request = fake_server.gateway.requests[0]
    assert request.sender_id == "ops"
    assert list(request.recipient_ids) == ["alice", "ghost1", "slow1", "alice"]
    assert request.message.text.text == "hi"


def test_json_prints_one_object_per_outcome_then_the_summary(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status = _send(fake_server, "--json", "--to", "alice,ghost1,bob", "--tip", "maintenance")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0
    assert [line.get("recipient_id") for line in lines[:3]] == ["alice", "ghost1", "bob"]
    assert lines[0] == {
        "recipient_id": "alice",
        "index": 0,
        "state": "DELIVERY_STATE_ACCEPTED",
        "reason": "FAILURE_REASON_UNSPECIFIED",
        "vendor_code": "",
        "detail": "",
        "vendor_message_id": "msg-0",
        "attempts": 1,
        "vendor_time_ms": 0,
    }
    assert lines[1]["reason"] == "FAILURE_REASON_RECIPIENT_NOT_FOUND"
    # Keys in the proto's order, whichever fields the server set.
    assert list(lines[1]) == list(lines[0])
    assert lines[3] == {
        "summary": {
            "total": 3,
            "accepted": 2,
            "failed": 1,
            "uncertain": 0,
            "duplicates_removed": 0,
            "vendor_calls": 2,
            "elapsed_ms": ELAPSED_MS,
        },
        # What `imgate batch watch BATCH_ID --cursor C` needs to follow the batch.
        "batch_id": lines[3]["batch_id"],
        "cursor": lines[3]["cursor"],
    }
    assert list(lines[3]) == ["summary", "batch_id", "cursor"]
    assert fake_server.gateway.requests[0].message.tip.text == "maintenance"


def test_to_file_reads_one_id_per_line(
    fake_server: FakeServer, tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = tmp_path / "ids.txt"  # type: ignore[operator]
    ids.write_text("\ufeffalice\n\n  bob  \r\n\ncarol\n", encoding="utf-8")
    status = _send(
        fake_server,
        "--to-file",
        str(ids),
        "--custom",
        '{"kind": "ping"}',
        "--backend",
        "yunxin_v2",
        "--request-id",
        "req-7",
    )
    assert status == 0
    request = fake_server.gateway.requests[0]
    assert list(request.recipient_ids) == ["alice", "bob", "carol"]
    assert json.loads(request.message.custom.data) == {"kind": "ping"}
    assert (request.backend, request.request_id) == ("yunxin_v2", "req-7")
    assert capsys.readouterr().out.splitlines()[-1].startswith("total=3 accepted=3 ")


def test_to_file_dash_reads_stdin(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("dave\nerin\n"))
    assert _send(fake_server, "--to-file", "-", "--text", "hi") == 0
    assert list(fake_server.gateway.requests[0].recipient_ids) == ["dave", "erin"]
    assert capsys.readouterr().out.startswith("dave  ACCEPTED\nerin  ACCEPTED\n")


def test_invalid_request_exits_2_with_the_violations(
    fake_server: FakeServer, tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.txt"  # type: ignore[operator]
    empty.write_text("\n\n", encoding="utf-8")
    status = _send(fake_server, "--to-file", str(empty), "--text", "hi")
    out, err = capsys.readouterr()
    assert status == 2
    assert out == ""
    assert err.splitlines() == [
        "imgate send: the request is invalid:",
        "  recipient_ids: must not be empty",
    ]


def test_unreadable_to_file_exits_2(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _send(fake_server, "--to-file", "/nonexistent/ids.txt", "--text", "hi") == 2
    assert "cannot read recipients" in capsys.readouterr().err
    assert fake_server.gateway.requests == []


def test_unreachable_target_exits_1(unused_target: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = run_send(
        _args("--target", unused_target, "--timeout", "2", "--to", "a", "--text", "x")
    )
    out, err = capsys.readouterr()
    assert status == 1
    assert out == ""
    assert err.startswith("imgate send: the call failed: ")
    assert "UNAVAILABLE" in err or "DEADLINE_EXCEEDED" in err


def test_failure_mid_stream_exits_1_after_printing_what_came(
    fake_server: FakeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    status = _send(fake_server, "--to", "alice,bob,crash", "--text", "hi")
    out, err = capsys.readouterr()
    assert status == 1
    assert out.splitlines() == ["alice  ACCEPTED", "bob  ACCEPTED"]
    assert err == "imgate send: the call failed after 2 outcomes: INTERNAL: vendor session lost\n"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_for_large_batches(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_server.gateway.outcomes_per_response = 500
    fake_server.gateway.pause_between_responses_s = 0.1  # the bar redraws every 0.2 s
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    recipients = ",".join(f"user{i}" for i in range(2000))
    assert _send(fake_server, "--to", recipients, "--text", "hi") == 0

    drawn = terminal.getvalue()
    assert drawn.startswith("\rsend:   0%|")
    # Count, rate and ETA (tqdm: "n/total [elapsed<remaining, rate]").
    assert re.search(r"\| [1-9]\d*/2000 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ rcpt/s\]", drawn), drawn
    # The bar is wiped at the end and stdout (a pipe here) got only the outcomes.
    assert re.search(r"\r +\r$", drawn)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2001
    assert out[-1].startswith("total=2000 ")


def test_no_progress_bar_for_small_batches_on_a_terminal(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert _send(fake_server, "--to", ",".join(f"u{i}" for i in range(1000)), "--text", "hi") == 0
    assert terminal.getvalue() == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["--text", "hi"],  # no recipients
        ["--to", "alice"],  # no content
        ["--to", "alice", "--to-file", "ids.txt", "--text", "hi"],
        ["--to", "alice", "--text", "hi", "--tip", "hi"],
        ["--to", "alice", "--custom", "{not json"],
        ["--to", " , ", "--text", "hi"],
        ["--to", "alice", "--text", "hi", "--timeout", "0"],
    ],
)
def test_command_line_mistakes_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        _args(*argv)
    assert raised.value.code == 2


def test_defaults() -> None:
    args = _args("--to", "alice", "--text", "hi")
    assert args.target == "127.0.0.1:50051"
    assert (args.backend, args.sender_id, args.request_id, args.timeout) == ("", "", "", None)
    assert args.json is False


def test_to_file_dash_drops_a_byte_order_mark_on_stdin(
    fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a pipe from a spreadsheet export looks like: UTF-8 bytes starting with a BOM.
    stdin = io.TextIOWrapper(io.BytesIO("\ufeffdave\nerin\n".encode()), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    assert _send(fake_server, "--to-file", "-", "--text", "hi") == 0
    assert list(fake_server.gateway.requests[0].recipient_ids) == ["dave", "erin"]


def test_message_sends_any_content_type_from_proto_json(fake_server: FakeServer) -> None:
    message = '{"image": {"url": "https://example.com/a.jpg", "format": "jpg"}, "extension": "{}"}'
    assert _send(fake_server, "--to", "alice", "--message", message) == 0
    sent = fake_server.gateway.requests[0].message
    assert sent.WhichOneof("content") == "image"
    assert (sent.image.url, sent.image.format, sent.extension) == (
        "https://example.com/a.jpg",
        "jpg",
        "{}",
    )


@pytest.mark.parametrize("message", ['{"nope": 1}', "[1]", "{not json"])
def test_message_that_is_not_a_message_exits_2(message: str) -> None:
    with pytest.raises(SystemExit) as raised:
        _args("--to", "alice", "--message", message)
    assert raised.value.code == 2


def test_a_closed_stdout_pipe_ends_quietly_and_the_batch_still_completes(
    fake_server: FakeServer, tmp_path: pytest.TempPathFactory
) -> None:
    # `imgate send ... | head -n 1`: more output than a pipe buffers, reader gone after a line.
    fake_server.gateway.outcomes_per_response = 500
    ids = tmp_path / "ids.txt"  # type: ignore[operator]
    ids.write_text("".join(f"recipient-number-{i}\n" for i in range(20_000)), encoding="utf-8")
    command = [sys.executable, "-m", "imgate", "send", "--target", fake_server.target]
    process = subprocess.Popen(
        [*command, "--to-file", str(ids), "--text", "hi"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    first = process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 0
    assert first == "recipient-number-0  ACCEPTED\n"
    assert "Traceback" not in stderr
    assert "BrokenPipe" not in stderr
    # The gateway saw the call through: nothing was cancelled because the reader left.
    assert not fake_server.gateway.cancelled.is_set()


def _on_a_terminal(command: list[str]) -> str:
    """Run `command` with its stderr on a pseudo-terminal; what it drew there."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    drawn = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(controller)
    assert process.wait(timeout=300) == 0
    return drawn.decode()


def test_progress_bar_shows_rate_and_eta_on_a_real_terminal(fake_server: FakeServer) -> None:
    fake_server.gateway.outcomes_per_response = 100
    fake_server.gateway.pause_between_responses_s = 0.02
    recipients = ",".join(f"user{i}" for i in range(3000))
    command = [sys.executable, "-m", "imgate", "send", "--target", fake_server.target]
    text = _on_a_terminal([*command, "--to", recipients, "--text", "hi"])
    # e.g. "send:  50%|█████     | 1500/3000 [00:01<00:01, 1431.20 rcpt/s]"
    assert re.search(r"send: +\d+%\|.+\| \d+/3000 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ rcpt/s", text), (
        text[-400:]
    )
    assert re.search(r"\r +\r$", text)  # wiped at the end


@pytest.mark.slow
def test_to_file_of_a_million_lines_streams_with_progress_on_a_terminal(
    fake_server: FakeServer, tmp_path: pytest.TempPathFactory
) -> None:
    fake_server.gateway.outcomes_per_response = 5000
    # 100 pages read 10 ms apart: the upload lasts past the bar's 0.5 s delay however fast
    # the machine is (a fast run once uploaded in under 0.5 s and showed no bar at all).
    fake_server.gateway.pause_between_pages_s = 0.01
    ids = tmp_path / "ids.txt"  # type: ignore[operator]
    with open(ids, "w", encoding="utf-8") as file:
        file.writelines(f"user{n:07d}\n" for n in range(1_000_000))
    command = [sys.executable, "-m", "imgate", "send", "--target", fake_server.target]
    text = _on_a_terminal([*command, "--to-file", str(ids), "--text", "hi"])
    # The upload: ids counted against an estimate from the file's size, with rate and ETA.
    assert re.search(r"upload: +\d+%\|.+\| \d+/\d+ \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ ids/s", text), (
        text[:400]
    )
    assert re.search(r"send: +\d+%\|.+\| \d+/1000000 \[.+ rcpt/s", text), text[-400:]
    # Streamed in pages, never one message of a million ids.
    pages = fake_server.gateway.upload_pages[0]
    assert sum(pages) == 1_000_000
    assert max(pages) == 10_000
    assert fake_server.gateway.submitted[0].recipient_list == "list-0"


def test_to_file_with_a_timeout_submits_a_send_before_within_it(
    fake_server: FakeServer, tmp_path: pytest.TempPathFactory
) -> None:
    ids = tmp_path / "ids.txt"  # type: ignore[operator]
    ids.write_text("alice\nbob\n", encoding="utf-8")
    started = time.time()
    assert _send(fake_server, "--to-file", str(ids), "--text", "hi", "--timeout", "30") == 0
    send_before = fake_server.gateway.submitted[0].send_before.ToNanoseconds() / 1e9
    # The whole command's deadline, less the margin for the last outcomes to come back.
    assert started + 29 <= send_before <= time.time() + 30
