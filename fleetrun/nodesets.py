"""`fleetrun hosts --fold/--expand/--count`: node sets in, ClusterShell nodeset's -f/-e/-c output out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TextIO

from fleetrun.errors import SelectionError, UsageError
from fleetrun.hostnames import expand, fold
from fleetrun.selection import names_of, pick

ACTIONS = ("--fold", "--expand", "--count")


def given_names(arguments: Sequence[str], stdin: TextIO | None, excluded: Iterable[str], count: int | None,
                seed: str | None, action: str) -> list[str]:
    """The names NAMES stand for, without an inventory: each argument a node set (a union of them all), stdin
    when there is none or one is `-` (as nodeset does), minus each -x, then --pick.

    As nodeset reads them, an argument (or -x) of several lines (`"$(cat hosts.txt)"`) is one node set per line,
    and every word on stdin is a node set of its own, operators and all (`a[1-9]!a5 b1,b2`)."""
    sets: list[tuple[str, str | None]] = [(line, None) for text in arguments if text != "-" for line in _lines(text)]
    if not arguments or "-" in arguments:
        if stdin is None or stdin.isatty():  # a person at a terminal did not mean to type names now
            raise UsageError(f"{action}: give NAMES, pipe them on stdin, or -H PATTERN for the inventory's hosts")
        sets += _stdin_sets(stdin.read())
    chosen: dict[str, None] = {}
    for text, where in sets:
        chosen.update(dict.fromkeys(_names_of(text, where)))
    for pattern in excluded:
        for line in _lines(pattern):
            for name in _names_of(line, "-x"):
                chosen.pop(name, None)
    names = list(chosen)
    return names if count is None else pick(sorted(names), count, seed)  # sorted: the seed alone decides


def render(action: str, names: Sequence[str], separator: str) -> str:
    """What nodeset prints for `action`: the count, the fold, or every name (in nodeset's order)."""
    if action == "--count":
        return f"{len(set(names))}\n"
    if action == "--fold":
        return f"{fold(names)}\n"
    return _unescape(separator).join(expand(fold(names))) + "\n"


def _lines(text: str) -> list[str]:
    """An argument's lines that hold anything: nodeset reads each line as a node set and blank ones as none."""
    return [line for line in text.splitlines() if line.strip()]


def _stdin_sets(text: str) -> list[tuple[str, str | None]]:
    """Each whitespace-separated word on stdin, `#` to the end of a line a comment, with its line number.

    Unlike a `^FILE` host list (names only), a word may hold operators: nodeset reads each one as a node set.
    """
    return [(word, f"<stdin>:{number}") for number, line in enumerate(text.splitlines(), 1)
            for word in line.split("#", 1)[0].split()]


def _names_of(text: str, where: str | None) -> list[str]:
    try:
        return names_of(text)
    except SelectionError as error:
        raise SelectionError(f"{where}: {error}" if where else str(error)) from None


def _unescape(separator: str) -> str:
    """nodeset -S reads \\n, \\t and friends as the characters they stand for."""
    if not separator.isascii():
        return separator
    try:
        return separator.encode().decode("unicode_escape")
    except UnicodeDecodeError:
        raise UsageError(f"-S {separator!r}: a bad escape; write \\n, \\t or plain text") from None
