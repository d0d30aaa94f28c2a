"""Ansible connection variables → fleetrun Host fields: address, port, user, key, jump/proxy, become, timeout."""

from __future__ import annotations

import functools
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from fleetrun.models import Host
from fleetrun.sources.ansible_data import SECRET_NAMES, Origin, Vaulted, fail, is_template

# Where Ansible's ssh plugin lists two names for one setting, the later one wins; so it is here.
ADDRESS = ("ansible_host", "ansible_ssh_host")
PORT = ("ansible_port", "ansible_ssh_port")
USER = ("ansible_user", "ansible_ssh_user")
KEY = ("ansible_private_key_file", "ansible_ssh_private_key_file")
TIMEOUT = ("ansible_ssh_timeout",)
# Ansible's ssh command line: ssh_args, then -o Port/IdentityFile/User from the variables, then common and
# extra args; OpenSSH takes the first value of each option, so what ansible_ssh_args sets beats the variables.
EARLY_SSH_ARGS = "ansible_ssh_args"
SSH_ARGS = (EARLY_SSH_ARGS, "ansible_ssh_common_args", "ansible_ssh_extra_args")
FLEETRUN_SECRETS = {
    "fleetrun_password_env": "password_env", "fleetrun_password_file": "password_file",
    "fleetrun_become_password_env": "become_password_env", "fleetrun_become_password_file": "become_password_file",
}
KNOWN_HOSTS = "fleetrun_known_hosts"  # extra known_hosts files, as fleetrun's own `known_hosts:` key
# Taken into Host fields and not kept in vars (an export writes them back from the fields).
CONSUMED = frozenset({*ADDRESS, *PORT, *USER, *KEY, *TIMEOUT, *FLEETRUN_SECRETS, KNOWN_HOSTS})
SSH_CONNECTIONS = frozenset({"ssh", "paramiko", "paramiko_ssh", "smart", "ansible.builtin.ssh",
                             "ansible.builtin.paramiko_ssh", "ansible.legacy.ssh"})
_TRUE = frozenset({"y", "yes", "on", "1", "true", "t"})
_FALSE = frozenset({"n", "no", "off", "0", "false", "f", ""})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_KEY_VALUE = re.compile(r"\s*([A-Za-z]+)\s*(?:=\s*|\s+)(.*)\Z", re.S)  # ssh_config: `Key=Value` or `Key Value`


@dataclass
class Mapped:
    """One host's settings taken from its vars: Host keyword arguments, and anything fleetrun cannot honour."""

    fields: dict[str, Any] = field(default_factory=dict)
    unsupported: str | None = None  # why fleetrun must not run on this host; it is still listed
    ignored: list[str] = field(default_factory=list)  # ssh options fleetrun does not apply (warned once)
    unused_secrets: list[str] = field(default_factory=list)  # templated/vaulted passwords left out (warned once)


@functools.lru_cache(maxsize=1024)
def _expand(path: str) -> str:
    return os.path.expanduser(path)  # cached: thousands of hosts usually share one key file


def _last(variables: dict[str, Any], names: tuple[str, ...]) -> str | None:
    found = None
    for name in names:
        if variables.get(name) is not None:
            found = name
    return found


def _where(origins: dict[str, Origin], key: str) -> str:
    path, line = origins.get(key, ("", None))
    return f"{path}:{line}" if line else path or "the inventory"


