"""``imgate batch submit|watch|get|list|cancel|recall``: durable batches from the command
line.

``submit`` takes ``imgate send``'s recipient and message flags and prints the batch id
(``--to-file`` is streamed through ``UploadRecipients`` first, with a progress bar on a
terminal; ``--at`` schedules it: RFC 3339, or a duration from now such as ``10m``);
``watch`` prints outcomes as ``send`` does (``--cursor`` resumes); ``recall`` prints the
id of the batch's recall batch (the same on every call); ``get``, ``list`` and ``cancel``
print a batch a line (``--json``: the ``Batch`` message as JSON). Exit codes as for
``send``: 0 done, 1 the call failed (2 for an invalid request or an unknown batch).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from imgate.cli.options import (
    add_connection_arguments,
    connection_options,
    connection_problem,
)
from imgate.cli.output import (
    format_outcome,
    format_summary,
    json_summary,
    silence_stdout,
    to_json,
)
from imgate.cli.pause import PauseWatch
from imgate.cli.send import (
    DEFAULT_TARGET,
    EXIT_CALL_FAILED,
    EXIT_COMPLETED,
    EXIT_INTERRUPTED,
    EXIT_INVALID_REQUEST,
    _message,
    _resume_hint,
    add_send_arguments,
)
from imgate.cli.upload import upload_file
from imgate_client import GatewayClient, GatewayError, InvalidRequestError, gateway_pb2


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


BATCH_EXAMPLES = {
    "batch": _examples(
        "imgate batch submit --backend yunxin_v2 --from alice --to bob,carol --text hello",
        "imgate batch watch f4c00789d3ae419dbbd3fae3709f03d2",
        "imgate batch list",
    ),
    "submit": _examples(
        "imgate batch submit --backend yunxin_v2 --from alice --to bob,carol --text hello",
        "imgate batch submit --to-file ids.txt --text hello --request-id promo-2025-05 --json",
        "imgate batch submit --to bob --text 'good morning' --at 2027-01-31T09:00:00+08:00",
    ),
    "watch": _examples(
        "imgate batch watch f4c00789d3ae419dbbd3fae3709f03d2",
        "imgate batch watch f4c00789d3ae419dbbd3fae3709f03d2 --cursor 12 --json",
    ),
    "get": _examples("imgate batch get f4c00789d3ae419dbbd3fae3709f03d2 --json"),
    "list": _examples("imgate batch list", "imgate batch list --page-size 50 --page-token 20"),
    "cancel": _examples("imgate batch cancel f4c00789d3ae419dbbd3fae3709f03d2"),
    "recall": _examples(
        "imgate batch recall f4c00789d3ae419dbbd3fae3709f03d2",
        "imgate batch recall f4c00789d3ae419dbbd3fae3709f03d2 --request-id recall-promo --json",
    ),
}


def _subcommand(commands: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=BATCH_EXAMPLES[name],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``batch`` subcommands to ``parser``."""
    commands = parser.add_subparsers(dest="batch_command", required=True)
    submit = _subcommand(commands, "submit", "store a batch and print its id")
    add_send_arguments(submit)
    submit.add_argument(
        "--send-before",
        type=float,
        metavar="UNIX_SECONDS",
        help="no vendor call starts after this time",
    )
    submit.add_argument(
        "--at",
        type=send_time,
        metavar="TIME",
        help="send at this time, not before: RFC 3339 (2027-01-31T09:00:00+08:00) or a"
        " duration from now (90s, 10m, 2h, 1d, 1h30m); the batch waits SCHEDULED",
    )
    watch = _subcommand(commands, "watch", "print a batch's outcomes, then its summary")
    watch.add_argument("batch_id")
    watch.add_argument(
        "--cursor",
        default="",
        help="resume after this cursor (the `cursor` of a --json summary, or the one a"
        " watch that ended early printed)",
    )
    for name, help_text in (
        ("get", "print a batch"),
        ("cancel", "cancel a batch"),
        ("recall", "withdraw what a batch delivered; print its recall batch's id"),
    ):
        command = _subcommand(commands, name, help_text)
        command.add_argument("batch_id")
    commands.choices["recall"].add_argument(
        "--request-id", default="", help="idempotency key of the recall batch"
    )
    listing = _subcommand(commands, "list", "list batches, newest first")
    listing.add_argument("--page-size", type=int, default=20)
    listing.add_argument("--page-token", default="")
    for command in (watch, *(commands.choices[n] for n in ("get", "cancel", "recall")), listing):
        command.add_argument(
            "--target",
            default=os.environ.get("IMGATE_TARGET") or DEFAULT_TARGET,
            metavar="HOST:PORT",
            help=f"gateway address (default: $IMGATE_TARGET, else {DEFAULT_TARGET})",
        )
        command.add_argument("--json", action="store_true", help="print JSON")
        add_connection_arguments(command)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def send_time(text: str, now: Callable[[], float] = time.time) -> float:
    """``--at``: Unix seconds of an RFC 3339 time (with its offset) or of now plus a
    duration such as ``10m`` or ``1h30m``."""
    value = text.strip()
    parts = _DURATION.findall(value)
    if parts and "".join(number + unit for number, unit in parts) == value:
        return now() + sum(float(number) * _UNIT_S[unit] for number, unit in parts)
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an RFC 3339 time with its offset"
            " (2027-01-31T09:00:00Z) nor a duration (90s, 10m, 2h, 1d)"
        )
    return moment.timestamp()


