"""--format stream: 'host | line' as lines arrive; remote stdout to stdout, everything else to stderr."""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import TextIO

from fleetrun.models import Host, HostResult, Outcome, OutputLine, RunSummary
from fleetrun.output.base import decode, status_text, summary_line


class StreamRenderer:
    wants_lines = True
    wants_started = False

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err
        self.width = 0
        self._last: TextIO | None = None  # the stream written last

    def on_start(self, hosts: Sequence[Host]) -> None:
        # Aligned prefixes make a 500-host stream scannable; cap so one long name can't push text away.
        self.width = min(max((len(h.name) for h in hosts), default=0), 40)

    def on_started(self, host: Host) -> None:
        pass

    def on_line(self, line: OutputLine) -> None:
        target = self._switch(self.out if line.stream == "stdout" else self.err)
        prefix = f"{line.host.name:<{self.width}} | "
        if line.spill is None:
            # One write per line: the collector is the only writer, so lines are never torn or interleaved.
            target.write(f"{prefix}{decode(line.text)}\n")
            return
        # A line too long for memory comes from its spill file in pieces; nothing else is written meanwhile.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        target.write(prefix)
        for chunk in line.chunks():
            target.write(decoder.decode(chunk))
        target.write(decoder.decode(b"", final=True) + "\n")

    def on_result(self, result: HostResult) -> None:
        if result.outcome is not Outcome.OK:
            detail = result.error or (f"exit {result.exit_code}" if result.exit_code is not None else "")
            self._switch(self.err).write(f"{result.host.name:<{self.width}} ! {status_text(result)}: {detail}\n")
        self.out.flush()

    def on_finish(self, summary: RunSummary) -> None:
        self.out.flush()
        self.err.write(summary_line(summary) + "\n")
        self.err.flush()

    def _switch(self, target: TextIO) -> TextIO:
        """Flush the other stream before writing to this one: when both go to one file (2>&1), a long stdout
        line half in its buffer would otherwise have a stderr line land in the middle of it."""
        if self._last is not None and self._last is not target:
            self._last.flush()
        self._last = target
        return target
