"""Ansible's in-memory inventory (groups, hosts, children, vars), filled by the readers in Ansible's own order."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from fleetrun.errors import InventoryError

Origin = tuple[str, "int | None"]  # (file, line) a value came from, for error messages
NOWHERE: Origin = ("", None)

# Secrets fleetrun never takes from an inventory: a literal value is refused where it is written.
SECRET_NAMES = frozenset(
    [f"ansible_{prefix}{word}" for prefix in ("", "ssh_", "become_", "sudo_", "su_") for word in ("pass", "password")]
    + [f"ansible_{prefix}private_key{suffix}" for prefix in ("", "ssh_") for suffix in ("", "_passphrase")]
)


def is_secret(key: str) -> bool:
    """Whether a variable holds a password or key material."""
    return key in SECRET_NAMES


def fail(where: Origin, message: str) -> NoReturn:
    raise InventoryError(where[0], where[1], " ".join(message.split("\n")))


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


class Vaulted(str):
    """An `!vault` value, holding its ciphertext: fleetrun cannot decrypt it (that needs Ansible and the vault
    password), but it can write it back out on export."""


@dataclass
class Group:
    name: str
    where: Origin
    hosts: list[str] = field(default_factory=list)  # direct members, in the order they were added
    host_set: set[str] = field(default_factory=set)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, Origin] = field(default_factory=dict)
    priority: int = 1


@dataclass
class HostEntry:
    name: str
    where: Origin
    groups: list[str] = field(default_factory=list)  # direct groups
    vars: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, Origin] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """One inventory source; `adjacent` says whether group_vars/ and host_vars/ next to it apply."""

    path: Path
    adjacent: bool
    label: str


class AnsibleData:
    """What Ansible's InventoryData holds, with where each thing was written."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {name: Group(name, NOWHERE) for name in ("all", "ungrouped")}
        self.groups["all"].children.append("ungrouped")
        self.groups["ungrouped"].parents.append("all")
        self.hosts: dict[str, HostEntry] = {}
        self.sources: list[Source] = []
        self.warnings: list[str] = []
        self.dropped_secrets: dict[str, set[str]] = {}  # source label -> secret var names dropped from output
        self.listed_files: set[Path] = set()  # files read as --list JSON (their group_vars are folded in)

    def add_group(self, name: Any, where: Origin) -> str:
        if not isinstance(name, str) or not name:
            fail(where, f"group name {name!r} must be a non-empty string; quote it")
        if name not in self.groups:
            self.groups[name] = Group(name, where)
        return name

    def add_host(self, name: Any, group: str | None, port: int | None, where: Origin) -> str:
        if not isinstance(name, str) or not name:
            fail(where, f"host name {name!r} must be a non-empty string; quote it")
        host = self.hosts.get(name)
        if host is None:
            host = self.hosts[name] = HostEntry(name, where)
            if port:  # Ansible's Host(name, port) tests it for truth: `web:0` is web on its default port
                self._set_on_host(name, "ansible_port", port, where)  # the host's own, whatever groups exist
        if group is not None:
            members = self.groups[group]
            if name not in members.host_set:
                members.hosts.append(name)
                members.host_set.add(name)
                host.groups.append(group)
        return name

    def check_secret(self, key: str, value: Any, where: Origin) -> None:
        if is_secret(key) and value not in (None, "") and not isinstance(value, Vaulted) \
                and not is_template(value):
            fail(where, f"{key}: a literal password or key is not allowed in the inventory; set "
                 "fleetrun_password_env (the name of an environment variable) or fleetrun_password_file "
                 "(a file readable only by you) instead, or keep it in Ansible Vault")

    def set_group_var(self, group: str, key: Any, value: Any, where: Origin) -> None:
        key = self.var_name(key, where)
        self.check_secret(key, value, where)
        entry = self.groups[group]
        if key == "ansible_group_priority":  # Ansible keeps it apart from the vars: it orders the groups
            try:
                entry.priority = int(value)
            except (TypeError, ValueError):
                fail(where, f"ansible_group_priority must be a whole number, got {value!r}")
            return
        entry.vars[key] = value
        entry.origins[key] = where

    def set_host_var(self, host: str, key: Any, value: Any, where: Origin) -> None:
        """A variable written for host `host` in an inventory file. As Ansible's InventoryData.set_variable
        looks for a group of that name first, a name that is also a group's (by then) gives it to the group."""
        if host in self.groups:
            self.set_group_var(host, key, value, where)
        else:
            self._set_on_host(host, key, value, where)

    def _set_on_host(self, host: str, key: Any, value: Any, where: Origin) -> None:
        key = self.var_name(key, where)
        self.check_secret(key, value, where)
        entry = self.hosts[host]
        entry.vars[key] = value
        entry.origins[key] = where

    @staticmethod
    def var_name(key: Any, where: Origin) -> str:
        """A variable's name. Ansible takes any YAML scalar as one (`on:` is True, `1:` is 1, `=x` in INI is
        ""); fleetrun keeps the name `ansible-inventory --list` prints for it ("true", "1", "")."""
        if isinstance(key, str):
            return key
        if key is None or isinstance(key, (bool, int, float)):
            return json.dumps(key)  # how json writes such a key: true, null, 1, 1.5, Infinity
        fail(where, f"variable name {key!r} must be a string; quote it")

    def ancestors(self, group: str) -> set[str]:
        found: set[str] = set()
        todo = list(self.groups[group].parents)
        while todo:
            name = todo.pop()
            if name not in found:
                found.add(name)
                todo.extend(self.groups[name].parents)
        return found

    def add_child(self, parent: str, child: str, where: Origin) -> None:
        """Make `child` (a group) a child of `parent`, refusing loops as Ansible does."""
        if parent == child:
            fail(where, f"group {parent!r} cannot be a child of itself; remove it from its own children")
        parent_group, child_group = self.groups[parent], self.groups[child]
        if child in parent_group.children:
            return
        if child in self.ancestors(parent):
            fail(where, f"adding group {child!r} as a child of {parent!r} makes a loop ({child!r} is already "
                 f"above {parent!r}); remove one of these links")
        parent_group.children.append(child)
        if parent not in child_group.parents:
            child_group.parents.append(parent)

    def reconcile(self) -> None:
        """After all sources: top groups go under 'all'; hosts with no group go to 'ungrouped' (Ansible's rules)."""
        for name, group in self.groups.items():
            if name != "all" and not group.parents:
                self.add_child("all", name, NOWHERE)
        ungrouped = self.groups["ungrouped"]
        for name, host in self.hosts.items():
            real = [group for group in host.groups if group not in ("all", "ungrouped")]
            if name in ungrouped.host_set and real:
                ungrouped.hosts.remove(name)
                ungrouped.host_set.discard(name)
                host.groups.remove("ungrouped")
            elif not real and name not in ungrouped.host_set:
                if name in self.groups:  # Ansible's add_child('ungrouped', name) takes the group of that name
                    self.add_child("ungrouped", name, NOWHERE)
                else:
                    self.add_host(name, "ungrouped", None, host.where)
        for conflict in sorted(self.groups.keys() & self.hosts.keys()):
            self.warnings.append(f"{conflict!r} is both a host and a group (Ansible warns about this too); "
                                 f"as in Ansible, the pattern {conflict!r} means the host, and a variable written "
                                 "for that name once the group exists is the group's")
