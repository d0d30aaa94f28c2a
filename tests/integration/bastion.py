"""Bastion fixtures: lab targets whose names only a lab bastion can resolve, and a client that cannot.

The bastion's sshd runs in a mount namespace of its own with an /etc/hosts naming the targets
(`t01.gw.test` …) and an nsswitch.conf that reads only files; fleetrun runs in one whose nsswitch.conf also
reads only files, so those names resolve nowhere on the client, without any DNS query leaving the machine.
A host reached at all was reached through the bastion.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml
from fleet import Run, clean_env, fleetrun

from fleetrun.lab import Lab, LabHost

DOMAIN = "gw.test"
NSSWITCH = "hosts: files\n"


@dataclass
class Bastions:
    """Targets, the bastions in front of them, and the files a run needs."""

    targets: Lab
    names: dict[str, LabHost]  # target name (t01.gw.test) -> lab host
    bastions: dict[str, Lab]  # bastion name (b1, b2) -> its one-host lab
    known_hosts: Path  # every target under its name, every bastion under its address
    work: Path
    nsswitch: Path

    def bastion(self, name: str = "b1") -> LabHost:
        return self.bastions[name].hosts[0]

    def log(self, name: str = "b1") -> str:
        return (self.bastions[name].directory / "lab01.log").read_text(errors="replace")

    def accepted(self, name: str = "b1") -> int:
        return self.log(name).count("Accepted publickey")

    def target_logs(self) -> str:
        return "".join((self.targets.directory / f"{host.name}.log").read_text(errors="replace")
                       for host in self.targets.hosts)

    def inventory(self, path: Path, *, jump: str | list[str] | None = "b1", hosts: list[str] | None = None,
                  bastion_known_hosts: Path | None = None, bastion_address: dict[str, str] | None = None,
                  **defaults: object) -> Path:
        """An inventory with the targets (reached through `jump`) and the bastions (each reached directly)."""
        chosen = hosts if hosts is not None else list(self.names)
        port = self.targets.hosts[0].port
        data: dict[str, object] = {
            "defaults": {"user": self.targets.user, "key": str(self.targets.client_key),
                         "known_hosts": str(self.known_hosts), "connect_timeout": 30, **defaults},
            "hosts": {name: {"address": name, "port": port, **({"jump": jump} if jump is not None else {})}
                      for name in chosen},
        }
        for name, lab in self.bastions.items():
            address = (bastion_address or {}).get(name, lab.hosts[0].address)
            entry: dict[str, object] = {"address": address, "port": lab.hosts[0].port, "jump": "none",
                                        "key": str(lab.client_key)}
            if bastion_known_hosts is not None:
                entry["known_hosts"] = str(bastion_known_hosts)
            data["hosts"][name] = entry  # type: ignore[index]
        path.write_text(yaml.safe_dump(data))
        return path

    @property
    def prefix(self) -> tuple[str, ...]:
        return ("unshare", "-m", "--propagation", "private", "/bin/sh", "-c",
                'mount --bind "$0" /etc/nsswitch.conf && exec "$@"', str(self.nsswitch))

    def run(self, *args: str, timeout: float = 300, **env: str) -> Run:
        """fleetrun, where the targets' names do not resolve."""
        return fleetrun(*args, home=self.work, timeout=timeout, prefix=self.prefix, **env)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """fleetrun in the background, as `run` would run it."""
        return subprocess.Popen([*self.prefix, sys.executable, "-m", "fleetrun", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                env=clean_env(self.work))


BastionConfig = str | Callable[[dict[str, Lab], Lab], str]


def make_bastions(make_lab: Callable[..., Lab], work: Path, count: int, *, bastions: tuple[str, ...] = ("b1",),
                  bastion_config: dict[str, BastionConfig] | None = None, target_config: str = "") -> Bastions:
    """`count` targets behind bastions that each resolve the targets' names (and each other's).

    Bastions start in the order given; a config may be a function of the bastions started before it and the
    targets (sshd reads its config once, so PermitOpen must name addresses known by then).
    """
    work.mkdir(parents=True, exist_ok=True)
    targets = make_lab(count, extra_config=target_config)
    names = {f"t{index:02d}.{DOMAIN}": host for index, host in enumerate(targets.hosts, 1)}
    hosts_file = work / "bastion_hosts"
    nsswitch = work / "nsswitch.conf"
    nsswitch.write_text(NSSWITCH)
    started: dict[str, Lab] = {}
    lines = ["127.0.0.1 localhost", *(f"{host.address} {name}" for name, host in names.items())]
    hosts_file.write_text("\n".join(lines) + "\n")
    for name in bastions:
        extra = (bastion_config or {}).get(name, "")
        config = "LogLevel VERBOSE\n" + (extra(started, targets) if callable(extra) else extra)
        lab = make_lab(1, extra_config=config, bind_files={"/etc/hosts": hosts_file, "/etc/nsswitch.conf": nsswitch})
        started[name] = lab
        # Each bastion is also a name the others resolve (a chain b1 -> b2 forwards to "b2").
        lines.append(f"{lab.hosts[0].address} {name}")
    hosts_file.write_text("\n".join(lines) + "\n")  # read by sshd per connection: later bastions count too
    known = work / "known_hosts"
    entries = [f"[{name}]:{host.port} {pub(host)}" for name, host in names.items()]
    for name, lab in started.items():
        host = lab.hosts[0]
        entries.append(f"[{host.address}]:{host.port} {pub(host)}")
        # A bastion reached *through* another one is looked up under its name, as a target is.
        entries.append(f"[{name}]:{host.port} {pub(host)}")
    known.write_text("\n".join(entries) + "\n")
    return Bastions(targets, names, started, known, work, nsswitch)


def pub(host: LabHost) -> str:
    return " ".join(host.host_key.with_suffix(".pub").read_text().split()[:2])


def process_tree(root: int) -> list[int]:
    """`root` and every process descended from it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


@contextlib.contextmanager
def frozen(root: int) -> Iterator[None]:
    """`root` and its descendants stopped (SIGSTOP: they stop answering, the kernel still ACKs), then resumed."""
    stopped = process_tree(root)
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def kill_tree(root: int) -> None:
    """SIGKILL an sshd and every session it forked (sshd's children are sessions of their own)."""
    for pid in process_tree(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def processes_named(pattern: str) -> list[int]:
    """Pids whose command line matches `pattern` (a regex), from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if re.search(pattern, cmdline):
            found.append(int(entry))
    return found


def zombies_of(pid: int) -> list[int]:
    """Children of `pid` that have exited and were never reaped."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2 :].split()
        if rest[0] == "Z" and int(rest[1]) == pid:
            found.append(int(entry))
    return found
