"""Helpers for integration tests: run the real `fleetrun` CLI like a shell session would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """(host records by name, summary record) from --format json output."""
        records = [json.loads(line) for line in self.out.splitlines()]
        hosts = {r["host"]: r for r in records if r["type"] == "host"}
        assert len(hosts) == len(records) - 1, "one record per host, no duplicates"
        return hosts, records[-1]


def clean_env(home: Path) -> dict[str, str]:
    """No agent, a HOME without the real user's ~/.ssh (and the run journal under it, not the user's), and no
    ssh_config unless a test passes one: ssh finds ~/.ssh/config through the passwd entry, not $HOME, so only
    this keeps the user's own out."""
    dropped = {"SSH_AUTH_SOCK", "FLEETRUN_INVENTORY", "XDG_STATE_HOME", "FLEETRUN_STATE_DIR",
               "FLEETRUN_CONFIG"}
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home / ".config")  # no defaults file but the test's own
    env["FLEETRUN_SSH_CONFIG"] = "none"
    return env


def fleetrun(*args: str, home: Path, timeout: float = 120, prefix: tuple[str, ...] = (), **env: str) -> Run:
    command = [*prefix, sys.executable, "-m", "fleetrun", *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**clean_env(home), **env})
    return Run(proc.returncode, proc.stdout, proc.stderr)


def write_inventory(path: Path, lab_inventory: Path, *, extra_hosts: dict[str, Any] | None = None,
                    **defaults: Any) -> Path:
    """A copy of the lab's inventory with changed defaults and extra hosts."""
    data = yaml.safe_load(lab_inventory.read_text())
    data["defaults"].update(defaults)
    data["hosts"].update(extra_hosts or {})
    path.write_text(yaml.safe_dump(data))
    return path
