"""Rolling execution end to end against real sshd: lock-step batches, budgets, canaries, pauses, --confirm.

Timing is observed through the commands' own output (`date +%s.%N` on the hosts, which share this machine's
clock) and asserted only as order or generous lower bounds."""

from __future__ import annotations

import glob
import itertools
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fleet import clean_env, fleetrun, write_inventory

pytestmark = pytest.mark.integration

TIMES = 'echo "$(date +%s.%N)"; sleep 1; echo "$(date +%s.%N)"'  # start and end, as the host saw them


def times(record: dict) -> tuple[float, float]:
    start, end = record["stdout"].split()
    return float(start), float(end)


def fail_on(*names: str, then: str = "echo ok") -> str:
    cases = " ".join(f"{name}) exit 3;;" for name in names)
    return f"case $FLEETRUN_LAB_HOST in {cases} esac; {then}"


def statuses(hosts: dict[str, dict]) -> dict[str, str]:
    return {name: record["status"] for name, record in hosts.items()}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_batches_run_in_lock_step_waves(lab, tmp_path):
    run = fleetrun("exec", "-i", str(lab.inventory), TIMES, "-H", "lab0[1-6]", "--batch", "2", "--forks", "64",
                   "--format", "json", home=tmp_path)
    assert run.code == 0, run.err
    hosts, summary = run.json()
    assert [(b["index"], b["size"], b["counts"]) for b in summary["batches"]] == [
        (1, 2, {"ok": 2}), (2, 2, {"ok": 2}), (3, 2, {"ok": 2})]
    waves = [["lab01", "lab02"], ["lab03", "lab04"], ["lab05", "lab06"]]
    for earlier, later in itertools.pairwise(waves):
        last_end = max(times(hosts[name])[1] for name in earlier)
        first_start = min(times(hosts[name])[0] for name in later)
        assert first_start >= last_end, (earlier, later)
    # Within a wave both hosts ran at once: each started before the other ended.
    for first, second in waves:
        assert times(hosts[first])[0] < times(hosts[second])[1] and times(hosts[second])[0] < times(hosts[first])[1]


def test_batch_list_sizes_and_bad_specs(lab, tmp_path):
    run = fleetrun("exec", "-i", str(lab.inventory), "true", "-H", "lab[01-10]", "--batch", "1,2,50%",
                   "--format", "json", home=tmp_path)
    assert run.code == 0, run.err
    _, summary = run.json()
    assert [b["size"] for b in summary["batches"]] == [1, 2, 5, 2] and summary["stopped"] is None
    for bad in ("0", "-1", "0%", "abc"):
        refused = fleetrun("exec", "-i", str(lab.inventory), "true", "-H", "lab[01-10]", "--batch", bad,
                           home=tmp_path)
        assert refused.code == 2 and "--batch" in refused.err and refused.out == "", bad
        assert len(refused.err.strip().splitlines()) == 1 and "Traceback" not in refused.err


def test_max_fail_0_stops_the_later_batches(lab, tmp_path):
    run = fleetrun("exec", "-i", str(lab.inventory), fail_on("lab03"), "-H", "lab0[1-6]", "--batch", "3",
                   "--max-fail", "0", "--format", "json", home=tmp_path)
    assert run.code == 1, run.err
    hosts, summary = run.json()
    assert statuses(hosts) == {"lab01": "ok", "lab02": "ok", "lab03": "failed", "lab04": "not started",
                               "lab05": "not started", "lab06": "not started"}
    assert {hosts[name]["reason"] for name in ("lab04", "lab05", "lab06")} == {"rollout stopped"}
    assert summary["stopped"]["reason"] == "max-fail" and summary["stopped"]["after_batch"] == 1
    assert "fleetrun: rollout stopped after batch 1: 1 failure > --max-fail 0" in run.err
    table = fleetrun("exec", "-i", str(lab.inventory), fail_on("lab03"), "-H", "lab0[1-6]", "--batch", "3",
                     "--max-fail", "0", home=tmp_path)
    assert table.code == 1 and "rollout stopped after batch 1" in table.out.splitlines()[-1]


