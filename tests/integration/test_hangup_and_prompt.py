"""On a real terminal (a pty fleetrun has as its controlling terminal): SIGHUP when it goes away, and --ask-pass."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fleet import clean_env
from test_exec import gone_within, remote_processes

pytestmark = pytest.mark.integration


@dataclass
class Terminal:
    """fleetrun running with a pty as stdin and controlling terminal (stdout/stderr too, unless piped)."""

    proc: subprocess.Popen[bytes]
    master: int
    output: bytearray = field(default_factory=bytearray)
    reader: threading.Thread | None = None
    closed: bool = False

    def read_forever(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO once the last slave fd is closed, or EBADF once we hung up
                return
            if not chunk:
                return
            self.output += chunk

    def wait_for(self, text: bytes, seconds: float = 20) -> bool:
        deadline = time.monotonic() + seconds
        while text not in self.output and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        return text in self.output

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def hang_up(self) -> None:
        """Close the terminal's master side, as sshd does when the operator's connection drops."""
        if not self.closed:
            self.closed = True
            os.close(self.master)


def fleetrun_on_terminal(args: list[str], home: Path, **streams: int) -> Terminal:
    master, slave = os.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([sys.executable, "-m", "fleetrun", *args], stdin=slave,
                            stdout=streams.get("stdout", slave), stderr=streams.get("stderr", slave),
                            env=clean_env(home), preexec_fn=controlling_terminal)
    os.close(slave)
    terminal = Terminal(proc, master)
    terminal.reader = threading.Thread(target=terminal.read_forever, daemon=True)
    terminal.reader.start()
    return terminal


@pytest.fixture
def terminals() -> Iterator[Callable[..., Terminal]]:
    started: list[Terminal] = []

    def start(args: list[str], home: Path, **streams: int) -> Terminal:
        terminal = fleetrun_on_terminal(args, home, **streams)
        started.append(terminal)
        return terminal

    yield start
    for terminal in started:
        if terminal.proc.poll() is None:
            terminal.proc.kill()
            terminal.proc.wait(10)
        terminal.hang_up()


def wait_running(pattern: str, count: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while len(remote_processes(pattern)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(remote_processes(pattern)) >= count, f"never saw {count} × {pattern!r}"


def test_hangup_of_the_terminal_completes_files_accounts_for_every_host_and_exits_129(lab, tmp_path, terminals):
    junit, out_dir = tmp_path / "report.xml", tmp_path / "out"
    terminal = terminals(["exec", "-i", str(lab.inventory), "sleep 46.3", "-H", "all", "--forks", "4",
                          "--junit", str(junit), "--out-dir", str(out_dir)], tmp_path)
    wait_running("^sleep 46.3$", 4)
    assert terminal.proc.poll() is None
    terminal.hang_up()  # the kernel sends SIGHUP to fleetrun, the session leader; writes to the pty now fail
    os.kill(terminal.proc.pid, signal.SIGHUP)  # and as the test has it: the signal by pid
    assert terminal.proc.wait(30) == 129
    cases = ET.parse(junit).getroot().iter("testcase")
    assert sorted(case.get("name") or "" for case in cases) == sorted(host.name for host in lab.hosts)
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["total"] == 20 and summary["exit_status"] == 129 and summary["interrupted"] is True
    assert summary["counts"] == {"cancelled": 4, "not started": 16}
    assert len(list(out_dir.glob("*.status"))) == 20
    assert gone_within("^sleep 46.3$") == []


def test_hangup_with_output_to_pipes_prints_every_host_and_exits_129(lab, tmp_path):
    command = [sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "sleep 46.4", "-H", "all",
               "--forks", "3"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=clean_env(tmp_path))
    try:
        wait_running("^sleep 46.4$", 3)
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 129, err
    rows = [line.split()[:2] for line in out.splitlines() if line.startswith("lab")]
    assert sorted(name for name, _ in rows) == sorted(host.name for host in lab.hosts)
    assert [status for _, status in rows].count("cancelled") == 3
    assert err.splitlines() == ["fleetrun: stopping (hung up): cancelling running hosts (Ctrl-C again to exit at once)"]
    assert gone_within("^sleep 46.4$") == []


def test_under_nohup_a_hangup_does_not_stop_the_run(lab, tmp_path):
    def like_nohup() -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    command = [sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "sleep 2.7; echo done",
               "-H", "lab0[1-3]", "--format", "json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=clean_env(tmp_path), preexec_fn=like_nohup)
    try:
        wait_running("^sleep 2.7$", 3)
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["stdout"] for r in records if r["type"] == "host"] == ["done\n"] * 3


def test_ask_pass_fails_on_a_bad_key_before_prompting(lab, tmp_path, terminals):
    bad_key = tmp_path / "not_a_key"
    bad_key.write_text("this is not a private key\n")
    terminal = terminals(["exec", "-i", str(lab.inventory), "true", "-H", "lab01", "--ask-pass",
                          "--key", str(bad_key)], tmp_path)
    code = terminal.proc.wait(30)
    assert terminal.reader is not None
    terminal.reader.join(5)
    shown = terminal.output.decode(errors="replace")
    assert code == 2, shown
    assert "password" not in shown.lower(), "prompted before checking the key"
    assert f"key file {bad_key} cannot be loaded" in shown


def test_ask_pass_prompts_once_on_a_terminal_after_the_keys_are_read(lab, tmp_path, terminals):
    terminal = terminals(["exec", "-i", str(lab.inventory), "echo hi", "-H", "lab0[1-2]", "--ask-pass",
                          "--format", "json"], tmp_path, stdout=subprocess.PIPE)
    assert terminal.wait_for(b"SSH password: "), terminal.output
    terminal.type(b"not-used-here\n")  # the lab logs in by key; the password is only a fallback
    assert terminal.proc.stdout is not None
    out = terminal.proc.stdout.read().decode()
    assert terminal.proc.wait(30) == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["status"] for r in records if r["type"] == "host"] == ["ok", "ok"]
    assert terminal.output.count(b"SSH password: ") == 1 and b"not-used-here" not in terminal.output


def test_ask_pass_with_ctrl_d_at_the_prompt_is_exit_2(lab, tmp_path, terminals):
    terminal = terminals(["exec", "-i", str(lab.inventory), "true", "-H", "lab01", "--ask-pass"], tmp_path)
    assert terminal.wait_for(b"SSH password: ")
    terminal.type(b"\x04")
    assert terminal.proc.wait(30) == 2
    assert terminal.wait_for(b"no password entered", 5)


def test_ask_pass_with_stdin_closed_is_exit_2_not_an_internal_error(lab, tmp_path):
    args = ["exec", "-i", str(lab.inventory), "true", "-H", "all", "--ask-pass"]
    done = subprocess.run(["sh", "-c", 'exec "$0" -m fleetrun "$@" 0<&-', sys.executable, *args],
                          capture_output=True, text=True, timeout=60, env=clean_env(tmp_path))
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "fleetrun: error: --ask-pass needs a terminal; without one use password_env or password_file in the inventory\n"
    )
