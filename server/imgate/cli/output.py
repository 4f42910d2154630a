"""What ``imgate send`` and ``imgate batch`` print: outcome and summary lines (plain or
JSON Lines), the sending progress bar on a terminal, and a quiet exit when the reader of
standard output goes away."""

from __future__ import annotations

import io
import json
import os
import sys
from typing import TextIO

from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage
from tqdm import tqdm

from imgate_client import gateway_pb2, reason_name, state_name

# Smaller batches finish before a progress bar would tell the user anything.
PROGRESS_MIN_RECIPIENTS = 1000


def bar_size(terminal: TextIO) -> tuple[int | None, int | None]:
    """tqdm's (ncols, nrows) for `terminal`: 80x24 when it reports no size (a fresh pty
    says 0x0, and tqdm would then draw nothing at all)."""
    try:
        size = os.get_terminal_size(terminal.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return None, None  # not a real terminal: tqdm's own defaults
    return size.columns or 80, size.lines or 24


def silence_stdout() -> None:
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


def json_summary(summary: gateway_pb2.BatchSummary, batch_id: str, cursor: str) -> str:
    """The ``--json`` summary line: the summary, the batch id and the cursor after the
    last outcome (``imgate batch watch BATCH_ID --cursor C`` reads what comes later)."""
    line = {"summary": to_json(summary), "batch_id": batch_id, "cursor": cursor}
    return json.dumps(line, ensure_ascii=False)


def to_json(message: ProtoMessage) -> dict[str, object]:
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


class Output:
    """Writes outcomes and the summary to ``stdout``, with a progress bar on a terminal."""

    def __init__(
        self, stdout: TextIO, stderr: TextIO, *, json_lines: bool, unique_recipients: int
    ) -> None:
        self._stdout = stdout
        self._json_lines = json_lines
        columns, rows = bar_size(stderr)
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
            self._write(json.dumps(to_json(outcome), ensure_ascii=False))
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
        silence_stdout()