def boolean(value: Any, key: str, origin: Origin) -> bool:
    """Ansible's boolean(): yes/no, on/off, true/false, 1/0, in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    fail(origin, f"{key} must be true or false (yes/no, 1/0), got {value!r}")


def map_host(name: str, variables: dict[str, Any], origins: dict[str, Origin]) -> Mapped:
    """Read the connection settings Ansible would use for host `name`; file:line errors for bad values."""
    mapped = Mapped()
    out = mapped.fields
    blockers: list[str] = []

    def origin(key: str) -> Origin:
        return origins.get(key, ("", None))

    def text(key: str) -> str | None:
        value = variables[key]
        if isinstance(value, Vaulted) or is_template(value):
            kind = "vault-encrypted" if isinstance(value, Vaulted) else "a Jinja template"
            blockers.append(f"{key} at {_where(origins, key)} is {kind}, which fleetrun does not evaluate")
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str) or not value.strip():
            fail(origin(key), f"{key} of host {name!r} must be a non-empty string, got {value!r}")
        return value

    key = _last(variables, ADDRESS)
    if key and (value := text(key)):
        out["address"] = value
    key = _last(variables, USER)
    if key and (value := text(key)):
        out["user"] = value
    key = _last(variables, KEY)
    if key and (value := text(key)):
        out["key"] = _expand(value)  # like ssh -i: relative to where fleetrun runs, as with Ansible
    key = _last(variables, PORT)
    if key and (value := text(key)) is not None:
        if not value.strip().isdigit() or not 1 <= int(value) <= 65535:
            fail(origin(key), f"{key} of host {name!r} must be a port from 1 to 65535, got {variables[key]!r}")
        out["port"] = int(value)
    key = _last(variables, TIMEOUT)
    if key and (value := text(key)) is not None:
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not 0 < seconds < float("inf"):
            fail(origin(key), f"{key} of host {name!r} must be a positive number of seconds, got {value!r}")
        out["connect_timeout"] = seconds
    present = variables.keys() & _RARE
    if not present:  # the usual host: nothing below applies
        mapped.unsupported = "; ".join(blockers) or None
        return mapped
    for key, field_name in FLEETRUN_SECRETS.items():
        if variables.get(key) is not None:
            value = text(key)
            if value and field_name.endswith("_env") and not _ENV_NAME.match(value):
                fail(origin(key), f"{key} must be the name of an environment variable, not the password itself")
            if value:
                out[field_name] = _expand(value) if field_name.endswith("_file") else value
    files = variables.get(KNOWN_HOSTS)
    if files is not None:
        if isinstance(files, str):
            files = [files]
        if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
            fail(origin(KNOWN_HOSTS), f"{KNOWN_HOSTS} must be a file name or a list of them, got {files!r}")
        out["known_hosts"] = tuple(_expand(f) for f in files)
    _ssh_args(variables, origins, mapped, blockers, text)
    _become(variables, origins, out, blockers)
    connection = variables.get("ansible_connection")
    if connection is not None and connection not in SSH_CONNECTIONS:
        blockers.append(f"ansible_connection={connection} at {_where(origins, 'ansible_connection')}: fleetrun "
                        "only connects over SSH")
    # A templated or vaulted password is not a literal (so not refused), but fleetrun cannot evaluate it: it is
    # left out (keys and the agent still work) and said once, rather than blocking every host it covers.
    mapped.unused_secrets.extend(key for key in sorted(present & SECRET_NAMES) if variables[key] not in (None, ""))
    if blockers:
        mapped.unsupported = "; ".join(blockers)
    return mapped


def _become(variables: dict[str, Any], origins: dict[str, Origin], out: dict[str, Any], blockers: list[str]) -> None:
    value = variables.get("ansible_become")
    if value is None or is_template(value):
        if is_template(value):
            blockers.append(f"ansible_become at {_where(origins, 'ansible_become')} is a Jinja template")
        return
    become = boolean(value, "ansible_become", origins.get("ansible_become", ("", None)))
    out["become"] = become
    user = variables.get("ansible_become_user")
    if user is not None and isinstance(user, str) and not is_template(user):
        out["become_user"] = user
    method = variables.get("ansible_become_method")
    if become and method not in (None, "sudo", "ansible.builtin.sudo"):
        blockers.append(f"ansible_become_method={method} at {_where(origins, 'ansible_become_method')}: fleetrun "
                        "becomes another user with sudo only")


def _ssh_args(variables: dict[str, Any], origins: dict[str, Origin], mapped: Mapped, blockers: list[str],
              text: Any) -> None:
    """-J, -o ProxyJump/ProxyCommand/UserKnownHostsFile and friends; OpenSSH's rule: the first value wins."""
    out = mapped.fields
    seen: dict[str, Any] = {}
    early: set[str] = set()  # options ansible_ssh_args set: before the variables' own -o Port/User/IdentityFile
    for key in SSH_ARGS:
        if variables.get(key) is None:
            continue
        value = text(key)
        if not value:
            continue
        try:
            words = shlex.split(value)
        except ValueError as error:
            fail(origins.get(key, ("", None)), f"{key}: cannot split it ({error}); close the quote")
        for option, argument in _options(words):
            if option not in seen and key == EARLY_SSH_ARGS:
                early.add(option)
            seen.setdefault(option, argument)
            if option not in _APPLIED:
                mapped.ignored.append(f"{option}" if argument is None else f"{option}={argument}")
    hop = next((option for option in seen if option in ("proxyjump", "proxycommand")), None)
    if hop == "proxyjump":
        hops = seen["proxyjump"]
        out["jump"] = () if hops.lower() == "none" else tuple(h for h in hops.split(",") if h)
    elif hop == "proxycommand":
        command = seen["proxycommand"]
        if command.lower() == "none":
            out["jump"] = ()
        else:
            out["proxy_command"] = command
    if "userknownhostsfile" in seen and "known_hosts" not in out:
        out["known_hosts"] = tuple(_expand(p) for p in seen["userknownhostsfile"].split())
    # The inventory's own variables come before common/extra args on Ansible's ssh command line, so they beat
    # those; ansible_ssh_args comes before them, so it beats them.
    for option, field_name in (("port", "port"), ("user", "user"), ("identityfile", "key"),
                               ("connecttimeout", "connect_timeout")):
        if option in seen and (field_name not in out or option in early):
            raw = seen[option]
            if field_name == "port":
                if not raw.isdigit() or not 1 <= int(raw) <= 65535:
                    blockers.append(f"ssh option Port={raw} is not a port")
                    continue
                out[field_name] = int(raw)
            elif field_name == "connect_timeout":
                if not raw.isdigit() or int(raw) <= 0:
                    continue
                out[field_name] = float(raw)
            else:
                out[field_name] = _expand(raw)


