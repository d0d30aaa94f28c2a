"""`fleetrun exec` end to end against real sshd processes from fleetrun.lab."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fleet import clean_env, fleetrun, write_inventory

pytestmark = pytest.mark.integration


def remote_processes(pattern: str) -> list[str]:
    """Lab hosts run on this machine, so their processes are visible here."""
    found = subprocess.run(["pgrep", "-af", pattern], capture_output=True, text=True).stdout
    return [line for line in found.splitlines() if "pgrep" not in line and "fleetrun" not in line]


def gone_within(pattern: str, seconds: float = 15) -> list[str]:
    """The processes matching `pattern` still there after waiting up to `seconds` (a loaded machine is slow)."""
    deadline = time.monotonic() + seconds
    while (left := remote_processes(pattern)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_exec_on_20_hosts_returns_20_results(lab, tmp_path):
    run = fleetrun("exec", "-i", str(lab.inventory), "echo $FLEETRUN_LAB_HOST", "--hosts", "all",
                   "--format", "json", home=tmp_path)
    assert run.code == 0, run.err
    hosts, summary = run.json()
    assert sorted(hosts) == sorted(h.name for h in lab.hosts)
    assert all(record["stdout"] == f"{name}\n" and record["status"] == "ok" for name, record in hosts.items())
    assert summary["counts"] == {"ok": 20} and summary["exit_status"] == 0


def test_table_output_and_summary(lab, tmp_path):
    run = fleetrun("exec", "-i", str(lab.inventory), "echo hi-$FLEETRUN_LAB_HOST", "-H", "lab0[1-3]",
                   home=tmp_path)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert [line.split()[0] for line in lines[2:5]] == ["lab01", "lab02", "lab03"]
    assert "hi-lab02" in run.out
    assert lines[-1].startswith("3 ok in ")


def test_mixed_exit_codes(lab, tmp_path):
    command = 'case $FLEETRUN_LAB_HOST in lab03) exit 3;; lab05) kill -KILL $$;; esac; echo fine'
    run = fleetrun("exec", "-i", str(lab.inventory), command, "--hosts", "lab0[1-6]", "--format", "json",
                   home=tmp_path)
    assert run.code == 1, run.err
    hosts, summary = run.json()
    assert hosts["lab03"]["status"] == "failed" and hosts["lab03"]["exit_code"] == 3
    assert hosts["lab05"]["status"] == "failed" and hosts["lab05"]["signal"] == "KILL"
    assert hosts["lab05"]["error"] == "killed by signal KILL"
    assert {hosts[n]["status"] for n in ("lab01", "lab02", "lab04", "lab06")} == {"ok"}
    assert summary["counts"] == {"ok": 4, "failed": 2}


def test_stream_format(lab, tmp_path):
    run = fleetrun("exec", "-i", str(lab.inventory), "echo one; echo two >&2; echo three", "-H", "lab01,lab02",
                   "--format", "stream", home=tmp_path)
    assert run.code == 0, run.err
    assert sorted(run.out.splitlines()) == ["lab01 | one", "lab01 | three", "lab02 | one", "lab02 | three"]
    assert "lab01 | two" in run.err and "2 ok in" in run.err


def _spy_key_offers(mocker, monkeypatch, engine: str):
    """Counts the key offers of a run, checking that every connection went through `engine` (fleetrun.ssh.lean's
    client, or paramiko's with FLEETRUN_SSH=paramiko) and none through the other."""
    import paramiko

    from fleetrun.ssh import lean

    if engine == "paramiko":
        monkeypatch.setenv("FLEETRUN_SSH", "paramiko")
    handshakes = mocker.spy(lean, "handshake")
    lean_offers = mocker.spy(lean.LeanConnection, "auth_publickey")
    paramiko_offers = mocker.spy(paramiko.Transport, "auth_publickey")

    def offers() -> int:
        if engine == "lean":
            assert handshakes.call_count > 0 and paramiko_offers.call_count == 0
            return lean_offers.call_count
        assert handshakes.call_count == 0 and lean_offers.call_count == 0
        return paramiko_offers.call_count

    return offers


@pytest.mark.parametrize("engine", ["lean", "paramiko"])
def test_unknown_host_key_is_refused_before_auth(lab, tmp_path, mocker, monkeypatch, capsys, engine):
    from fleetrun.cli import main

    known = tmp_path / "known_hosts"
    known.write_text("# nothing yet\n")
    inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, known_hosts=str(known))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    auth = _spy_key_offers(mocker, monkeypatch, engine)
    with pytest.raises(SystemExit) as done:
        # One process: the spies see only this one's connections (--procs would run them in children).
        main(["exec", "-i", str(inventory), "true", "-H", "lab01,lab02", "--format", "json", "--procs", "1"])
    assert done.value.code == 5
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["status"] for r in records[:-1]] == ["host key", "host key"]
    assert "SHA256:" in records[0]["error"] and "accept-new" in records[0]["error"]
    assert auth() == 0, "no credentials may be offered to an unverified host"
    assert known.read_text() == "# nothing yet\n"
    assert not (tmp_path / ".ssh" / "known_hosts").exists()


