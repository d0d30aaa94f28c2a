"""bench/wrapper_cost.py, the server-side cost of the wrapper's parts behind README's figures, for a few runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.wrapper_cost import VARIANTS  # noqa: E402


def test_every_variant_runs_the_command_and_is_reported_each_round() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "wrapper_cost.py"), "--runs", "2", "--rounds", "2",
                           "--command", "exit 3"], cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in VARIANTS:
        assert done.stdout.count(f"\n{name} ") == 2, done.stdout


@pytest.mark.parametrize("name", ["wrapper now", "no subshell", "no watcher", "subshell, no sleep",
                                  "no subshell, no sleep"])
def test_the_variants_keep_the_command_s_exit_status(name: str) -> None:
    # Each variant must still run the command as the wrapper does, or the comparison means nothing.
    done = subprocess.run(["/bin/sh", "-c", VARIANTS[name]("exit 7")], stdin=subprocess.DEVNULL, timeout=30,
                          check=False, capture_output=True)
    assert done.returncode == 7


def test_today_s_variant_differs_from_the_old_start_only_by_the_subshell() -> None:
    now, direct = VARIANTS["wrapper now"]("true"), VARIANTS["no subshell"]("true")
    assert now != direct and now.replace("( {", "{").replace("& ); ", "& ") == direct
