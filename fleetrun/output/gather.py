"""--format gather: hosts with identical stdout and status folded into one block, largest first; --diff."""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from fleetrun.hostnames import fold
from fleetrun.models import Host, HostResult, Outcome, OutputLine, RunSummary
from fleetrun.output.base import decode, paint, status_text, summary_line
from fleetrun.spill import Spill

STDERR_TAIL_LINES = 3  # stderr lines shown per failing host without -v; all of it is in -v, --out-dir, JSON
STDERR_TAIL_WIDTH = 200


@dataclass
class Note:
    """An error line, stderr and push/pull details that some hosts of a group share."""

    error: str
    stderr: str
    details: str = ""
    hosts: list[str] = field(default_factory=list)


@dataclass
class Group:
    """Hosts whose stdout and status are identical; the stdout is kept once, for the first of them."""

    outcome: Outcome
    status: str
    stdout: bytes
    truncated: bool
    first: int  # inventory position of the first host, so equal-sized groups keep a stable order
    hosts: list[str] = field(default_factory=list)
    notes: dict[bytes, Note] = field(default_factory=dict)
    # A long stdout stays in its spill file (fleetrun.spill) until the end; `stdout` is then only its start.
    file: Spill | None = None

    def text(self) -> str:
        """The group's whole stdout, decoded."""
        return decode(self.file.read() if self.file is not None else self.stdout)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def group_status(result: HostResult) -> str:
    """The status a group shares: 'ok', 'failed (exit 3)', 'failed (SIGKILL)', 'timeout'…"""
    text = status_text(result)
    if result.outcome is Outcome.FAILED and not result.signal and result.exit_code is not None:
        return f"{text} (exit {result.exit_code})"
    return text


def stderr_tail(text: str, lines: int = STDERR_TAIL_LINES, width: int = STDERR_TAIL_WIDTH) -> str:
    """The last `lines` lines, each cut to `width`: the end of stderr usually says why a command failed."""
    tail = text.rstrip("\n").splitlines()[-lines:]
    return "\n".join(line if len(line) <= width else line[: width - 1] + "…" for line in tail)


class Grouper:
    """Folds results into groups as they arrive, keyed by a hash: one copy of each distinct output is kept,
    however many hosts printed it, so memory grows with the number of different outputs, not of hosts."""

    def __init__(self, order: Mapping[str, int] | None = None, *, full_stderr: bool = False) -> None:
        self.order = dict(order or {})
        self.full_stderr = full_stderr
        self._groups: dict[bytes, Group] = {}

    def add(self, result: HostResult) -> None:
        status = group_status(result)
        digest = hashlib.sha256()
        digest.update(f"{result.outcome.value}\0{status}\0{result.stdout_truncated}\0".encode())
        if result.stdout_file is not None:
            for chunk in result.stdout_file.chunks():  # a spilled output: hashed piece by piece from its file
                digest.update(chunk)
        else:
            digest.update(result.stdout)  # hashed in place: no second copy of a large output
        key = digest.digest()
        name = result.host.name
        group = self._groups.get(key)
        if group is None:
            position = self.order.get(name, len(self.order) + len(self._groups))
            group = Group(result.outcome, status, result.stdout, result.stdout_truncated, position,
                          file=result.stdout_file.dup() if result.stdout_file is not None else None)
            self._groups[key] = group
        group.hosts.append(name)
        self._add_note(group, result)

    def _add_note(self, group: Group, result: HostResult) -> None:
        # An ok host's stderr is noise at fleet scale (as in the table); -v shows it, and all of a failing one's.
        error = result.error if result.error and not result.ok else ""
        stderr = ""
        if self.full_stderr:
            stderr = decode(result.output("stderr")).rstrip("\n")
        elif not result.ok:
            stderr = stderr_tail(decode(result.output("stderr")))
        details = "\n".join(result.details) if self.full_stderr else ""  # push/pull: one line per file, with -v
        if not error and not stderr and not details:
            return
        key = hashlib.sha256(f"{error}\0{stderr}\0{details}".encode()).digest()
        group.notes.setdefault(key, Note(error, stderr, details)).hosts.append(result.host.name)

    def groups(self) -> list[Group]:
        """Largest group first; equal sizes in inventory order. Host names inside a group in inventory order."""
        found = sorted(self._groups.values(), key=lambda group: (-len(group.hosts), group.first))
        for group in found:
            group.hosts.sort(key=self._position)
            for note in group.notes.values():
                note.hosts.sort(key=self._position)
            group.notes = dict(sorted(group.notes.items(), key=lambda item: self._position(item[1].hosts[0])))
        return found

    def _position(self, name: str) -> int:
        return self.order.get(name, len(self.order))


