"""The defaults file, ~/.config/fleetrun/config.yaml: defaults for command-line options, checked like the inventory.

It ranks below everything else: a flag beats an environment variable, which beats this file, which beats the
built-in default. The values reach click as its `default_map`, so `--help` shows the defaults in effect. It holds
no secrets: password-like keys are refused.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from fleetrun.errors import InventoryError, UsageError

ENV_VAR = "FLEETRUN_CONFIG"
_SIZE = re.compile(r"[0-9]+[KMG]?(?:I?B)?", re.IGNORECASE)  # what cli.parse_size accepts (4M, 512K, 1MiB, 100)
_SECRET_WORDS = ("pass", "secret", "token", "credential")
_RUN_COMMANDS = ("exec", "push", "pull")


@dataclass(frozen=True)
class Setting:
    """One key the file may set: the click parameter it is the default of, and what its value must be."""

    param: str
    kind: str  # int, number, choice, bool, size, text, path, paths
    choices: tuple[str, ...] = ()
    low: float = -math.inf
    high: float = math.inf
    commands: tuple[str, ...] | None = None  # None: every command that has the parameter


SETTINGS: dict[str, Setting] = {
    "inventory": Setting("inventory", "paths"),
    "ansible_inventory": Setting("ansible_inventory", "paths"),
    "ssh_config": Setting("ssh_config", "path"),
    "user": Setting("user", "text"),
    "host_key_checking": Setting("host_key_checking", "choice", ("yes", "accept-new", "no")),
    "connect_timeout": Setting("connect_timeout", "number", low=0.1),
    "timeout": Setting("timeout", "number", low=0.1),
    "deadline": Setting("deadline", "number", low=0.1),
    "forks": Setting("forks", "int", low=1, high=4096),
    "format": Setting("output_format", "choice", ("table", "gather", "stream", "json"), commands=_RUN_COMMANDS),
    "max_output": Setting("max_output", "size"),
    "max_transfers": Setting("max_transfers", "int", low=1),
    "no_progress": Setting("no_progress", "bool"),
    "no_agent": Setting("no_agent", "bool"),
}


@dataclass(frozen=True)
class Defaults:
    """What the defaults file sets: key -> value, ready for click; empty when there is no file."""

    path: Path | None
    values: Mapping[str, Any]
    lines: Mapping[str, int] = field(default_factory=dict)  # key -> its line, for `fleetrun hosts --explain`

    def origin(self, key: str) -> str:
        return f"{self.path}:{self.lines[key]}" if key in self.lines else "the defaults file"


def config_path(explicit: str | None) -> tuple[Path | None, bool]:
    """(the file to read or None, whether it must exist): --config, else $FLEETRUN_CONFIG, else
    $XDG_CONFIG_HOME/fleetrun/config.yaml (~/.config when unset); `none` reads none."""
    chosen = explicit if explicit is not None else os.environ.get(ENV_VAR) or None
    if chosen is not None:
        return (None, False) if chosen == "none" else (Path(chosen).expanduser(), True)
    xdg = os.environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".config"  # a relative one is ignored (XDG spec)
    return base / "fleetrun" / "config.yaml", False


def load_defaults(explicit: str | None = None) -> Defaults:
    """Read and validate the defaults file; InventoryError (exit 2, file:line) for any mistake in it."""
    path, required = config_path(explicit)
    if path is None or (not required and not path.is_file()):
        return Defaults(path=None, values={})
    try:
        raw = path.read_bytes()
    except OSError as error:
        source = "--config" if explicit is not None else f"${ENV_VAR}"
        raise UsageError(f"{path}: cannot read the defaults file ({source}): {error.strerror}") from None
    reader = _Reader(path)
    values = reader.read(raw)
    return Defaults(path=path, values=values, lines={key: reader.lines[key] for key in values})


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[str, int] = {}

    def fail(self, node: Any, message: str) -> InventoryError:
        line = node.start_mark.line + 1 if node is not None else None
        return InventoryError(str(self.path), line, message)

    def read(self, raw: bytes) -> dict[str, Any]:
        import yaml  # only when there is a file: most runs have none

        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InventoryError(str(self.path), raw[: error.start].count(b"\n") + 1,
                                 "not UTF-8 text; save the file as UTF-8") from None
        try:
            root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            what = " ".join("; ".join(str(part) for part in (error.context, error.problem) if part).split())
            raise InventoryError(str(self.path), mark.line + 1 if mark else None,
                                 f"invalid YAML: {what}; fix the syntax") from None
        except yaml.YAMLError:
            raise InventoryError(str(self.path), None, "invalid YAML: unreadable character; remove it") from None
        if root is None or (isinstance(root, yaml.ScalarNode) and root.tag.endswith(":null")):
            return {}
        if not isinstance(root, yaml.MappingNode):
            raise self.fail(root, "the defaults file must be a mapping of option: value, e.g. 'forks: 20'")
        values: dict[str, Any] = {}
        seen = self.lines
        for key_node, value_node in root.value:
            if not isinstance(key_node, yaml.ScalarNode) or not key_node.tag.endswith(":str"):
                raise self.fail(key_node, "a key must be an option name such as forks or connect_timeout")
            key = key_node.value.strip().lstrip("-").replace("-", "_")
            self.check_key(key, key_node)
            if key in seen:
                raise self.fail(key_node, f"{key} is set twice (first at line {seen[key]}); keep one")
            seen[key] = key_node.start_mark.line + 1
            value = self.value(key, SETTINGS[key], value_node)
            if value is not None:
                values[key] = value
        return values

    def check_key(self, key: str, node: Any) -> None:
        if any(word in key.lower() for word in _SECRET_WORDS):
            raise self.fail(node, f"{key!r} cannot be set here: the defaults file holds no secrets or password "
                            "settings; use password_env or password_file in the inventory, or --ask-pass")
        if key not in SETTINGS:
            from difflib import get_close_matches  # an error path: not ~3 ms of every start-up
            close = get_close_matches(key, SETTINGS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise self.fail(node, f"unknown key {key!r}{hint}; the keys are {', '.join(SETTINGS)}")

    def value(self, key: str, setting: Setting, node: Any) -> Any:
        import yaml

        if setting.kind == "paths" and isinstance(node, yaml.SequenceNode):
            return tuple(self.resolved(key, self.scalar(key, item, str)) for item in node.value) or None
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{key} must be a single value, not a list or mapping")
        if node.tag.endswith(":null"):
            return None  # `forks:` with nothing: the built-in default
        kind = setting.kind
        if kind == "bool":
            return self.scalar(key, node, bool)
        if kind in ("int", "number"):
            number = self.scalar(key, node, int if kind == "int" else (int, float))
            if not math.isfinite(number) or not setting.low <= number <= setting.high:
                bounds = f"from {setting.low:g} to {setting.high:g}" if setting.high < math.inf \
                    else f"of at least {setting.low:g}"
                raise self.fail(node, f"{key} must be a {'whole ' if kind == 'int' else ''}number {bounds}, "
                                f"got {node.value!r}")
            return float(number) if kind == "number" else number
        if kind == "choice":
            value = self.scalar(key, node, (str, bool))
            if isinstance(value, bool):  # YAML 1.1 reads a bare yes/no as a boolean: `no` means "no" here
                value = "yes" if value else "no"
            if value not in setting.choices:
                raise self.fail(node, f"{key} must be one of {', '.join(setting.choices)}, got {node.value!r}")
            return value
        if kind == "size":
            text = str(self.scalar(key, node, (str, int)))
            if not _SIZE.fullmatch(text.strip()):
                raise self.fail(node, f"{key} must be a size like 4M, 512K or 1048576, got {node.value!r}")
            return text.strip()
        text = self.scalar(key, node, str)
        if kind == "text":
            return text
        return self.resolved(key, text) if kind == "path" else (self.resolved(key, text),)

    def scalar(self, key: str, node: Any, wanted: type | tuple[type, ...]) -> Any:
        """The node's value as YAML reads it, refused unless it is of the `wanted` type(s)."""
        import yaml

        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{key} must be a list of single values")
        try:
            value = yaml.constructor.SafeConstructor().construct_object(node)
        except (yaml.YAMLError, ValueError):
            value = node.value
        types = wanted if isinstance(wanted, tuple) else (wanted,)
        if isinstance(value, bool) and bool not in types:
            value = node.value  # `user: yes` is the text it looks like, not true
        if not isinstance(value, types) or (isinstance(value, str) and not value.strip()):
            names = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
            expected = " or ".join(dict.fromkeys(names[kind] for kind in types))
            raise self.fail(node, f"{key} must be {expected}, got {node.value!r}")
        return value

    def resolved(self, key: str, text: str) -> str:
        # Relative to the defaults file, not to wherever fleetrun runs from; `none` keeps its meaning.
        if key == "ssh_config" and text == "none":
            return text
        return os.path.normpath(self.path.absolute().parent / os.path.expanduser(text))


def default_map(defaults: Defaults, group: click.Group) -> dict[str, Any]:
    """click's default_map for `group`: each command's share of the defaults, nested like the commands.

    FLEETRUN_INVENTORY, an environment variable fleetrun reads itself, beats the file's inventory.
    """
    values = dict(defaults.values)
    if os.environ.get("FLEETRUN_INVENTORY"):
        values.pop("inventory", None)

    def for_command(name: str, command: click.Command) -> dict[str, Any]:
        if isinstance(command, click.Group):
            nested = {sub: for_command(sub, each) for sub, each in command.commands.items()}
            return {sub: entries for sub, entries in nested.items() if entries}
        params = {param.name for param in command.params}
        return {setting.param: values[key] for key, setting in SETTINGS.items()
                if key in values and setting.param in params
                and (setting.commands is None or name in setting.commands)}

    return for_command(group.name or "fleetrun", group)
