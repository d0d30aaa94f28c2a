"""`fleetrun inventory export`: any inventory as Ansible `--list` JSON, Ansible YAML, or fleetrun YAML.

Every host is written with its resolved settings (group vars folded in, as `ansible-inventory --list` does)
and every group as the flat list of its members, so reading the export back gives the same hosts, groups
and settings; the nesting of children and where a var was set are not kept.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import yaml

from fleetrun.errors import UsageError
from fleetrun.inventory import Inventory
from fleetrun.models import Host
from fleetrun.sources.ansible_data import Vaulted
from fleetrun.sources.mapping import KNOWN_HOSTS

FORMATS = ("ansible-json", "ansible-yaml", "fleetrun")
_FLEETRUN_NAME = re.compile(r"[^\s,&!*?\[\]]+\Z")


def export(inventory: Inventory, form: str) -> tuple[str, list[str]]:
    """(the text to print, warnings about what the format cannot hold)."""
    if form == "ansible-json":
        return json.dumps(_as_list(inventory), indent=2, default=_json_default) + "\n", []
    if form == "ansible-yaml":
        return _dump(_as_yaml(inventory)), []
    return _as_fleetrun(inventory)


def ansible_vars(host: Host) -> dict[str, Any]:
    """The host's vars with its connection settings written back as Ansible variables."""
    out: dict[str, Any] = {}
    if host.address != host.name:
        out["ansible_host"] = host.address
    if host.port != 22 or "port" in host.explicit:
        out["ansible_port"] = host.port
    for value, name in ((host.user, "ansible_user"), (host.key, "ansible_ssh_private_key_file"),
                        (host.password_env, "fleetrun_password_env"),
                        (host.password_file, "fleetrun_password_file"),
                        (host.become_password_env, "fleetrun_become_password_env"),
                        (host.become_password_file, "fleetrun_become_password_file")):
        if value is not None:
            out[name] = value
    if host.connect_timeout is not None:
        timeout = host.connect_timeout
        out["ansible_ssh_timeout"] = int(timeout) if timeout == int(timeout) else timeout
    if host.known_hosts:
        out[KNOWN_HOSTS] = list(host.known_hosts)
    variables = dict(host.vars)
    if host.become and "ansible_become" not in variables:
        out["ansible_become"] = True
    if host.become_user and "ansible_become_user" not in variables:
        out["ansible_become_user"] = host.become_user
    if "ansible_ssh_common_args" not in variables:
        if host.proxy_command:
            out["ansible_ssh_common_args"] = shlex.join(["-o", f"ProxyCommand={host.proxy_command}"])
        elif host.jump is not None:
            out["ansible_ssh_common_args"] = shlex.join(["-o", f"ProxyJump={','.join(host.jump) or 'none'}"])
    out.update(variables)
    return out


def _real_groups(inventory: Inventory) -> dict[str, tuple[str, ...]]:
    return {name: members for name, members in inventory.groups.items() if name != "ungrouped"}


def _as_list(inventory: Inventory) -> dict[str, Any]:
    groups = _real_groups(inventory)
    loose = [name for name, host in inventory.hosts.items() if not set(host.groups) - {"ungrouped"}]
    top: dict[str, Any] = {
        "_meta": {"hostvars": {name: _jsonable(ansible_vars(host)) for name, host in inventory.hosts.items()}},
        "all": {"children": [*(["ungrouped"] if loose else []), *groups]},
    }
    if loose:
        top["ungrouped"] = {"hosts": loose}
    for name, members in groups.items():
        top[name] = {"hosts": list(members)}
    return top


def _as_yaml(inventory: Inventory) -> dict[str, Any]:
    # Every host once under all.hosts with its vars; the groups then only name their members.
    children = {name: {"hosts": {member: None for member in members}} if members else None
                for name, members in _real_groups(inventory).items()}
    body: dict[str, Any] = {"hosts": {name: ansible_vars(host) or None for name, host in inventory.hosts.items()}}
    if children:
        body["children"] = children
    return {"all": body}


def _as_fleetrun(inventory: Inventory) -> tuple[str, list[str]]:
    warnings: list[str] = []
    vaulted: list[str] = []
    hosts: dict[str, Any] = {}
    for name, host in inventory.hosts.items():
        for kind, word in [("host", name), *(("group", group) for group in host.groups)]:
            if not _FLEETRUN_NAME.match(word) or word == "all" or (kind == "group" and word in inventory.hosts):
                raise UsageError(f"{kind} {word!r} cannot be written to a fleetrun inventory (names there have no "
                                 "spaces or , & ! * ? [ ], are not 'all' and no host and group share one); "
                                 "rename it or export with --format ansible-yaml")
        entry: dict[str, Any] = {}
        if host.address != name:
            entry["address"] = host.address
        if host.port != 22 or "port" in host.explicit:
            entry["port"] = host.port
        for key in ("user", "key", "password_env", "password_file", "connect_timeout", "proxy_command",
                    "become_user", "become_password_env", "become_password_file"):
            if getattr(host, key) is not None:
                entry[key] = getattr(host, key)
        if host.jump is not None:
            entry["jump"] = list(host.jump) if host.jump else "none"
        if host.become:
            entry["become"] = True
        if host.known_hosts:
            entry["known_hosts"] = list(host.known_hosts)
        if host.env:
            entry["env"] = dict(host.env)
        groups = [group for group in host.groups if group != "ungrouped"]
        if groups:
            entry["groups"] = groups
        variables = {key: value for key, value in host.vars.items() if not isinstance(value, Vaulted)}
        if len(variables) < len(host.vars):
            vaulted.append(name)
        if variables:
            entry["vars"] = variables
        hosts[name] = entry or None
    if not hosts:
        raise UsageError("the inventory has no host to export")
    if vaulted:
        warnings.append(f"vault-encrypted vars of {_some(vaulted)} are left out: fleetrun YAML cannot hold them")
    return _dump({"hosts": hosts}), warnings


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:3])
    return f"{len(names)} hosts ({shown}{', …' if len(names) > 3 else ''})" if len(names) > 1 else f"host {shown}"


class _Dumper(yaml.SafeDumper):
    """Safe YAML out; `!vault` values are written back as Ansible writes them."""


def _vault(dumper: yaml.SafeDumper, value: Vaulted) -> yaml.ScalarNode:
    return dumper.represent_scalar("!vault", str(value), style="|")


_Dumper.add_representer(Vaulted, _vault)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _jsonable(value: Any) -> Any:
    """`--list` writes an encrypted value as {"__ansible_vault": ciphertext}; so does this."""
    if isinstance(value, Vaulted):
        return {"__ansible_vault": str(value)}
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value


def _json_default(value: Any) -> Any:
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