def unified_diff(old: Sequence[str], new: Sequence[str], old_label: str, new_label: str,
                 context: int = 3) -> Iterator[str]:
    """Unified diff lines (without newlines) from `old` to `new`; nothing when they are equal.

    The common head and tail are cut off before difflib sees them, so two 100,000-line outputs that
    differ in a few lines cost a linear scan, not a quadratic match.
    """
    limit = min(len(old), len(new))
    head = 0
    while head < limit and old[head] == new[head]:
        head += 1
    if head == len(old) == len(new):
        return
    tail = 0
    while tail < limit - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    start = max(0, head - context)
    keep = max(0, tail - context)
    old_part, new_part = old[start: len(old) - keep], new[start: len(new) - keep]
    yield f"--- {old_label}"
    yield f"+++ {new_label}"
    matcher = difflib.SequenceMatcher(None, old_part, new_part)
    for hunk in matcher.get_grouped_opcodes(context):
        old_range = _hunk_range(start + hunk[0][1], start + hunk[-1][2])
        new_range = _hunk_range(start + hunk[0][3], start + hunk[-1][4])
        yield f"@@ -{old_range} +{new_range} @@"
        for tag, i1, i2, j1, j2 in hunk:
            if tag == "equal":
                yield from (" " + line for line in old_part[i1:i2])
                continue
            if tag in ("replace", "delete"):
                yield from ("-" + line for line in old_part[i1:i2])
            if tag in ("replace", "insert"):
                yield from ("+" + line for line in new_part[j1:j2])


def _hunk_range(start: int, stop: int) -> str:
    """A hunk header's 'start,length' as diff(1) writes it (1-based; an empty range names the line before)."""
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start if length == 0 else start + 1},{length}"


class GatherRenderer:
    wants_lines = False
    wants_started = False

    def __init__(self, out: TextIO, *, diff: bool = False, verbose: bool = False, colour: bool = False) -> None:
        self.out = out
        self.diff = diff
        self.colour = colour
        self.grouper = Grouper(full_stderr=verbose)

    def on_start(self, hosts: Sequence[Host]) -> None:
        self.grouper.order = {host.name: index for index, host in enumerate(hosts)}

    def on_started(self, host: Host) -> None:
        pass

    def on_line(self, line: OutputLine) -> None:
        pass

    def on_result(self, result: HostResult) -> None:
        self.grouper.add(result)

    def on_finish(self, summary: RunSummary) -> None:
        groups = self.grouper.groups()
        majority = groups[0] if groups else None
        majority_lines: list[str] = []  # split once, diffed against every other group
        try:
            if self.diff and majority is not None:
                majority_lines = majority.text().splitlines()
            for group in groups:
                self._header(group)
                if self.diff and majority is not None and group is not majority:
                    self._diff(majority, majority_lines, group)
                else:
                    self._body(group)
                self._notes(group)
                self.out.write("\n")
            self.out.write(summary_line(summary) + "\n")
            self.out.flush()
        finally:
            for group in groups:
                group.close()

    def _header(self, group: Group) -> None:
        count = len(group.hosts)
        status = paint(group.status, group.outcome, self.colour)
        cut = "  [stdout truncated at --max-output]" if group.truncated else ""
        self.out.write(f"==== {fold(group.hosts)} ({count} host{'s' if count != 1 else ''}): {status}{cut}\n")

    def _body(self, group: Group) -> None:
        if group.stdout:
            text = group.text()
            self.out.write(text if text.endswith("\n") else text + "\n")
        elif not group.notes:
            self.out.write("(no output)\n")

    def _diff(self, majority: Group, old: list[str], group: Group) -> None:
        new = group.text().splitlines()
        lines = list(unified_diff(old, new, fold(majority.hosts), fold(group.hosts)))
        if not lines:
            self.out.write(f"(same output as {fold(majority.hosts)})\n")
        for line in lines:
            self.out.write(line + "\n")

    def _notes(self, group: Group) -> None:
        for note in group.notes.values():
            where = fold(note.hosts)
            self.out.write(f"! {where}: {note.error}\n" if note.error else f"! {where}:\n")
            for line in note.stderr.splitlines():
                self.out.write(f"  stderr: {line}\n")
            for line in note.details.splitlines():
                self.out.write(f"  {line}\n")
