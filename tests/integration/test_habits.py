"""clush/pdsh/Ansible habits end to end on real sshd hosts: ^FILE, -x, --pick --seed, folds, the defaults file."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from fleet import fleetrun

pytestmark = pytest.mark.integration

SLOW = ("--connect-timeout", "120")  # the suite shares two cores with the lab's sshd processes
NAMES = [f"lab{i:02d}" for i in range(1, 21)]


def ran_on(run_out: str) -> list[str]:
    """The hosts of a JSON run that printed their own $FLEETRUN_LAB_HOST, checked against the host record."""
    import json

    hosts = []
    for line in run_out.splitlines():
        record = json.loads(line)
        if record["type"] == "host":
            assert record["status"] == "ok" and record["stdout"] == f"{record['host']}\n", record
            hosts.append(record["host"])
    return hosts


def test_host_file_exclude_and_a_seeded_pick_run_on_exactly_those_hosts(lab, tmp_path):
    listed = tmp_path / "canaries.txt"
    listed.write_text("# the canary hosts\nlab01 lab02\nlab0[3-9]   # a range is fine\n\nlab15\n")
    common = ("-i", str(lab.inventory), "echo $FLEETRUN_LAB_HOST", "--format", "json", *SLOW)
    run = fleetrun("exec", *common, "-H", f"^{listed}", "-x", "lab0[4-6]", "-x", "lab15", home=tmp_path)
    assert run.code == 0, run.err
    assert sorted(ran_on(run.out)) == ["lab01", "lab02", "lab03", "lab07", "lab08", "lab09"]

    picked = fleetrun("exec", *common, "-H", "all", "-x", f"@{listed}", "--pick", "3", "--seed", "1", home=tmp_path)
    assert picked.code == 0, picked.err
    rest = [name for name in NAMES if name not in ("lab01", "lab02", *(f"lab0{i}" for i in range(3, 10)), "lab15")]
    expected = [rest[i] for i in sorted(random.Random("1").sample(range(len(rest)), 3))]
    assert sorted(ran_on(picked.out)) == expected  # the same seed picks the same hosts, every time


def test_a_fold_pasted_back_into_hosts_runs_on_the_same_hosts(lab, tmp_path):
    chosen = ["lab02", "lab03", "lab04", "lab09", "lab11", "lab12", "lab20"]
    fold = fleetrun("hosts", "--fold", *chosen, home=tmp_path)
    assert (fold.code, fold.out) == (0, "lab[02-04,09,11-12,20]\n")
    run = fleetrun("exec", "-i", str(lab.inventory), "echo $FLEETRUN_LAB_HOST", "--format", "json", *SLOW,
                   "-H", fold.out.strip(), home=tmp_path)
    assert run.code == 0 and sorted(ran_on(run.out)) == chosen


def test_a_bad_host_file_is_exit_2_before_connecting(lab, tmp_path):
    listed = tmp_path / "hosts.txt"
    listed.write_text("lab01\nlab1\n")
    run = fleetrun("exec", "-i", str(lab.inventory), "true", "-H", f"^{listed}", home=tmp_path)
    assert (run.code, run.out) == (2, "")
    assert run.err == (f"fleetrun: error: {listed}:2: no host or group matches 'lab1' (did you mean lab01? the names "
                       "are zero-padded)\n")
    missing = fleetrun("exec", "-i", str(lab.inventory), "true", "-H", f"^{tmp_path}/nope", home=tmp_path)
    assert missing.code == 2 and "cannot read it" in missing.err


def test_the_defaults_file_sets_the_inventory_and_format_and_a_flag_beats_it(lab, tmp_path):
    config = tmp_path / ".config" / "fleetrun"
    config.mkdir(parents=True)
    (config / "config.yaml").write_text(f"inventory: {lab.inventory}\nformat: json\nforks: 4\nconnect_timeout: 120\n")
    run = fleetrun("exec", "echo $FLEETRUN_LAB_HOST", "-H", "lab0[1-3]", home=tmp_path)
    assert run.code == 0, run.err
    assert sorted(ran_on(run.out)) == ["lab01", "lab02", "lab03"]
    table = fleetrun("exec", "echo $FLEETRUN_LAB_HOST", "-H", "lab0[1-3]", "--format", "table", home=tmp_path)
    assert table.code == 0 and table.out.splitlines()[0].split()[:2] == ["HOST", "STATUS"]
    (config / "config.yaml").write_text("forks: lots\n")
    bad = fleetrun("exec", "true", "-H", "all", home=tmp_path)
    assert (bad.code, bad.out) == (2, "")
    assert bad.err == f"fleetrun: error: {Path(config / 'config.yaml')}:1: forks must be a whole number, got 'lots'\n"
