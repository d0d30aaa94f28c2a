"""Ansible's INI inventory format, read the way its `ini` plugin reads it, with file:line on every mistake."""

from __future__ import annotations

import ast
import re
import shlex
import warnings
from pathlib import Path
from typing import Any

from fleetrun.sources import hostpatterns
from fleetrun.sources.ansible_data import AnsibleData, Origin, fail

_SECTION = re.compile(r"\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?\Z")
_GROUP_NAME = re.compile(r"([^:\]\s]+)\s*(?:#.*)?\Z")
_PLAIN_WORD = re.compile(r"[A-Za-z_][\w.-]*\Z")  # literal_eval would refuse it: it stays the string
_PLAIN_INT = re.compile(r"(?:[1-9][0-9]*|0)\Z")
_DOTTED = re.compile(r"[0-9]+(?:\.[0-9]+){2,}\Z")  # an IPv4 address or a version: never a Python literal
# str.split() also splits on these, where shlex does not: \x0b \x0c \x1c-\x1f are whitespace to Python only
_SHLEX_SPECIAL = frozenset("\"'\\#\x0b\x0c\x1c\x1d\x1e\x1f")


def parse_value(text: str) -> Any:
    """A value as Ansible's INI plugin reads it: a Python literal if it is one (`010` stays "010"), else text."""
    if _PLAIN_INT.match(text):
        try:
            return int(text)
        except ValueError:  # past Python's 4300-digit limit, where literal_eval fails too: the text
            return text
    if (_PLAIN_WORD.match(text) and text not in ("True", "False", "None")) or _DOTTED.match(text):
        return text
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError):  # what Ansible catches: anything else fails its whole file (_value)
        return text
    return _coerce(value)


def _value(text: str, where: Origin) -> Any:
    """parse_value, with Ansible's other literal_eval failures made a file:line error, as they fail its ini
    plugin: `{{ {} }}` is a set holding a dict (TypeError: unhashable), a deep nest a RecursionError."""
    try:
        return parse_value(text)
    except (TypeError, MemoryError, RecursionError) as error:
        fail(where, f"the value {text!r} breaks Python's literal_eval ({type(error).__name__}: {error}), so "
             "Ansible refuses this file too; quote it twice to keep it text, e.g. k='\"{{ {} }}\"'")


def _coerce(value: Any) -> Any:
    """Tuples and sets become lists, bytes text, `...` and complex numbers their text: what Ansible keeps."""
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_coerce(item) for item in value]
    if isinstance(value, dict):
        return {_coerce(key): _coerce(item) for key, item in value.items()}
    if value is ...:
        return "..."
    if isinstance(value, complex):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def split_line(line: str) -> list[str]:
    """shlex.split(comments=True), with a fast path for the plain lines that make up big inventories."""
    if line.isascii() and not _SHLEX_SPECIAL.intersection(line):
        return line.split()
    return shlex.split(line, comments=True)


def read_ini(data: AnsibleData, path: Path, text: str) -> None:
    """Add one INI file's groups, hosts and vars to `data`."""
    name = str(path)
    pending: dict[str, dict[str, Any]] = {}  # group -> first place it was used before being declared
    group, state = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        where: Origin = (name, number)
        if line[0] == "[":
            section = _SECTION.match(line)
            if not section:
                if line.endswith("]"):
                    fail(where, f"invalid section {line!r}: no spaces and no ':' other than before children "
                         "or vars, e.g. [web] or [web:children]")
            else:
                group, state = section.group(1), section.group(2) or "hosts"
                if state not in ("hosts", "children", "vars"):
                    fail(where, f"section [{group}:{state}] has an unknown type {state!r}; use [{group}], "
                         f"[{group}:children] or [{group}:vars]")
                if group not in data.groups:
                    if state == "vars" and group not in pending:
                        pending[group] = {"line": where, "state": "vars"}
                    data.add_group(group, where)
                if group in pending and state != "vars":
                    if pending[group]["state"] == "children":
                        _add_pending(data, group, pending)
                    else:
                        del pending[group]
                continue
        if state == "hosts":
            _host_line(data, group, line, where)
        elif state == "vars":
            key, equals, value = line.partition("=")
            if not equals:
                fail(where, f"expected key=value in [{group}:vars], got {line!r}")
            data.set_group_var(group, key.strip(), _value(value.strip(), where), where)
        else:
            match = _GROUP_NAME.match(line)
            if not match:
                fail(where, f"expected a group name in [{group}:children], got {line!r}")
            child = match.group(1)
            if child in data.groups:
                data.add_child(group, child, where)
            elif child in pending:
                pending[child].setdefault("parents", []).append((group, where))
            else:
                pending[child] = {"line": where, "state": "children", "parents": [(group, where)]}
    for group_name, declaration in pending.items():
        where = declaration["line"]
        if declaration["state"] == "vars":
            fail(where, f"[{group_name}:vars] is for a group that is never declared; add a [{group_name}] "
                 f"or [{group_name}:children] section, or fix the name")
        parent = declaration["parents"][-1][0]
        hint = f" (a host {group_name!r} exists: list it under [{parent}] instead)" \
            if group_name in data.hosts else ""
        fail(where, f"[{parent}:children] names {group_name!r}, which is not a group; declare it with "
             f"[{group_name}] (declaring it later in the file is fine){hint}")


def _add_pending(data: AnsibleData, group: str, pending: dict[str, dict[str, Any]]) -> None:
    for parent, where in pending[group]["parents"]:
        data.add_child(parent, group, where)
        if parent in pending and pending[parent]["state"] == "children":
            _add_pending(data, parent, pending)
    del pending[group]


def _host_line(data: AnsibleData, group: str, line: str, where: Origin) -> None:
    try:
        tokens = split_line(line)
    except ValueError as error:
        fail(where, f"cannot split the host line ({error}); close the quote")
    if not tokens:  # a line that is all comment after the first character
        return
    pattern = tokens[0]
    address, port = hostpatterns.split_port(pattern)
    if pattern.endswith(":") and port is None:
        fail(where, f"host {pattern!r} ends in ':', which is reserved for a port; write name:port or remove it")
    try:
        names = hostpatterns.expand(address)
    except ValueError as error:
        fail(where, str(error))
    if any(name.strip() == "---" for name in names):
        fail(where, "'---' is not a host name: this looks like a YAML file; name it .yml or .yaml")
    variables: dict[str, Any] = {}
    for token in tokens[1:]:
        key, equals, value = token.partition("=")
        if not equals:
            fail(where, f"expected key=value after the host name, got {token!r}")
        variables[key] = _value(value, where)
    for name in names:
        data.add_host(name, group, port, where)
        for key, value in variables.items():
            data.set_host_var(name, key, value, where)
