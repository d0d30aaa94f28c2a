"""bench/cpu_ab.py, the interleaved client-CPU comparison behind README's per-host figures, on a tiny lab."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.cpu_ab import Variant, parse_variant  # noqa: E402
from bench.fleet import Fleet, Target  # noqa: E402
from bench.peers import Tools  # noqa: E402


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


def _judge(tmp_path: Path, statuses: dict[str, str], rc: int) -> tuple[list[str], bool]:
    """A checkout variant's check on a made-up run: one JSON record per host in `statuses` on stdout."""
    hosts = tuple(Target(f"h{n}", "127.0.0.1", 2200 + n, 0) for n in range(3))
    fleet = Fleet(hosts, "root", tmp_path / "key", tmp_path / "known_hosts", tmp_path / "inventory.yaml", "all",
                  tmp_path)
    call = Variant("one", ROOT).invocation(fleet, 4, Tools())
    records = [{"type": "host", "host": name, "status": status, "stdout": "", "error": None}
               for name, status in statuses.items()]
    stdout, stderr = tmp_path / "out", tmp_path / "err"
    stdout.write_text("".join(json.dumps(record) + "\n" for record in records) + '{"type": "summary"}\n')
    stderr.write_text("")
    return call.argv, call.check(stdout, stderr, rc).success


def test_a_checkout_variant_asks_for_json_and_is_judged_by_every_hosts_record(tmp_path: Path) -> None:
    argv, success = _judge(tmp_path, {"h0": "ok", "h1": "ok", "h2": "ok"}, 0)
    assert argv[argv.index("--format") + 1] == "json" and success


@pytest.mark.parametrize(
    ("statuses", "rc"),
    [
        ({"h0": "ok", "h1": "failed", "h2": "ok"}, 0),  # a host failed although the exit status says 0
        ({"h0": "ok", "h1": "ok"}, 0),  # a host has no record at all
        ({"h0": "ok", "h1": "ok", "h2": "ok"}, 1),  # every host ok, yet fleetrun itself failed
    ],
)
def test_a_checkout_variant_fails_when_a_host_did(tmp_path: Path, statuses: dict[str, str], rc: int) -> None:
    assert not _judge(tmp_path, statuses, rc)[1]
