"""--procs N against the lab: the same records as one process, signals, --deadline, files and the journal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fleet import clean_env, fleetrun, write_inventory
from test_exec import free_port, gone_within, remote_processes

pytestmark = pytest.mark.integration

# Output that differs per host, a failure on some, stderr on others.
COMMAND = ('n=$(expr "${FLEETRUN_LAB_HOST#lab}" + 0); echo "host $FLEETRUN_LAB_HOST"; seq 1 $n; '
           'if [ $((n % 4)) = 0 ]; then echo "no good" >&2; exit $((n % 7 + 1)); fi')
VOLATILE = ("duration",)


def records(run) -> dict[str, dict]:
    hosts, summary = run.json()
    for record in hosts.values():
        for key in VOLATILE:
            record.pop(key)
    summary.pop("elapsed")
    return {**hosts, "summary": summary}


def test_two_processes_give_the_same_records_outputs_and_journal_as_one(lab, tmp_path):
    extra = {"closed": {"address": "127.0.0.1", "port": free_port()}}
    inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, extra_hosts=extra)
    base = ("exec", "-i", str(inventory), "-H", "all", "--forks", "6")
    one = fleetrun(*base, "--procs", "1", "--format", "json", COMMAND, home=tmp_path)
    two = fleetrun(*base, "--procs", "2", "--format", "json", COMMAND, home=tmp_path)
    assert one.code == two.code == 4, two.err
    assert records(one) == records(two)
    assert records(two)["summary"]["total"] == 21
    # The journal of the two-process run: every host once, as one process records them.
    shown = fleetrun("runs", "show", "latest", "--format", "json", home=tmp_path)
    journal = [json.loads(line) for line in shown.out.splitlines()]
    assert sorted(r["host"] for r in journal if r.get("type") == "host") == sorted([*(h.name for h in lab.hosts),
                                                                                    "closed"])
    # Screen formats without timings are byte for byte the same.
    for fmt in (["-g"], ["--diff"], ["--format", "stream"]):
        a = fleetrun(*base, "--procs", "1", *fmt, COMMAND, "--no-journal", home=tmp_path)
        b = fleetrun(*base, "--procs", "3", *fmt, COMMAND, "--no-journal", home=tmp_path)
        if fmt[-1] == "stream":  # lines interleave as hosts print them: compare each host's own lines
            assert sorted(a.out.splitlines()) == sorted(b.out.splitlines())
        else:
            assert a.out.splitlines()[:-1] == b.out.splitlines()[:-1]
        assert a.code == b.code == 4


def test_out_dir_and_junit_are_complete_with_two_processes(lab, tmp_path):
    out = tmp_path / "out"
    run = fleetrun("exec", "-i", str(lab.inventory), "-H", "all", "--procs", "2", "--forks", "4",
                   "--out-dir", str(out), "--junit", str(tmp_path / "j.xml"), COMMAND, home=tmp_path)
    assert run.code == 1, run.err
    for host in lab.hosts:
        number = int(host.name[3:])
        assert (out / f"{host.name}.out").read_text().startswith(f"host {host.name}\n1\n")
        assert (out / f"{host.name}.out").read_text().count("\n") == number + 1
        status = json.loads((out / f"{host.name}.status").read_text())
        assert status["status"] == ("failed" if number % 4 == 0 else "ok")
    assert (tmp_path / "j.xml").read_text().count("<testcase") == 20


def test_accept_new_records_each_host_once_across_processes(lab, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, known_hosts=str(known))
    run = fleetrun("exec", "-i", str(inventory), "-H", "all", "--procs", "3", "--host-key-checking", "accept-new",
                   "--format", "json", "true", home=tmp_path)
    assert run.code == 0, run.err
    lines = [line for line in known.read_text().splitlines() if line]
    assert len(lines) == 20 and len({line.split()[0] for line in lines}) == 20
    again = fleetrun("exec", "-i", str(inventory), "-H", "all", "--procs", "3", "--format", "json", "true",
                     home=tmp_path)
    hosts, _ = again.json()
    assert again.code == 0 and all(r["host_key_verified"] for r in hosts.values())


def workers_of(pid: int) -> list[int]:
    """fleetrun's worker processes: its children that are fleetrun too (not the ssh or shell of a host)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.append(int(entry))
    return found


@pytest.mark.parametrize(("how", "code"), [("SIGINT to the process group", 130), ("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_mid_run_accounts_for_every_host_once(lab, tmp_path, how, code):
    marker = f"sleep 41.{code}{len(how)}"
    command = [sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "-H", "all", "--forks", "4",
               "--procs", "2", "--format", "json", marker]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=clean_env(tmp_path), start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while len(remote_processes(f"^{marker}$")) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers_of(proc.pid)) == 1  # share 0 runs in fleetrun itself
        signum = signal.SIGTERM if how == "SIGTERM" else signal.SIGINT
        if how.endswith("process group"):
            os.killpg(proc.pid, signum)  # what a terminal's Ctrl-C does: every process of the group gets it
        else:
            proc.send_signal(signum)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == code, err
    records = [json.loads(line) for line in out.splitlines()]
    hosts = [r for r in records if r["type"] == "host"]
    assert sorted(r["host"] for r in hosts) == sorted(h.name for h in lab.hosts)  # each exactly once
    statuses = [r["status"] for r in hosts]
    assert statuses.count("cancelled") == 4 and statuses.count("not started") == 16, statuses
    assert records[-1]["type"] == "summary" and records[-1]["interrupted"] is True
    assert "Traceback" not in err
    assert gone_within(f"^{marker}$") == []


def test_a_second_ctrl_c_ends_the_workers_too(lab, tmp_path):
    marker = "sleep 42.5"
    command = [sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "-H", "lab0[1-4]",
               "--procs", "2", "--format", "stream", f"yes second-ctrl-c; {marker}"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            env=clean_env(tmp_path), start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while len(remote_processes("^yes second-ctrl-c$")) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = workers_of(proc.pid)
        assert len(workers) == 1  # share 0 runs in fleetrun itself
        os.killpg(proc.pid, signal.SIGINT)  # nobody reads stdout: the first one waits on the output owed
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        assert proc.returncode == 130
        deadline = time.monotonic() + 15
        while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "a worker process outlived fleetrun"
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert gone_within("^yes second-ctrl-c$") == []


def test_deadline_with_two_processes(lab, tmp_path):
    run = fleetrun("exec", "-i", str(lab.inventory), "sleep 30", "-H", "all", "--forks", "4", "--procs", "2",
                   "--deadline", "2", "--format", "json", home=tmp_path)
    assert run.code == 3, run.err
    hosts, _ = run.json()
    assert len(hosts) == 20 and {r["status"] for r in hosts.values()} == {"timeout", "not started"}
    assert sum(r["status"] == "timeout" for r in hosts.values()) == 4
