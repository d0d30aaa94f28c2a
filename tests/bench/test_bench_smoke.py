"""Smoke run of the benchmark harness (20 hosts, one run, `true`), so bench/ cannot rot unnoticed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]
TIME_BOX = 120  # seconds for the whole smoke run, lab start and stop included


def _row(table: str, name: str) -> list[str]:
    """The cells of `name`'s row in the results table (not the versions table above it)."""
    results = table[table.index("| tool | forks |") :]
    for line in results.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells and re.sub(r"[*]|\(reference\)", "", cells[0]).strip() == name:
            return cells
    raise AssertionError(f"no row for {name!r} in:\n{table}")


def test_smoke_run_writes_a_table_with_fleetrun_and_the_reference(tmp_path: Path) -> None:
    # No skip without sshd: like every lab test, it then fails with the lab's "install openssh-server".
    out = tmp_path / "RESULTS.md"
    command = [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--out", str(out),
               "--work", str(tmp_path / "work")]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=TIME_BOX, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = out.read_text()
    fleetrun = _row(table, "fleetrun")
    assert fleetrun[1] == "64"
    assert "20/20" in fleetrun, f"fleetrun did not succeed on all 20 hosts: {fleetrun}"
    assert float(fleetrun[2]) > 0  # a wall time, not a failure message
    reference = _row(table, "bare paramiko loop")
    assert "20/20" in reference, f"the reference loop did not succeed on all 20 hosts: {reference}"
    # Whatever else ran, nothing was installed and no lab was left behind.
    assert "installing" not in done.stdout
    assert not (tmp_path / "work" / "lab-20" / "lab.json").exists()


def test_bastion_smoke_run_goes_through_one_bastion_login(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    out.write_text("# fleetrun benchmark results\n\nearlier text\n")
    command = [sys.executable, str(ROOT / "bench" / "bastion.py"), "--smoke", "--tools", "fleetrun,pdsh",
               "--out", str(out), "--work", str(tmp_path / "work")]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=TIME_BOX, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# fleetrun benchmark results\n\nearlier text\n")  # merged, not overwritten
    rows = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                          for line in text.splitlines() if line.startswith("| "))}
    assert rows["fleetrun"][5] == "1" and rows["fleetrun"][6] == "10/10", rows["fleetrun"]  # one bastion login
    if "pdsh" in rows and rows["pdsh"][1]:
        assert rows["pdsh"][5] == "10"  # ProxyJump: one bastion login per host
    sys.path.insert(0, str(ROOT))
    from bench import report

    report.write(out, "# rewritten\n")  # what bench/run.py does: the main report, the other scripts' sections kept
    assert out.read_text().startswith("# rewritten\n") and "## Bastion" in out.read_text()
