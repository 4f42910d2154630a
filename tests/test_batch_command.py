"""``imgate batch ...`` against a real gateway and the sandbox (the CLI runs in a thread)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from imgate.api.validate import LIST_ID_RULE
from imgate.cli.batch import add_batch_arguments, run_batch, send_time
from imgate.cli.send import add_send_arguments, run_send
from imgate.sandbox import SandboxServer
from tests.conftest import StartGateway


def _run(target: str, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="imgate batch")
    add_batch_arguments(parser)
    command, *rest = argv
    return run_batch(parser.parse_args([command, *rest, "--target", target]))


async def test_submit_watch_get_list_cancel(
    sandbox: SandboxServer, start_gateway: StartGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = await start_gateway()
    submit = ("submit", "--backend", "tencent", "--to", "bob,ghost1,bob", "--text", "hi")
    assert await asyncio.to_thread(_run, gateway.target, *submit, "--request-id", "cli-1") == 0
    batch_id = capsys.readouterr().out.strip()
    assert len(batch_id) == 32

    assert await asyncio.to_thread(_run, gateway.target, "watch", batch_id) == 0
    watched = capsys.readouterr().out.splitlines()
    assert watched[:2] == [
        "bob  ACCEPTED",
        "ghost1  FAILED  RECIPIENT_NOT_FOUND  (70107: account does not exist)",
    ]
    assert watched[2].startswith("total=2 accepted=1 failed=1 uncertain=0 duplicates_removed=1")
    assert len(watched) == 3
    assert await asyncio.to_thread(_run, gateway.target, "watch", batch_id, "--json") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line.get("recipient_id") for line in lines[:2]] == ["bob", "ghost1"]
    assert lines[-1]["summary"]["duplicates_removed"] == 1

    # The same request id again: the same batch, nothing sent twice.
    assert await asyncio.to_thread(_run, gateway.target, *submit, "--request-id", "cli-1") == 0
    assert capsys.readouterr().out.strip() == batch_id
    assert sandbox.state.stats("tencent").calls_received == 1

    assert await asyncio.to_thread(_run, gateway.target, "get", batch_id) == 0
    assert capsys.readouterr().out.strip() == (
        f"{batch_id}  DONE  total=2 accepted=1 failed=1 uncertain=0 pending=0"
    )
    assert await asyncio.to_thread(_run, gateway.target, "list") == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(batch_id)
    assert await asyncio.to_thread(_run, gateway.target, "cancel", batch_id) == 0
    assert "  DONE  " in capsys.readouterr().out  # cancelling a finished batch changes nothing


async def test_unknown_batch_exits_2(
    start_gateway: StartGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = await start_gateway()
    assert await asyncio.to_thread(_run, gateway.target, "get", "nope") == 2
    assert "NOT_FOUND" in capsys.readouterr().err


async def test_to_file_goes_through_a_recipient_list(
    sandbox: SandboxServer,
    start_gateway: StartGateway,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    gateway = await start_gateway({"recipients_per_call": 100})
    ids = tmp_path / "ids.txt"
    ids.write_text("\ufeff" + "".join(f"user{n:04d}\n" for n in range(1500)) + "user0001\nghost9\n")
    submit = ("submit", "--backend", "tencent", "--to-file", str(ids), "--text", "hi")
    assert await asyncio.to_thread(_run, gateway.target, *submit) == 0
    batch_id = capsys.readouterr().out.strip()
    assert await asyncio.to_thread(_run, gateway.target, "watch", batch_id) == 0
    watched = capsys.readouterr().out.splitlines()
    assert len(watched) == 1502
    assert "ghost9  FAILED  RECIPIENT_NOT_FOUND" in "\n".join(watched)
    summary = "total=1501 accepted=1500 failed=1 uncertain=0 duplicates_removed=1 "
    assert watched[-1].startswith(summary)

    # `imgate send --to-file` prints what `--to` would: outcomes, then the summary.
    parser = argparse.ArgumentParser(prog="imgate send")
    add_send_arguments(parser)
    argv = ["--target", gateway.target, "--backend", "yunxin_v1", "--from", "ops"]
    args = parser.parse_args([*argv, "--to-file", str(ids), "--text", "hi"])
    assert await asyncio.to_thread(run_send, args) == 0
    sent = capsys.readouterr().out.splitlines()
    assert len(sent) == 1502
    assert sent[0] == "user0000  ACCEPTED"
    assert sent[-1].startswith("total=1501 accepted=1500 failed=1 ")
    delivered = [d.recipient for d in sandbox.state.deliveries("yunxin_v1")]
    assert sorted(delivered) == [f"user{n:04d}" for n in range(1500)]


async def test_to_file_with_a_bad_id_names_its_line_and_exits_2(
    start_gateway: StartGateway, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    gateway = await start_gateway()
    ids = tmp_path / "ids.txt"
    ids.write_text("alice\n" + "x" * (LIST_ID_RULE.max_length + 1) + "\n")
    submit = ("submit", "--backend", "tencent", "--to-file", str(ids), "--text", "hi")
    assert await asyncio.to_thread(_run, gateway.target, *submit) == 2
    err = capsys.readouterr().err
    assert "pages[0].recipient_ids[1]: longer than any configured vendor takes" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", 1090.0),
        ("10m", 1600.0),
        ("2h", 8200.0),
        ("1d", 87400.0),
        ("1h30m", 6400.0),
        ("2027-01-31T09:00:00+08:00", 1801357200.0),
        ("2027-01-31T01:00:00Z", 1801357200.0),
    ],
)
def test_at_takes_rfc3339_or_a_duration(text: str, expected: float) -> None:
    assert send_time(text, now=lambda: 1000.0) == expected


@pytest.mark.parametrize("text", ["tomorrow", "2027-01-31T09:00:00", "10x", "5m10", ""])
def test_at_refuses_anything_else(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="RFC 3339"):
        send_time(text)


async def test_submit_at_a_time_shows_scheduled_then_cancel_sends_nothing(
    sandbox: SandboxServer, start_gateway: StartGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = await start_gateway()
    submit = ("submit", "--backend", "tencent", "--to", "bob", "--text", "hi", "--at", "10m")
    assert await asyncio.to_thread(_run, gateway.target, *submit) == 0
    batch_id = capsys.readouterr().out.strip()
    assert await asyncio.to_thread(_run, gateway.target, "get", batch_id) == 0
    shown = capsys.readouterr().out.strip()
    assert shown.startswith(f"{batch_id}  SCHEDULED  total=1 accepted=0")
    assert " send_after=20" in shown
    assert await asyncio.to_thread(_run, gateway.target, "cancel", batch_id) == 0
    capsys.readouterr()
    for _ in range(100):
        assert await asyncio.to_thread(_run, gateway.target, "get", batch_id) == 0
        if "  CANCELLED  " in capsys.readouterr().out:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the scheduled batch was not cancelled")
    assert sandbox.state.stats("tencent").calls_received == 0


async def test_recall_prints_the_recall_batch_and_refuses_what_cannot_be_recalled(
    sandbox: SandboxServer, start_gateway: StartGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = await start_gateway()
    submit = ("submit", "--backend", "tencent", "--to", "bob,carol", "--text", "oops")
    assert await asyncio.to_thread(_run, gateway.target, *submit) == 0
    batch_id = capsys.readouterr().out.strip()
    assert await asyncio.to_thread(_run, gateway.target, "watch", batch_id) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(_run, gateway.target, "recall", batch_id) == 0
    recall_id = capsys.readouterr().out.strip()
    assert len(recall_id) == 32
    assert recall_id != batch_id
    assert await asyncio.to_thread(_run, gateway.target, "watch", recall_id) == 0
    watched = sorted(capsys.readouterr().out.splitlines())
    assert watched[:2] == ["bob  ACCEPTED", "carol  ACCEPTED"]
    assert await asyncio.to_thread(_run, gateway.target, "recall", batch_id, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["batch_id"], shown["recall_of"]) == (recall_id, batch_id)
    assert [w.recipient for w in sandbox.state.withdrawals("tencent")].count("bob") == 1
    submit = ("submit", "--backend", "yunxin_v1", "--from", "a", "--to", "b", "--text", "x")
    assert await asyncio.to_thread(_run, gateway.target, *submit) == 0
    other = capsys.readouterr().out.strip()
    assert await asyncio.to_thread(_run, gateway.target, "recall", other) == 1
    assert "FAILED_PRECONDITION" in capsys.readouterr().err