@pytest.mark.parametrize("mode", ["yes", "accept-new", "no"])
def test_changed_host_key_is_refused_in_every_mode(lab, tmp_path, mode):
    wrong = lab.known_hosts.read_text().splitlines()
    # Give lab01's entry the key of lab02: the server now offers a key that differs from the known one.
    first, second = wrong[0].split(), wrong[1].split()
    wrong[0] = " ".join([first[0], second[1], second[2]])
    known = tmp_path / "known_hosts"
    known.write_text("\n".join(wrong) + "\n")
    before = known.read_bytes()
    inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, known_hosts=str(known))
    run = fleetrun("exec", "-i", str(inventory), "true", "-H", "lab01,lab02", "--host-key-checking", mode,
                   "--format", "json", home=tmp_path)
    assert run.code == 5, run.err
    hosts, _ = run.json()
    assert hosts["lab01"]["status"] == "host key" and "CHANGED" in hosts["lab01"]["error"]
    assert hosts["lab02"]["status"] == "ok"
    assert known.read_bytes() == before


def test_accept_new_records_30_hosts_exactly_once(make_lab, tmp_path):
    lab30 = make_lab(30)
    known = tmp_path / "known_hosts"
    known.write_text("# existing entry\n")
    inventory = write_inventory(tmp_path / "inv.yaml", lab30.inventory, known_hosts=str(known))
    run = fleetrun("exec", "-i", str(inventory), "true", "-H", "all", "--host-key-checking", "accept-new",
                   "--forks", "30", home=tmp_path)
    assert run.code == 0, run.out + run.err
    lines = known.read_text().splitlines()
    assert lines[0] == "# existing entry" and len(lines) == 31
    expected = {line.split()[0]: line.split()[1:3] for line in lab30.known_hosts.read_text().splitlines()}
    assert {line.split()[0]: line.split()[1:3] for line in lines[1:]} == expected
    again = fleetrun("exec", "-i", str(inventory), "true", "-H", "all", home=tmp_path)
    assert again.code == 0 and len(known.read_text().splitlines()) == 31


def test_no_checking_warns_per_host(lab, tmp_path):
    known = tmp_path / "empty"
    known.write_text("")
    inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, known_hosts=str(known))
    run = fleetrun("exec", "-i", str(inventory), "true", "-H", "lab01,lab02", "--host-key-checking", "no",
                   home=tmp_path)
    assert run.code == 0
    assert run.err.count("host key NOT verified") == 2 and known.read_text() == ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_closed_port_and_unresolvable_name_are_unreachable(lab, tmp_path):
    # The name must fail to resolve without any DNS packet leaving this machine: run fleetrun in a private
    # mount namespace whose resolv.conf points at loopback, where nothing answers.
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    extra = {"closed": {"address": "127.0.0.1", "port": free_port()},
             "nowhere": {"address": "no-such-host.invalid"}}
    inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, extra_hosts=extra)
    userns = () if os.geteuid() == 0 else ("-r",)
    script = f"mount --bind {resolv} /etc/resolv.conf && exec \"$0\" \"$@\""
    prefix = ("unshare", *userns, "-m", "sh", "-c", script)
    run = fleetrun("exec", "-i", str(inventory), "echo up", "-H", "lab01,lab02,closed,nowhere", "--format", "json",
                   home=tmp_path, prefix=prefix)
    assert run.code == 4, run.err
    hosts, _ = run.json()
    assert hosts["closed"]["status"] == "unreachable" and "refused" in hosts["closed"]["error"]
    assert hosts["nowhere"]["status"] == "unreachable" and "resolve" in hosts["nowhere"]["error"]
    assert hosts["lab01"]["status"] == hosts["lab02"]["status"] == "ok"


