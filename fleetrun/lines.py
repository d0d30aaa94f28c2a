"""One stream's output chunks cut into whole lines for --format stream: batched, and memory-bounded by spilling."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from fleetrun.models import Host, OutputLine

# Bytes of one unfinished line kept in memory; past this the line goes on in a private temporary file, and is
# passed on whole when its newline (or the end of the stream) arrives. So memory stays bounded by about this
# much per stream per host, however long a line is, and a line is never cut where a chunk happened to end.
MAX_LINE = 64 * 1024
# Lines travel to the collector in batches of about this many bytes: few enough queue events to keep up with
# hundreds of hosts printing flat out, small enough that a full event queue still holds little memory.
LINE_BATCH = 8 * 1024


@dataclass(frozen=True)
class Lines:
    """The whole lines one chunk completed: one queue event per chunk, not per line, keeps the collector
    ahead of hundreds of hosts printing as fast as they can (a put/get per line costs a thread switch)."""

    lines: tuple[OutputLine, ...]

    def release(self) -> None:
        """Close the spill files of long lines, once every renderer had them."""
        for line in self.lines:
            if line.spill is not None:
                line.spill.close()


class LineSplitter:
    """Turns one stream's chunks into whole lines, however long; called on the host's worker thread."""

    def __init__(self, host: Host, stream: str, emit: Callable[[object], None], *, max_line: int = MAX_LINE) -> None:
        self.host, self.stream, self.emit = host, stream, emit
        self.max_line = max_line
        self.pending = b""  # the unfinished line, while it is short
        self.spill: BinaryIO | None = None  # the unfinished line, once it is long

    def feed(self, chunk: bytes) -> None:
        parts = chunk.split(b"\n")
        rest = parts.pop()
        if parts:
            lines = [self._complete(parts[0])]
            lines += [OutputLine(self.host, self.stream, part) for part in parts[1:]]
            self._emit(lines)
        self._keep(rest)

    def flush(self) -> None:
        """The end of the stream: a last line without a newline is still a line."""
        if self.pending or self.spill is not None:
            self._emit([self._complete(b"")])

    def _complete(self, tail: bytes) -> OutputLine:
        """The unfinished line, ended by `tail`, as a whole line; the splitter starts a new one."""
        spill, self.spill = self.spill, None
        if spill is not None:
            if self._write(spill, tail):
                return OutputLine(self.host, self.stream, b"", spill=spill)
            self._emit([OutputLine(self.host, self.stream, b"", spill=spill)])  # disk full: what it holds
        line = OutputLine(self.host, self.stream, self.pending + tail)
        self.pending = b""
        return line

    def _keep(self, rest: bytes) -> None:
        """Hold the start of a line that has no newline yet: in memory while short, else in the spill file."""
        if self.spill is not None:
            if not self._write(self.spill, rest):  # disk full: pass on what the file holds, go on in memory
                self._emit([OutputLine(self.host, self.stream, b"", spill=self.spill)])
                self.spill = None
                self._hold(rest)
            return
        if len(self.pending) + len(rest) <= self.max_line:
            self.pending += rest
            return
        spill = self._open_spill(self.pending + rest)
        if spill is not None:
            self.spill, self.pending = spill, b""
        else:
            self._hold(rest)

    def _hold(self, rest: bytes) -> None:
        """Without a spill file (no room for one), the line is passed on in pieces of max_line bytes."""
        self.pending += rest
        while len(self.pending) > self.max_line:
            self._emit([OutputLine(self.host, self.stream, self.pending[: self.max_line])])
            self.pending = self.pending[self.max_line:]

    def _open_spill(self, data: bytes) -> BinaryIO | None:
        try:
            # Mode 0600 and already unlinked: private, and gone with the process whatever happens.
            spill = tempfile.TemporaryFile(prefix="fleetrun-line-")  # noqa: SIM115 (closed by Lines.release)
        except OSError:
            return None
        if self._write(spill, data):
            return spill
        spill.close()
        return None

    @staticmethod
    def _write(spill: BinaryIO, data: bytes) -> bool:
        try:
            spill.write(data)
            return True
        except OSError:
            return False

    def _emit(self, lines: list[OutputLine]) -> None:
        batch: list[OutputLine] = []
        size = 0
        for line in lines:
            batch.append(line)
            # A spilled line ends its batch: its file is held open only until the collector has written it.
            size += len(line.text) + 1 if line.spill is None else LINE_BATCH
            if size >= LINE_BATCH:
                self.emit(Lines(tuple(batch)))
                batch, size = [], 0
        if batch:
            self.emit(Lines(tuple(batch)))
