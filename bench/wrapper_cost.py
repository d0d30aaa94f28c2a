"""What fleetrun's remote wrapper costs a server per command: CPU and processes of `$SHELL -c LINE`, as sshd runs it.

Runs the exact command line each variant sends (`--raw`, the wrapper before issue 8, today's) N times here,
as a subreaper, so the processes the line leaves behind (the new watcher) are reaped by us and counted too.
Only the shell side is measured: sshd's own work per session is the same for every variant.

    .venv/bin/python bench/wrapper_cost.py --runs 200 --command true
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/wrapper_cost.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fleetrun.ssh.wrapper import _ARGV0, _SHELL, _WATCHER, wrap_command

PR_SET_CHILD_SUBREAPER = 36

# The kill-on-EOF wrapper as it was before issue 8 (commit 6df614a), kept only to compare against.
_OLD_WRAPPER = (
    "exec 3<&0; "
    'if command -v setsid >/dev/null 2>&1; then setsid "${SHELL:-/bin/sh}" -c "$1" </dev/null 3<&- & '
    'else "${SHELL:-/bin/sh}" -c "$1" </dev/null 3<&- & fi; '
    "c=$!; "
    "{ while read -r _ <&3; do :; done; kill -TERM -$c 2>/dev/null || kill -TERM $c 2>/dev/null; "
    "sleep 2; kill -KILL -$c 2>/dev/null; } >/dev/null 2>&1 & "
    "w=$!; exec 3<&-; wait $c 2>/dev/null; r=$?; kill $w 2>/dev/null; "
    'if [ "$r" -gt 128 ] && [ "$r" -lt 160 ]; then kill -$((r - 128)) $$; fi; exit $r'
)


def old_wrap(command: str) -> str:
    return f"sh -c {shlex.quote(_OLD_WRAPPER)} fleetrun {shlex.quote(command)}"


def _variant(start_watcher: Callable[[str], str], watcher: str = _WATCHER) -> Callable[[str], str]:
    """Today's wrapper with the watcher started another way (or not at all), to see what each part costs."""
    def wrap(command: str) -> str:
        script = "L=$PPID; " + start_watcher(shlex.quote(watcher)) + _ARGV0 + f"exec {_SHELL}"
        return f"exec sh -c {shlex.quote(script)} fleetrun {shlex.quote(command)}"

    return wrap


def _direct(quoted: str) -> str:  # as before 2026-12-02: a child of the command (os.wait() waits for it)
    return f'{{ exec sh -c {quoted} fleetrun-watcher "$L" $$; }} </dev/null >/dev/null 2>&1 & '


def _subshell(quoted: str) -> str:  # as today
    return f'( {{ exec sh -c {quoted} fleetrun-watcher "$L" $$; }} </dev/null >/dev/null 2>&1 & ); '


_NO_SLEEP = _WATCHER.replace("sleep 1 || exit 1", "exit 0")  # looks once, then exits
VARIANTS: dict[str, Callable[[str], str]] = {
    "raw (no wrapper)": lambda command: command,
    "wrapper before issue 8": old_wrap,
    "wrapper now": wrap_command,
    "no subshell": _variant(_direct),
    "no watcher": _variant(lambda quoted: ""),
    "subshell, no sleep": _variant(_subshell, _NO_SLEEP),
    "no subshell, no sleep": _variant(_direct, _NO_SLEEP),
}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def reap(block: bool) -> None:
    """Reap the orphans left to us (we are their subreaper): those done, or with `block` all of them."""
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def measure(line: str, runs: int, shell: str) -> tuple[float, float]:
    """(CPU ms per command, counting what it leaves behind; wall ms per command until its exit status)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SHELL": shell, "HOME": "/nonexistent", "SHLVL": "1"}
    cpu0, wall = children_cpu(), 0.0
    for _ in range(runs):
        # The old wrapper waits for EOF on stdin, as from an open channel: give it a pipe we close at the end.
        read_end, write_end = os.pipe()
        started = time.perf_counter()
        proc = subprocess.Popen([shell, "-c", line], stdin=read_end, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        os.close(read_end)
        proc.wait()
        wall += time.perf_counter() - started
        os.close(write_end)
        reap(block=False)
    reap(block=True)  # the watchers still in their last `sleep 1`
    return (children_cpu() - cpu0) * 1000 / runs, wall * 1000 / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--command", default="true")
    parser.add_argument("--shell", default="/bin/bash", help="the login shell sshd would run")
    parser.add_argument("--rounds", type=int, default=1, help="each variant once per round, interleaved")
    args = parser.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("prctl(PR_SET_CHILD_SUBREAPER) failed: Linux only")
    print(f"{args.runs} x {args.shell} -c LINE for {args.command!r}")
    print(f"{'variant':<24} {'CPU ms/cmd':>10} {'wall ms/cmd':>11}")
    for round_number in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"round {round_number}")
        for name, wrap in VARIANTS.items():
            cpu, wall = measure(wrap(args.command), args.runs, args.shell)
            print(f"{name:<24} {cpu:>10.2f} {wall:>11.2f}", flush=True)


if __name__ == "__main__":
    main()
