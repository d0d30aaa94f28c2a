"""Reusing --out-dir from the command line: the last run's files only, and a foreign directory refused."""

from __future__ import annotations

import subprocess

import pytest
from fleet import fleetrun

pytestmark = pytest.mark.integration


def _inventory(tmp_path, count):
    # Closed loopback ports: every host ends 'unreachable' at once, and each still gets its three files.
    path = tmp_path / "inv.yaml"
    path.write_text("hosts:\n" + "".join(f"  web0{n}: {{address: 127.0.0.1, port: 9}}\n" for n in range(1, count + 1)))
    return path


def test_one_host_run_over_a_six_host_out_dir_leaves_nothing_stale_for_grep(tmp_path):
    inventory, out = _inventory(tmp_path, 6), tmp_path / "results"
    first = fleetrun("exec", "-i", str(inventory), "true", "-H", "all", "--out-dir", str(out), home=tmp_path)
    assert first.code == 4 and len(list(out.glob("*.status"))) == 6
    second = fleetrun("exec", "-i", str(inventory), "true", "-H", "web02", "--out-dir", str(out), home=tmp_path)
    assert second.code == 4, second.err
    found = subprocess.run(f"grep -l unreachable {out}/*.status", shell=True, capture_output=True, text=True)
    assert found.stdout.split() == [str(out / "web02.status")]
    assert sorted(p.name for p in out.iterdir()) == [".fleetrun-out-dir", "summary.json", "web02.err", "web02.out",
                                                     "web02.status"]


def test_out_dir_with_foreign_files_is_exit_2_before_connecting(tmp_path):
    inventory, out = _inventory(tmp_path, 2), tmp_path / "home-dir"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work\n")
    run = fleetrun("exec", "-i", str(inventory), "true", "-H", "all", "--out-dir", str(out), home=tmp_path)
    assert run.code == 2 and run.out == ""
    assert "not empty and was not written by fleetrun" in run.err and "thesis.tex" in run.err
    assert [p.name for p in out.iterdir()] == ["thesis.tex"]
