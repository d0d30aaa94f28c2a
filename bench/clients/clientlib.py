"""Shared by the library-based client scripts: the fleet spec, known host keys, one report line per host."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPORT_PREFIX = "BENCH "


@dataclass(frozen=True)
class Target:
    name: str
    address: str
    port: int

    @property
    def known_name(self) -> str:
        """How OpenSSH and paramiko name this host in known_hosts."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


@dataclass(frozen=True)
class Spec:
    user: str
    key: str
    known_hosts: str
    hosts: tuple[Target, ...]


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--spec", required=True, help="the fleet's JSON spec written by bench/run.py")
    parser.add_argument("--forks", type=int, default=0, help="parallelism; 0 = the library's default")
    parser.add_argument("--command", help="remote command")
    parser.add_argument("--put", nargs=2, metavar=("LOCAL", "REMOTE"), help="upload LOCAL to REMOTE")
    return parser.parse_args()


def load_spec(path: str) -> Spec:
    data: dict[str, Any] = json.loads(Path(path).read_text())
    hosts = tuple(Target(h["name"], h["address"], int(h["port"])) for h in data["hosts"])
    return Spec(data["user"], data["key"], data["known_hosts"], hosts)


def known_keys(path: str) -> dict[str, tuple[str, bytes]]:
    """known_hosts name → (key type, key blob); plain entries only, as the lab writes them."""
    keys: dict[str, tuple[str, bytes]] = {}
    for line in Path(path).read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith(("#", "@", "|")):
            for name in fields[0].split(","):
                keys[name] = (fields[1], base64.b64decode(fields[2]))
    return keys


def report(host: str, *, ok: bool, rc: int | None, stdout: bytes = b"", error: str | None = None) -> None:
    """One machine-readable line per host on stderr; the harness verifies from these."""
    record = {"host": host, "ok": ok, "rc": rc, "lines": stdout.count(b"\n"), "bytes": len(stdout),
              "error": error}  # fmt: skip
    sys.stderr.write(REPORT_PREFIX + json.dumps(record) + "\n")


def echo(stdout: bytes) -> None:
    """Pass the host's output on, as the command-line tools do."""
    if stdout:
        sys.stdout.buffer.write(stdout)
