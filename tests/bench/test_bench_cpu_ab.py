"""bench/cpu_ab.py, the interleaved client-CPU comparison behind README's per-host figures, on a tiny lab."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.cpu_ab import parse_variant  # noqa: E402


def test_two_rounds_of_two_checkout_variants_report_each(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "bench" / "cpu_ab.py"), "--hosts", "3", "--runs", "2", "--forks", "4",
               "--variant", f"one={ROOT}", "--variant", f"procs1={ROOT} --procs 1", "--work", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("round 2 procs1") == 1 and "FAILED" not in done.stdout, done.stdout
    summary = done.stdout[done.stdout.index("3 hosts, 4 forks, 2 rounds"):]
    assert "one          median" in summary and "procs1       median" in summary, summary


@pytest.mark.parametrize("text", ["nocheckout", "x=/nonexistent --procs 1", "x="])
def test_a_variant_that_names_no_checkout_or_peer_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_variant(text)
