"""``imgate send``: the command-line client of the gateway, built on ``imgate_client``.

One line per outcome (``alice  ACCEPTED``, ``ghost1  FAILED  RECIPIENT_NOT_FOUND  (70107:
...)``) then a ``key=value`` summary line; with ``--json``, JSON Lines instead: one object
per outcome, then ``{"summary": {...}}``. Exit 0 when the call completed whatever the
outcomes, 2 when the request was refused as invalid (or the command line is wrong), 1 when
the call failed otherwise (unreachable, deadline, server error).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import TextIO

from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage

from imgate._client_options import (
    add_connection_arguments,
    connection_options,
    connection_problem,
)
from imgate_client import (
    GatewayClient,
    GatewayError,
    InvalidRequestError,
    gateway_pb2,
    reason_name,
    state_name,
)
from imgate_client import custom as custom_message
from imgate_client import text as text_message
from imgate_client import tip as tip_message

DEFAULT_TARGET = "127.0.0.1:50051"
EXIT_COMPLETED = 0
EXIT_CALL_FAILED = 1
EXIT_INVALID_REQUEST = 2
EXIT_INTERRUPTED = 130
# Smaller batches finish before a progress bar would tell the user anything.
PROGRESS_MIN_RECIPIENTS = 1000


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
    try:
        recipients = _read_recipients(args)
    except OSError as error:
        print(f"imgate send: cannot read recipients: {error}", file=sys.stderr)
        return EXIT_INVALID_REQUEST
    output = _Output(
        sys.stdout,
        sys.stderr,
        json_lines=args.json,
        unique_recipients=len(dict.fromkeys(recipients)),
    )
    received = 0
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
            for outcome in stream:
                received += 1
                output.outcome(outcome)
            output.summary(stream.summary)
    except GatewayError as error:
        output.done()
        _report_error(error, received)
        if isinstance(error, InvalidRequestError):
            return EXIT_INVALID_REQUEST
        return EXIT_CALL_FAILED
    except KeyboardInterrupt:
        output.done()
        print(f"imgate send: interrupted after {received} outcomes", file=sys.stderr)
        return EXIT_INTERRUPTED
    output.done()
    return EXIT_COMPLETED


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the flush at exit cannot raise BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # not a real file (tests): nothing will flush it at exit
    finally:
        os.close(devnull)


def format_outcome(outcome: gateway_pb2.RecipientOutcome) -> str:
    """``alice  ACCEPTED`` or ``ghost1  FAILED  RECIPIENT_NOT_FOUND  (70107: detail)``."""
    fields = [outcome.recipient_id, state_name(outcome.state)]
    if outcome.reason:
        fields.append(reason_name(outcome.reason))
    explanation = ": ".join(part for part in (outcome.vendor_code, outcome.detail) if part)
    if explanation:
        # One line per outcome, whatever the vendor put in its message.
        fields.append(f"({' '.join(explanation.split())})")
    return "  ".join(fields)


def format_summary(summary: gateway_pb2.BatchSummary) -> str:
    """``total=3 accepted=2 failed=1 ...`` in the proto's field order."""
    return " ".join(
        f"{field.name}={getattr(summary, field.name)}" for field in summary.DESCRIPTOR.fields
    )


def _read_recipients(args: argparse.Namespace) -> list[str]:
    if args.to_file is None:
        return [recipient for ids in args.to for recipient in ids]
    if args.to_file == "-":
        # Decode stdin ourselves: a pipe from a spreadsheet export starts with a BOM too.
        buffer = getattr(sys.stdin, "buffer", None)
        if buffer is None:
            return _ids_from_lines(sys.stdin)
        return _ids_from_lines(io.TextIOWrapper(buffer, encoding="utf-8-sig"))
    # utf-8-sig: files saved by spreadsheet tools often start with a byte-order mark.
    with open(args.to_file, encoding="utf-8-sig") as lines:
        return _ids_from_lines(lines)


def _ids_from_lines(lines: Iterable[str]) -> list[str]:
    return [line.strip() for line in lines if line.strip()]


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


