"""The run journal and retries end to end against real sshd: what is recorded, --retry-failed, the
`until fleetrun rerun --failed` loop, `runs list/show/prune`, concurrent runs, and no secret in any file."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fleet import clean_env, fleetrun, write_inventory

from fleetrun.lab import stop_lab

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def runs(state: Path) -> list[Path]:
    return sorted(path for path in (state / "runs").iterdir()
                  if path.is_dir() and not path.is_symlink() and not path.name.startswith("."))


def latest(state: Path) -> Path:
    return state / "runs" / os.readlink(state / "runs" / "latest")


def records(run_dir: Path) -> dict[str, dict]:
    return {r["host"]: r for r in map(json.loads, (run_dir / "hosts.jsonl").read_text().splitlines())}


def test_every_run_is_recorded_privately_and_completely(lab, tmp_path):
    run = fleetrun("exec", "-i", str(lab.inventory), "echo hi-$FLEETRUN_LAB_HOST", "-H", "lab0[1-4]",
                   home=tmp_path, XDG_STATE_HOME="relative/state")  # a relative XDG_STATE_HOME is ignored
    assert run.code == 0, run.err
    state = tmp_path / ".local/state/fleetrun"
    (run_dir,) = runs(state)
    assert latest(state) == run_dir
    for path in (state, state / "runs", run_dir):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for name in ("run.json", "hosts.jsonl", "selection.txt", "summary.json"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o600, name
    info = json.loads((run_dir / "run.json").read_text())
    assert info["kind"] == "exec" and info["command"] == "echo hi-$FLEETRUN_LAB_HOST" and info["exit_status"] == 0
    assert info["argv"][:4] == ["exec", "-i", str(lab.inventory), "echo hi-$FLEETRUN_LAB_HOST"]
    assert info["inventories"][0]["path"] == str(lab.inventory)
    import hashlib

    assert info["inventories"][0]["sha256"] == hashlib.sha256(lab.inventory.read_bytes()).hexdigest()
    assert info["selection"]["count"] == 4 and info["cwd"] == os.getcwd() and info["parent"] is None
    hosts = records(run_dir)
    assert sorted(hosts) == ["lab01", "lab02", "lab03", "lab04"]
    assert hosts["lab02"]["stdout"] == "hi-lab02\n" and hosts["lab02"]["schema"] == "fleetrun/1"
    assert json.loads((run_dir / "summary.json").read_text())["counts"] == {"ok": 4}
    assert not Path("relative").exists()  # nothing was made relative to the working directory

    quiet = fleetrun("exec", "-i", str(lab.inventory), "true", "-H", "lab01", "--no-journal", home=tmp_path)
    assert quiet.code == 0 and runs(state) == [run_dir]


def test_retry_failed_selects_exactly_the_hosts_that_did_not_end_ok(lab, tmp_path):
    state = tmp_path / "state"
    extra = {"closed": {"address": "127.0.0.1", "port": free_port()}}
    inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, extra_hosts=extra)
    # Sorted: closed, lab01 … lab06. Batch 1 = closed (unreachable), lab01 (sleeps: cancelled when the budget
    # is exceeded, with --abort-running), lab02 (fails, after lab03 is done), lab03 (ok); batch 2 = lab04-06,
    # never started.
    command = "case $FLEETRUN_LAB_HOST in lab01) sleep 60;; lab02) sleep 5; exit 1;; esac; echo ok"
    first = fleetrun("exec", "-i", str(inventory), command, "-H", "lab0[1-6],closed", "--order", "sorted",
                     "--batch", "4", "--max-fail", "1", "--abort-running", "--format", "json",
                     home=tmp_path, FLEETRUN_STATE_DIR=str(state))
    hosts, _ = first.json()
    assert {name: r["status"] for name, r in hosts.items()} == {
        "closed": "unreachable", "lab01": "cancelled", "lab02": "failed", "lab03": "ok",
        "lab04": "not started", "lab05": "not started", "lab06": "not started"}
    assert hosts["lab01"]["reason"] == "rollout stopped" and first.code == 4
    expected = ["closed", "lab01", "lab02", "lab04", "lab05", "lab06"]

    names = fleetrun("runs", "show", "latest", "--status", "not-ok", "--names", home=tmp_path,
                     FLEETRUN_STATE_DIR=str(state))
    assert sorted(names.out.split()) == expected
    retry = fleetrun("exec", "-i", str(inventory), "echo again", "--retry-failed", "--format", "json",
                     home=tmp_path, FLEETRUN_STATE_DIR=str(state))
    assert sorted(retry.json()[0]) == expected
    assert json.loads((latest(state) / "run.json").read_text())["parent"] == summary_run_id(state, first=True)
    # Within --hosts, and from a named run.
    first_id = summary_run_id(state, first=True)
    narrowed = fleetrun("exec", "-i", str(inventory), "echo again", f"--retry-failed={first_id}", "-H", "lab0[1-4]",
                        "--format", "json", home=tmp_path, FLEETRUN_STATE_DIR=str(state))
    assert sorted(narrowed.json()[0]) == ["lab01", "lab02", "lab04"]
    # Hosts gone from the inventory: one warning, the rest retried.
    data = yaml.safe_load(inventory.read_text())
    del data["hosts"]["closed"]
    inventory.write_text(yaml.safe_dump(data))
    shrunk = fleetrun("exec", "-i", str(inventory), "echo again", f"--retry-failed={first_id}", "--format", "json",
                      home=tmp_path, FLEETRUN_STATE_DIR=str(state))
    assert shrunk.code == 0 and sorted(shrunk.json()[0]) == expected[1:]
    assert shrunk.err.count("warning") == 1 and "closed" in shrunk.err and "no longer in" in shrunk.err


def summary_run_id(state: Path, *, first: bool) -> str:
    return runs(state)[0 if first else -1].name


def test_retry_failed_after_a_deadline_takes_the_timed_out_and_not_started(lab, tmp_path):
    state = tmp_path / "state"
    run = fleetrun("exec", "-i", str(lab.inventory), "case $FLEETRUN_LAB_HOST in lab01) ;; *) sleep 30;; esac",
                   "-H", "lab0[1-4]", "--forks", "2", "--deadline", "4", "--format", "json",
                   home=tmp_path, FLEETRUN_STATE_DIR=str(state))
    hosts, _ = run.json()
    assert hosts["lab01"]["status"] == "ok" and {hosts[n]["status"] for n in ("lab02", "lab03", "lab04")} <= {
        "timeout", "not started"}
    show = fleetrun("runs", "show", "latest", "--status", "not-ok", "--names", home=tmp_path,
                    FLEETRUN_STATE_DIR=str(state))
    assert show.out.split() == ["lab02", "lab03", "lab04"]


def test_rerun_failed_loop_shrinks_and_ends_without_connecting(make_lab, tmp_path):
    fleet = make_lab(4)
    state, marks = tmp_path / "state", tmp_path / "marks"
    marks.mkdir()
    env = {"FLEETRUN_STATE_DIR": str(state)}
    first = fleetrun("exec", "-i", str(fleet.inventory), f"test -e {marks}/ok-$FLEETRUN_LAB_HOST", "-H", "all",
                     "--format", "json", home=tmp_path, **env)
    assert first.code == 1 and {r["status"] for r in first.json()[0].values()} == {"failed"}
    failing = sorted(first.json()[0])
    parent = latest(state).name
    for name in [host.name for host in fleet.hosts]:
        (marks / f"ok-{name}").touch()  # this host is fixed now
        again = fleetrun("rerun", "--failed", home=tmp_path, **env)
        hosts, _ = again.json()
        assert sorted(hosts) == failing  # exactly the hosts that failed last time
        failing = sorted(n for n, r in hosts.items() if r["status"] != "ok")
        assert name not in failing
        info = json.loads((latest(state) / "run.json").read_text())
        assert info["parent"] == parent and info["kind"] == "exec"
        parent = info["id"]
        assert again.code == (0 if not failing else 1)
    stop_lab(fleet.directory)  # nothing may connect from here on: every sshd is gone
    started = time.monotonic()
    done = fleetrun("rerun", "--failed", home=tmp_path, **env)
    assert done.code == 0 and f"run {parent} had no failed hosts" in done.err and done.out == ""
    assert time.monotonic() - started < 20
    assert latest(state).name == parent  # the no-op is not a run
    listed = fleetrun("runs", "list", home=tmp_path, **env)
    assert listed.code == 0 and listed.out.count("exec 'test -e") == 5


def test_rerun_repeats_a_push_from_its_directory_on_the_failed_hosts(lab, tmp_path):
    state = tmp_path / "state"
    env = {"FLEETRUN_STATE_DIR": str(state)}
    work = tmp_path / "work"
    work.mkdir()
    (work / "app.conf").write_text("v2\n")
    base = "/srv/rerun-push" if lab.private_srv else str(tmp_path / "remote")
    in_work = ("env", "-C", str(work))  # the push names its file relative to `work`
    first = fleetrun("push", "-i", str(lab.inventory), "app.conf", f"{base}/etc/", "-H", "lab0[1-3]",
                     "--format", "json", home=tmp_path, prefix=in_work, **env)
    assert first.code == 1 and {r["status"] for r in first.json()[0].values()} == {"failed"}  # no such directory
    fix = fleetrun("exec", "-i", str(lab.inventory), f"mkdir -p {base}/etc", "-H", "lab01", "--no-journal",
                   home=tmp_path)
    assert fix.code == 0
    again = fleetrun("rerun", "--failed", home=tmp_path, **env)  # from another directory: the rerun goes back
    hosts, _ = again.json()
    assert sorted(hosts) == ["lab01", "lab02", "lab03"] and hosts["lab01"]["status"] == "ok", again.err
    remaining = sorted(name for name, r in hosts.items() if r["status"] != "ok")
    fleetrun("exec", "-i", str(lab.inventory), f"mkdir -p {base}/etc", "-H", "lab0[1-3]", "--no-journal",
             home=tmp_path)
    last = fleetrun("rerun", "--failed", home=tmp_path, **env)
    if remaining:
        assert last.code == 0 and sorted(last.json()[0]) == remaining
    check = fleetrun("exec", "-i", str(lab.inventory), f"cat {base}/etc/app.conf", "-H", "lab0[1-3]", "--format",
                     "json", "--no-journal", home=tmp_path)
    assert {r["stdout"] for r in check.json()[0].values()} == {"v2\n"}


def test_runs_show_and_prune(lab, tmp_path):
    env = {"FLEETRUN_STATE_DIR": str(tmp_path / "state")}
    for command in ("true", "exit 2", "echo three"):
        fleetrun("exec", "-i", str(lab.inventory), command, "-H", "lab0[1-2]", home=tmp_path, **env)
    listed = fleetrun("runs", "list", home=tmp_path, **env)
    rows = listed.out.splitlines()[2:]
    assert [row.split()[4] for row in rows] == ["'echo", "'exit", "'true'"]  # newest first
    run_id = rows[1].split()[0]
    shown = fleetrun("runs", "show", run_id[:-3], home=tmp_path, **env)  # a unique prefix
    assert shown.code == 0 and f"run {run_id}: exec 'exit 2' on 2 hosts" in shown.out and "exit status 2" in shown.out
    as_json = fleetrun("runs", "show", run_id, "--format", "json", home=tmp_path, **env)
    lines = [json.loads(line) for line in as_json.out.splitlines()]
    assert [line["type"] for line in lines] == ["run", "host", "host", "summary"]
    failed = fleetrun("runs", "show", run_id, "--status", "failed", "--names", home=tmp_path, **env)
    assert failed.out.split() == ["lab01", "lab02"]
    bad = fleetrun("runs", "show", "nope", home=tmp_path, **env)
    assert bad.code == 2 and "no run 'nope'" in bad.err
    bad_status = fleetrun("runs", "show", run_id, "--status", "broken", home=tmp_path, **env)
    assert bad_status.code == 2 and "--status" in bad_status.err
    pruned = fleetrun("runs", "prune", "--keep", "1", home=tmp_path, **env)
    assert pruned.code == 0 and "removed 2 runs" in pruned.err
    assert len(fleetrun("runs", "list", home=tmp_path, **env).out.splitlines()) == 3
    missing = fleetrun("rerun", "nope", home=tmp_path, **env)
    assert missing.code == 2 and "no run 'nope'" in missing.err


def test_rerun_without_failed_repeats_on_all_of_the_runs_hosts(lab, tmp_path):
    env = {"FLEETRUN_STATE_DIR": str(tmp_path / "state")}
    first = fleetrun("exec", "-i", str(lab.inventory), "echo $FLEETRUN_LAB_HOST", "-H", "lab0[1-3]", "--format", "json",
                     home=tmp_path, **env)
    assert first.code == 0
    first_id = latest(tmp_path / "state").name
    again = fleetrun("rerun", first_id, "-H", "lab0[2-9]", home=tmp_path, **env)  # as json, like the original
    hosts, _ = again.json()
    assert again.code == 0 and {n: r["stdout"] for n, r in hosts.items()} == {"lab02": "lab02\n", "lab03": "lab03\n"}
    assert json.loads((latest(tmp_path / "state") / "run.json").read_text())["parent"] == first_id
    table = fleetrun("rerun", first_id, "--format", "table", home=tmp_path, **env)
    assert table.code == 0 and table.out.splitlines()[-1].startswith("3 ok in")


def test_usage_errors_of_the_retry_options_connect_nowhere(lab, tmp_path):
    env = {"FLEETRUN_STATE_DIR": str(tmp_path / "state")}
    no_hosts = fleetrun("exec", "-i", str(lab.inventory), "true", home=tmp_path, **env)
    assert no_hosts.code == 2 and "--hosts is required" in no_hosts.err
    nothing = fleetrun("exec", "-i", str(lab.inventory), "true", "--retry-failed", home=tmp_path, **env)
    assert nothing.code == 2 and "no run of" in nothing.err and "is recorded" in nothing.err
    no_latest = fleetrun("rerun", "--failed", home=tmp_path, **env)
    assert no_latest.code == 2 and "no finished run" in no_latest.err
    assert not (tmp_path / "state" / "runs").exists() or runs(tmp_path / "state") == []


def test_two_runs_at_once_give_two_complete_journals(lab, tmp_path):
    state = tmp_path / "state"
    env = {**clean_env(tmp_path), "FLEETRUN_STATE_DIR": str(state)}
    procs = [subprocess.Popen([sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory),
                               f"sleep 1; echo run{n}", "-H", pattern, "--format", "json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
                              text=True)
             for n, pattern in enumerate(("lab0[1-5]", "lab[06-10]"))]
    for proc in procs:
        proc.communicate(timeout=120)
        assert proc.returncode == 0
    run_dirs = runs(state)
    assert len(run_dirs) == 2
    by_command = {json.loads((d / "run.json").read_text())["command"]: d for d in run_dirs}
    for n, names in enumerate((["lab01", "lab02", "lab03", "lab04", "lab05"],
                               ["lab06", "lab07", "lab08", "lab09", "lab10"])):
        run_dir = by_command[f"sleep 1; echo run{n}"]
        hosts = records(run_dir)
        assert sorted(hosts) == names and {r["stdout"] for r in hosts.values()} == {f"run{n}\n"}
        assert json.loads((run_dir / "summary.json").read_text())["counts"] == {"ok": 5}
    ended = {d: json.loads((d / "run.json").read_text())["ended"] for d in run_dirs}
    assert latest(state) == max(ended, key=lambda d: ended[d])  # the later finish


def test_no_password_reaches_the_journal(lab, tmp_path):
    state = tmp_path / "state"
    password = "Sw0rdfish-never-journaled"
    secret_file = tmp_path / "pw"
    secret_file.write_text("Other-s3cret-from-file\n")
    secret_file.chmod(0o600)
    inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, password_env="FLEET_PW")
    data = yaml.safe_load(inventory.read_text())
    data["hosts"]["lab02"]["password_file"] = str(secret_file)
    data["hosts"]["lab02"]["password_env"] = None
    data["hosts"]["lab02"] = {k: v for k, v in data["hosts"]["lab02"].items() if v is not None}
    inventory.write_text(yaml.safe_dump(data))
    # The worst case: the secrets are on the command line and in the output too.
    command = f"echo {password}; echo Other-s3cret-from-file >&2; exit 1"
    run = fleetrun("exec", "-i", str(inventory), command, "-H", "lab0[1-2]", "--format", "json",
                   home=tmp_path, FLEETRUN_STATE_DIR=str(state), FLEET_PW=password)
    assert run.code == 1, run.err
    files = [path for path in state.rglob("*") if path.is_file()]
    assert {path.name for path in files} >= {"run.json", "hosts.jsonl", "summary.json", "selection.txt"}
    for path in files:
        text = path.read_text(errors="replace")
        assert password not in text and "Other-s3cret-from-file" not in text, path
    info = json.loads((latest(state) / "run.json").read_text())
    assert info["redacted"] is True and "***" in info["command"]
    refused = fleetrun("rerun", home=tmp_path, FLEETRUN_STATE_DIR=str(state), FLEET_PW=password)
    assert refused.code == 2 and "secret" in refused.err


def test_an_ask_pass_password_reaches_no_journal_file(lab, tmp_path):
    from test_rollout_batches import run_in_pty

    state = tmp_path / "state"
    typed = "Typed-at-the-pr0mpt"
    argv = [sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), f"echo {typed}", "-H", "lab01",
            "--ask-pass", "--format", "json"]
    code, _, screen = run_in_pty(argv, {**clean_env(tmp_path), "FLEETRUN_STATE_DIR": str(state)},
                                   [("SSH password:", typed)])
    assert code == 0 and "SSH password:" in screen, screen
    for path in state.rglob("*"):
        if path.is_file():
            assert typed not in path.read_text(errors="replace"), path
    assert "***" in json.loads((latest(state) / "hosts.jsonl").read_text())["stdout"]
