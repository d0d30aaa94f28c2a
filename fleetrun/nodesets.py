"""`fleetrun hosts --fold/--expand/--count`: node sets in, ClusterShell nodeset's -f/-e/-c output out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TextIO

from fleetrun.errors import SelectionError, UsageError
from fleetrun.hostnames import expand, fold
from fleetrun.selection import names_of, parse_host_list, pick

ACTIONS = ("--fold", "--expand", "--count")


def given_names(arguments: Sequence[str], stdin: TextIO | None, excluded: Iterable[str], count: int | None,
                seed: str | None, action: str) -> list[str]:
    """The names NAMES stand for, without an inventory: each argument a node set (a union of them all), stdin
    when there is none or one is `-` (as nodeset does), minus each -x, then --pick."""
    sets: list[tuple[str, str | None]] = [(text, None) for text in arguments if text != "-"]
    if not arguments or "-" in arguments:
        if stdin is None or stdin.isatty():  # a person at a terminal did not mean to type names now
            raise UsageError(f"{action}: give NAMES, pipe them on stdin, or -H PATTERN for the inventory's hosts")
        sets += [(entry.name, entry.where) for entry in parse_host_list(stdin.read(), "<stdin>")]
    chosen: dict[str, None] = {}
    for text, where in sets:
        chosen.update(dict.fromkeys(_names_of(text, where)))
    for pattern in excluded:
        for name in _names_of(pattern, "-x"):
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