# The variables the rest of map_host looks at; most hosts have none of them.
_RARE = frozenset({*FLEETRUN_SECRETS, KNOWN_HOSTS, *SSH_ARGS, "ansible_become", "ansible_become_user",
                   "ansible_become_method", "ansible_connection", *SECRET_NAMES})
_NOT_KEPT = CONSUMED | SECRET_NAMES
_APPLIED = frozenset({"proxyjump", "proxycommand", "userknownhostsfile", "port", "user", "identityfile",
                      "connecttimeout"})
_FLAG_OPTIONS = {"-J": "proxyjump", "-p": "port", "-l": "user", "-i": "identityfile"}
_WITH_ARGUMENT = frozenset("BbcDEeFIiJLlmOoPpQRSWw")  # ssh(1) options that take an argument


def _options(words: list[str]) -> list[tuple[str, str | None]]:
    """ssh command-line words → [(lower-case option name, value)], in order; -o Key=Value and -o 'Key Value'."""
    found: list[tuple[str, str | None]] = []
    index = 0
    while index < len(words):
        word = words[index]
        index += 1
        if not word.startswith("-") or len(word) < 2:
            continue
        letter = word[1]
        if letter not in _WITH_ARGUMENT:
            continue  # a flag such as -C, -A or -v
        argument = word[2:]
        if not argument and index < len(words):
            argument, index = words[index], index + 1
        if letter == "o":
            match = _KEY_VALUE.match(argument)
            if match:
                found.append((match.group(1).lower(), match.group(2).strip()))
        elif f"-{letter}" in _FLAG_OPTIONS:
            found.append((_FLAG_OPTIONS[f"-{letter}"], argument))
        else:
            found.append((f"-{letter}", argument))
    return found


def host_record(name: str, groups: tuple[str, ...], variables: dict[str, Any], mapped: Mapped,
                share: dict[Any, Any] | None = None) -> Host:
    """The Host; `share` (one per inventory) makes what hosts have in common one object (issue 13)."""
    fields = mapped.fields
    kept = {key: value for key, value in variables.items() if key not in _NOT_KEPT}
    explicit = frozenset(fields)
    if share is not None:
        explicit = share.setdefault(explicit, explicit)
        if "known_hosts" in fields:
            fields["known_hosts"] = share.setdefault(("known_hosts", fields["known_hosts"]), fields["known_hosts"])
        previous = share.get(("vars", groups))
        if previous == kept:  # the same vars as the last host of these groups (no vars of its own): one dict
            kept = previous
        else:
            share[("vars", groups)] = kept
    return Host(name=name, address=fields.get("address", name), groups=groups, vars=kept,
                explicit=explicit, **{k: v for k, v in fields.items() if k != "address"})
