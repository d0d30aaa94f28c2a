"""Inventory JSON in the `--list` shape: executable inventories, `ansible-inventory --list`, a file or stdin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from fleetrun.sources.ansible_data import AnsibleData, Origin, Vaulted, fail, is_secret

DEFAULT_TIMEOUT = 60.0
STDERR_LINES = 5  # of a failing script's stderr, shown on the one error line


def timeout() -> float:
    """Seconds an inventory program may take in all ($FLEETRUN_INVENTORY_TIMEOUT, default 60)."""
    text = os.environ.get("FLEETRUN_INVENTORY_TIMEOUT", "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        fail(("$FLEETRUN_INVENTORY_TIMEOUT", None), f"must be a positive number of seconds, got {text!r}")
    return value


def run(command: list[str], label: str, deadline: float, env: dict[str, str] | None = None) -> str:
    """Run an inventory program without a terminal or stdin; its stdout, or one line saying why not."""
    shown = " ".join(command)
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, start_new_session=True, env=env)
    except OSError as error:
        fail((label, None), f"cannot run {shown!r}: {error.strerror}; check that it exists and is executable")
    try:
        out, err = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # its own session: children it started go too
        process.communicate()
        fail((label, None), f"{shown!r} did not finish within {timeout():g} s (set $FLEETRUN_INVENTORY_TIMEOUT "
             "to allow longer); it was killed")
    if process.returncode != 0:
        lines = [line.strip() for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
        said = f"; its stderr: {' | '.join(lines[-STDERR_LINES:])}" if lines else " and printed nothing on stderr"
        fail((label, None), f"{shown!r} exited with status {process.returncode}{said}")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        fail((label, None), f"{shown!r} printed something that is not UTF-8 text")


def _load(text: str, label: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        fail((label, error.lineno), f"{what} is not valid JSON: {error.msg}")


def _plain(value: Any) -> Any:
    """`{"__ansible_vault": ...}` (how --list prints an encrypted value) becomes an opaque marker, and
    `{"__ansible_unsafe": ...}` (how it prints an `!unsafe` value) the text itself: unsafe only means "never
    template this", and fleetrun templates nothing, so `ansible_host: !unsafe 10.0.0.1` is the address."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_vault"} and isinstance(value["__ansible_vault"], str):
            return Vaulted(value["__ansible_vault"])
        if set(value) == {"__ansible_unsafe"} and isinstance(value["__ansible_unsafe"], str):
            return value["__ansible_unsafe"]
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def read_list(data: AnsibleData, text: str, label: str,
              host_vars: Callable[[str], str] | None = None) -> None:
    """Add a `--list` document to `data`, the way Ansible's script plugin does.

    A group's value may be a list of hosts, a mapping with hosts/vars/children, or (old style) a bare mapping
    of vars. `_meta.hostvars` holds every host's vars; when it is missing, `host_vars(name)` is asked per host
    (the `--host` call). Secrets in this output are dropped and counted, never stored.
    """
    where: Origin = (label, None)
    top = _load(text, label, "the inventory")
    if not isinstance(top, dict):
        fail(where, f"the inventory JSON must be an object of groups, got {type(top).__name__}")
    meta = top.get("_meta")
    hostvars = None
    if meta is not None:
        if not isinstance(meta, dict):
            fail(where, "'_meta' must be an object")
        hostvars = meta.get("hostvars")
        if not isinstance(hostvars, dict):
            fail(where, "'_meta.hostvars' must be an object of host names to vars")
    seen: list[str] = []
    for group, body in top.items():
        if group != "_meta":
            _group(data, group, body, where, seen, label)
    for host in dict.fromkeys(seen):
        if hostvars is not None:
            got: Any = hostvars.get(host, {})
        elif host_vars is not None:
            answer = host_vars(host)
            got = _load(answer, label, f"the --host {host} answer") if answer.strip() else {}
        else:
            got = {}
        if not isinstance(got, dict):
            fail(where, f"the vars of host {host!r} must be an object, got {type(got).__name__}")
        for key, value in got.items():
            if _keep(data, label, key):
                data.set_host_var(host, key, _plain(value), where)


def _keep(data: AnsibleData, label: str, key: Any) -> bool:
    if isinstance(key, str) and is_secret(key):
        data.dropped_secrets.setdefault(label, set()).add(key)
        return False
    return True


def _group(data: AnsibleData, name: str, body: Any, where: Origin, seen: list[str], label: str) -> None:
    group = data.add_group(name, where)
    if not isinstance(body, dict):
        body = {"hosts": body}
    elif not any(key in body for key in ("hosts", "vars", "children")):
        body = {"hosts": [group], "vars": body}
    hosts = body.get("hosts", [])
    if hosts is not None:
        if not isinstance(hosts, list):
            fail(where, f"'{group}.hosts' must be a list of host names")
        for host in hosts:
            data.add_host(host, group, None, where)
            seen.append(host)
    variables = body.get("vars", {})
    if variables is not None:
        if not isinstance(variables, dict):
            fail(where, f"'{group}.vars' must be an object")
        for key, value in variables.items():
            if _keep(data, label, key):
                data.set_group_var(group, key, _plain(value), where)
    for child in body.get("children") or []:
        data.add_child(group, data.add_group(child, where), where)