def _to_json(message: ProtoMessage) -> dict[str, object]:
    # Proto field names and every field, present or default, in the proto's order: the same
    # keys in the same order on every line.
    fields = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )
    return {field.name: fields[field.name] for field in message.DESCRIPTOR.fields}


class _Output:
    """Writes outcomes and the summary to ``stdout``, with a progress bar on a terminal."""

    def __init__(
        self, stdout: TextIO, stderr: TextIO, *, json_lines: bool, unique_recipients: int
    ) -> None:
        self._stdout = stdout
        self._json_lines = json_lines
        self._progress = (
            _ProgressBar(stderr, unique_recipients)
            if stderr.isatty() and unique_recipients > PROGRESS_MIN_RECIPIENTS
            else None
        )
        # Lines written to the same terminal would land on the bar's line: move it aside.
        self._bar_in_the_way = self._progress is not None and stdout.isatty()
        # Set when the reader of stdout left (`| head`): the batch goes on, unprinted.
        self._reader_gone = False

    def outcome(self, outcome: gateway_pb2.RecipientOutcome) -> None:
        if self._progress is not None:
            self._progress.advance()
        if self._json_lines:
            self._write(json.dumps(_to_json(outcome), ensure_ascii=False))
        else:
            self._write(format_outcome(outcome))

    def summary(self, summary: gateway_pb2.BatchSummary) -> None:
        self.done()
        if self._json_lines:
            self._write(json.dumps({"summary": _to_json(summary)}, ensure_ascii=False))
        else:
            self._write(format_summary(summary))

    def done(self) -> None:
        """Take the progress bar off the terminal for good and flush the outcomes written."""
        if self._progress is not None:
            self._progress.clear()
            self._progress = None
        self._bar_in_the_way = False
        # Outcomes already received come out before any error message that follows.
        if not self._reader_gone:
            try:
                self._stdout.flush()
            except BrokenPipeError:
                self._leave_quietly()

    def _write(self, line: str) -> None:
        if self._reader_gone:
            return
        try:
            if self._bar_in_the_way and self._progress is not None:
                self._progress.clear()
                self._stdout.write(line + "\n")
                self._stdout.flush()
                self._progress.draw()
            else:
                self._stdout.write(line + "\n")
        except BrokenPipeError:
            self._leave_quietly()

    def _leave_quietly(self) -> None:
        # Cancelling would leave the rest of the recipients unsent: the reader closing a
        # pipe is no reason to stop a send half-way. Keep consuming, print nothing more.
        self._reader_gone = True
        _silence_stdout()


class _ProgressBar:
    """``[#####     ]  52% 5200/10000  1,730/s  ETA 0:02``, redrawn in place on a terminal."""

    WIDTH = 30

    def __init__(
        self, terminal: TextIO, total: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._terminal = terminal
        self._total = total
        self._done = 0
        self._drawn_percent = -1
        self._clock = clock
        self._started = clock()

    def advance(self) -> None:
        self._done += 1
        # Redraw only when the number changes: a terminal is slow next to a fast stream.
        if self._percent() != self._drawn_percent:
            self.draw()

    def draw(self) -> None:
        percent = self._percent()
        filled = self.WIDTH * min(self._done, self._total) // self._total
        bar = "#" * filled + " " * (self.WIDTH - filled)
        line = f"\r[{bar}] {percent:3d}% {self._done}/{self._total}{self._rate_and_eta()}"
        self._terminal.write(line)
        self._terminal.flush()
        self._drawn_percent = percent

    def clear(self) -> None:
        if self._drawn_percent >= 0:
            self._terminal.write("\r\x1b[K")
            self._terminal.flush()
        self._drawn_percent = -1

    def _percent(self) -> int:
        return min(100, self._done * 100 // self._total)

    def _rate_and_eta(self) -> str:
        elapsed = self._clock() - self._started
        if self._done == 0 or elapsed <= 0:
            return "  -/s  ETA -:--"
        rate = self._done / elapsed
        left = max(0, self._total - self._done) / rate
        minutes, seconds = divmod(round(left), 60)
        return f"  {rate:,.0f}/s  ETA {minutes}:{seconds:02d}"
