"""The host-pattern language: turn a pattern like `web&prod,db01!web03` into hosts, in inventory order."""

from __future__ import annotations

import difflib
import fnmatch
import re
from typing import TYPE_CHECKING

from fleetrun.errors import SelectionError
from fleetrun.hostnames import expand_ranges
from fleetrun.models import Host

if TYPE_CHECKING:
    from fleetrun.inventory import Inventory

_OPERATORS = ",&!"  # union, intersection, difference


def select(inventory: Inventory, pattern: str) -> list[Host]:
    """The hosts `pattern` names, in inventory order and without duplicates; raises SelectionError.

    A pattern is atoms joined by operators, evaluated strictly left to right with no precedence:
    `,` union, `&` intersection, `!` difference. `web&prod,db01!web03` is (((web & prod) , db01) ! web03).
    A leading `!` subtracts from every host: `!db` is all hosts but the db group.

    An atom (surrounding whitespace ignored) is one of: `all` or `*` (every host); a group name (its hosts,
    children included); a host name; a glob over host names (`web*`, `db?`); a numeric range over names
    (`web[01-05]`, `web[01:05]`, `web[01-03,07]`: a comma inside brackets is part of the range, not a union).
    Each name a range produces is looked up as a group, a host or a glob; names that match nothing are
    skipped, but an atom that matches nothing at all is an error (a typo, with suggestions), and so is a
    pattern that selects no host in the end.

    A pattern written the Ansible way (`web:&prod`, `web,!db`, `~regex`, `web[0]` on a group) is handed to
    fleetrun.ansible_patterns instead: see `syntax`.
    """
    if syntax(inventory, pattern) == "ansible":
        from fleetrun import ansible_patterns

        return ansible_patterns.select(inventory, pattern)
    chosen: set[str] = set()
    for operator, atom in _parse(pattern):
        if operator == "all-but":
            chosen = set(inventory.hosts) - _match(inventory, atom, pattern)
        elif operator == ",":
            chosen |= _match(inventory, atom, pattern)
        elif operator == "&":
            chosen &= _match(inventory, atom, pattern)
        else:
            chosen -= _match(inventory, atom, pattern)
    if not chosen:
        raise SelectionError(f"pattern {pattern!r} selects no host")
    return [host for name, host in inventory.hosts.items() if name in chosen]


def syntax(inventory: Inventory, pattern: str) -> str:
    """"ansible" or "fleetrun": which language `pattern` is read in (`fleetrun hosts` says it on stderr)."""
    if not any(char in pattern for char in ":~[&!,"):
        return "fleetrun"  # a plain name or glob reads the same in both; skip the import
    from fleetrun import ansible_patterns

    return "ansible" if ansible_patterns.is_ansible(inventory, pattern) else "fleetrun"


def _parse(pattern: str) -> list[tuple[str, str]]:
    """Split on operators outside brackets: [(operator, atom), ...]; the first operator is `,` or all-but."""
    text = pattern.strip()
    if not text:
        raise SelectionError("empty host pattern; name a host, a group, 'all', or a pattern like 'web&prod'")
    everything = text.startswith("!")  # a leading `!` subtracts from every host
    text = text[1:] if everything else text
    terms: list[tuple[str, str]] = []
    operator, start, depth = ",", 0, 0
    for index, char in enumerate(text + ","):  # the sentinel comma closes the last atom
        depth += {"[": 1, "]": -1}.get(char, 0)
        if not 0 <= depth <= 1:
            raise SelectionError(f"pattern {pattern!r}: unbalanced or nested brackets; write web[01-05]")
        if depth or char not in _OPERATORS:
            continue
        atom = text[start:index].strip()
        start = index + 1
        if not atom:
            before = operator if terms else ("!" if everything else None)
            if index == len(text):
                raise SelectionError(f"pattern {pattern!r} ends with {before!r}; add a host or group")
            where = f"has nothing between {before!r} and" if before else "starts with"
            raise SelectionError(f"pattern {pattern!r} {where} {char!r}; put a host or group there")
        terms.append((operator if terms or not everything else "all-but", atom))
        operator = char
    if depth:
        raise SelectionError(f"pattern {pattern!r}: a '[' is never closed; write web[01-05]")
    return terms


def _match(inventory: Inventory, atom: str, pattern: str) -> set[str]:
    """The host names one atom stands for; never empty (an empty match is a typo, reported with hints)."""
    if atom in ("all", "*"):
        return set(inventory.hosts)
    if atom in inventory.groups:
        if not inventory.groups[atom]:
            raise SelectionError(f"group {atom!r} has no host")
        return set(inventory.groups[atom])
    if atom in inventory.hosts:
        return {atom}
    try:
        names = expand_ranges(atom)
    except ValueError as error:
        raise SelectionError(f"pattern {pattern!r}: {error}") from None
    found: set[str] = set()
    for name in names:
        if name in inventory.groups:
            found.update(inventory.groups[name])
        elif name in inventory.hosts:
            found.add(name)
        elif "*" in name or "?" in name:
            # Brackets were expanded above, so only * and ? remain: fnmatch's [...] classes never apply.
            matches = re.compile(fnmatch.translate(name)).match
            found.update(host for host in inventory.hosts if matches(host))
    if not found:
        close = difflib.get_close_matches(atom, [*inventory.hosts, *inventory.groups], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise SelectionError(f"no host or group matches {atom!r}{hint}")
    return found

