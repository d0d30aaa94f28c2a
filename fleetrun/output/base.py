"""The renderer interface, and the text helpers every renderer shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fleetrun.models import Host, HostResult, Outcome, OutputLine, RunSummary


class Renderer(Protocol):
    """Called only from the collector thread, in event order; it owns nothing but its streams."""

    wants_lines: bool  # True: the runner splits output into OutputLine events as it arrives

    def on_start(self, hosts: Sequence[Host]) -> None: ...

    def on_started(self, host: Host) -> None: ...

    def on_line(self, line: OutputLine) -> None: ...

    def on_result(self, result: HostResult) -> None: ...

    def on_finish(self, summary: RunSummary) -> None: ...


def decode(data: bytes) -> str:
    """Bytes from a remote host for display: never fails, undecodable bytes become U+FFFD."""
    return data.decode("utf-8", errors="replace")


def summary_line(summary: RunSummary) -> str:
    """'12 ok, 1 failed, 2 unreachable in 3.4 s' — outcomes in a fixed order, zero counts left out."""
    parts = [f"{summary.counts[o]} {o.value}" for o in Outcome if summary.counts.get(o)]
    text = ", ".join(parts) if parts else "no hosts"
    suffix = " (interrupted)" if summary.interrupted else ""
    return f"{text} in {summary.elapsed:.1f} s{suffix}"


def status_text(result: HostResult) -> str:
    """The status word, with the exit code or signal for a failed command."""
    if result.outcome is Outcome.FAILED and result.signal:
        return f"failed (SIG{result.signal})"
    if result.changed is not None and result.outcome is Outcome.OK:
        return "changed" if result.changed else "unchanged"
    return result.outcome.value
