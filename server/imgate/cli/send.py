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
import contextlib
import io
import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Never, TextIO

from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage
from tqdm import tqdm

from imgate.cli.options import (
    add_connection_arguments,
    connection_options,
    connection_problem,
)
from imgate_client import (
    BatchStream,
    GatewayClient,
    GatewayError,
    InvalidRequestError,
    backend_state_name,
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
# --timeout with --to-file: the last vendor calls start this long before the deadline, so
# that their outcomes still reach the watch (the gateway's margin for BatchSend is 0.25 s).
SEND_BEFORE_MARGIN_S = 0.5
# With no outcome for this long, ask the gateway whether the backend is paused, and say why
# on stderr (CONTRACT §11 rule 32): a send must never sit silent for minutes.
QUIET_BEFORE_ASKING_S = 3.0
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
    output = _Output(
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
    output: _Output | None = None
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
            output = _Output(
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


class PauseWatch:
    """While a send waits with no outcome for `QUIET_BEFORE_ASKING_S`, asks ListBackends
    whether its backend is paused or blocked, and says so on stderr, once per pause."""

    def __init__(self, client: GatewayClient, backend: str, stderr: TextIO, command: str):
        self._client = client
        self._backend = backend
        self._stderr = stderr
        self._command = command
        self._last_outcome = time.monotonic()
        self._said: tuple[int, str] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pause-watch", daemon=True)

    def touch(self) -> None:
        """An outcome arrived: the send is moving."""
        self._last_outcome = time.monotonic()

    def __enter__(self) -> PauseWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=1)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            if time.monotonic() - self._last_outcome >= QUIET_BEFORE_ASKING_S:
                self.say_now()

    def say_now(self) -> None:
        """Ask once, and say why the backend is not sending if it is not."""
        try:
            backends = self._client.list_backends(timeout=2)
        except GatewayError:
            return  # only a hint: the command itself reports what matters
        name = self._backend or backends.default_backend
        for backend in backends.backends:
            if backend.name == name:
                self._say(backend)

    def _say(self, backend: gateway_pb2.Backend) -> None:
        if backend.state in (
            gateway_pb2.BACKEND_STATE_UNSPECIFIED,
            gateway_pb2.BACKEND_STATE_SERVING,
        ):
            self._said = None
            return
        until = backend.paused_until if backend.HasField("paused_until") else None
        if backend.HasField("blocked_until") and until is None:
            until = backend.blocked_until
        state = backend_state_name(backend.state).lower()
        when = ""
        if until is not None:
            left = max(0.0, until.ToMicroseconds() / 1e6 - time.time())
            clock = time.strftime("%H:%M:%S", time.localtime(until.seconds))
            when = f" until {clock} ({left:.0f}s from now)"
        reason = backend.pause_reason or "no reason given"
        line = f"{self._command}: waiting: backend {backend.name} is {state}{when}: {reason}"
        if (backend.state, reason) != self._said:
            self._said = (backend.state, reason)
            print(line, file=self._stderr, flush=True)


def _remaining(deadline: float | None) -> float | None:
    if deadline is None:
        return None
    return max(0.001, deadline - time.monotonic())


def upload_file(
    client: GatewayClient, args: argparse.Namespace, command: str, timeout: float | None
) -> gateway_pb2.RecipientList | None:
    """Stream ``args.to_file`` through UploadRecipients (a bar on a terminal); None when
    the file cannot be read (said on stderr). Raises GatewayError when the call fails."""
    source = _FileIds(args.to_file, _upload_bar(sys.stderr, args.to_file))
    try:
        recipients = client.upload_recipients(source, timeout=timeout)
    except GatewayError:
        if source.error is None:
            raise
        recipients = None
    finally:
        source.close()
    if source.error is not None:
        print(f"{command}: cannot read recipients: {source.error}", file=sys.stderr)
        return None
    return recipients


def _upload_bar(terminal: TextIO, path: str) -> tqdm[Never] | None:
    if not terminal.isatty():
        return None
    size = None
    if path != "-":
        with contextlib.suppress(OSError):
            size = os.path.getsize(path) or None
    # Shown after half a second: a small file is uploaded before a bar would help.
    columns, rows = _bar_size(terminal)
    return tqdm(
        desc="upload",
        unit=" ids",
        file=terminal,
        leave=False,
        delay=0.5,
        total=size,
        ncols=columns,
        nrows=rows,
    )


def _bar_size(terminal: TextIO) -> tuple[int | None, int | None]:
    """tqdm's (ncols, nrows) for `terminal`: 80x24 when it reports no size (a fresh pty
    says 0x0, and tqdm would then draw nothing at all)."""
    try:
        size = os.get_terminal_size(terminal.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return None, None  # not a real terminal: tqdm's own defaults
    return size.columns or 80, size.lines or 24


class _FileIds:
    """The ids of a file (``-``: stdin), read a line at a time as the upload asks for them.

    With a bar: its count is ids read, its total an estimate from the bytes read so far
    and the file's size (so the rate and ETA are of ids). A read error stops the upload
    (which then fails) and is kept in ``error``.
    """

    _BAR_EVERY = 4096

    def __init__(self, path: str, bar: tqdm[Never] | None) -> None:
        self._path = path
        self._bar = bar
        self._size = bar.total if bar is not None else None
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self._ids()
        except (OSError, UnicodeDecodeError) as error:
            self.error = error
            raise

    def _ids(self) -> Iterator[str]:
        if self._path == "-":
            # Decode stdin ourselves: a pipe from a spreadsheet export starts with a BOM too.
            lines: Iterable[bytes] = getattr(sys.stdin, "buffer", None) or (
                line.encode() for line in sys.stdin
            )
            yield from self._decoded(lines)
            return
        with open(self._path, "rb") as file:
            yield from self._decoded(file)

    def _decoded(self, lines: Iterable[bytes]) -> Iterator[str]:
        bar, size = self._bar, self._size
        count = bytes_read = 0
        first = True
        for raw in lines:
            bytes_read += len(raw)
            line = raw.decode("utf-8")
            if first:
                # utf-8-sig: files saved by spreadsheet tools often start with a BOM.
                line, first = line.removeprefix("\ufeff"), False
            recipient = line.strip()
            if not recipient:
                continue
            yield recipient
            count += 1
            if bar is not None and count % self._BAR_EVERY == 0:
                if size:
                    bar.total = max(count, round(count * size / bytes_read))
                bar.update(self._BAR_EVERY)
        if bar is not None:
            bar.total = count
            bar.update(count - bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


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


def json_summary(summary: gateway_pb2.BatchSummary, batch_id: str, cursor: str) -> str:
    """The ``--json`` summary line: the summary, the batch id and the cursor after the
    last outcome (``imgate batch watch BATCH_ID --cursor C`` reads what comes later)."""
    line = {"summary": _to_json(summary), "batch_id": batch_id, "cursor": cursor}
    return json.dumps(line, ensure_ascii=False)


def _to_json(message: ProtoMessage) -> dict[str, object]:
    # Proto field names and every field, present or default, in the proto's order: the same
    # keys in the same order on every line (an unset message field, such as a running
    # batch's summary, is null).
    fields = json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )
    return {field.name: fields.get(field.name) for field in message.DESCRIPTOR.fields}


class _Output:
    """Writes outcomes and the summary to ``stdout``, with a progress bar on a terminal."""

    def __init__(
        self, stdout: TextIO, stderr: TextIO, *, json_lines: bool, unique_recipients: int
    ) -> None:
        self._stdout = stdout
        self._json_lines = json_lines
        columns, rows = _bar_size(stderr)
        self._progress = (
            tqdm(
                desc="send",
                total=unique_recipients,
                unit=" rcpt",
                file=stderr,
                leave=False,
                mininterval=0.2,
                ncols=columns,
                nrows=rows,
            )
            if stderr.isatty() and unique_recipients > PROGRESS_MIN_RECIPIENTS
            else None
        )
        # Lines written to the same terminal would land on the bar's line: move it aside.
        self._bar_in_the_way = self._progress is not None and stdout.isatty()
        # Set when the reader of stdout left (`| head`): the batch goes on, unprinted.
        self._reader_gone = False

    def outcome(self, outcome: gateway_pb2.RecipientOutcome) -> None:
        if self._progress is not None:
            self._progress.update()
        if self._json_lines:
            self._write(json.dumps(_to_json(outcome), ensure_ascii=False))
        else:
            self._write(format_outcome(outcome))

    def summary(self, summary: gateway_pb2.BatchSummary, batch_id: str, cursor: str) -> None:
        self.done()
        if self._json_lines:
            self._write(json_summary(summary, batch_id, cursor))
        else:
            self._write(format_summary(summary))

    def done(self) -> None:
        """Take the progress bar off the terminal for good and flush the outcomes written."""
        if self._progress is not None:
            self._progress.close()
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
                self._progress.refresh()
            else:
                self._stdout.write(line + "\n")
        except BrokenPipeError:
            self._leave_quietly()

    def _leave_quietly(self) -> None:
        # Cancelling would leave the rest of the recipients unsent: the reader closing a
        # pipe is no reason to stop a send half-way. Keep consuming, print nothing more.
        self._reader_gone = True
        _silence_stdout()