@pytest.mark.parametrize("engine", ["lean", "paramiko"])
def test_wrong_key_is_auth_failed_after_exactly_one_attempt(lab, tmp_path, mocker, monkeypatch, capsys, engine):
    from fleetrun.cli import main

    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    auth = _spy_key_offers(mocker, monkeypatch, engine)
    with pytest.raises(SystemExit) as done:
        main(["exec", "-i", str(lab.inventory), "true", "-H", "lab01", "--key", str(other), "--format", "json"])
    assert done.value.code == 4
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["status"] == "auth failed" and str(other) in record["error"]
    assert auth() == 1


def test_timeout_kills_the_remote_command(lab, tmp_path):
    started = time.monotonic()
    run = fleetrun("exec", "-i", str(lab.inventory), "sleep 60", "-H", "lab07", "--timeout", "2",
                   "--format", "json", home=tmp_path)
    elapsed = time.monotonic() - started
    assert run.code == 3, run.err
    hosts, _ = run.json()
    assert hosts["lab07"]["status"] == "timeout"
    assert hosts["lab07"]["error"] == ("command timed out after 2 s; fleetrun disconnected and the host's wrapper "
                                       "kills it")
    assert 2 <= elapsed < 15
    assert gone_within("^sleep 60$") == []


def test_10mb_on_both_streams_and_non_utf8(lab, tmp_path):
    command = ("head -c 10000000 /dev/zero | tr '\\0' o & head -c 10000000 /dev/zero | tr '\\0' e >&2; wait; "
               "printf 'bad \\377\\376 bytes\\n' >&2")
    run = fleetrun("exec", "-i", str(lab.inventory), command, "-H", "lab01,lab02", "--max-output", "20M",
                   "--format", "json", home=tmp_path)
    assert run.code == 0, run.err[-500:]
    hosts, _ = run.json()
    for record in hosts.values():
        assert record["stdout"] == "o" * 10_000_000
        assert record["stderr"].startswith("e" * 10_000_000)
        assert record["stderr"].endswith("bad \ufffd\ufffd bytes\n")


def test_output_beyond_max_output_is_truncated_visibly(lab, tmp_path):
    run = fleetrun("exec", "-i", str(lab.inventory), "seq 1 100000", "-H", "lab01", "--max-output", "1K",
                   home=tmp_path)
    assert run.code == 0
    assert "truncated" in run.out
    hosts, _ = fleetrun("exec", "-i", str(lab.inventory), "seq 1 100000", "-H", "lab01", "--max-output", "1K",
                        "--format", "json", home=tmp_path).json()
    assert len(hosts["lab01"]["stdout"]) == 1024 and hosts["lab01"]["stdout_truncated"] is True


