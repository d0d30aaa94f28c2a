"""The renderer interface, and the text helpers every renderer shares."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Protocol, TextIO

from fleetrun.models import Host, HostResult, Outcome, OutputLine, RunSummary


class Renderer(Protocol):
    """Called only from the collector thread, in event order; it owns nothing but its streams."""

    wants_lines: bool  # True: the runner splits output into OutputLine events as it arrives
    wants_started: bool  # True: on_started is called as each host's work starts (else no such event is made)

    def on_start(self, hosts: Sequence[Host]) -> None: ...

    def on_started(self, host: Host) -> None: ...

    def on_line(self, line: OutputLine) -> None: ...

    def on_result(self, result: HostResult) -> None: ...

    def on_finish(self, summary: RunSummary) -> None: ...


class OutputSink(Protocol):
    """Gets one host's raw output chunks as they arrive, on its worker thread; closed once at the end."""

    def write(self, stream: str, chunk: bytes) -> None: ...

    def close(self) -> None: ...


SinkFactory = Callable[[Host], OutputSink]


def decode(data: bytes) -> str:
    """Bytes from a remote host for display: never fails, undecodable bytes become U+FFFD."""
    return data.decode("utf-8", errors="replace")


def summary_line(summary: RunSummary) -> str:
    """'12 ok, 1 failed, 2 unreachable in 3.4 s' — outcomes in a fixed order, zero counts left out."""
    parts = [f"{summary.counts[o]} {o.value}" for o in Outcome if summary.counts.get(o)]
    if summary.changed or summary.unchanged:  # push/pull: what "ok" meant
        pairs = ((summary.changed, "changed"), (summary.unchanged, "unchanged"))
        parts[0] += " (" + ", ".join(f"{n} {word}" for n, word in pairs if n) + ")"  # ok comes first
    text = ", ".join(parts) if parts else "no hosts"
    suffix = " (interrupted)" if summary.interrupted else ""
    if summary.stopped is not None:
        suffix += f"; {summary.stopped.message}"
    return f"{text} in {summary.elapsed:.1f} s{suffix}"


def status_text(result: HostResult) -> str:
    """The status word, with the exit code or signal for a failed command."""
    if result.outcome is Outcome.FAILED and result.signal:
        return f"failed (SIG{result.signal})"
    if result.changed is not None and result.outcome is Outcome.OK:
        return "changed" if result.changed else "unchanged"
    return result.outcome.value


# SGR codes per outcome: green for ok, red for what needs action, yellow for what may pass on a retry.
_COLOURS: dict[Outcome, str] = {
    Outcome.OK: "32",
    Outcome.FAILED: "31",
    Outcome.TIMEOUT: "33",
    Outcome.UNREACHABLE: "35",
    Outcome.AUTH_FAILED: "35",
    Outcome.HOST_KEY: "1;31",
    Outcome.CANCELLED: "2",
    Outcome.NOT_STARTED: "2",
}


def use_colour(stream: TextIO) -> bool:
    """Colours only on a terminal, and never when NO_COLOR is set and not empty (https://no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        return False


def paint(text: str, outcome: Outcome, colour: bool) -> str:
    """`text` in the outcome's colour when `colour` is on."""
    return f"\x1b[{_COLOURS[outcome]}m{text}\x1b[0m" if colour else text


def aligned(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain left-aligned columns under a dashed rule, like tabulate's "simple" format.

    For listings that need no wrapping: at 1000 rows tabulate's type inference costs more than the rest of
    `fleetrun hosts` together.
    """
    widths = [max([len(header), *(len(row[i]) for row in rows)]) for i, header in enumerate(headers)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
             for line in (headers, ["-" * width for width in widths], *rows)]
    return "\n".join(lines) + "\n"
