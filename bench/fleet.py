"""The files every tool needs to reach the same lab hosts the same way: one key, one known_hosts, strict checking."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fleetrun.lab import Lab

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Target:
    """One lab host as the tools see it."""

    name: str
    address: str
    port: int
    pid: int  # its sshd, whose /proc/PID/root shows the host's private /srv


@dataclass(frozen=True)
class Fleet:
    """A set of lab hosts and, in `directory`, the same settings written in each tool's own format."""

    hosts: tuple[Target, ...]
    user: str
    key: Path
    known_hosts: Path
    inventory: Path  # fleetrun's: the lab's own inventory
    pattern: str  # fleetrun --hosts for exactly these hosts
    directory: Path
    kex: str | None = None  # KexAlgorithms for the OpenSSH-based tools; None = OpenSSH's default

    @property
    def ssh_config(self) -> Path:
        return self.directory / "ssh_config"

    @property
    def addresses_file(self) -> Path:
        return self.directory / "hosts.txt"

    @property
    def pssh_hosts(self) -> Path:
        return self.directory / "pssh_hosts.txt"

    @property
    def spec(self) -> Path:
        return self.directory / "spec.json"

    @property
    def ansible_cfg(self) -> Path:
        return self.directory / "ansible" / "ansible.cfg"

    @property
    def home(self) -> Path:
        return self.directory / "home"

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment: no agent, an empty HOME, unbuffered nothing, C.UTF-8."""
        env = {"PATH": SYSTEM_PATH, "HOME": str(self.home), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "USER": self.user, "LOGNAME": self.user, "TERM": "dumb"}  # fmt: skip
        env.update(extra)
        return env


def make_fleet(lab: Lab, directory: Path, count: int | None = None, kex: str | None = None) -> Fleet:
    """The first `count` hosts of the lab (all by default), with their files written under `directory`."""
    chosen = lab.hosts if count is None else lab.hosts[:count]
    hosts = tuple(Target(h.name, h.address, h.port, h.pid) for h in chosen)
    pattern = "all" if count is None or count >= len(lab.hosts) else ",".join(h.name for h in hosts)
    fleet = Fleet(hosts, lab.user, lab.client_key, lab.known_hosts, lab.inventory, pattern, directory, kex)
    _write(fleet)
    return fleet


def _write(fleet: Fleet) -> None:
    directory = fleet.directory
    (directory / "ansible" / "tmp").mkdir(parents=True, exist_ok=True)
    fleet.home.mkdir(mode=0o700, exist_ok=True)
    port = fleet.hosts[0].port  # a lab runs every host on one port
    # OpenSSH-based tools (pdsh, parallel-ssh, clush, ansible) all read this one file through -F.
    fleet.ssh_config.write_text(
        "Host *\n"
        f"  User {fleet.user}\n"
        f"  Port {port}\n"
        f"  IdentityFile {fleet.key}\n"
        "  IdentitiesOnly yes\n"
        "  IdentityAgent none\n"
        f"  UserKnownHostsFile {fleet.known_hosts}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n"
        "  CheckHostIP no\n"
        "  BatchMode yes\n"
        "  ControlMaster no\n"
        "  ControlPath none\n"
        "  ConnectTimeout 10\n"
        "  LogLevel ERROR\n"
        # OpenSSH 9's default key exchange (sntrup761x25519) costs its client ~130 ms of CPU per connection here;
        # paramiko and libssh2 cannot speak it, so by default every tool gets the same curve25519 exchange.
        + (f"  KexAlgorithms {fleet.kex}\n" if fleet.kex else "")
    )
    fleet.addresses_file.write_text("".join(f"{h.address}\n" for h in fleet.hosts))
    fleet.pssh_hosts.write_text("".join(f"{fleet.user}@{h.address}:{h.port}\n" for h in fleet.hosts))
    spec = {"user": fleet.user, "key": str(fleet.key), "known_hosts": str(fleet.known_hosts),
            "hosts": [{"name": h.name, "address": h.address, "port": h.port} for h in fleet.hosts]}  # fmt: skip
    fleet.spec.write_text(json.dumps(spec, indent=1) + "\n")
    ansible = directory / "ansible"
    (ansible / "inventory.ini").write_text(
        "[lab]\n"
        + "".join(f"{h.name} ansible_host={h.address}\n" for h in fleet.hosts)
        + f"[all:vars]\nansible_port={port}\nansible_user={fleet.user}\n"
        + f"ansible_ssh_private_key_file={fleet.key}\n"
    )
    fleet.ansible_cfg.write_text(
        "[defaults]\n"
        f"inventory = {ansible / 'inventory.ini'}\n"
        "host_key_checking = True\n"
        "retry_files_enabled = False\n"
        f"local_tmp = {ansible / 'tmp'}\n"
        "interpreter_python = auto_silent\n"
        "deprecation_warnings = False\n"
        "[ssh_connection]\n"
        # No ControlPersist masters: they would outlive the run, escape its CPU count and skew the next tool.
        f"ssh_args = -F {fleet.ssh_config} -o ControlMaster=no -o ControlPersist=no\n"
        f"control_path_dir = {ansible / 'cp'}\n"
    )
    os.chmod(fleet.ssh_config, 0o600)
