"""The host-pattern language: turn a pattern like `web&prod,db01!web03` into hosts, in inventory order.

Also the host-list files (`^FILE`, `@FILE`) that may stand for an atom, the names-only reading of a pattern that
`fleetrun hosts --fold` uses, and the `-x`/`--pick` steps applied to a selection.
"""

from __future__ import annotations

import fnmatch
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from fleetrun.errors import SelectionError
from fleetrun.hostnames import expand_ranges, fold
from fleetrun.models import Host

if TYPE_CHECKING:
    from fleetrun.inventory import Inventory

_OPERATORS = ",&!^"  # union, intersection, difference, symmetric difference (`^` only after an atom)
LIST_PREFIXES = "^@"  # `^FILE` as pdsh -w, `@FILE` as Ansible's --limit @FILE
_T = TypeVar("_T")
_PADDED = re.compile(r"(?<![0-9])0[0-9]")  # a zero-padded number in a name


class NoMatch(SelectionError):
    """An atom that matches no host (a typo, most often); a list of hosts to leave out may have those."""


def select(inventory: Inventory, pattern: str, *, excluding: bool = False) -> list[Host]:
    """The hosts `pattern` names, in inventory order and without duplicates; raises SelectionError.

    A pattern is atoms joined by operators, evaluated strictly left to right with no precedence:
    `,` union, `&` intersection, `!` difference, `^` symmetric difference (after an atom; ClusterShell's
    xor). `web&prod,db01!web03` is (((web & prod) , db01) ! web03).
    A leading `!` subtracts from every host: `!db` is all hosts but the db group.

    An atom (surrounding whitespace ignored) is one of: `all` or `*` (every host); a group name (its hosts,
    children included); a host name; a glob over host names (`web*`, `db?`); a numeric range over names
    (`web[01-05]`, `web[01:05]`, `web[01-03,07]`: a comma inside brackets is part of the range, not a union).
    Each name a range produces is looked up as a group, a host or a glob; names that match nothing are
    skipped, but an atom that matches nothing at all is an error (a typo, with suggestions), and so is a
    pattern that selects no host in the end. An atom `^FILE` or `@FILE` is the union of the names listed in
    FILE (see `read_host_list`), each read as an atom, each of which must match something.

    `excluding` (for -x): a host list may name hosts that are not there (a list of hosts to leave out), and
    a pattern may select nothing (there is nothing to leave out then).

    A pattern written the Ansible way (`web:&prod`, `web,!db`, `~regex`, `web[0]` on a group) is handed to
    fleetrun.ansible_patterns instead: see `syntax`.
    """
    if syntax(inventory, pattern) == "ansible":
        from fleetrun import ansible_patterns

        return ansible_patterns.select(inventory, pattern, excluding=excluding)
    chosen: set[str] = set()
    for operator, atom in _parse(pattern):
        found = _match(inventory, atom, pattern, excluding)
        if operator == "all-but":
            chosen = set(inventory.hosts) - found
        elif operator == ",":
            chosen |= found
        elif operator == "&":
            chosen &= found
        elif operator == "^":
            chosen ^= found
        else:
            chosen -= found
    if not chosen and not excluding:
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
        if char == "^" and not atom:
            continue  # `^` opening an atom is a host list (`^FILE`); after one it is ClusterShell's xor
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


def _match(inventory: Inventory, atom: str, pattern: str, excluding: bool = False) -> set[str]:
    """The host names one atom stands for; never empty (an empty match is a typo, reported with hints)."""
    if atom[0] in LIST_PREFIXES:
        return _match_list(inventory, atom, pattern, excluding)
    if atom in ("all", "*"):
        return set(inventory.hosts)
    if atom in inventory.hosts:  # before groups: a name that is both (Ansible allows it) means the host there
        return {atom}
    if atom in inventory.groups:
        if not inventory.groups[atom]:
            raise NoMatch(f"group {atom!r} has no host")
        return set(inventory.groups[atom])
    try:
        names = expand_ranges(atom)
    except ValueError as error:
        raise SelectionError(f"pattern {pattern!r}: {error}") from None
    found: set[str] = set()
    for name in names:
        if name in inventory.hosts:
            found.add(name)
        elif name in inventory.groups:
            found.update(inventory.groups[name])
        elif "*" in name or "?" in name:
            # Brackets were expanded above, so only * and ? remain: fnmatch's [...] classes never apply.
            matches = re.compile(fnmatch.translate(name)).match
            found.update(host for host in inventory.hosts if matches(host))
    if not found:
        raise NoMatch(f"no host or group matches {atom!r}{_hint(inventory, atom, names)}")
    return found