def test_max_fail_percent_tolerates_its_floor(lab, tmp_path):
    base = ("exec", "-i", str(lab.inventory), "-H", "lab[01-10]", "--batch", "2", "--max-fail", "20%",
            "--format", "json")
    two = fleetrun(*base[:3], fail_on("lab01", "lab03"), *base[3:], home=tmp_path)
    hosts, summary = two.json()
    assert two.code == 1 and summary["stopped"] is None and "not started" not in statuses(hosts).values()
    three = fleetrun(*base[:3], fail_on("lab01", "lab03", "lab05"), *base[3:], home=tmp_path)
    hosts, summary = three.json()
    assert three.code == 1
    assert summary["stopped"]["after_batch"] == 3
    assert summary["stopped"]["message"] == "rollout stopped after batch 3: 3 failures > --max-fail 2 (20% of 10)"
    assert [name for name, status in statuses(hosts).items() if status == "not started"] == [
        "lab07", "lab08", "lab09", "lab10"]


def test_an_unreachable_host_counts_against_the_budget(lab, tmp_path):
    extra = {"closed": {"address": "127.0.0.1", "port": free_port()}}
    inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, extra_hosts=extra)
    # --order sorted dispatches `closed` first, wherever the inventory has it.
    run = fleetrun("exec", "-i", str(inventory), "true", "-H", "lab0[1-3],closed", "--order", "sorted",
                   "--batch", "1", "--max-fail", "0", "--format", "json", home=tmp_path)
    assert run.code == 4, run.err
    hosts, summary = run.json()
    assert statuses(hosts) == {"closed": "unreachable", "lab01": "not started", "lab02": "not started",
                               "lab03": "not started"}
    assert summary["stopped"]["reason"] == "max-fail"


