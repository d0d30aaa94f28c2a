"""Ansible itself as a test oracle: `ansible-inventory --list` and pattern matching, run in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from fleetrun.inventory import Inventory
from fleetrun.sources.mapping import CONSUMED

BIN = Path(sys.executable).parent
CONNECTION = ("address", "port", "user", "key")


def env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return {**clean, "HOME": str(home), "ANSIBLE_HOME": str(home / ".ansible"), "ANSIBLE_LOCALHOST_WARNING": "0",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0", "ANSIBLE_DEPRECATION_WARNINGS": "0",
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1"}


def program(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is missing: ansible-core is a dev dependency (make .venv/.installed)"
    return str(path)


def ansible_list(source: Path, home: Path) -> dict[str, Any]:
    """`ansible-inventory -i SOURCE --list`, run from an empty directory (no playbook-adjacent group_vars)."""
    proc = subprocess.run([program("ansible-inventory"), "-i", str(source), "--list"], capture_output=True,
                          text=True, env=env(home), cwd=home, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def ansible_rejects(source: Path, home: Path) -> bool:
    """Whether `ansible-inventory -i SOURCE --list` fails (the oracle env makes an unparsed source fatal)."""
    proc = subprocess.run([program("ansible-inventory"), "-i", str(source), "--list"], capture_output=True,
                          text=True, env=env(home), cwd=home, timeout=300, check=False)
    return proc.returncode != 0


_MATCHER = """
import json, sys
from ansible.parsing.dataloader import DataLoader
from ansible.inventory.manager import InventoryManager
inventory = InventoryManager(loader=DataLoader(), sources=[sys.argv[1]])
out = {}
for pattern in json.loads(sys.argv[2]):
    inventory.clear_pattern_cache()
    try:
        out[pattern] = [h.name for h in inventory.list_hosts(pattern)]
    except Exception as error:
        out[pattern] = "error: " + str(error).splitlines()[0]
print(json.dumps(out))
"""


def ansible_patterns(source: Path, patterns: list[str], home: Path) -> dict[str, Any]:
    """What `ansible -i SOURCE PATTERN --list-hosts` prints for each pattern, with one process for all of them
    (the same InventoryManager.list_hosts call the CLI makes)."""
    proc = subprocess.run([sys.executable, "-c", _MATCHER, str(source), json.dumps(patterns)], capture_output=True,
                          text=True, env=env(home), cwd=home, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def ansible_list_hosts(source: Path, pattern: str, home: Path) -> list[str]:
    """The real `ansible PATTERN --list-hosts`, for spot checks of the one-process matcher above."""
    proc = subprocess.run([program("ansible"), "-i", str(source), pattern, "--list-hosts"], capture_output=True,
                          text=True, env=env(home), cwd=home, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return [line.strip() for line in proc.stdout.splitlines()[1:] if line.strip()]


def membership(listed: dict[str, Any]) -> dict[str, set[str]]:
    """Every group's hosts, children included, from --list output (empty groups left out, as --list does)."""
    def members(group: str) -> set[str]:
        body = listed.get(group, {})
        found = set(body.get("hosts", []))
        for child in body.get("children", []):
            found |= members(child)
        return found

    names = {g for g in listed if g not in ("_meta", "all")}
    for body in listed.values():
        names.update(body.get("children", []) if isinstance(body, dict) else [])
    names.discard("all")
    return {g: members(g) for g in names if members(g)}


def expected_host(name: str, hostvars: dict[str, Any]) -> dict[str, Any]:
    """The four connection settings Ansible's ssh plugin would use (the later alias wins, as in its options)."""
    def last(*keys: str) -> Any:
        found = None
        for key in keys:
            if hostvars.get(key) is not None:
                found = hostvars[key]
        return found

    port = last("ansible_port", "ansible_ssh_port")
    key = last("ansible_private_key_file", "ansible_ssh_private_key_file")
    return {"address": last("ansible_host", "ansible_ssh_host") or name, "port": int(port) if port else 22,
            "user": last("ansible_user", "ansible_ssh_user"),
            "key": os.path.expanduser(key) if key else None}  # ssh -i expands ~ the same way


def plain(value: Any) -> Any:
    """A --list value as fleetrun holds it: `{"__ansible_unsafe": s}` is the text s (fleetrun templates nothing),
    `{"__ansible_vault": c}` the ciphertext c (fleetrun's Vaulted is a str holding it)."""
    if isinstance(value, dict):
        if len(value) == 1 and next(iter(value)) in ("__ansible_unsafe", "__ansible_vault"):
            return next(iter(value.values()))
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def assert_same(inventory: Inventory, listed: dict[str, Any]) -> None:
    """fleetrun's hosts, groups, connection settings and vars equal what `ansible-inventory --list` says."""
    hostvars = plain(listed["_meta"]["hostvars"])
    groups = membership(listed)
    every = set().union(*groups.values()) if groups else set()
    assert set(inventory.hosts) == every
    assert {g: set(m) for g, m in inventory.groups.items() if m} == groups
    for name, host in inventory.hosts.items():
        mine = hostvars.get(name, {})
        assert {f: getattr(host, f) for f in CONNECTION} == expected_host(name, mine), name
        assert dict(host.vars) == {k: v for k, v in mine.items() if k not in CONSUMED}, name
        assert set(host.groups) == {g for g, m in groups.items() if name in m}, name


_SSH_COMMAND = """
import json, sys
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import connection_loader
out = {}
for name, hostvars in json.loads(sys.argv[1]).items():
    context = PlayContext()
    context.remote_addr = hostvars.get("ansible_host", name)
    connection = connection_loader.get("ssh", context, None)
    connection.set_options(var_options=hostvars)
    out[name] = [part.decode() if isinstance(part, bytes) else part
                 for part in connection._build_command("ssh", "ssh", "true")]
print(json.dumps(out))
"""


def ansible_ssh_commands(hostvars: dict[str, dict[str, Any]], home: Path) -> dict[str, list[str]]:
    """The ssh command line Ansible's ssh connection plugin builds for each host's vars (one process)."""
    proc = subprocess.run([sys.executable, "-c", _SSH_COMMAND, json.dumps(hostvars)], capture_output=True,
                          text=True, env=env(home), cwd=home, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])  # type: ignore[no-any-return]


_SSH_FLAGS = {"-J": "proxyjump", "-p": "port", "-l": "user", "-i": "identityfile"}


def openssh_settings(command: list[str]) -> dict[str, Any]:
    """What OpenSSH makes of such a command line: the first value of each option wins; as fleetrun's Host."""
    first: dict[str, str] = {}
    words = command[1:-1]  # ssh ... true
    index = 0
    while index < len(words):
        word, index = words[index], index + 1
        flag = word[:2]
        if flag not in ("-o", *_SSH_FLAGS):
            continue
        value = word[2:] or words[index]
        index += 0 if word[2:] else 1
        if flag == "-o":
            key, _, rest = value.replace("=", " ", 1).partition(" ")
            first.setdefault(key.lower(), rest.strip().strip('"'))
        else:
            first.setdefault(_SSH_FLAGS[flag], value)
    hop = next((k for k in first if k in ("proxyjump", "proxycommand")), None)
    jump = tuple(first["proxyjump"].split(",")) if hop == "proxyjump" else None
    return {"port": int(first.get("port", 22)), "user": first.get("user"),
            "key": os.path.expanduser(first["identityfile"]) if "identityfile" in first else None,
            "jump": () if jump == ("none",) else jump,
            "proxy_command": first["proxycommand"] if hop == "proxycommand" else None}

