"""--format stream: 'host | line' as lines arrive; remote stdout to stdout, everything else to stderr."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from fleetrun.models import Host, HostResult, Outcome, OutputLine, RunSummary
from fleetrun.output.base import decode, status_text, summary_line


class StreamRenderer:
    wants_lines = True

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err
        self.width = 0

    def on_start(self, hosts: Sequence[Host]) -> None:
        # Aligned prefixes make a 500-host stream scannable; cap so one long name can't push text away.
        self.width = min(max((len(h.name) for h in hosts), default=0), 40)

    def on_started(self, host: Host) -> None:
        pass

    def on_line(self, line: OutputLine) -> None:
        target = self.out if line.stream == "stdout" else self.err
        # One write per line: the collector is the only writer, so lines are never torn or interleaved.
        target.write(f"{line.host.name:<{self.width}} | {decode(line.text).rstrip(chr(10))}\n")

    def on_result(self, result: HostResult) -> None:
        if result.outcome is not Outcome.OK:
            detail = result.error or (f"exit {result.exit_code}" if result.exit_code is not None else "")
            self.err.write(f"{result.host.name:<{self.width}} ! {status_text(result)}: {detail}\n")
        self.out.flush()

    def on_finish(self, summary: RunSummary) -> None:
        self.out.flush()
        self.err.write(summary_line(summary) + "\n")
        self.err.flush()
