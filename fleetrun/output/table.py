"""--format table (default): one row per host in inventory order, then the summary line."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from fleetrun.models import Host, HostResult, Outcome, OutputLine, RunSummary
from fleetrun.output.base import decode, paint, status_text, summary_line

EXCERPT_LINES = 3  # lines of output shown per host without -v
EXCERPT_WIDTH = 120  # characters per shown line without -v; the full text is in -v, --out-dir and JSON
MIN_OUTPUT_WIDTH = 20  # on a narrow terminal the output column keeps this much and the row wraps instead


@dataclass(frozen=True)
class _Row:
    order: int
    outcome: Outcome
    cells: tuple[str, str, str, str, str]


def excerpt(text: str, lines: int, width: int) -> str:
    """The first `lines` lines, each cut to `width`, with a count of what was left out."""
    all_lines = text.rstrip("\n").splitlines()
    shown = [line if len(line) <= width else line[: width - 1] + "…" for line in all_lines[:lines]]
    if len(all_lines) > lines:
        shown.append(f"… ({len(all_lines) - lines} more lines)")
    return "\n".join(shown)


def fit(text: str, width: int, *, wrap: bool) -> str:
    """Each line of `text` cut to `width` (with …), or with `wrap` broken into `width`-wide pieces."""
    lines: list[str] = []
    for line in text.split("\n"):
        if len(line) <= width:
            lines.append(line)
        elif wrap:
            lines += [line[start: start + width] for start in range(0, len(line), width)]
        else:
            lines.append(line[: width - 1] + "…")
    return "\n".join(lines)


class TableRenderer:
    wants_lines = False
    wants_started = False

    def __init__(self, out: TextIO, *, verbose: bool = False, width: int | None = None, colour: bool = False) -> None:
        self.out = out
        self.verbose = verbose
        self.width = width  # the terminal's columns: outputs are fitted to them; None (not a TTY): as they are
        self.colour = colour
        self.order: dict[str, int] = {}
        # Only the rendered cells are kept, not the results: memory stays small at 1000 hosts.
        self.rows: list[_Row] = []

    def on_start(self, hosts: Sequence[Host]) -> None:
        self.order = {host.name: index for index, host in enumerate(hosts)}

    def on_started(self, host: Host) -> None:
        pass

    def on_line(self, line: OutputLine) -> None:
        pass

    def on_result(self, result: HostResult) -> None:
        exit_text = "" if result.exit_code is None else str(result.exit_code)
        cells = (result.host.name, status_text(result), exit_text, f"{result.duration:.1f}s", self.output_cell(result))
        self.rows.append(_Row(self.order.get(result.host.name, len(self.order)), result.outcome, cells))

    def output_cell(self, result: HostResult) -> str:
        parts: list[str] = []
        if result.error and result.outcome is not Outcome.OK:
            parts.append(result.error)
        if self.verbose:
            parts += [decode(result.output("stdout")).rstrip("\n"), decode(result.output("stderr")).rstrip("\n")]
            parts += list(result.details)
            if result.stdout_truncated or result.stderr_truncated:
                parts.append("[output truncated at --max-output]")
        else:
            # The whole stream, read back if it was spilled (one host at a time): the excerpt counts its lines.
            stdout = excerpt(decode(result.output("stdout")), EXCERPT_LINES, EXCERPT_WIDTH)
            # A failing host's stderr usually says why; an ok host's is noise at fleet scale.
            stderr = "" if result.ok else excerpt(decode(result.output("stderr")), EXCERPT_LINES, EXCERPT_WIDTH)
            parts += [stdout, stderr]
            if result.stdout_truncated or result.stderr_truncated:
                parts.append("[truncated: see -v or --format json]")
        return "\n".join(part for part in parts if part)

    def on_finish(self, summary: RunSummary) -> None:
        from tabulate import tabulate  # imported here: `fleetrun --help` should not pay for it

        headers = ("HOST", "STATUS", "EXIT", "TIME", "OUTPUT")
        ordered = sorted(self.rows, key=lambda row: row.order)
        output_width = None
        if self.width is not None and ordered:
            # tabulate's "simple" format pads headers by 2 and puts 2 spaces between columns; OUTPUT gets the rest.
            used = sum(max(len(headers[i]) + 2, *(len(row.cells[i]) for row in ordered)) + 2 for i in range(4))
            output_width = max(self.width - used, MIN_OUTPUT_WIDTH)
        rows = []
        for row in ordered:
            name, status, exit_text, duration, output = row.cells
            if output_width is not None:
                output = fit(output, output_width, wrap=self.verbose)  # -v keeps every character
            rows.append((name, paint(status, row.outcome, self.colour), exit_text, duration, output))
        if rows:
            # preserve_whitespace: tabulate strips each cell, which ate the first line's indentation and left
            # `uptime`, `ps` and `df` output misaligned ("   a" then "   b" came out as "a" then "   b").
            self.out.write(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True,
                                    preserve_whitespace=True) + "\n")
        self.out.write(summary_line(summary) + "\n")
        self.out.flush()
