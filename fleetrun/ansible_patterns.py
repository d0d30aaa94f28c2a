"""Ansible's host patterns (`web:&prod:!web03`, `~regex`, `web[0:2]`): unions, then intersections, then exclusions.

Used by selection.select when a pattern is written the Ansible way; fleetrun's own `,&!` language keeps its
strict left-to-right meaning. One difference on purpose: a term that matches no group and no host is an error
here (Ansible warns and ignores it, so `all:!dbb` would run on the db hosts).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from fleetrun.errors import SelectionError
from fleetrun.models import Host
from fleetrun.sources.hostpatterns import is_address, split_port

if TYPE_CHECKING:
    from fleetrun.inventory import Inventory

# `name[3]`, `name[-1]`, `name[0:2]`, `name[2:]` (and the old `name[0-2]`): a slice of what `name` matches.
_SUBSCRIPT = re.compile(r"(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]\Z", re.S)
_TERM = re.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
_FLEETRUN_OPERATORS = re.compile(r"[,&!]")
_GLOB = re.compile(r"[*?]")


def split(pattern: str) -> list[str]:
    """Ansible's split_host_pattern: on ',' if there is one, else on ':' unless the whole is a host[:port]."""
    if "," in pattern:
        terms = pattern.split(",")
    else:
        address, _port = split_port(pattern)
        terms = [pattern] if address != pattern or is_address(pattern) else _TERM.findall(pattern)
    return [term.strip() for term in terms if term.strip()]


def is_ansible(inventory: Inventory, pattern: str) -> bool:
    """Whether `pattern` is written in Ansible's syntax rather than fleetrun's (see the module docstring)."""
    text = pattern.strip()
    terms = split(text)
    if not terms:
        return False
    if "," not in text and ":" in text and terms != [text]:
        return True  # `web:db`, `web:&prod`, `all:!db`, and `web:` (Ansible drops the empty term)
    if any(term.lstrip("&!").startswith("~") for term in terms):
        return True  # `~web0[12]`, `!~db` (all but what the regex matches)
    if "," in text and any(term[0] in "&!" for term in terms[1:]):
        return True  # `web,&prod,!web03`: fleetrun's own syntax has no operator after ','
    if text.startswith("&"):
        return True  # `&web` is all & web in Ansible; fleetrun's own syntax has no leading '&'
    return any(_subscript_only(inventory, atom.strip()) for atom in _fleetrun_atoms(text))


def _fleetrun_atoms(text: str) -> list[str]:
    atoms, depth, start = [], 0, 0
    for index, char in enumerate(text + ","):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth == 0 and _FLEETRUN_OPERATORS.match(char):
            atoms.append(text[start:index])
            start = index + 1
    return [atom for atom in atoms if atom.strip()]


def _subscript_only(inventory: Inventory, atom: str) -> bool:
    """`web[0]` where `web` is a group (or `web*[0]`, a glob that matches something) and no host or group is
    called web0 (or matches web*0): Ansible's subscript, not a range."""
    match = _SUBSCRIPT.match(atom)
    if not match or match.group(4) == "-":
        return False  # `web[1-3]` is fleetrun's own range: never read as Ansible's old dash subscript
    base = match.group(1)
    glob = _GLOB.search(base) is not None and "[" not in base
    names_everything = [*inventory.hosts, *inventory.groups]
    if not (base in inventory.groups or base == "all" or (glob and fnmatch.filter(names_everything, base))):
        return False
    from fleetrun.hostnames import expand_ranges  # the fleetrun meaning of the brackets, for comparison

    try:
        names = expand_ranges(atom)
    except ValueError:
        return True
    if glob:  # fleetrun reads `web*[0]` as the glob web*0
        return not any(fnmatch.filter(names_everything, name) for name in names)
    return not any(name in inventory.hosts or name in inventory.groups for name in names)


def describe(pattern: str) -> str:
    """How a pattern read as Ansible syntax is evaluated, for `fleetrun hosts` to say."""
    ordered = _ordered(split(pattern))
    unions = [t for t in ordered if t[0] not in "&!"]
    parts = [f"union of {', '.join(unions)}"]
    if any(t[0] == "&" for t in ordered):
        parts.append(f"then & {', '.join(t[1:] for t in ordered if t[0] == '&')}")
    if any(t[0] == "!" for t in ordered):
        parts.append(f"then ! {', '.join(t[1:] for t in ordered if t[0] == '!')}")
    return "; ".join(parts)


def _ordered(terms: list[str]) -> list[str]:
    regular = [t for t in terms if t[0] not in "&!"] or ["all"]
    return regular + [t for t in terms if t[0] == "&"] + [t for t in terms if t[0] == "!"]