def _hint(inventory: Inventory, atom: str, names: list[str]) -> str:
    """' (did you mean …?)' for an atom that matched nothing: the same numbers padded otherwise, else close names."""
    known = [*inventory.hosts, *inventory.groups]
    padding = padding_hint(known, names)
    if padding:
        return f" ({padding})"
    from difflib import get_close_matches  # an error path: not ~3 ms of every start-up
    close = get_close_matches(atom, known, n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _match_list(inventory: Inventory, atom: str, pattern: str, may_miss: bool) -> set[str]:
    """`^FILE`/`@FILE`: the union of what each listed name matches; a name matching nothing is an error at its
    line unless `may_miss`."""
    try:
        listed = read_host_list(atom)
    except SelectionError:
        group = atom[1:]
        if atom[0] == "@" and group in inventory.groups and not Path(group).expanduser().exists():
            raise SelectionError(f"{atom}: there is no host-list file {group!r}; for the group write {group} "
                                 "(ClusterShell's @group is a plain group name here)") from None
        raise
    found: set[str] = set()
    for entry in listed:
        try:
            found |= _match(inventory, entry.name, pattern)
        except NoMatch as error:
            if not may_miss:
                raise NoMatch(f"{entry.where}: {error}") from None
        except SelectionError as error:
            raise SelectionError(f"{entry.where}: {error}") from None
    if not listed and not may_miss:
        raise NoMatch(f"host list {atom[1:]} names no host; list names one per line")
    return found


# --- host lists: ^FILE and @FILE ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """One name from a host list, with where it was written (for errors)."""

    name: str
    path: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def read_host_list(spec: str) -> list[Listed]:
    """The names in `^FILE` or `@FILE`: whitespace-separated, `#` to the end of a line is a comment.

    A name is anything an atom may be (a host, a group, a glob, a range), never an operator or another list.
    Raises SelectionError (exit 2) when the file cannot be read.
    """
    path = spec[1:]
    if not path:
        raise SelectionError(f"{spec!r}: name the host-list file, e.g. {spec}hosts.txt")
    try:
        raw = Path(path).expanduser().read_bytes()
    except OSError as error:
        raise SelectionError(f"host list {path}: cannot read it: {error.strerror}; check the path") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise SelectionError(f"{path}:{line}: not UTF-8 text; save the host list as UTF-8") from None
    return parse_host_list(text, path)


def parse_host_list(text: str, path: str) -> list[Listed]:
    """Names from host-list text (a file, or stdin for `fleetrun hosts --fold`); SelectionError on a bad one."""
    listed = []
    for number, line in enumerate(text.splitlines(), 1):
        for word in line.split("#", 1)[0].split():
            entry = Listed(word, path, number)
            if word[0] in LIST_PREFIXES:
                raise SelectionError(f"{entry.where}: {word!r}: host lists do not include other lists")
            try:
                one = len(_parse(word)) == 1 and word[0] != "!"
            except SelectionError as error:
                raise SelectionError(f"{entry.where}: {error}") from None
            if not one:
                raise SelectionError(f"{entry.where}: {word!r} is not one name: a host list holds names, ranges "
                                     "or globs, without operators (write one per line)")
            listed.append(entry)
    return listed


# --- patterns without an inventory: `fleetrun hosts --fold/--expand/--count` --------------------------------


def names_of(pattern: str) -> list[str]:
    """The names a pattern stands for with no inventory, as ClusterShell's nodeset reads a node set: names,
    ranges and host lists, with `,` `&` `!` `^` strictly left to right. In the order written, once each."""
    chosen: dict[str, None] = {}
    for operator, atom in _parse(pattern):
        if operator == "all-but":
            raise SelectionError(f"pattern {pattern!r}: a leading '!' needs an inventory (all hosts but …)")
        found = dict.fromkeys(_names(atom, pattern))
        if operator == ",":
            chosen.update(found)
        elif operator == "&":
            chosen = {name: None for name in chosen if name in found}
        elif operator == "^":
            chosen = {**{name: None for name in chosen if name not in found},
                      **{name: None for name in found if name not in chosen}}
        else:
            chosen = {name: None for name in chosen if name not in found}
    return list(chosen)


def _names(atom: str, pattern: str) -> list[str]:
    if atom[0] in LIST_PREFIXES:
        return [name for entry in read_host_list(atom) for name in _names(entry.name, pattern)]
    if "*" in atom or "?" in atom:
        raise SelectionError(f"pattern {pattern!r}: the glob {atom!r} needs an inventory to match against")
    try:
        return expand_ranges(atom)
    except ValueError as error:
        raise SelectionError(f"pattern {pattern!r}: {error}") from None


# --- after the selection: -x and --pick ---------------------------------------------------------------------


def exclude(hosts: Sequence[Host], removed: Iterable[Host]) -> list[Host]:
    """`hosts` without `removed` (compared by name), in their order."""
    names = {host.name for host in removed}
    return [host for host in hosts if host.name not in names]


def pick(items: Sequence[_T], count: int, seed: str | None) -> list[_T]:
    """`count` of `items` at random (all of them if there are fewer), in their order; the same `seed` and the
    same items always pick the same ones (clush --pick)."""
    rng = random.Random(seed) if seed is not None else random.SystemRandom()
    chosen = sorted(rng.sample(range(len(items)), min(count, len(items))))
    return [items[index] for index in chosen]


# --- zero padding -------------------------------------------------------------------------------------------


def _unpadded(name: str) -> str:
    return re.sub(r"[0-9]+", lambda digits: str(int(digits.group())), name)


def padding_hint(known: Iterable[str], names: Iterable[str]) -> str | None:
    """'did you mean lab[01-05]? …' when `names` (which match nothing) are known names padded otherwise."""
    wanted = {_unpadded(name): name for name in names}
    found = [name for name in known if _unpadded(name) in wanted and name not in wanted.values()]
    if not found:
        return None
    asked = wanted[_unpadded(found[0])]
    if len(found[0]) > len(asked) and not _PADDED.search(asked):
        how = "zero-padded"
    elif len(found[0]) < len(asked) and not any(_PADDED.search(name) for name in found):
        how = "not zero-padded"
    else:
        how = "padded to another width"
    return f"did you mean {fold(found)}? the names are {how}"
