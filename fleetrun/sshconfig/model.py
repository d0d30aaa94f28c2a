"""The parsed form of ssh_config files, and the error that names a file and line."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from fleetrun.errors import UsageError
from fleetrun.sshconfig.tokens import local_info


def display_path(path: str) -> str:
    """A path as the user knows it: under the passwd home it starts with `~/`."""
    home = local_info().home.rstrip("/")
    if home and (path == home or path.startswith(home + os.sep)):
        return "~" + path[len(home) :]
    return path


class ConfigError(UsageError):
    """A line ssh(1) would refuse too (or fleetrun cannot honour): exit 2, naming the file and line."""

    def __init__(self, path: str | None, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = display_path(path) if path else "ssh_config"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Origin:
    """Where a value came from: a config file and line, or a label such as `--port` or `inventory defaults`."""

    label: str
    path: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        if self.path is None:
            return self.label
        return f"{display_path(self.path)}:{self.line}"


@dataclass(frozen=True)
class Criterion:
    """One `Match` criterion: `all`, `canonical`, `final`, `host`, `originalhost`, `user`, `localuser`, `exec`."""

    name: str
    negate: bool
    arg: str | None = None


@dataclass(frozen=True)
class Line:
    """One directive of a config file, split and checked once; evaluated again for every host."""

    path: str
    number: int
    keyword: str  # lower-cased, aliases resolved to the canonical keyword
    args: tuple[str, ...]
    rest: str  # the text after the keyword (ProxyCommand and ProxyJump take it whole)
    value: Any = None  # the parsed argument of an option fleetrun reads
    known: bool = True  # False: not an OpenSSH keyword (an error, unless IgnoreUnknown covers it)
    newer: bool = False  # not OpenSSH 9.2's, but the local (newer) ssh takes the line: accepted, not applied
    criteria: tuple[Criterion, ...] = ()  # Match
    includes: tuple[ConfigFile, ...] = ()  # Include: the files it names, in order

    @cached_property
    def origin(self) -> Origin:  # one object per line, however many hosts it applies to
        return Origin(self.keyword, self.path, self.number)


@dataclass(frozen=True)
class ConfigFile:
    """One file as read; `user` files resolve relative Include paths under ~/.ssh, system ones under /etc/ssh."""

    path: str
    user: bool
    lines: tuple[Line, ...] = field(default=())