def start_fleetrun(command: list[str], home: Path, pattern: str, running: int) -> subprocess.Popen[str]:
    """Start fleetrun in the background and wait (up to 20 s) until `running` remote commands match `pattern`."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=clean_env(home))
    deadline = time.monotonic() + 20
    while len(remote_processes(pattern)) < running and time.monotonic() < deadline:
        time.sleep(0.1)
    return proc


def test_sigint_mid_run_prints_every_host_once_and_exits_130(lab, tmp_path):
    command = [sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "sleep 45", "-H", "all",
               "--forks", "4"]
    proc = start_fleetrun(command, tmp_path, "^sleep 45$", 4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    rows = [line.split()[0:2] for line in out.splitlines() if line.startswith("lab")]
    assert sorted(name for name, _ in rows) == sorted(h.name for h in lab.hosts)
    statuses = [status for _, status in rows]
    assert statuses.count("cancelled") == 4 and statuses.count("not") == 16  # "not started"
    assert "Traceback" not in err
    assert gone_within("^sleep 45$") == []


def test_deadline_bounds_the_whole_run(lab, tmp_path):
    started = time.monotonic()
    run = fleetrun("exec", "-i", str(lab.inventory), "sleep 30", "-H", "all", "--forks", "5", "--deadline", "2",
                   "--format", "json", home=tmp_path)
    assert time.monotonic() - started < 15
    assert run.code == 3
    hosts, _ = run.json()
    assert len(hosts) == 20
    assert {r["status"] for r in hosts.values()} == {"timeout", "not started"}
    ran = [r["error"] for r in hosts.values() if r["status"] == "timeout"]
    assert ran and set(ran) == {"the run's --deadline was reached; fleetrun disconnected and the host's wrapper "
                                "kills the command"}


def test_hosts_command_lists_without_connecting(lab, tmp_path):
    run = fleetrun("hosts", "odd&lab0*", "-i", str(lab.inventory), home=tmp_path)
    assert run.code == 0
    assert [line.split()[0] for line in run.out.splitlines()[2:-1]] == [f"lab0{n}" for n in (1, 3, 5, 7, 9)]
    names = fleetrun("hosts", "all!even", "-i", str(lab.inventory), "--names", home=tmp_path)
    assert names.out.split() == [h.name for h in lab.hosts][::2]


def test_bad_pattern_is_exit_2_with_suggestion(lab, tmp_path):
    run = fleetrun("exec", "-i", str(lab.inventory), "true", "-H", "lab1", home=tmp_path)
    assert run.code == 2
    # lab1 is lab01 without its zero padding: that is the suggestion (issue 14), not lab10 … lab19
    assert "'lab1'" in run.err and "did you mean lab01? the names are zero-padded" in run.err
    assert "Traceback" not in run.err and len(run.err.strip().splitlines()) == 1
    typo = fleetrun("exec", "-i", str(lab.inventory), "true", "-H", "lba01", home=tmp_path)
    assert typo.code == 2 and "did you mean lab01" in typo.err  # no padding involved: the closest names


def test_ask_pass_without_terminal_is_exit_2_at_once(lab, tmp_path):
    started = time.monotonic()
    run = fleetrun("exec", "-i", str(lab.inventory), "true", "-H", "all", "--ask-pass", home=tmp_path)
    assert run.code == 2 and "terminal" in run.err and time.monotonic() - started < 10


def test_missing_passphrase_env_is_exit_2(lab, tmp_path):
    run = fleetrun("exec", "-i", str(lab.inventory), "true", "-H", "all", "--key-passphrase-env", "NOPE_UNSET",
                   home=tmp_path)
    assert run.code == 2 and "NOPE_UNSET" in run.err


def test_heavy_output_on_both_streams_never_stalls(lab, tmp_path):
    # Both streams full at once on every host: the pattern that made a reader relying on paramiko's merged
    # readiness pipe sleep forever (a set racing a clear, about one run in two). Each host must finish.
    command = "head -c 3000000 /dev/zero | tr '\\0' o & head -c 3000000 /dev/zero | tr '\\0' e >&2; wait"
    for _ in range(3):
        run = fleetrun("exec", "-i", str(lab.inventory), command, "-H", "all", "--timeout", "60", "--format", "json",
                       home=tmp_path, timeout=300)
        assert run.code == 0, [(r["host"], r["status"]) for r in run.json()[0].values() if r["status"] != "ok"]
        hosts, _ = run.json()
        assert all(len(r["stdout"]) == len(r["stderr"]) == 3_000_000 for r in hosts.values())


def test_silent_listener_is_unreachable_within_connect_timeout(lab, tmp_path):
    # Accepts TCP (the kernel completes the handshake from the backlog) but never says a word.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        extra = {"silent": {"address": "127.0.0.1", "port": silent.getsockname()[1]}}
        inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, extra_hosts=extra)
        started = time.monotonic()
        run = fleetrun("exec", "-i", str(inventory), "true", "-H", "silent,lab01", "--connect-timeout", "2",
                       "--format", "json", home=tmp_path)
        elapsed = time.monotonic() - started
    assert run.code == 4
    hosts, _ = run.json()
    assert hosts["silent"]["status"] == "unreachable" and " within 2." in hosts["silent"]["error"]  # the time waited
    assert hosts["lab01"]["status"] == "ok"
    assert elapsed < 20


def descendants(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    found = [int(child) for child in children]
    for child in list(found):
        found += descendants(child)
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # already gone
        return b""


def test_server_frozen_mid_command_does_not_hang_fleetrun(make_lab, tmp_path):
    frozen_lab = make_lab(2)
    host = frozen_lab.hosts[0]
    command = [sys.executable, "-m", "fleetrun", "exec", "-i", str(frozen_lab.inventory), "sleep 30; echo done",
               "-H", "all", "--timeout", "4", "--format", "json"]
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=clean_env(tmp_path))
    frozen: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.2)
            # The session's sshd processes and the command under them, once the command itself is running.
            tree = descendants(host.pid)
            if any(_cmdline(pid).startswith(b"sleep\x0030") for pid in tree):
                frozen = tree
                break
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):  # a short-lived helper may already be gone
                os.kill(pid, signal.SIGSTOP)
        out, err = proc.communicate(timeout=60)
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert frozen, "never saw the session start"
    assert time.monotonic() - started < 30
    records = {r["host"]: r for r in map(json.loads, out.splitlines()) if r["type"] == "host"}
    assert records[host.name]["status"] == "timeout"
    assert records[frozen_lab.hosts[1].name]["status"] == "timeout"
    assert proc.returncode == 3, err


def test_commands_run_in_the_login_shell_exactly_as_ssh_runs_them(lab, tmp_path):
    host = lab.hosts[0]
    command = 'echo {1..3}; [[ -n "$BASH_VERSION" ]] && echo bash; echo \'quoted "$x"\'; printf "%s|" a\\ b c'
    ssh = run_ssh(lab, host, command, home=tmp_path)
    run = fleetrun("exec", "-i", str(lab.inventory), command, "-H", host.name, "--format", "json", home=tmp_path)
    hosts, _ = run.json()
    assert ssh.returncode == 0 and run.code == 0
    assert hosts[host.name]["stdout"] == ssh.stdout
    # The same environment, open files and working directory (only the client's port differs).
    probe = "env | grep -v -E '^SSH_(CLIENT|CONNECTION)=' | sort; ls /proc/$$/fd; pwd; umask; ulimit -n"
    ssh = run_ssh(lab, host, probe, home=tmp_path)
    run = fleetrun("exec", "-i", str(lab.inventory), probe, "-H", host.name, "--format", "json", home=tmp_path)
    # ... but for the variables fleetrun always sets (issue 14)
    ours = [f"FLEETRUN_ADDRESS={host.address}\n", f"FLEETRUN_HOST={host.name}\n"]
    stdout = run.json()[0][host.name]["stdout"]
    assert all(line in stdout for line in ours)
    for line in ours:
        stdout = stdout.replace(line, "", 1)
    assert stdout == ssh.stdout


def test_sigterm_mid_run_exits_143_and_a_second_ctrl_c_exits_at_once(lab, tmp_path):
    command = [sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "sleep 44", "-H", "all",
               "--forks", "3", "--format", "json"]
    proc = start_fleetrun(command, tmp_path, "^sleep 44$", 3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    records = [json.loads(line) for line in out.splitlines()]
    assert len([r for r in records if r["type"] == "host"]) == 20 and records[-1]["interrupted"] is True
    assert gone_within("^sleep 44$") == []

    # A command that ignores TERM: fleetrun does not wait for it; the hosts' watchers KILL it 2 s after TERM.
    stubborn = [*command[:6], "trap '' TERM; while :; do sleep 0.9; done", *command[7:]]
    proc = start_fleetrun(stubborn, tmp_path, "^sleep 0.9$", 3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    cancelled = [r for r in map(json.loads, out.splitlines()) if r.get("status") == "cancelled"]
    assert len(cancelled) == 3
    assert {r["error"] for r in cancelled} == {"cancelled; fleetrun disconnected and the host's wrapper kills the "
                                               "command"}
    assert gone_within("^sleep 0.9$") == []


def test_a_second_ctrl_c_exits_at_once_while_the_first_waits_for_the_output(lab, tmp_path):
    # Nobody reads fleetrun's stdout, so after the first Ctrl-C it is stuck writing the output it owes; the
    # second one must end it at once all the same.
    command = [sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "-H", "lab0[1-3]",
               "--format", "stream", "yes stuck-output-line"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            env=clean_env(tmp_path))
    try:
        deadline = time.monotonic() + 20
        while len(remote_processes("^yes stuck-output-line$")) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        time.sleep(1)
        assert proc.poll() is None, "the first Ctrl-C waits until the output is written"
        proc.send_signal(signal.SIGINT)
        second = time.monotonic()
        proc.wait(timeout=30)
        assert proc.returncode == 130 and time.monotonic() - second < 5
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert gone_within("^yes stuck-output-line$") == []  # the connections dropped: the watchers killed them


def test_raw_sends_the_command_untouched(lab, tmp_path):
    command = "echo $0; ps -o args= -s $$; true"  # the session's processes: under the wrapper, its watcher too
    raw = fleetrun("exec", "-i", str(lab.inventory), command, "-H", "lab01", "--raw", "--format", "json",
                   home=tmp_path)
    hosts, _ = raw.json()
    assert raw.code == 0 and hosts["lab01"]["stdout"].startswith("bash\n")  # sshd ran it: argv[0] is "bash"
    assert "fleetrun" not in hosts["lab01"]["stdout"]
    wrapped = fleetrun("exec", "-i", str(lab.inventory), command, "-H", "lab01", "--format", "json",
                       home=tmp_path)
    assert "fleetrun-watcher" in wrapped.json()[0]["lab01"]["stdout"]


def ssh_argv(lab, host, *words: str, verbose: bool = False) -> list[str]:
    """OpenSSH's own client, as the oracle, to a lab host with the lab's key and known_hosts."""
    return ["ssh", "-F", "/dev/null", *(["-v"] if verbose else []), "-n", "-i", str(lab.client_key),
            "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-p", str(host.port), f"{lab.user}@{host.address}", *words]


def run_ssh(lab, host, *words: str, home: Path, verbose: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ssh_argv(lab, host, *words, verbose=verbose), capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, env=clean_env(home))


EXIT_STATUS = re.compile(r"^debug1: Exit status (-?\d+)$", re.MULTILINE)


@pytest.mark.parametrize(
    ("command", "signal_name"),
    [("exit 137", None), ("exit 141", None), ("exit 129", None), ("kill -KILL $$", "KILL"),
     ("kill -PIPE $$", "PIPE"), ("kill -TERM $$", "TERM"), ("exit 0", None), ("exit 1", None), ("exit 255", None)],
)
def test_exit_code_or_signal_is_what_the_server_sent_to_ssh(lab, tmp_path, command, signal_name):
    host = lab.hosts[2]
    ssh = run_ssh(lab, host, command, home=tmp_path, verbose=True)
    # `ssh -v` logs the request the server ended the session with, then the status it exits with.
    request = re.search(r"client_input_channel_req: channel \d+ rtype (exit-status|exit-signal)", ssh.stderr)
    reported = EXIT_STATUS.search(ssh.stderr)
    assert request is not None and reported is not None, ssh.stderr[-2000:]
    run = fleetrun("exec", "-i", str(lab.inventory), "-H", host.name, "--format", "json", command, home=tmp_path)
    record = run.json()[0][host.name]
    if request[1] == "exit-status":
        assert signal_name is None
        assert record["exit_code"] == ssh.returncode == int(reported[1])
        assert record["signal"] is None
        assert record["status"] == ("ok" if ssh.returncode == 0 else "failed")
    else:
        # exit-signal: ssh exits 255 ("Exit status -1") and does not log the name; the name fleetrun reports
        # is the signal the command sent itself, as the local shell reports it (-N from a signal death).
        local = subprocess.run(["bash", "-c", command], check=False,
                               preexec_fn=lambda: signal.signal(signal.SIGPIPE, signal.SIG_DFL))
        assert ssh.returncode == 255 and reported[1] == "-1"
        assert record["exit_code"] is None
        assert record["signal"] == signal_name == signal.Signals(-local.returncode).name.removeprefix("SIG")
        assert record["status"] == "failed" and record["error"] == f"killed by signal {signal_name}"
    assert run.code == (0 if record["status"] == "ok" else 1)


@pytest.mark.parametrize("raw", [False, True])
def test_stdin_is_at_eof_so_cat_returns_at_once(lab, tmp_path, raw):
    host = lab.hosts[3]
    ssh = run_ssh(lab, host, "cat; echo read-all", home=tmp_path)
    flags = ["--raw"] if raw else []
    run = fleetrun("exec", "-i", str(lab.inventory), "-H", host.name, "--timeout", "30", *flags, "--format", "json",
                   "cat; echo read-all", home=tmp_path)
    record = run.json()[0][host.name]
    assert record["status"] == "ok", record["error"]
    assert record["stdout"] == ssh.stdout == "read-all\n"


def test_raw_timeout_says_the_command_may_still_run_and_it_does(lab, tmp_path):
    host = lab.hosts[4]
    run = fleetrun("exec", "-i", str(lab.inventory), "-H", host.name, "--raw", "--timeout", "1", "--format", "json",
                   "sleep 63", home=tmp_path)
    record = run.json()[0][host.name]
    assert run.code == 3 and record["status"] == "timeout"
    assert record["error"] == ("command timed out after 1 s; fleetrun disconnected, and without the wrapper (--raw) "
                               "the command may still be running on the host")
    try:
        time.sleep(3)  # longer than a watcher would have taken: nothing kills it
        assert remote_processes("^sleep 63$"), "--raw: nothing on the host kills it (as with plain ssh)"
    finally:
        for line in remote_processes("^sleep 63$"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)


def test_raw_cancel_says_the_command_may_still_run(lab, tmp_path):
    command = [sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "-H", "lab1[0-1]", "--raw",
               "--format", "json", "sleep 64"]
    proc = start_fleetrun(command, tmp_path, "^sleep 64$", 2)
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        records = [r for r in map(json.loads, out.splitlines()) if r["type"] == "host"]
        assert [r["status"] for r in records] == ["cancelled", "cancelled"]
        assert {r["error"] for r in records} == {"cancelled; fleetrun disconnected, and without the wrapper (--raw) "
                                                 "the command may still be running on the host"}
    finally:
        for line in remote_processes("^sleep 64$"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)


def test_fleetrun_killed_outright_still_gets_its_commands_killed(lab, tmp_path):
    command = [sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "-H", "lab1[2-3]", "sleep 65"]
    proc = start_fleetrun(command, tmp_path, "^sleep 65$", 2)
    proc.kill()  # no cleanup of any kind: the kernel closes the connections, sshd's sessions end
    proc.communicate(timeout=30)
    assert gone_within("^sleep 65$") == []


def test_daemons_started_by_a_command_that_ended_survive_as_with_ssh(lab, tmp_path):
    host = lab.hosts[14]
    run = fleetrun("exec", "-i", str(lab.inventory), "-H", host.name, "--format", "json",
                   "nohup sleep 66 >/dev/null 2>&1 & echo $!", home=tmp_path)
    daemon = int(run.json()[0][host.name]["stdout"])
    try:
        time.sleep(4)  # the connection is closed: a watcher that wrongly struck would have TERMed and KILLed it
        assert remote_processes("^sleep 66$") == [f"{daemon} sleep 66"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon, signal.SIGKILL)


def test_command_words_are_joined_as_ssh_joins_them(lab, tmp_path):
    host = lab.hosts[15]
    words = ["echo", "a", "b  c", "$FLEETRUN_LAB_HOST"]
    ssh = run_ssh(lab, host, *words, home=tmp_path)
    run = fleetrun("exec", "-i", str(lab.inventory), "-H", host.name, "--format", "json", *words, home=tmp_path)
    assert run.json()[0][host.name]["stdout"] == ssh.stdout == f"a b c {host.name}\n"
    # After the first command word, everything is the command's, as with ssh: here -l and -d are ls's.
    listing = fleetrun("exec", "-i", str(lab.inventory), "-H", host.name, "ls", "-l", "-d", "/", home=tmp_path)
    assert listing.code == 0 and "root" in listing.out, listing.err
    dashed = fleetrun("exec", "-i", str(lab.inventory), "-H", host.name, "--", "ls", "-ld", "/", home=tmp_path)
    assert dashed.code == 0 and "root" in dashed.out
    # The quoted form with options after it keeps working; several words there are refused, not guessed at.
    quoted = fleetrun("exec", "-i", str(lab.inventory), "ls -ld /", "-H", host.name, "--format", "json",
                      home=tmp_path)
    assert quoted.json()[0][host.name]["status"] == "ok"
    refused = fleetrun("exec", "-i", str(lab.inventory), "ls", "-ld", "/", "-H", host.name, home=tmp_path)
    assert refused.code == 2 and "put the options first" in refused.err and "Traceback" not in refused.err


def test_table_keeps_leading_whitespace_of_df_and_uptime_like_output(lab, tmp_path):
    text = ("    PID TTY          TIME CMD\n      1 ?        00:00:01 init\n"
            " 10:00:01 up 12 days,  1:02,  0 users\n")
    printf = "printf '" + text.replace("\n", "\\n") + "'"
    run = fleetrun("exec", "-i", str(lab.inventory), "-H", "lab1[6-7]", "-v", printf, home=tmp_path)
    assert run.code == 0, run.err
    rows = run.out.splitlines()[2:-1]
    column = run.out.splitlines()[1].rindex(" ") + 1  # where the OUTPUT column's dashes start
    assert [row[column:] for row in rows] == text.splitlines() * 2
    # and df's own output (of filesystems whose numbers stay put) comes out line for line, as ssh shows it
    df = fleetrun("exec", "-i", str(lab.inventory), "-H", "lab18", "-v", "echo '  indented'; df -P /proc /sys",
                  home=tmp_path)
    ssh = run_ssh(lab, lab.hosts[17], "echo '  indented'; df -P /proc /sys", home=tmp_path)
    lines = df.out.splitlines()
    column = lines[1].rindex(" ") + 1
    assert [row[column:].rstrip() for row in lines[2:-1]] == [line.rstrip() for line in ssh.stdout.splitlines()]


def test_stream_keeps_100_kb_and_5_mb_lines_whole_from_several_hosts(lab, tmp_path):
    # Each host prints its own digit, so a line holding two hosts' halves cannot go unnoticed.
    command = ('d=${FLEETRUN_LAB_HOST#lab0}; head -c 100000 /dev/zero | tr "\\0" "$d"; echo; '
               'head -c 5000000 /dev/zero | tr "\\0" "$d"; echo; head -c 100000 /dev/zero | tr "\\0" "$d" >&2')
    run = fleetrun("exec", "-i", str(lab.inventory), "-H", "lab0[1-5]", "--format", "stream", command,
                   home=tmp_path, timeout=300)
    assert run.code == 0, run.err[-1000:]
    out = run.out.split("\n")
    assert out.pop() == ""
    seen = sorted((line[:5], len(line) - 8) for line in out)
    assert seen == sorted((f"lab0{n}", size) for n in range(1, 6) for size in (100_000, 5_000_000))
    for line in out:
        assert line[8:] == line[4] * (len(line) - 8) and line[5:8] == " | "
    err_lines = [line for line in run.err.splitlines() if " | " in line]
    assert sorted(err_lines) == [f"lab0{n} | " + str(n) * 100_000 for n in range(1, 6)]  # unterminated: still whole


@pytest.mark.parametrize("raw", [False, True])
def test_a_command_that_closes_its_output_early_is_waited_for_as_ssh_does(lab, tmp_path, raw):
    # EOF on both streams 4 s before the exit status: neither "exited" at EOF nor "lost" after a while.
    host = lab.hosts[18]
    command = "echo early; exec >&- 2>&-; sleep 4; exit 3"
    ssh = run_ssh(lab, host, command, home=tmp_path)
    run = fleetrun("exec", "-i", str(lab.inventory), "-H", host.name, "--connect-timeout", "2", "--format", "json",
                   *(["--raw"] if raw else []), command, home=tmp_path)
    record = run.json()[0][host.name]
    assert (record["status"], record["exit_code"], record["stdout"]) == ("failed", ssh.returncode, ssh.stdout)
    assert ssh.returncode == 3 and ssh.stdout == "early\n"