def _time(stamp: Timestamp) -> str:
    return (
        datetime.datetime.fromtimestamp(stamp.seconds, datetime.UTC)
        .isoformat()
        .replace("+00:00", "Z")
    )


def format_batch(batch: gateway_pb2.Batch) -> str:
    """``<id>  DONE  total=3 accepted=2 failed=1 uncertain=0 pending=0``, then what is set
    of ``send_after=``, ``recall_of=`` and ``recalled_by=``."""
    state = gateway_pb2.BatchState.Name(batch.state).removeprefix("BATCH_STATE_")
    counts = " ".join(
        f"{name}={getattr(batch, name)}"
        for name in ("total", "accepted", "failed", "uncertain", "pending")
    )
    more = ""
    if batch.HasField("send_after"):
        more += f" send_after={_time(batch.send_after)}"
    for name in ("recall_of", "recalled_by"):
        if getattr(batch, name):
            more += f" {name}={getattr(batch, name)}"
    return f"{batch.batch_id}  {state}  {counts}{more}"


def run_batch(args: argparse.Namespace) -> int:
    """Run ``imgate batch ...`` with parsed ``args``; returns the exit status."""
    problem = connection_problem(args)
    if problem:
        print(f"imgate batch: {problem}", file=sys.stderr)
        return EXIT_INVALID_REQUEST
    try:
        with GatewayClient(args.target, **connection_options(args)) as client:
            return _COMMANDS[args.batch_command](client, args)
    except KeyboardInterrupt:
        print(f"imgate batch {args.batch_command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `imgate batch watch ... | head`: the reader has what it wanted. Leaving the watch
        # changes nothing about the batch.
        silence_stdout()
        return EXIT_COMPLETED
    except GatewayError as error:
        where = f"imgate batch {args.batch_command}"
        if isinstance(error, InvalidRequestError) and error.violations:
            print(f"{where}: the request is invalid:", file=sys.stderr)
            for violation in error.violations:
                print(f"  {violation.field}: {violation.description}", file=sys.stderr)
        else:
            print(f"{where}: {error.code.name}: {error.details}", file=sys.stderr)
        if isinstance(error, InvalidRequestError) or error.code == grpc.StatusCode.NOT_FOUND:
            return EXIT_INVALID_REQUEST
        return EXIT_CALL_FAILED


def _print_batch(batch: gateway_pb2.Batch, as_json: bool) -> None:
    print(json.dumps(to_json(batch), ensure_ascii=False) if as_json else format_batch(batch))


def _submit(client: GatewayClient, args: argparse.Namespace) -> int:
    recipients: list[str] | gateway_pb2.RecipientList
    if args.to_file is None:
        recipients = [recipient for ids in args.to for recipient in ids]
    else:
        # Streamed through UploadRecipients: a file of millions of ids, never read whole.
        uploaded = upload_file(client, args, "imgate batch submit", args.timeout)
        if uploaded is None:
            return EXIT_INVALID_REQUEST
        recipients = uploaded
    batch = client.submit_batch(
        recipients,
        _message(args),
        backend=args.backend,
        sender_id=args.sender_id,
        request_id=args.request_id,
        send_before=args.send_before,
        send_after=args.at,
        timeout=args.timeout,
    )
    if args.json:
        _print_batch(batch, True)
    else:
        print(batch.batch_id)
    return EXIT_COMPLETED


def _watch(client: GatewayClient, args: argparse.Namespace) -> int:
    with client.watch_batch(args.batch_id, cursor=args.cursor) as stream:
        try:
            for outcome in stream:
                line = json.dumps(to_json(outcome), ensure_ascii=False)
                print(line if args.json else format_outcome(outcome))
        except (GatewayError, KeyboardInterrupt):
            sys.stdout.flush()
            _resume_hint(stream, "imgate batch watch", args.batch_id)
            raise
        summary = stream.summary
    if args.json:
        print(json_summary(summary, args.batch_id, stream.cursor))
    else:
        print(format_summary(summary))
    return EXIT_COMPLETED


def _get(client: GatewayClient, args: argparse.Namespace) -> int:
    batch = client.get_batch(args.batch_id)
    _print_batch(batch, args.json)
    if batch.pending and batch.state in (
        gateway_pb2.BATCH_STATE_QUEUED,
        gateway_pb2.BATCH_STATE_RUNNING,
    ):
        # Pending recipients and a backend that is not sending: say why (rule 32).
        PauseWatch(client, batch.backend, sys.stderr, "imgate batch get").say_now()
    return EXIT_COMPLETED


def _cancel(client: GatewayClient, args: argparse.Namespace) -> int:
    _print_batch(client.cancel_batch(args.batch_id), args.json)
    return EXIT_COMPLETED


def _recall(client: GatewayClient, args: argparse.Namespace) -> int:
    recall = client.recall_batch(args.batch_id, request_id=args.request_id)
    if args.json:
        _print_batch(recall, True)
    else:
        print(recall.batch_id)  # a new batch, as submit's: follow it with watch or get
    return EXIT_COMPLETED


def _list(client: GatewayClient, args: argparse.Namespace) -> int:
    page = client.list_batches(page_size=args.page_size, page_token=args.page_token)
    for batch in page.batches:
        _print_batch(batch, args.json)
    if page.next_page_token:
        print(f"next page: --page-token {page.next_page_token}", file=sys.stderr)
    return EXIT_COMPLETED


_COMMANDS: dict[str, Callable[[GatewayClient, argparse.Namespace], int]] = {
    "submit": _submit,
    "watch": _watch,
    "get": _get,
    "cancel": _cancel,
    "recall": _recall,
    "list": _list,
}
