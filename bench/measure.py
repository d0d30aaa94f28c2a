"""Runs one tool invocation and measures it: wall time, client-tree CPU and memory, server and foreign CPU."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
_ids = itertools.count()


@dataclass
class Measurement:
    """What one run of one tool cost; CPU in seconds, memory in KiB."""

    wall: float
    user: float  # the waited client tree (os.wait4), or the cgroup when it saw more
    system: float
    maxrss_kib: int  # largest single process of the client tree (ru_maxrss)
    tree_kib: int  # peak memory charged to the whole client tree (memory cgroup; else summed RSS, sampled)
    returncode: int
    timed_out: bool
    server_cpu: float  # all lab sshd trees, this run
    machine_cpu: float  # every CPU second the machine spent during the run (/proc/stat)
    escaped_cpu: float  # CPU of client processes that their tool did not wait for (cgroup − wait4)
    leftovers: int  # client processes still alive after the tool exited (killed)
    stdout: Path
    stderr: Path
    load_before: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def cpu(self) -> float:
        return self.user + self.system

    @property
    def foreign_cpu(self) -> float:
        """CPU the machine spent on neither the client nor the lab during the run: noise from elsewhere."""
        return max(0.0, self.machine_cpu - self.cpu - self.server_cpu)


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy since boot (all but idle and iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def tree_cpu(pids: Iterable[int]) -> float:
    """utime+stime of each process plus its reaped children (cutime+cstime), in seconds."""
    total = 0
    for pid in pids:
        rest = _stat_fields(pid)
        if rest is not None:
            total += sum(int(value) for value in rest[11:15])
    return total / CLK_TCK


def children_of(parents: set[int]) -> list[int]:
    """Processes whose parent is one of `parents` (a full /proc scan: not for hot paths)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            rest = _stat_fields(int(entry.name))
            if rest is not None and int(rest[1]) in parents:
                found.append(int(entry.name))
    return found


