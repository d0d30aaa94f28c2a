"""Shards against a real 200-host lab: four `--shard K/4` processes at once, merged, give the hosts and statuses of
one unsharded run; `runs merge` refuses a missing shard, a duplicate and a mixed selection with exit 2."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fleet import clean_env, fleetrun

from fleetrun.errors import LabError
from fleetrun.lab import Lab, start_lab, stop_lab
from fleetrun.shard import selection_digest

pytestmark = pytest.mark.integration

FAILING = ("lab007", "lab042", "lab133", "lab200")
# exits 1 on the FAILING hosts, by the name fleetrun exports to the command
COMMAND = f'case "$FLEETRUN_HOST" in {"|".join(FAILING)}) echo "no $FLEETRUN_HOST" >&2; exit 1;; esac; echo ok'
SLOW = ("--connect-timeout", "120")  # two loaded cores, 200 sshd and 4 controllers at once


@dataclass
class Shards:
    lab: Lab
    home: Path
    files: list[Path]  # shard-1.json … shard-4.json
    codes: list[int]
    took: float


@pytest.fixture(scope="module")
def lab200(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    directory = tmp_path_factory.mktemp("lab200")
    try:
        yield start_lab(200, directory)
    finally:
        with contextlib.suppress(LabError):
            stop_lab(directory)


@pytest.fixture(scope="module")
def shards(lab200: Lab, tmp_path_factory: pytest.TempPathFactory) -> Shards:
    """Four shard processes, all started before any is waited for, each writing its --format json output."""
    home = tmp_path_factory.mktemp("home")
    out = tmp_path_factory.mktemp("results")
    env = clean_env(home)
    files = [out / f"shard-{index}.json" for index in range(1, 5)]
    began = time.monotonic()
    procs = []
    for index, path in enumerate(files, 1):
        with path.open("w") as handle:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "fleetrun", "exec", "-i", str(lab200.inventory), "-H", "all",
                 "--shard", f"{index}/4", "--format", "json", *SLOW, COMMAND],
                stdout=handle, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, text=True))
    codes = []
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode in (0, 1), err[-2000:]
        codes.append(proc.returncode)
    took = time.monotonic() - began
    print(f"4 shards over 200 hosts took {took:.1f} s")
    return Shards(lab200, home, files, codes, took)


def statuses(records: dict[str, dict]) -> dict[str, tuple[str, int | None]]:
    return {name: (record["status"], record["exit_code"]) for name, record in records.items()}


def test_four_shards_at_once_merge_into_the_run_one_process_would_have_made(shards, tmp_path):
    lab, home = shards.lab, shards.home
    names = sorted(host.name for host in lab.hosts)
    per_shard = []
    for index, path in enumerate(shards.files, 1):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        summary = lines[-1]
        assert summary["shard"] == {"index": index, "total": 4, "selection_sha256": selection_digest(names),
                                    "selection_count": 200, "source": f"--shard {index}/4"}
        per_shard.append({line["host"] for line in lines[:-1]})
        assert per_shard[-1] == set(names[index - 1::4])  # sorted by name, host i to shard (i mod 4)+1
    # which shard fails is the distribution's doing: lab007 is 7th by name (i=6) → shard 3; lab200 → shard 4
    assert shards.codes == [0 if not set(FAILING) & part else 1 for part in per_shard]

    merged = fleetrun("runs", "merge", *map(str, shards.files), "--format", "json", home=home)
    single = fleetrun("exec", "-i", str(lab.inventory), "-H", "all", "--format", "json", *SLOW, COMMAND, home=home,
                      timeout=300)
    assert single.code == 1, single.err[-2000:]
    assert merged.code == single.code, merged.err
    merged_hosts, merged_summary = merged.json()
    single_hosts, single_summary = single.json()
    assert list(merged_hosts) == names  # every host once, in name order
    assert statuses(merged_hosts) == statuses(single_hosts)
    assert {name for name, (status, _) in statuses(merged_hosts).items() if status != "ok"} == set(FAILING)
    assert merged_hosts["lab042"]["stderr"] == "no lab042\n" and merged_hosts["lab001"]["stdout"] == "ok\n"
    for key in ("total", "counts", "exit_status"):
        assert merged_summary[key] == single_summary[key]
    assert merged_summary["merged"]["selection_sha256"] == selection_digest(names)
    assert [shard["exit_status"] for shard in merged_summary["merged"]["shards"]] == shards.codes

    table = fleetrun("runs", "merge", *map(str, shards.files), "--junit", str(tmp_path / "junit.xml"), home=home)
    assert table.code == 1
    assert table.out.splitlines()[-1].startswith("196 ok, 4 failed in ")
    junit = (tmp_path / "junit.xml").read_text()
    assert 'tests="200"' in junit and 'failures="4"' in junit
    quiet = fleetrun("runs", "merge", *map(str, shards.files), "-q", home=home)
    assert [line.split()[0] for line in quiet.out.splitlines() if line.startswith("lab")] == list(FAILING)
    retry = fleetrun("runs", "merge", *map(str, shards.files), "--names", "--status", "not-ok", home=home)
    assert retry.code == 0 and retry.out.split() == list(FAILING)


def test_the_shards_journal_runs_merge_the_same_as_their_json(shards):
    home = shards.home
    listed = fleetrun("runs", "list", "--format", "json", home=home)
    runs = [json.loads(line) for line in listed.out.splitlines()]
    shard_runs = [run for run in runs if run.get("shard")]
    assert sorted(run["shard"]["index"] for run in shard_runs) == [1, 2, 3, 4]
    digest = selection_digest(host.name for host in shards.lab.hosts)
    assert {run["shard"]["selection_sha256"] for run in shard_runs} == {digest}
    root = home / ".local" / "state" / "fleetrun" / "runs"
    from_journal = fleetrun("runs", "merge", *(str(root / run["id"]) for run in shard_runs), "--format", "json",
                            home=home)
    from_json = fleetrun("runs", "merge", *map(str, shards.files), "--format", "json", home=home)
    assert from_journal.code == from_json.code == 1, from_journal.err
    assert statuses(from_journal.json()[0]) == statuses(from_json.json()[0])
    # a directory of shard files is read whole
    assert fleetrun("runs", "merge", str(shards.files[0].parent), home=home).code == 1


def test_merge_refuses_a_missing_shard_a_duplicate_and_a_mixed_selection(shards, tmp_path):
    home, files = shards.home, [str(path) for path in shards.files]
    missing = fleetrun("runs", "merge", files[0], files[1], files[3], home=home)
    assert missing.code == 2 and missing.out == ""
    assert missing.err == "fleetrun: error: shard 3/4 is missing (have 3 of 4): give every shard's result\n"
    two_missing = fleetrun("runs", "merge", files[0], files[3], home=home)
    assert "shards 2/4, 3/4 are missing" in two_missing.err and two_missing.code == 2

    copy = tmp_path / "copy-of-2.json"
    shutil.copy(files[1], copy)
    duplicate = fleetrun("runs", "merge", *files, str(copy), home=home)
    assert duplicate.code == 2
    assert duplicate.err == (f"fleetrun: error: shard 2/4 is given twice: {files[1]} and {copy}; give each shard "
                             "once\n")

    # another selection (two hosts) whose shard 1/4 has one host and whose shard 4/4 has none: a cheap real shard
    other = tmp_path / "other-4.json"
    run = fleetrun("exec", "-i", str(shards.lab.inventory), "-H", "lab001,lab002", "--shard", "4/4", "--format",
                   "json", COMMAND, home=home)
    assert run.code == 0 and "shard 4/4 has no hosts (the selection has 2 hosts)" in run.err
    other.write_text(run.out)
    mixed = fleetrun("runs", "merge", *files[:3], str(other), home=home)
    assert mixed.code == 2 and mixed.err.count("\n") == 1
    assert mixed.err.startswith(f"fleetrun: error: shards of different selections: shard 1/4 ({files[0]}) (200 hosts, "
                                f"selection {selection_digest(h.name for h in shards.lab.hosts)[:12]}) and shard 4/4 "
                                f"({other}) (2 hosts, selection ")

    unsharded = tmp_path / "unsharded.json"
    plain = fleetrun("exec", "-i", str(shards.lab.inventory), "-H", "lab001", "--format", "json", "true", home=home)
    unsharded.write_text(plain.out)
    refused = fleetrun("runs", "merge", *files, str(unsharded), home=home)
    assert refused.code == 2
    assert refused.err == (f"fleetrun: error: {unsharded}: not a shard result: it was run without --shard (run each "
                           "shard with --shard K/N or --shard auto)\n")
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert "it is empty" in fleetrun("runs", "merge", *files, str(empty), home=home).err


def test_push_shards_merge_with_their_changes_and_a_shard_rerun_repeats_its_share(lab: Lab, ssh_env, tmp_path):
    home = ssh_env
    local = tmp_path / "app.conf"
    local.write_text("port = 8080\n")
    files = []
    for index in (1, 2):
        run = fleetrun("push", "-i", str(lab.inventory), str(local), "/srv/shard-test/app.conf", "--mkdir", "-H", "all",
                       "--shard", f"{index}/2", "--format", "json", home=home)
        assert run.code == 0, run.err
        files.append(tmp_path / f"push-{index}.json")
        files[-1].write_text(run.out)
    merged = fleetrun("runs", "merge", *map(str, files), "--format", "json", home=home)
    hosts, summary = merged.json()
    assert merged.code == 0 and sorted(hosts) == sorted(host.name for host in lab.hosts)
    assert summary["changed"] + summary["unchanged"] == len(lab.hosts)

    # rerun of the last shard acts on that shard's hosts, as a plain run (the share is not taken again)
    again = fleetrun("rerun", "--format", "json", home=home)
    hosts, summary = again.json()
    assert again.code == 0 and sorted(hosts) == sorted(host.name for host in lab.hosts)[1::2]
    assert "shard" not in summary and all(record["changed"] is False for record in hosts.values())
    refused = fleetrun("push", "-i", str(lab.inventory), str(local), "/srv/shard-test/app.conf", "--shard", "1/2",
                       "--retry-failed=latest", home=home)
    assert refused.code == 2 and "--shard does not go with --retry-failed" in refused.err