def select(inventory: Inventory, pattern: str, *, excluding: bool = False) -> list[Host]:
    """The hosts an Ansible pattern selects, in the order Ansible lists them; raises SelectionError.

    A term `@FILE` (as in Ansible's --limit @FILE) or `^FILE` is the union of the terms FILE lists, one per
    line (fleetrun.selection.read_host_list). `excluding` (for -x): those may match nothing, and so may the whole.
    """
    terms = split(pattern)
    if not terms:
        raise SelectionError("empty host pattern; name a host, a group, 'all', or a pattern like 'web:&prod'")
    matcher = _Matcher(inventory, pattern, excluding)
    chosen: list[str] = []
    for term in _ordered(terms):
        if term in inventory.hosts:
            chosen.append(term)
            continue
        found = matcher.one(term)
        if term[0] == "!":
            drop = set(found)
            chosen = [name for name in chosen if name not in drop]
        elif term[0] == "&":
            keep = set(found)
            chosen = [name for name in chosen if name in keep]
        else:
            chosen.extend(found)
    names = list(dict.fromkeys(chosen))
    if not names and not excluding:
        raise SelectionError(f"pattern {pattern!r} selects no host")
    return [inventory.hosts[name] for name in names]


class _Matcher:
    def __init__(self, inventory: Inventory, pattern: str, excluding: bool = False) -> None:
        self.inventory = inventory
        self.pattern = pattern
        self.excluding = excluding
        everything = tuple(inventory.ansible_order) or tuple(inventory.hosts)
        self.groups: dict[str, tuple[str, ...]] = {"all": everything, **inventory.groups}

    def one(self, term: str) -> list[str]:
        """One term's hosts, before `&`/`!` apply; duplicates kept so that subscripts count as Ansible does."""
        expression = term[1:] if term[0] in "&!" else term
        if expression[:1] in ("@", "^"):
            return self.listed(expression)
        subscript = None
        if expression and expression[0] != "~":
            match = _SUBSCRIPT.match(expression)
            if match:
                expression = match.group(1)
                subscript = match.groups()[1:]
        if not expression:
            raise SelectionError(f"pattern {self.pattern!r} has an empty term in {term!r}; name a host or group")
        matches = self.compile(expression)
        groups = [name for name in self.groups if matches(name)]
        found = [host for name in groups for host in self.groups[name]]
        if not groups or expression[0] == "~" or any(char in expression for char in ".?*["):
            found.extend(name for name in self.inventory.hosts if matches(name))
        if not found and not groups:
            from difflib import get_close_matches  # an error path: not ~3 ms of every start-up
            close = get_close_matches(expression, [*self.inventory.hosts, *self.inventory.groups], n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise SelectionError(f"no host or group matches {expression!r} in pattern {self.pattern!r}{hint} "
                                 "(Ansible would ignore it with a warning; fleetrun refuses)")
        return _slice(found, subscript, term, self.pattern) if subscript else found

    def listed(self, spec: str) -> list[str]:
        from fleetrun.selection import read_host_list  # the one reader, shared with fleetrun's own syntax

        found: list[str] = []
        for entry in read_host_list(spec):
            try:
                found.extend(self.one(entry.name))
            except SelectionError as error:
                if not self.excluding:
                    raise SelectionError(f"{entry.where}: {error}") from None
        return found

    def compile(self, expression: str) -> Callable[[str], re.Match[str] | None]:
        """`~regex` is matched from the start (re.match, as Ansible does); anything else is a glob."""
        try:
            return re.compile(expression[1:] if expression[0] == "~" else fnmatch.translate(expression)).match
        except re.error as error:
            raise SelectionError(f"pattern {self.pattern!r}: {expression!r} is not a valid "
                                 f"{'regular expression' if expression[0] == '~' else 'glob'}: {error}") from None


def _slice(found: list[str], subscript: tuple[str | None, ...], term: str, pattern: str) -> list[str]:
    index, start, _, end = subscript
    if not found:
        return found
    if index is not None:
        try:
            return [found[int(index)]]
        except IndexError:
            raise SelectionError(f"pattern {pattern!r}: {term!r} asks for position {index}, but only "
                                 f"{len(found)} host{'s' if len(found) != 1 else ''} match") from None
    assert start is not None
    if end and not int(end):  # Ansible's own quirk: `[n:0]` means just position n
        try:
            return [found[int(start)]]
        except IndexError:
            raise SelectionError(f"pattern {pattern!r}: {term!r} is past the {len(found)} matching hosts") from None
    last = int(end) if end else len(found) - 1  # `[n:]` runs to the end, even of one host: `[1:]` of it is none
    return found[int(start):last + 1]
