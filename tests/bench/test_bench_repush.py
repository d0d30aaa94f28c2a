"""Smoke run of bench/repush.py (3 hosts, 2 MiB, one run), so the re-push benchmark cannot rot unnoticed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]


def test_repush_smoke_run_writes_its_section_and_keeps_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    out.write_text("# fleetrun benchmark results\n\nearlier text\n")
    # rsync is installed by `make bench`, not by `make test`: the smoke run includes it only when present.
    tools = "fleetrun,fleetrun-c" + (",rsync" if shutil.which("rsync") else "")
    command = [sys.executable, str(ROOT / "bench" / "repush.py"), "--hosts", "3", "--size", "2", "--runs", "1",
               "--quiet-wait", "0", "--tools", tools, "--out", str(out), "--work", str(tmp_path / "work")]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=180, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# fleetrun benchmark results\n\nearlier text\n")
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in text.splitlines() if line.startswith("| "))}
    fleetrun = rows["**fleetrun push (size + mtime)**"]
    assert fleetrun[-1] == "1/1" and float(fleetrun[1]) > 0 and fleetrun[3].endswith(")"), fleetrun
    assert rows["fleetrun push --checksum (SHA-256 on both ends, as before)"][-1] == "1/1"
    if "rsync" in tools:
        assert rows["rsync -t over ssh, one per host, all at once"][-1] == "1/1"
    assert "<!-- bench/repush.py: end -->" in text
    assert not (tmp_path / "work" / "lab" / "lab.json").exists(), "the lab was stopped"
    assert not list((tmp_path / "work").glob("repush-*.bin")), "the local file was removed"
