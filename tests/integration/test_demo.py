"""`make demo`, the first thing a new user runs: it says what it does, shows the hosts apart, and leaves no lab."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def make(*args: str) -> subprocess.CompletedProcess[str]:
    """`make ARGS` in the checkout; stdout holds stderr too, in the order a terminal shows them."""
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL, timeout=300, check=False,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_demo_shows_each_lab_host_and_says_how_to_keep_a_lab(tmp_path):
    lab = tmp_path / "demo"
    # -o: use the .venv as it is (the suite runs in it), never reinstall from here.
    done = make("-o", ".venv/.installed", "demo", f"LAB={lab}")
    assert done.returncode == 0, done.stdout
    out = done.stdout
    assert out.startswith("== make demo: 5 real sshd hosts on loopback, one command on all of them, then the lab "
                          "is stopped again\nstarted 5 hosts (127.")
    # Every row says which lab host it ran on, not this machine's one hostname five times.
    rows = re.findall(r"^(lab0\d)\s+ok\s+0\s+\S+\s+(\S+)$", out, re.MULTILINE)
    assert rows == [(f"lab0{n}", f"lab0{n}") for n in range(1, 6)], out
    assert "load average" in out
    # No hint at the lab it is about to stop; at the end, how to keep one.
    assert "try:" not in out
    end = out[out.index("stopped 5 sshd processes\n"):]
    assert end.splitlines()[1:] == [
        "== the demo's lab is stopped. To keep one running and try things yourself:",
        "     .venv/bin/fleetrun lab up 5 --dir .lab/try",
        "     .venv/bin/fleetrun exec -i .lab/try/inventory.yaml 'echo $FLEETRUN_LAB_HOST; uptime' --hosts all",
        "     .venv/bin/fleetrun lab down --dir .lab/try",
    ]
    assert not (lab / "lab.json").exists()  # stopped: `lab down` removes the lab's state with its processes


def test_first_run_says_what_it_is_setting_up_and_lets_pip_talk():
    # -n -W: what `make demo` would run on a first run (pyproject.toml newer than the venv), without running it.
    plan = make("-n", "-W", "pyproject.toml", ".venv/.installed").stdout
    lines = plan.splitlines()
    assert lines[0] == 'echo "setting up .venv: fleetrun and its test tools (first run only, about a minute)"'
    install = next(line for line in lines if "pip install" in line)
    assert "--quiet" not in install and " -q" not in install  # one line per package, not a minute of silence
