"""The lab's sshd processes: spawned detached, waited for until each sends its banner, stopped for sure."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetrun.lab import LabHost


_SIGDEF = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP)
_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
_OUR_NAMES = ("sshd", "sh", "unshare")  # a lab host's process, before and after its execs


def spawn_detached(argv: list[str], log: Path) -> int:
    # posix_spawn, not Popen: no pipes, no Popen objects warning at exit, no fd in the parent per host.
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    # A new session, so a Ctrl-C in the caller's terminal does not reach the lab.
    return os.posix_spawn(argv[0], argv, _ENV, file_actions=actions, setsid=True, setsigdef=_SIGDEF, setsigmask=set())


def log_tail(log: Path, lines: int = 3) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(line.strip() for line in log.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def read_banner(host: LabHost, deadline: float, abort: threading.Event) -> bytes:
    with socket.create_connection((host.address, host.port), timeout=1.0) as sock:
        banner = b""
        # Once connected, wait for the banner as long as the deadline allows: giving up early and
        # reconnecting would pile more work on an sshd that is only slow because the machine is busy.
        while b"\n" not in banner and len(banner) < 256 and not abort.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                if not (chunk := sock.recv(256)):
                    break
                banner += chunk
        if banner.startswith(b"SSH-2.0-"):
            # Answer in kind and let sshd close first: its log then stays free of probe errors.
            sock.sendall(b"SSH-2.0-fleetrun_lab_probe\r\n")
            sock.shutdown(socket.SHUT_WR)
            with contextlib.suppress(OSError):
                while sock.recv(4096):
                    pass
        return banner


def wait_one(host: LabHost, deadline: float, abort: threading.Event) -> str | None:
    """None once the host sends an SSH-2.0 banner, else why it did not."""
    while not abort.is_set():
        try:
            done, status = os.waitpid(host.pid, os.WNOHANG)
        except ChildProcessError:
            return "sshd exited"
        if done:
            return f"sshd exited with status {os.waitstatus_to_exitcode(status)}"
        with contextlib.suppress(OSError):
            if read_banner(host, deadline, abort).startswith(b"SSH-2.0-"):
                return None
        if time.monotonic() >= deadline:
            return "no SSH-2.0 banner before the deadline"
        time.sleep(0.05)
    return None  # another host failed first; that one is reported


def wait_ready(hosts: list[LabHost], timeout: float) -> tuple[LabHost, str] | None:
    deadline, abort = time.monotonic() + timeout, threading.Event()

    def one(host: LabHost) -> tuple[LabHost, str] | None:
        reason = wait_one(host, deadline, abort)
        if reason is None:
            return None
        abort.set()  # one failure fails the lab: stop waiting for the others
        return host, reason

    # Bounded threads keep the parent's open sockets bounded, whatever the fleet size.
    with ThreadPoolExecutor(max_workers=min(32, len(hosts)), thread_name_prefix="fleetrun-lab-ready") as pool:
        try:
            failures = [failure for failure in pool.map(one, hosts) if failure is not None]
        finally:
            abort.set()  # on Ctrl-C too: the pool's exit waits for its threads, so let them return now
    return failures[0] if failures else None


def proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(command name, state, parent pid) of a process, or None if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2 :].split()
    return text[text.index("(") + 1 : text.rindex(")")], rest[0], int(rest[1])


def is_ours(pid: int, config: str) -> bool:
    # The pid may have been reused since the lab started: only a process started with this config counts.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return f"-f {config}" in cmdline


def is_alive(pid: int) -> bool:
    stat = proc_stat(pid)
    # Reap only a dead lab process of our own: never steal the exit status of another child of ours.
    if stat is not None and stat[1] == "Z" and stat[0] in _OUR_NAMES and stat[2] == os.getpid():
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return stat is not None and stat[1] != "Z"  # a zombie nobody reaps has stopped all the same


def terminate(processes: list[tuple[int, str]], grace: float = 5.0) -> int:
    """SIGTERM the processes still running their lab config, SIGKILL them after `grace`; how many."""
    targets = []
    for pid, config in processes:
        if is_ours(pid, config):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                targets.append(pid)
        else:
            is_alive(pid)  # reaps it if it is our own zombie

    def wait(pids: list[int], seconds: float) -> list[int]:
        deadline = time.monotonic() + seconds
        while (pids := [pid for pid in pids if is_alive(pid)]) and time.monotonic() < deadline:
            time.sleep(0.05)
        return pids

    for pid in wait(targets, grace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait(targets, 2.0)
    return len(targets)