def test_a_failing_canary_starts_nothing_else(lab, tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    command = fail_on("lab01", then=f"touch {marks}/$FLEETRUN_LAB_HOST")
    run = fleetrun("exec", "-i", str(lab.inventory), command, "-H", "lab0[1-6]", "--canary", "1",
                   "--max-fail", "50%", "--format", "json", home=tmp_path)
    assert run.code == 1, run.err
    hosts, summary = run.json()
    assert hosts["lab01"]["status"] == "failed"
    assert {hosts[f"lab0{n}"]["status"] for n in range(2, 7)} == {"not started"}
    assert summary["stopped"]["reason"] == "canary" and [b["size"] for b in summary["batches"]] == [1, 5]
    assert list(marks.iterdir()) == []  # no other host ran the command
    ok = fleetrun("exec", "-i", str(lab.inventory), command, "-H", "lab0[2-4]", "--canary", "1", "--format", "json",
                  home=tmp_path)
    assert ok.code == 0 and [b["size"] for b in ok.json()[1]["batches"]] == [1, 2]


def test_a_whole_batch_failing_stops_unless_told_to_go_on(lab, tmp_path):
    base = ("exec", "-i", str(lab.inventory), "exit 1", "-H", "lab0[1-4]", "--batch", "2", "--format", "json")
    stopped = fleetrun(*base, home=tmp_path)
    assert stopped.code == 1 and stopped.json()[1]["stopped"]["reason"] == "batch-failed"
    going_on = fleetrun(*base, "--continue-on-batch-failure", home=tmp_path)
    hosts, summary = going_on.json()
    assert going_on.code == 1 and summary["stopped"] is None and set(statuses(hosts).values()) == {"failed"}


def test_pause_leaves_a_gap_between_batches(lab, tmp_path):
    run = fleetrun("exec", "-i", str(lab.inventory), TIMES, "-H", "lab0[1-2]", "--batch", "1", "--pause", "2",
                   "--format", "json", home=tmp_path)
    assert run.code == 0, run.err
    hosts, _ = run.json()
    assert times(hosts["lab02"])[0] - times(hosts["lab01"])[1] >= 2
    assert "pausing 2 s before batch 2" in run.err


def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def test_ctrl_c_in_a_pause_is_130_with_the_rest_not_started_and_the_journal_complete(lab, tmp_path):
    import json

    state = state_dir(tmp_path)
    command = [sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "echo hi", "-H", "lab0[1-3]",
               "--batch", "1", "--pause", "60", "--format", "json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env={**clean_env(tmp_path), "FLEETRUN_STATE_DIR": str(state)})
    try:
        deadline = time.monotonic() + 30
        journal: list[str] = []
        while time.monotonic() < deadline and not journal:  # batch 1 is recorded: the pause has begun
            journal = [path for path in glob.glob(f"{state}/runs/*/hosts.jsonl") if os.path.getsize(path)]
            time.sleep(0.1)
        assert journal, "batch 1 never finished"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    records = [json.loads(line) for line in out.splitlines()]
    hosts = {r["host"]: r for r in records if r["type"] == "host"}
    assert statuses(hosts) == {"lab01": "ok", "lab02": "not started", "lab03": "not started"}
    assert hosts["lab02"]["reason"] == "interrupted" and records[-1]["interrupted"] is True
    run_dir = Path(journal[0]).parent
    recorded = [json.loads(line) for line in (run_dir / "hosts.jsonl").read_text().splitlines()]
    assert sorted(r["host"] for r in recorded) == ["lab01", "lab02", "lab03"]
    assert json.loads((run_dir / "summary.json").read_text())["exit_status"] == 130
    assert json.loads((run_dir / "run.json").read_text())["exit_status"] == 130


def test_deadline_holds_during_a_pause(lab, tmp_path):
    started = time.monotonic()
    run = fleetrun("exec", "-i", str(lab.inventory), "true", "-H", "lab0[1-3]", "--batch", "1", "--pause", "60",
                   "--deadline", "3", "--format", "json", home=tmp_path)
    assert time.monotonic() - started < 40
    hosts, _ = run.json()
    assert statuses(hosts) == {"lab01": "ok", "lab02": "not started", "lab03": "not started"}
    assert hosts["lab02"]["reason"] == "deadline"
    assert run.code == 3, run.err  # hosts the deadline left out are a timeout, not a success


def test_confirm_without_a_terminal_is_exit_2_and_connects_nowhere(lab, tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        extra = {"watched": {"address": "127.0.0.1", "port": listener.getsockname()[1]}}
        inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, extra_hosts=extra)
        run = fleetrun("exec", "-i", str(inventory), "true", "-H", "watched,lab01", "--batch", "1", "--confirm",
                       home=tmp_path)
        assert run.code == 2 and "--confirm needs a terminal" in run.err
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected


def run_in_pty(argv: list[str], env: dict[str, str], replies: list[tuple[str, str]],
               timeout: float = 60) -> tuple[int, str, str]:
    """Run with stdin and stderr on a pseudo-terminal; when the screen shows the next (prompt, reply)'s prompt
    one more time, type the reply. Returns (exit status, stdout, what the terminal showed)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stderr=slave, stdout=subprocess.PIPE, env=env)
    os.close(slave)
    seen, answered = b"", 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if master in ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
                if answered < len(replies):
                    prompt = replies[answered][0].encode()
                    if seen.count(prompt) > sum(1 for p, _ in replies[:answered] if p.encode() == prompt):
                        os.write(master, replies[answered][1].encode() + b"\n")
                        answered += 1
            elif proc.poll() is not None:
                break
        out = proc.communicate(timeout=30)[0]
    finally:
        proc.kill()
        os.close(master)
    return proc.returncode, out.decode(), seen.decode(errors="replace")


def test_confirm_under_a_terminal_answering_no_stops(lab, tmp_path):
    import json

    argv = [sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "echo hi", "-H", "lab0[1-6]",
            "--batch", "2", "--confirm", "--format", "json"]
    code, out, screen = run_in_pty(argv, clean_env(tmp_path), [("[y/N]", "y"), ("[y/N]", "n")])
    assert screen.count("[y/N]") == 2 and "Start batch 2 (2 hosts)?" in screen
    assert "rollout stopped by the operator after batch 2" in screen
    records = [json.loads(line) for line in out.splitlines()]
    hosts = {r["host"]: r for r in records if r["type"] == "host"}
    assert statuses(hosts) == {"lab01": "ok", "lab02": "ok", "lab03": "ok", "lab04": "ok",
                               "lab05": "not started", "lab06": "not started"}
    assert hosts["lab05"]["reason"] == "stopped by the operator"
    assert records[-1]["stopped"]["reason"] == "operator"
    assert code == 130  # the operator stopped it, as a Ctrl-C would: never 0


def test_push_rolls_out_in_batches_too(lab, tmp_path):
    source = tmp_path / "app.conf"
    source.write_text("v1\n")
    remote = "/srv/rollout-push/" if lab.private_srv else f"{tmp_path}/remote/"
    run = fleetrun("push", "-i", str(lab.inventory), str(source), remote, "-H", "lab0[1-3]", "--mkdir", "--batch", "1",
                   "--format", "json", home=tmp_path)
    assert run.code == 0, run.err
    _, summary = run.json()
    assert [b["size"] for b in summary["batches"]] == [1, 1, 1]
