"""``imgate send``: the command-line client of the gateway, built on ``imgate_client``.

One line per outcome (``alice  ACCEPTED``, ``ghost1  FAILED  RECIPIENT_NOT_FOUND  (70107:
...)``) then a ``key=value`` summary line; with ``--json``, JSON Lines instead: one object
per outcome, then ``{"summary": {...}}``. Exit 0 when the call completed whatever the
outcomes, 2 when the request was refused as invalid (or the command line is wrong), 1 when
the call failed otherwise (unreachable, deadline, server error).

``--to-file`` streams the file through ``UploadRecipients`` (never read whole), then
submits the batch and watches it: memory stays flat for millions of ids. On a terminal,
progress bars on standard error (tqdm) show count, rate and ETA of the upload and of the
sending; standard output is the same as with ``--to``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from google.protobuf import json_format

from imgate.cli.options import (
    add_connection_arguments,
    connection_options,
    connection_problem,
)
from imgate.cli.output import Output
from imgate.cli.pause import PauseWatch
from imgate.cli.upload import upload_file
from imgate_client import (
    BatchStream,
    GatewayClient,
    GatewayError,
    InvalidRequestError,
    gateway_pb2,
)
from imgate_client import custom as custom_message
from imgate_client import text as text_message
from imgate_client import tip as tip_message

DEFAULT_TARGET = "127.0.0.1:50051"
EXIT_COMPLETED = 0
EXIT_CALL_FAILED = 1
EXIT_INVALID_REQUEST = 2
EXIT_INTERRUPTED = 130
# --timeout with --to-file: the last vendor calls start this long before the deadline, so
# that their outcomes still reach the watch (the gateway's margin for BatchSend is 0.25 s).
SEND_BEFORE_MARGIN_S = 0.5
SEND_EXAMPLES = """examples:
  imgate send --to bob --text hi
  imgate send --backend yunxin_v2 --from alice --to bob,carol --tip "maintenance at 22:00"
  imgate send --backend tencent --to-file ids.txt --text hello --request-id promo-2025-05
  imgate send --to bob --message '{"image": {"url": "https://example.com/a.jpg"}}' --json
  imgate send --target gateway.internal:50051 --ca-file ca.pem --to bob --text hi"""


def add_send_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``imgate send``'s options to ``parser``."""
    add_connection_arguments(parser)
    parser.add_argument(
        "--target",
        default=os.environ.get("IMGATE_TARGET") or DEFAULT_TARGET,
        metavar="HOST:PORT",
        help=f"gateway address (default: $IMGATE_TARGET, else {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--backend", default="", metavar="NAME", help="backend name (default: the server's)"
    )
    parser.add_argument(
        "--from", dest="sender_id", default="", metavar="ID", help="sender account id"
    )
    recipients = parser.add_mutually_exclusive_group(required=True)
    recipients.add_argument(
        "--to",
        action="append",
        type=_id_list,
        metavar="ID[,ID...]",
        help="recipient ids, comma-separated; may be repeated",
    )
    recipients.add_argument(
        "--to-file", metavar="PATH", help="file with one recipient id per line ('-': stdin)"
    )
    content = parser.add_mutually_exclusive_group(required=True)
    content.add_argument("--text", metavar="TEXT", help="send a text message")
    content.add_argument("--tip", metavar="TEXT", help="send a tip message")
    content.add_argument(
        "--custom", type=_json_text, metavar="JSON", help="send a custom message with this data"
    )
    content.add_argument(
        "--message",
        type=_message_json,
        metavar="JSON",
        help="send any imgate.v1.Message given in proto JSON, e.g. "
        '\'{"image": {"url": "https://...", "format": "jpg"}}\'',
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON Lines: each outcome, then the summary"
    )
    parser.add_argument(
        "--request-id", default="", metavar="ID", help="idempotency key (a retry is not sent twice)"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=None,
        metavar="SECONDS",
        help="deadline of the whole call (default: none)",
    )


def run_send(args: argparse.Namespace) -> int:
    """Run ``imgate send`` with parsed ``args``; returns the exit status."""
    problem = connection_problem(args)
    if problem:
        print(f"imgate send: {problem}", file=sys.stderr)
        return EXIT_INVALID_REQUEST
    if args.to_file is not None:
        return _send_file(args)
    recipients = [recipient for ids in args.to for recipient in ids]
    output = Output(
        sys.stdout,
        sys.stderr,
        json_lines=args.json,
        unique_recipients=len(dict.fromkeys(recipients)),
    )
    received = 0
    stream: BatchStream | None = None
    try:
        with (
            GatewayClient(args.target, **connection_options(args)) as client,
            client.batch_send(
                recipients,
                _message(args),
                backend=args.backend,
                sender_id=args.sender_id,
                request_id=args.request_id,
                timeout=args.timeout,
            ) as stream,
        ):
            with PauseWatch(client, args.backend, sys.stderr, "imgate send") as watch:
                for outcome in stream:
                    received += 1
                    watch.touch()
                    output.outcome(outcome)
            output.summary(stream.summary, stream.batch_id, stream.cursor)
    except GatewayError as error:
        output.done()
        _report_error(error, received)
        _resume_hint(stream if received else None, "imgate send")
        if isinstance(error, InvalidRequestError):
            return EXIT_INVALID_REQUEST
        return EXIT_CALL_FAILED
    except KeyboardInterrupt:
        output.done()
        print(f"imgate send: interrupted after {received} outcomes", file=sys.stderr)
        _resume_hint(stream if args.request_id else None, "imgate send")
        return EXIT_INTERRUPTED
    output.done()
    return EXIT_COMPLETED


