"""Lab-like inventories of N hosts (fleetrun YAML, Ansible INI and YAML) for the memory tests and by hand.

`python tests/unit/big_inventory.py 1000 /tmp/inv1000.yaml [yaml|ini|ansible-yaml]` writes one.
"""

from __future__ import annotations

import sys
from pathlib import Path

GROUPS = ("web", "db", "cache", "batch")


def _address(index: int) -> tuple[str, int]:
    return f"127.1.{index // 250}.{index % 250 + 1}", 20000 + index


def fleetrun_yaml(count: int) -> str:
    """`defaults:` user/key/known_hosts/connect_timeout, `labNNNN: {address, port}` hosts, a few groups."""
    lines = ["defaults:", "  user: lab", "  key: /srv/lab/keys/id_ed25519", "  known_hosts: [/srv/lab/known_hosts]",
             "  connect_timeout: 10", "hosts:"]
    for index in range(count):
        address, port = _address(index)
        lines.append(f"  lab{index:04d}: {{address: {address}, port: {port}}}")
    lines.append("groups:")
    for number, group in enumerate(GROUPS):
        members = ", ".join(f"lab{index:04d}" for index in range(number, count, len(GROUPS)))
        lines.append(f"  {group}: [{members}]")
    lines.append("  even: {children: [web, cache], vars: {tier: front}}")
    return "\n".join(lines) + "\n"


def ansible_ini(count: int) -> str:
    lines = ["[all:vars]", "ansible_user=lab", "ansible_ssh_private_key_file=/srv/lab/keys/id_ed25519",
             "ansible_ssh_common_args='-o UserKnownHostsFile=/srv/lab/known_hosts'", "", "[lab]"]
    for index in range(count):
        address, port = _address(index)
        lines.append(f"lab{index:04d} ansible_host={address} ansible_port={port}")
    for number, group in enumerate(GROUPS):
        lines += ["", f"[{group}]", *(f"lab{index:04d}" for index in range(number, count, len(GROUPS)))]
    return "\n".join(lines) + "\n"


def ansible_yaml(count: int) -> str:
    lines = ["all:", "  vars:", "    ansible_user: lab", "    ansible_ssh_private_key_file: /srv/lab/keys/id_ed25519",
             "  children:", "    lab:", "      hosts:"]
    for index in range(count):
        address, port = _address(index)
        lines.append(f"        lab{index:04d}: {{ansible_host: {address}, ansible_port: {port}}}")
    for number, group in enumerate(GROUPS):
        lines += [f"    {group}:", "      hosts:",
                  *(f"        lab{index:04d}:" for index in range(number, count, len(GROUPS)))]
    return "\n".join(lines) + "\n"


WRITERS = {"yaml": (fleetrun_yaml, ".yaml"), "ini": (ansible_ini, ".ini"), "ansible-yaml": (ansible_yaml, ".yml")}


def write(directory: Path, count: int, kind: str = "yaml") -> Path:
    writer, suffix = WRITERS[kind]
    path = directory / f"inv{count}-{kind}{suffix}"
    path.write_text(writer(count))
    return path


if __name__ == "__main__":
    size, target = int(sys.argv[1]), Path(sys.argv[2])
    target.write_text(WRITERS[sys.argv[3] if len(sys.argv) > 3 else "yaml"][0](size))
