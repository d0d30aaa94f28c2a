"""What `exec` runs on each host, as data: the command (--template, --script), its variables, sudo and stdin.

Pure, except `load_script` reading the local file; checked for every host before anything connects, so a bad
template key or variable is exit 2 with nothing run.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetrun.errors import UsageError
from fleetrun.inventory import RESERVED_ENV
from fleetrun.models import Host

if TYPE_CHECKING:
    from fleetrun.stdin_spool import StdinSpool

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")
_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
MAX_SCRIPT = 64 << 20  # a script is code, not data: anything this big is the wrong file


@dataclass(frozen=True)
class Script:
    """A local script for --script: its bytes, the interpreter its #! line names (as the kernel reads it),
    and the arguments."""

    path: str
    data: bytes = field(repr=False)
    interpreter: tuple[str, ...]
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExecSpec:
    """The run-wide part of `fleetrun exec`: every host's command, variables, sudo and stdin come from this."""

    command: str  # the command, or "" with a script
    script: Script | None = None
    template: bool = False
    env: Mapping[str, str] = field(default_factory=dict)  # --env, over the inventory's env
    become_pty: bool = False
    become_timeout: float = 15.0
    stdin: StdinSpool | None = None  # the operator's stdin, forwarded; None: EOF at once
    run_id: str = ""  # in sudo's prompt and the start marker


def parse_env_options(values: Iterable[str]) -> dict[str, str]:
    """--env NAME=VALUE (repeatable; the last of a name wins)."""
    env: dict[str, str] = {}
    for value in values:
        name, equals, text = value.partition("=")
        if not equals:
            raise UsageError(f"--env {value!r}: write NAME=VALUE")
        if not _NAME.match(name):
            raise UsageError(f"--env {name}=…: {name!r} is not a variable name (letters, digits, _; not a digit first)")
        if RESERVED_ENV.match(name):
            raise UsageError(f"--env {name}=…: {name} is set by fleetrun itself; pick another name")
        if "\0" in text:
            raise UsageError(f"--env {name}=…: a NUL character cannot be in an environment variable")
        env[name] = text
    return env


def as_text(value: Any) -> str:
    """A variable's value as the command sees it: strings as they are, anything else as JSON (true, 5, [1])."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def host_env(host: Host, extra: Mapping[str, str]) -> dict[str, str]:
    """The variables exported to the command on `host`: FLEETRUN_HOST, FLEETRUN_ADDRESS, FLEETRUN_VAR_<NAME>
    for each inventory var, then the inventory's env, then --env."""
    env = {"FLEETRUN_HOST": host.name, "FLEETRUN_ADDRESS": host.address}
    for name in sorted(host.vars):  # sorted: `a-b` and `a_b` both make FLEETRUN_VAR_A_B, and the later one wins
        env[f"FLEETRUN_VAR_{_NOT_IDENTIFIER.sub('_', str(name)).upper()}"] = as_text(host.vars[name])
    env.update(host.env)
    env.update(extra)
    return {name: value.replace("\0", "") for name, value in env.items()}  # a NUL cannot pass exec


def _lookup(host: Host, key: str) -> str:
    if key == "host":
        return host.name
    if key == "address":
        return host.address
    if key.startswith("vars.") and len(key) > 5:
        value: Any = host.vars
        for part in key[5:].split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise KeyError(key)
            value = value[part]
        return as_text(value)
    raise KeyError(key)


def render(text: str, host: Host, quote: bool = True) -> str:
    """`text` with {host}, {address} and {vars.NAME} replaced for `host` (shell-quoted unless `quote` is
    False); `{{` and `}}` are literal braces. Raises UsageError naming the host for an unknown key."""

    def replace(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole in ("{{", "}}"):
            return whole[0]
        if match.group(1) is None:
            raise UsageError(f"--template: a single {whole!r} in {text!r}; write {whole * 2} for a literal brace")
        key = match.group(1).strip()
        try:
            value = _lookup(host, key)
        except KeyError:
            known = "{host}, {address}, {vars.NAME}"
            have = ", ".join(sorted(host.vars)) or "none"
            raise UsageError(f"--template: host {host.name} has no {{{key}}} (known: {known}; its vars: {have})"
                             ) from None
        return shlex.quote(value) if quote else value

    return _FIELD.sub(replace, text)


def check(spec: ExecSpec, hosts: Sequence[Host]) -> None:
    """Every host's command renders (--template): exit 2 before connecting anywhere otherwise."""
    if not spec.template:
        return
    for host in hosts:
        command_for(spec, host)


def command_for(spec: ExecSpec, host: Host) -> tuple[str, tuple[str, ...]]:
    """(the command, the script's arguments) for `host`, templates applied."""
    if not spec.template:
        return spec.command, spec.script.args if spec.script else ()
    args = tuple(render(arg, host, quote=False) for arg in spec.script.args) if spec.script else ()
    return render(spec.command, host), args


def interpreter_of(data: bytes, path: str) -> tuple[str, ...]:
    """The interpreter a `#!` line names, read as Linux's execve reads it: the path, then at most one
    argument (the rest of the line, trimmed: `#!/usr/bin/env -S python3 -u` gives env one argument). Without
    `#!`, /bin/sh, as a shell runs a script that has none."""
    if not data.startswith(b"#!"):
        return ("/bin/sh",)
    line = data[2:].split(b"\n", 1)[0].strip(b" \t\r")
    try:
        text = line.decode()
    except UnicodeDecodeError:
        raise UsageError(f"--script {path}: its #! line is not UTF-8 text") from None
    parts = text.split(None, 1)
    if not parts:
        raise UsageError(f"--script {path}: its #! line names no interpreter")
    return tuple(part.strip() for part in parts)


def load_script(path: str, args: Sequence[str]) -> Script:
    """Read a --script file (exit 2 when it cannot be used)."""
    file = Path(path).expanduser()
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_SCRIPT + 1)
    except IsADirectoryError:
        raise UsageError(f"--script {path} is a directory; give a script file") from None
    except OSError as error:
        raise UsageError(f"--script {path}: cannot read it: {error.strerror}") from None
    if len(data) > MAX_SCRIPT:
        raise UsageError(f"--script {path} is larger than {MAX_SCRIPT >> 20} MiB; is it really a script?")
    for arg in args:
        if "\0" in arg:
            raise UsageError("--script: an argument cannot hold a NUL character")
    return Script(str(file), data, interpreter_of(data, path), tuple(args))