class ServerMeter:
    """CPU used by the lab's sshd listeners and everything they forked (per-connection sshd, shells)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.parents = set(self.pids)

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until no connection child is left, so its CPU has been added to its listener."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and children_of(self.parents):
            time.sleep(0.1)

    def total(self) -> float:
        return tree_cpu(self.pids)


class _Cgroup:
    """cgroup v1 groups for one run: cpuacct counts daemons a tool forgot to wait; memory keeps the tree's peak."""

    ROOTS = (Path("/sys/fs/cgroup/cpuacct"), Path("/sys/fs/cgroup/memory"))

    def __init__(self) -> None:
        self.paths: dict[str, Path] = {}
        if os.geteuid() != 0:
            return
        name = f"fleetrun-bench-{os.getpid()}-{next(_ids)}"
        for root in self.ROOTS:
            if (root / "cgroup.procs").exists():
                with contextlib.suppress(OSError):
                    (root / name).mkdir()
                    self.paths[root.name] = root / name

    def join_fds(self) -> list[int]:
        """fds the child writes its pid to before exec (opened here: nothing to allocate after fork)."""
        return [os.open(path / "cgroup.procs", os.O_WRONLY) for path in self.paths.values()]

    def pids(self) -> list[int]:
        path = self.paths.get("cpuacct") or self.paths.get("memory")
        if path is None:
            return []
        try:
            return [int(line) for line in (path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def cpu(self) -> tuple[float, float] | None:
        path = self.paths.get("cpuacct")
        if path is None:
            return None
        try:
            user = int((path / "cpuacct.usage_user").read_text()) / 1e9
            system = int((path / "cpuacct.usage_sys").read_text()) / 1e9
        except (OSError, ValueError):
            return None
        return user, system

    def peak_kib(self) -> int | None:
        """The most memory the tree ever had charged: its private pages (shared libraries are charged once,
        to whoever loaded them first), so 64 ssh children are not counted as 64 copies of libcrypto."""
        path = self.paths.get("memory")
        if path is None:
            return None
        try:
            return int((path / "memory.max_usage_in_bytes").read_text()) // 1024
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        for path in self.paths.values():
            with contextlib.suppress(OSError):
                path.rmdir()


def _rss_kib(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
    except (OSError, ValueError, IndexError):
        return 0


class _TreeSampler(threading.Thread):
    """Without a memory cgroup: the summed RSS of the client tree, sampled cheaply (statm, twice a second)."""

    def __init__(self, root: int, cgroup: _Cgroup) -> None:
        super().__init__(name="bench-sampler", daemon=True)
        self.root, self.cgroup = root, cgroup
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            pids = self.cgroup.pids() or [self.root]
            self.peak = max(self.peak, sum(_rss_kib(pid) for pid in pids))
            self.stop.wait(0.5)


def _copy(source: int, target: BinaryIO) -> None:
    """Move the tool's stdout from its pipe to a file here, outside its cgroup, so the page cache of a large
    output is not charged to the tool's memory."""
    while chunk := os.read(source, 1 << 20):
        target.write(chunk)
    os.close(source)


def run_measured(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    stdout: Path,
    stderr: Path,
    server: ServerMeter | None,
) -> Measurement:
    """Run argv to completion (or the timeout) and measure it; never raises for the tool's own failures."""
    if server is not None:
        server.settle()
    server_before = server.total() if server is not None else 0.0
    load = os.getloadavg()[0]
    cgroup = _Cgroup()
    try:
        join_fds = cgroup.join_fds()
    except BaseException:
        cgroup.remove()
        raise

    def join_cgroup() -> None:  # runs in the child between fork and exec: os calls only
        for fd in join_fds:
            os.write(fd, b"0")

    timed_out = threading.Event()
    write_end = -1
    try:
        read_end, write_end = os.pipe()
        with stdout.open("wb") as out, stderr.open("wb") as err:
            copier = threading.Thread(target=_copy, args=(read_end, out), name="bench-stdout", daemon=True)
            copier.start()
            busy_before = machine_busy()
            started = time.perf_counter()
            process = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=write_end, stderr=err, env=env, cwd=cwd,
                start_new_session=True, preexec_fn=join_cgroup if join_fds else None,
            )  # fmt: skip
            os.close(write_end)
            write_end = -1
            sampler = _TreeSampler(process.pid, cgroup)
            if cgroup.peak_kib() is None:
                sampler.start()

            def kill() -> None:
                timed_out.set()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)

            timer = threading.Timer(timeout, kill)
            timer.start()
            try:
                _, status, usage = os.wait4(process.pid, 0)
            except BaseException:
                kill()
                raise
            finally:
                timer.cancel()
            wall = time.perf_counter() - started
            busy_after = machine_busy()
            process.returncode = os.waitstatus_to_exitcode(status)  # already reaped: Popen must not wait
            sampler.stop.set()
            leftovers = _kill_leftovers(process.pid, cgroup)
            copier.join(60)
        user, system = usage.ru_utime, usage.ru_stime
        escaped = 0.0
        whole = cgroup.cpu()
        if whole is not None and sum(whole) > user + system:
            escaped = sum(whole) - (user + system)
            user, system = max(user, whole[0]), max(system, whole[1])
        tree = cgroup.peak_kib()
    finally:
        for fd in (*join_fds, write_end):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        cgroup.remove()
    if server is not None:
        server.settle()
    server_cpu = (server.total() - server_before) if server is not None else 0.0
    return Measurement(
        wall=wall, user=user, system=system, maxrss_kib=usage.ru_maxrss,
        tree_kib=tree if tree is not None else sampler.peak, returncode=process.returncode,
        timed_out=timed_out.is_set(), server_cpu=server_cpu, machine_cpu=busy_after - busy_before,
        escaped_cpu=escaped, leftovers=leftovers, stdout=stdout, stderr=stderr, load_before=load,
    )  # fmt: skip


def _kill_leftovers(pgid: int, cgroup: _Cgroup) -> int:
    """Kill what the tool left behind (its process group, its cgroup); how many there were."""
    left = cgroup.pids()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while cgroup.pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(left)
