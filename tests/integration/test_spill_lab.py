"""Big outputs against the lab: memory stays flat (they spill to private files) and every view is complete."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest
from fleet import clean_env, fleetrun, write_inventory

pytestmark = pytest.mark.integration

LINE = "0123456789" * 10
FIVE_MB = f"yes {LINE} | head -n 50000"  # 50,000 lines of 101 bytes


def peak_rss_mib(args: list[str], home) -> tuple[int, str, int]:
    """(exit status, stdout, peak RSS in MiB of the largest fleetrun process) of one run in a fresh child."""
    probe = ("import resource, subprocess, sys\n"
             "done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)\n"
             "sys.stdout.buffer.write(done.stdout)\n"
             "sys.stderr.write(f'{done.returncode} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}')\n")
    done = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "fleetrun", *args],
                          capture_output=True, env=clean_env(home), timeout=300)
    code, kib = done.stderr.decode().split()[-2:]
    return int(code), done.stdout.decode(), int(kib) // 1024


@pytest.mark.parametrize(("procs", "fmt"), [("1", "json"), ("2", "gather")])
def test_100_mb_of_output_in_under_100_mib(lab, tmp_path, procs, fmt):
    """20 hosts × 5 MB at once: held in memory that would be over 100 MiB; spilled it stays far below."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # earlier tests' high-water mark
    code, out, peak = peak_rss_mib(["exec", "-i", str(lab.inventory), "-H", "all", "--forks", "20", "--procs", procs,
                                    "--max-output", "8M", "--format", fmt, FIVE_MB], tmp_path)
    assert code == 0
    if fmt == "json":
        records = [json.loads(line) for line in out.splitlines()]
        stdouts = [r["stdout"] for r in records if r["type"] == "host"]
        assert len(stdouts) == 20 and all(s == f"{LINE}\n" * 50_000 for s in stdouts)
    else:
        assert out.startswith("==== lab[01-20] (20 hosts): ok\n") and out.count(f"{LINE}\n") == 50_000
    assert peak < 100, f"peak RSS {peak} MiB"  # held in memory it would be over 100 MiB
    # The test itself read it all: its own process may grow by that much, not more (a high-water mark, so
    # measured against the one earlier tests of the session left).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024 < max(before, 0) + 400


def test_table_gather_diff_and_journal_of_spilled_outputs(lab, tmp_path):
    # lab01-lab10 print the same 300 KB, lab11-lab20 a copy with one line changed.
    command = ('n=$(expr "${FLEETRUN_LAB_HOST#lab}" + 0); '
               'if [ $n -gt 10 ]; then seq 1 50000 | sed "s/^25000$/changed on ten/"; else seq 1 50000; fi')
    base = ("exec", "-i", str(lab.inventory), "-H", "all")
    table = fleetrun(*base, command, home=tmp_path)
    assert table.code == 0, table.err
    assert table.out.count("… (49997 more lines)") == 20
    gather = fleetrun(*base, "-g", "--no-journal", command, home=tmp_path)
    assert "==== lab[01-10] (10 hosts): ok\n1\n2\n" in gather.out and "==== lab[11-20] (10 hosts): ok" in gather.out
    diff = fleetrun(*base, "--diff", "--no-journal", command, home=tmp_path)
    minority = diff.out.split("==== lab[11-20] (10 hosts): ok\n")[1]
    assert "-25000\n+changed on ten\n" in minority and minority.count("\n") < 20  # the diff, not the output
    shown = fleetrun("runs", "show", "latest", "--format", "json", home=tmp_path)
    journal = [json.loads(line) for line in shown.out.splitlines() if '"type": "host"' in line]
    assert len(journal) == 20 and all(r["stdout_truncated"] and len(r["stdout"]) == 64 * 1024 for r in journal)


def test_a_secret_deep_in_a_spilled_output_is_masked(lab, tmp_path):
    secret = "Zq9-db-Secret-Value"
    conf = tmp_path / "app.conf"  # lab hosts run on this machine: they see this file
    conf.write_text(f"db_password={secret}\n")
    inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, password_env="FLEET_PW")
    run = fleetrun("exec", "-i", str(inventory), "-H", "lab0[1-2]", "--format", "json",
                   f"seq 1 100000; cat {conf}; seq 1 100000 >&2; cat {conf} >&2", home=tmp_path, FLEET_PW=secret)
    assert run.code == 0, run.err
    hosts, _ = run.json()
    for record in hosts.values():
        assert secret not in record["stdout"] and "db_password=***" in record["stdout"]
        assert secret not in record["stderr"] and record["stderr"].endswith("db_password=***\n")
        assert len(record["stdout"]) > 500_000