def _send_file(args: argparse.Namespace) -> int:
    """``--to-file``: upload the list, submit the batch, watch it; as ``--to`` prints."""
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    # The deadline covers the upload too; as BatchSend's, no vendor call starts so late
    # that its outcome would miss it.
    send_before = None
    if args.timeout is not None:
        send_before = time.time() + args.timeout - SEND_BEFORE_MARGIN_S
    received = 0
    batch_id = ""
    output: Output | None = None
    stream: BatchStream | None = None
    try:
        with GatewayClient(args.target, **connection_options(args)) as client:
            recipients = upload_file(client, args, "imgate send", _remaining(deadline))
            if recipients is None:
                return EXIT_INVALID_REQUEST
            batch = client.submit_batch(
                recipients,
                _message(args),
                backend=args.backend,
                sender_id=args.sender_id,
                request_id=args.request_id,
                send_before=send_before,
                timeout=_remaining(deadline),
            )
            batch_id = batch.batch_id
            output = Output(
                sys.stdout, sys.stderr, json_lines=args.json, unique_recipients=batch.total
            )
            try:
                with (
                    client.watch_batch(batch_id, timeout=_remaining(deadline)) as stream,
                    PauseWatch(client, args.backend, sys.stderr, "imgate send") as watch,
                ):
                    for outcome in stream:
                        received += 1
                        watch.touch()
                        output.outcome(outcome)
                    output.summary(stream.summary, batch_id, stream.cursor)
            except KeyboardInterrupt:
                output.done()
                cursor = stream.cursor if stream is not None else ""
                _interrupted(client, args, batch_id, received, cursor)
                return EXIT_INTERRUPTED
    except GatewayError as error:
        if output is not None:
            output.done()
        _report_error(error, received)
        _resume_hint(stream, "imgate send", batch_id)
        if isinstance(error, InvalidRequestError):
            return EXIT_INVALID_REQUEST
        return EXIT_CALL_FAILED
    except KeyboardInterrupt:
        if output is not None:
            output.done()
        print("imgate send: interrupted before the batch was submitted", file=sys.stderr)
        return EXIT_INTERRUPTED
    output.done()
    return EXIT_COMPLETED


def _interrupted(
    client: GatewayClient, args: argparse.Namespace, batch_id: str, received: int, cursor: str
) -> None:
    """Ctrl-C while watching: like BatchSend, a send without --request-id stops with its
    caller; with one it goes on (and can be followed)."""
    print(f"imgate send: interrupted after {received} outcomes", file=sys.stderr)
    if args.request_id:
        print(
            f"imgate send: batch {batch_id} goes on; follow it with"
            f" `{_watch_command(batch_id, cursor)}`",
            file=sys.stderr,
        )
        return
    try:
        client.cancel_batch(batch_id, timeout=10)
    except GatewayError as error:
        print(f"imgate send: cannot cancel batch {batch_id}: {error.details}", file=sys.stderr)
        return
    print(
        f"imgate send: batch {batch_id} cancelled; unsent recipients end NOT_ATTEMPTED",
        file=sys.stderr,
    )


def _watch_command(batch_id: str, cursor: str) -> str:
    return f"imgate batch watch {batch_id}" + (f" --cursor {cursor}" if cursor else "")


def _resume_hint(stream: BatchStream | None, command: str, batch_id: str = "") -> None:
    """After a watch that ended early: how to read the rest (the outcomes printed so far
    are not printed again)."""
    if stream is None:
        return
    batch_id = stream.batch_id or batch_id
    if batch_id:
        print(
            f"{command}: the rest of batch {batch_id}: `{_watch_command(batch_id, stream.cursor)}`",
            file=sys.stderr,
        )


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.001, deadline - time.monotonic())


def _message(args: argparse.Namespace) -> gateway_pb2.Message:
    if args.text is not None:
        return text_message(args.text)
    if args.tip is not None:
        return tip_message(args.tip)
    if args.message is not None:
        message: gateway_pb2.Message = args.message
        return message
    return custom_message(args.custom)


def _message_json(value: str) -> gateway_pb2.Message:
    message = gateway_pb2.Message()
    try:
        json_format.Parse(value, message)
    except json_format.ParseError as error:
        raise argparse.ArgumentTypeError(f"not an imgate.v1.Message: {error}") from error
    if message.WhichOneof("content") is None:
        raise argparse.ArgumentTypeError("the message has no content (text, image, ...)")
    return message


def _id_list(value: str) -> list[str]:
    ids = [recipient.strip() for recipient in value.split(",") if recipient.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("expected at least one id")
    return ids


def _json_text(value: str) -> str:
    try:
        json.loads(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from error
    return value


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from error
    if not seconds > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return seconds


def _report_error(error: GatewayError, received: int) -> None:
    where = f" after {received} outcomes" if received else ""
    if isinstance(error, InvalidRequestError) and error.violations:
        # The status message repeats the violations; list them once, one per line.
        print(f"imgate send: the request is invalid{where}:", file=sys.stderr)
        for violation in error.violations:
            print(f"  {violation.field}: {violation.description}", file=sys.stderr)
        return
    message = f"imgate send: the call failed{where}: {error.code.name}: {error.details}"
    print(message, file=sys.stderr)
