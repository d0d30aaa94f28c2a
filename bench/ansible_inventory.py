"""`fleetrun hosts all` against `ansible-inventory --list` on one 5,000-host Ansible INI inventory with group_vars.

Run: `.venv/bin/python bench/ansible_inventory.py [--hosts 5000] [--runs 5]`. It writes the inventory into a
temporary directory, times each tool's whole process (start-up included) several times, checks that both
saw the same hosts, and prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
TARGET = 0.5  # seconds, issue 12


def write_inventory(root: Path, count: int) -> Path:
    """count hosts in 50 groups under 5 parents, inline vars on every host, group_vars for every group."""
    groups = 50
    lines: list[str] = []
    for g in range(groups):
        lines.append(f"[app{g:02d}]")
        for i in range(g, count, groups):
            lines.append(f"node{i:05d}.example.com ansible_host=10.{i // 65536}.{i // 256 % 256}.{i % 256} "
                         f"ansible_port={2200 + i % 7} rack=r{i % 40}")
    for parent in range(5):
        lines.append(f"[dc{parent}:children]")
        lines.extend(f"app{g:02d}" for g in range(parent, groups, 5))
        lines.append(f"[dc{parent}:vars]")
        lines.append(f"datacenter=dc{parent}")
    lines += ["[all:vars]", "ansible_user=deploy", "ntp=pool.example.com"]
    (root / "hosts").write_text("\n".join(lines) + "\n")
    (root / "group_vars").mkdir()
    (root / "group_vars" / "all.yml").write_text("ansible_ssh_private_key_file: ~/.ssh/deploy\nmonitoring: true\n")
    for g in range(groups):
        (root / "group_vars" / f"app{g:02d}.yml").write_text(f"service: app{g}\nreplicas: {g % 3 + 1}\n")
    for parent in range(5):
        (root / "group_vars" / f"dc{parent}.yml").write_text(f"region: eu-{parent}\n")
    return root / "hosts"


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the child, stdout) of one whole run."""
    before = os.times()
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False, timeout=600)
    wall = time.perf_counter() - start
    after = os.times()
    if done.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {done.stderr.strip()[-500:]}")
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system), \
        done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        inventory = write_inventory(root, args.hosts)
        home = root / "home"
        home.mkdir()
        env = {**os.environ, "HOME": str(home), "ANSIBLE_HOME": str(home / ".ansible"),
               "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
        tools = {
            "fleetrun hosts all --names": [str(BIN / "fleetrun"), "hosts", "all", "--names", "-i", str(inventory)],
            "ansible-inventory --list": [str(BIN / "ansible-inventory"), "-i", str(inventory), "--list"],
        }
        results: dict[str, list[tuple[float, float]]] = {}
        outputs: dict[str, str] = {}
        for _ in range(args.runs):
            for name, argv in tools.items():
                wall, cpu, out = timed(argv, env, home)
                results.setdefault(name, []).append((wall, cpu))
                outputs[name] = out
        fleet_hosts = set(outputs["fleetrun hosts all --names"].split())
        ansible_hosts = set(json.loads(outputs["ansible-inventory --list"])["_meta"]["hostvars"])
        assert fleet_hosts == ansible_hosts and len(fleet_hosts) == args.hosts, "the tools disagree on the hosts"
    print(f"{args.hosts} hosts, 50 groups under 5 parents, group_vars for each; median of {args.runs} runs "
          f"(whole process, start-up included)\n")
    print("| tool | wall median | wall min | CPU median |")
    print("|---|---|---|---|")
    for name, samples in results.items():
        walls, cpus = [w for w, _ in samples], [c for _, c in samples]
        print(f"| `{name}` | {statistics.median(walls):.3f} s | {min(walls):.3f} s | {statistics.median(cpus):.3f} s |")
    fleet = statistics.median(w for w, _ in results["fleetrun hosts all --names"])
    print(f"\nfleetrun target: under {TARGET} s — {'met' if fleet < TARGET else 'MISSED'} ({fleet:.3f} s)")


if __name__ == "__main__":
    main()
