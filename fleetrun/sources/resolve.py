"""Ansible's variable precedence and group order, applied to the collected data: one Host record per host.

Low to high, as `ansible-inventory --list` computes hostvars: the `all` group's inventory vars; every other
group's inventory vars, ordered by depth (parents first), then `ansible_group_priority`, then name; each
source's `group_vars/all`; each source's `group_vars/<group>` in that same group order; the host's own
inventory vars; each source's `host_vars/<host>`. Every level replaces whole values (Ansible's default
`hash_behaviour = replace`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from fleetrun.models import Host
from fleetrun.sources.ansible_data import AnsibleData, Origin
from fleetrun.sources.mapping import host_record, map_host
from fleetrun.sources.varsfiles import VarsDir


@dataclass(frozen=True)
class Resolved:
    hosts: dict[str, Host]
    groups: dict[str, tuple[str, ...]]
    unsupported: dict[str, str]
    warnings: tuple[str, ...]
    order: tuple[str, ...]  # as the `all` group lists them; `hosts` keeps the order they were first written


def resolve(data: AnsibleData) -> Resolved:
    data.reconcile()
    depth = _depths(data)
    directories = list(dict.fromkeys(
        source.path if source.path.is_dir() else source.path.parent for source in data.sources if source.adjacent
    ))
    group_dirs = [VarsDir(data, directory / "group_vars") for directory in directories]
    host_dirs = [VarsDir(data, directory / "host_vars") for directory in directories]
    groups = data.groups
    ancestry: dict[tuple[str, ...], tuple[tuple[str, ...], dict[str, Any], dict[str, Origin]]] = {}
    hosts: dict[str, Host] = {}
    unsupported: dict[str, str] = {}
    ignored: Counter[str] = Counter()
    unused: Counter[str] = Counter()
    share: dict[Any, Any] = {}
    for name, entry in data.hosts.items():
        direct = tuple(entry.groups)
        if direct not in ancestry:
            found: set[str] = set()
            for group in direct:
                found.add(group)
                found |= data.ancestors(group)
            found.discard("all")
            ordered = sorted(found, key=lambda g: (depth[g], groups[g].priority, g))
            variables, origins = dict(groups["all"].vars), dict(groups["all"].origins)
            for group in ordered:
                variables.update(groups[group].vars)
                origins.update(groups[group].origins)
            for directory in group_dirs:
                values, where = directory.get("all")
                variables.update(values)
                origins.update(where)
            for directory in group_dirs:
                for group in ordered:
                    values, where = directory.get(group)
                    variables.update(values)
                    origins.update(where)
            ancestry[direct] = tuple(sorted(found)), variables, origins
        names, inherited, inherited_origins = ancestry[direct]
        variables, origins = {**inherited, **entry.vars}, {**inherited_origins, **entry.origins}
        for directory in host_dirs:
            values, where = directory.get(name)
            variables.update(values)
            origins.update(where)
        mapped = map_host(name, variables, origins)
        ignored.update(dict.fromkeys(mapped.ignored, 1))
        unused.update(mapped.unused_secrets)
        if mapped.unsupported:
            unsupported[name] = mapped.unsupported
        hosts[name] = host_record(name, names, variables, mapped, share)
    members = {group: tuple(_members(data, group)) for group in groups if group != "all"}
    warnings = list(data.warnings)
    if ignored:
        listed = ", ".join(f"{option} ({count} host{'s' if count != 1 else ''})" for option, count in ignored.items())
        warnings.append(f"fleetrun does not apply these ssh options from ansible_ssh_common_args/extra_args: "
                        f"{listed} (host keys: use --host-key-checking)")
    if unused:
        listed = ", ".join(f"{key} ({count} host{'s' if count != 1 else ''})" for key, count in unused.items())
        warnings.append(f"not used: {listed}: a Jinja template or vault value, which fleetrun does not evaluate; "
                        "keys and the agent are still tried (set fleetrun_password_env or fleetrun_password_file "
                        "for a password)")
    for label, names_dropped in data.dropped_secrets.items():
        warnings.append(f"{label}: dropped {', '.join(sorted(names_dropped))}: fleetrun never takes a password from "
                        "an inventory; set fleetrun_password_env or fleetrun_password_file")
    return Resolved(hosts, members, unsupported, tuple(warnings), tuple(_members(data, "all")))


def _depths(data: AnsibleData) -> dict[str, int]:
    """Longest path from 'all' (Ansible's Group.depth); parents sort before their children."""
    depth: dict[str, int] = {"all": 0}

    def visit(name: str) -> int:
        if name not in depth:
            depth[name] = -1  # loops were refused when the children were added
            parents = data.groups[name].parents
            depth[name] = 1 + max((visit(parent) for parent in parents), default=0)
        return depth[name]

    for name in data.groups:
        visit(name)
    return depth


def _members(data: AnsibleData, group: str) -> list[str]:
    """A group's hosts, its descendants' included, in Ansible's order: its own, then its children's, level by level."""
    ordered = [group]
    seen = {group}
    level = [group]
    while level:
        following: list[str] = []
        for name in level:
            for child in data.groups[name].children:
                if child not in seen:
                    seen.add(child)
                    following.append(child)
        ordered.extend(following)
        level = following
    hosts: dict[str, None] = {}
    for name in ordered:
        hosts.update(dict.fromkeys(data.groups[name].hosts))
    return list(hosts)
