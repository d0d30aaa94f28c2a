"""The remote wrapper run by the local `sh`, with a lifeline process the test controls (no sshd needed)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetrun.ssh.wrapper import wrap_command

pytestmark = pytest.mark.integration

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SHELL": "/bin/bash"}
# Python ignores SIGPIPE, and children inherit that; sshd's sessions have the default action.
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGINT, signal.SIGTERM)


def restore_signals() -> None:
    for signum in DEFAULT_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)


def wrapped(command: str, *, leader: bool = True, **options: object) -> subprocess.Popen[str]:
    """The wrapper as sshd starts it: `$SHELL -c LINE`, in a new session (leader) unless told otherwise."""
    return subprocess.Popen(["/bin/bash", "-c", wrap_command(command, **options)], stdin=subprocess.DEVNULL,  # type: ignore[arg-type]
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=leader, preexec_fn=restore_signals)


@contextlib.contextmanager
def lifeline() -> Iterator[subprocess.Popen[bytes]]:
    """A process standing in for the sshd session: the test ends it to play a dropped connection."""
    proc = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate, seconds: float = 20) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize(
    ("command", "returncode"),
    [("exit 0", 0), ("exit 1", 1), ("exit 129", 129), ("exit 137", 137), ("exit 141", 141), ("exit 255", 255),
     ("kill -KILL $$", -9), ("kill -PIPE $$", -13), ("kill -TERM $$", -15), ("kill -HUP $$", -1)],
)
def test_the_command_is_the_main_process_so_its_wait_status_is_the_wrappers(command, returncode):
    proc = wrapped(command)
    proc.communicate(timeout=30)
    assert proc.returncode == returncode
    plain = subprocess.run(["/bin/bash", "-c", command], env=ENV, preexec_fn=restore_signals, check=False)
    assert plain.returncode == returncode  # exactly what the shell alone gives


def test_same_pid_and_process_group_as_the_wrapper_and_stdin_is_the_callers():
    proc = subprocess.Popen(["/bin/bash", "-c", wrap_command("echo $$ $(ps -o pgid= -p $$); cat")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)
    out, _ = proc.communicate("input for the command\n", timeout=30)
    first, rest = out.split("\n", 1)
    pid, pgid = first.split()
    assert int(pid) == int(pgid) == proc.pid
    assert rest == "input for the command\n"


def test_lifeline_gone_kills_the_command_and_its_process_group():
    with lifeline() as line:
        proc = wrapped("sleep 301 & sleep 302", lifeline=str(line.pid))
        assert wait_for(lambda: len(children(proc.pid)) >= 2)
        assert proc.poll() is None
        line.kill()
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM
    assert wait_for(lambda: not [p for p in group(proc.pid) if alive(p)])


def test_a_command_ignoring_term_is_killed_2_s_later():
    with lifeline() as line:
        proc = wrapped("trap '' TERM; while :; do sleep 1; done", lifeline=str(line.pid))
        assert wait_for(lambda: any(cmdline(p) == b"sleep\x001\x00" for p in children(proc.pid)))
        line.kill()
        killed_at = time.monotonic()
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert time.monotonic() - killed_at >= 2  # TERM first, KILL only after the grace


def test_a_command_that_ends_first_leaves_its_daemons_alone():
    with lifeline() as line:
        proc = wrapped("nohup sleep 303 >/dev/null 2>&1 & echo $!", lifeline=str(line.pid))
        out, _ = proc.communicate(timeout=30)
        daemon = int(out)
        try:
            watcher_gone = wait_for(lambda: not watchers(line.pid))
            line.kill()
            time.sleep(3)  # longer than a watcher's poll and grace: it would have struck by now
            assert watcher_gone and alive(daemon)
        finally:
            os.kill(daemon, signal.SIGKILL)


def test_new_group_puts_a_non_leader_in_a_group_of_its_own_with_the_same_pid():
    with lifeline() as line:
        proc = wrapped("echo $$ $(ps -o pgid= -p $$); sleep 304", leader=False, lifeline=str(line.pid),
                       new_group=True)
        assert proc.stdout is not None
        pid, pgid = proc.stdout.readline().split()
        assert int(pid) == int(pgid) == proc.pid
        assert os.getpgid(proc.pid) != os.getpgrp()
        line.kill()
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM


def test_the_watcher_holds_no_output_pipe_and_shows_no_command_text():
    with lifeline() as line:
        proc = wrapped("echo secret-$((6*7)); sleep 305", lifeline=str(line.pid))
        assert proc.stdout is not None
        assert proc.stdout.readline() == "secret-42\n"
        assert wait_for(lambda: bool(watchers(line.pid)))
        (watcher,) = watchers(line.pid)
        assert b"secret" not in cmdline(watcher)
        assert {os.readlink(f"/proc/{watcher}/fd/{fd}") for fd in (0, 1, 2)} == {"/dev/null"}
        line.kill()
        proc.communicate(timeout=30)


def test_new_group_where_the_wrapper_already_leads_one_execs_directly_without_forking():
    # sudo's use_pty makes the command a session leader: setsid would fork there, and the pid would change
    with lifeline() as line:
        proc = wrapped("echo $$ $(ps -o pgid= -p $$); sleep 306", leader=True, lifeline=str(line.pid),
                       new_group=True)
        assert proc.stdout is not None
        pid, pgid = proc.stdout.readline().split()
        assert int(pid) == int(pgid) == proc.pid
        line.kill()
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM


def test_the_watcher_survives_a_hangup_and_still_kills_the_command():
    # Under --become-pty the terminal's hangup reaches the whole group, the watcher's too
    with lifeline() as line:
        proc = wrapped("trap '' HUP; sleep 307", lifeline=str(line.pid))
        assert wait_for(lambda: bool(watchers(line.pid)))
        (watcher,) = watchers(line.pid)
        os.kill(watcher, signal.SIGHUP)
        time.sleep(0.5)
        assert alive(watcher)
        line.kill()
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM


def test_exported_variables_and_a_script_on_fd_3_deleted_before_it_runs(tmp_path):
    from fleetrun.ssh.wrapper import ScriptLoad, script_command

    script = b"#!/bin/sh\necho \"$0 $1 [$V] $(ls -A \"$TMPDIR\")\"\nread -r rest; echo \"stdin=$rest\"\n"
    command = script_command(["/bin/sh"], ["arg one"])
    line = wrap_command(command, env={"V": "it's $x", "TMPDIR": str(tmp_path)},
                        script=ScriptLoad(len(script), exact=True))
    proc = subprocess.run(["/bin/bash", "-c", line], input=script + b"more input\n", capture_output=True,
                          env=ENV, start_new_session=True, timeout=30, preexec_fn=restore_signals)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"/dev/fd/3 arg one [it's $x] \nstdin=more input\n"  # no file in TMPDIR while it ran
    assert list(tmp_path.iterdir()) == []


def test_a_script_that_did_not_arrive_whole_is_exit_125(tmp_path):
    from fleetrun.ssh.wrapper import SCRIPT_FAILED, ScriptLoad, script_command

    line = wrap_command(script_command(["/bin/sh"], []), env={"TMPDIR": str(tmp_path)},
                        script=ScriptLoad(100, exact=False))
    proc = subprocess.run(["/bin/bash", "-c", line], input=b"echo short\n", capture_output=True, env=ENV,
                          start_new_session=True, timeout=30, preexec_fn=restore_signals)
    assert proc.returncode == SCRIPT_FAILED and b"could not write the script" in proc.stderr
    assert proc.stdout == b"" and list(tmp_path.iterdir()) == []


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(child) for child in found]


def group(pgid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def watchers(lifeline_pid: int) -> list[int]:
    """The watchers whose lifeline is `lifeline_pid` (argv: sh -c SCRIPT fleetrun-watcher LIFELINE PID)."""
    found = subprocess.run(["pgrep", "-f", f"fleetrun-watcher {lifeline_pid} "], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


@pytest.mark.parametrize("sudo_like", [False, True])
def test_the_shell_runs_by_its_base_name_only_where_path_finds_that_same_shell(tmp_path, sudo_like):
    # sshd passes `bash` as argv[0]; sh's exec can only do that through PATH, so only when PATH finds /bin/bash.
    other = tmp_path / "bash"
    other.write_bytes(Path("/bin/bash").read_bytes())  # a bash, but another file
    other.chmod(0o755)
    only_sh = tmp_path / "only-sh"
    only_sh.mkdir()
    (only_sh / "sh").symlink_to("/bin/sh")
    options = {"lifeline": "$$", "new_group": True} if sudo_like else {}
    for path, expected in ((ENV["PATH"], "bash"), (f"{tmp_path}:{ENV['PATH']}", "/bin/bash"),
                           (f"/nonexistent::{ENV['PATH']}", "bash"), (str(only_sh), "/bin/bash")):
        proc = subprocess.run(["/bin/bash", "-c", wrap_command("echo $0; echo \"$PATH\"", **options)],
                              env={**ENV, "PATH": path}, capture_output=True, text=True, timeout=30,
                              preexec_fn=restore_signals, start_new_session=not sudo_like)
        assert proc.stdout == f"{expected}\n{path}\n", (path, proc.stderr)
