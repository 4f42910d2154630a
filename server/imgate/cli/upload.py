"""``--to-file``: stream a file of recipient ids (``-``: stdin) through UploadRecipients,
a line at a time, with a progress bar on a terminal."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Never, TextIO

from tqdm import tqdm

from imgate.cli.output import bar_size
from imgate_client import GatewayClient, GatewayError, gateway_pb2


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
    columns, rows = bar_size(terminal)
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
