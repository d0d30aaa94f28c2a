"""Smoke run of bench/ansible_inventory.py on a small inventory, so the issue-12 benchmark cannot rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]


def test_inventory_bench_runs_both_tools_and_they_agree() -> None:
    command = [sys.executable, str(ROOT / "bench" / "ansible_inventory.py"), "--hosts", "200", "--runs", "1"]
    done = subprocess.run(command, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]  # it asserts the hosts agree
    rows = [line for line in done.stdout.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == ["fleetrun hosts all --names", "ansible-inventory --list"]
