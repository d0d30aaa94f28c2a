"""One adapter per tool: its command line for a fleet, workload and parallelism, and how to tell it succeeded."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.fleet import Fleet

BENCH_DIR = Path(__file__).resolve().parent
CLIENTS = BENCH_DIR / "clients"
BENCH_VENV = BENCH_DIR / ".venv"
MAIN_BIN = Path(sys.executable).parent  # the project venv running this harness, fleetrun installed in it
PUSH_REMOTE = "/srv/fleetrun-bench-push.bin"
PUSH_HOSTS = 20


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    command: str | None  # None: a file push
    lines: int  # stdout lines each host must return
    hosts: int | None = None  # only the first N lab hosts (push)


WORKLOADS = {
    "true": Workload("true", "`true` (connection cost)", "true", 0),
    "sleep": Workload("sleep", "`sleep 2` (concurrency)", "sleep 2", 0),
    # 1 MiB of random bytes in base64: 1,398,104 characters in 76-column lines.
    "output": Workload(
        "output", "`head -c 1M /dev/urandom | base64` (output volume)", "head -c 1M /dev/urandom | base64", 18397
    ),
    "push": Workload("push", f"100 MiB push to {PUSH_HOSTS} hosts", None, 0, hosts=PUSH_HOSTS),
}


@dataclass(frozen=True)
class Verdict:
    """Whether the tool did the work on every host, by its own account."""

    expected: int
    ok: int
    problems: tuple[str, ...] = ()
    reported: int | None = None  # hosts with a result of any kind ("accounted for"), where the tool says

    @property
    def success(self) -> bool:
        return self.ok == self.expected and not self.problems


Check = Callable[[Path, Path, int], Verdict]


@dataclass(frozen=True)
class Invocation:
    argv: list[str]
    env: dict[str, str]
    check: Check


@dataclass
class Tools:
    """Where each tool is, found once per run; `missing` says why a tool cannot run here."""

    bench_python: Path = BENCH_VENV / "bin" / "python"
    fleetrun: Path = MAIN_BIN / "fleetrun"
    push_local: Path | None = None
    push_help: str = ""
    missing: dict[str, str] = field(default_factory=dict)


# Host-level bookkeeping shared by the parsers: key (name or address) -> (ok, stdout lines, error).
HostState = dict[str, tuple[bool, int, str | None]]


def _verdict(fleet: Fleet, by: str, states: HostState, lines: int, rc: int, silent_ok: bool) -> Verdict:
    """Judge every host: it must be reported ok (or, for tools silent on success, not reported failed)."""
    problems: list[str] = []
    ok = 0
    for host in fleet.hosts:
        key = host.address if by == "address" else host.name
        state = states.get(key)
        if state is None:
            if silent_ok and lines == 0 and rc == 0:
                ok += 1
            else:
                problems.append(f"{host.name}: no result")
            continue
        good, got, error = state
        if not good:
            problems.append(f"{host.name}: {error or 'failed'}")
        elif got != lines:
            problems.append(f"{host.name}: {got} lines of output, expected {lines}")
        else:
            ok += 1
    if not problems and rc != 0:
        problems.append(f"exit status {rc} although every host looked fine")
    more = (f"… {len(problems) - 5} more",) if len(problems) > 5 else ()
    reported = sum(1 for h in fleet.hosts if (h.address if by == "address" else h.name) in states)
    return Verdict(len(fleet.hosts), ok, (*problems[:5], *more), reported)


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        yield from stream


def _prefixed(fleet: Fleet, stdout: Path, stderr: Path, failure: re.Pattern[bytes]) -> HostState:
    """pdsh and clush: 'host: line' on stdout; failures named on stderr by `failure` (host, message)."""
    states: HostState = {}
    counts: dict[str, int] = {}
    for line in _lines(stdout):
        host, sep, _ = line.partition(b": ")
        if sep:
            name = host.decode(errors="replace")
            counts[name] = counts.get(name, 0) + 1
    for name, count in counts.items():
        states[name] = (True, count, None)
    for line in _lines(stderr):
        match = failure.match(line)
        if match:
            name = match.group(1).decode(errors="replace")
            states[name] = (False, counts.get(name, 0), match.group(2).decode(errors="replace").strip())
    return states


_PDSH_FAIL = re.compile(rb"pdsh@[^:]+: (\S+): (.*)")
_CLUSH_FAIL = re.compile(rb"clush: (\S+): (.*)")
_PSSH_HEAD = re.compile(rb"\[\d+\] \S+ \[(SUCCESS|FAILURE)\] (\S+)(?: (.*))?$")
_ANSIBLE_HEAD = re.compile(rb"(\S+) \| (CHANGED|SUCCESS|FAILED!?|UNREACHABLE!)(?: \| rc=(-?\d+))?")


def _check_prefixed(fleet: Fleet, workload: Workload, failure: re.Pattern[bytes]) -> Check:
    def check(stdout: Path, stderr: Path, rc: int) -> Verdict:
        states = _prefixed(fleet, stdout, stderr, failure)
        return _verdict(fleet, "address", states, workload.lines, rc, silent_ok=True)

    return check


def _check_pssh(fleet: Fleet, workload: Workload) -> Check:
    """parallel-ssh/parallel-scp -i: '[n] time [SUCCESS|FAILURE] user@host:port …' then that host's output."""

    def check(stdout: Path, stderr: Path, rc: int) -> Verdict:
        states: HostState = {}
        current: str | None = None
        for line in _lines(stdout):
            match = _PSSH_HEAD.match(line)
            if match:
                current = match.group(2).decode().rpartition("@")[2].rpartition(":")[0]
                reason = (match.group(3) or b"").decode(errors="replace").strip() or None
                states[current] = (match.group(1) == b"SUCCESS", 0, reason)
            elif current is not None and not line.startswith(b"Stderr: "):
                good, count, reason = states[current]
                states[current] = (good, count + 1, reason)
        return _verdict(fleet, "address", states, workload.lines, rc, silent_ok=False)

    return check


def _check_ansible(fleet: Fleet, workload: Workload) -> Check:
    """ansible ad-hoc: 'host | CHANGED | rc=0 >>' then the output and a blank line."""

    def check(stdout: Path, stderr: Path, rc: int) -> Verdict:
        states: HostState = {}
        blanks: dict[str, int] = {}
        current: str | None = None
        names = {host.name for host in fleet.hosts}
        for line in _lines(stdout):
            match = _ANSIBLE_HEAD.match(line)
            if match and match.group(1).decode() in names:
                current = match.group(1).decode()
                code = int(match.group(3)) if match.group(3) is not None else None
                good = match.group(2) in (b"CHANGED", b"SUCCESS") and code in (0, None)
                states[current] = (good, 0, None if good else line.decode(errors="replace").strip()[:200])
                blanks[current] = 0
            elif current is not None:
                good, count, reason = states[current]
                if line.strip():
                    count, blanks[current] = count + 1 + blanks[current], 0
                else:
                    blanks[current] += 1  # trailing blank lines are ansible's separator, not output
                states[current] = (good, count, reason)
        return _verdict(fleet, "name", states, workload.lines, rc, silent_ok=False)

    return check


def _check_reports(fleet: Fleet, workload: Workload) -> Check:
    """The library scripts in bench/clients report each host as 'BENCH {json}' on stderr."""

    def check(stdout: Path, stderr: Path, rc: int) -> Verdict:
        states: HostState = {}
        for line in _lines(stderr):
            if line.startswith(b"BENCH {"):
                record = json.loads(line[6:])
                states[record["host"]] = (bool(record["ok"]), int(record["lines"]), record["error"])
        return _verdict(fleet, "name", states, workload.lines, rc, silent_ok=False)

    return check


def _check_fleetrun(fleet: Fleet, workload: Workload) -> Check:
    def check(stdout: Path, stderr: Path, rc: int) -> Verdict:
        states: HostState = {}
        for line in _lines(stdout):
            if line.startswith(b"{"):
                record = json.loads(line)
                if record.get("type") == "host":
                    good = record["status"] == "ok"
                    error = record.get("error") or (None if good else record["status"])
                    states[record["host"]] = (good, record.get("stdout", "").count("\n"), error)
        if not states and workload.command is None and rc == 0:
            # A push without --format json: the harness checks every host's file itself.
            states = {h.name: (True, 0, None) for h in fleet.hosts}
        return _verdict(fleet, "name", states, workload.lines, rc, silent_ok=False)

    return check


@dataclass(frozen=True)
class Peer:
    """One tool. `default_forks` is its own parallelism when not told (None: the same as our --forks row)."""

    key: str
    label: str
    role: str  # "fleetrun" | "variant" (fleetrun with other flags) | "peer" | "reference"
    workloads: tuple[str, ...]
    default_label: str | None  # the tool's own default parallelism, for a second row; None = no such row
    build: Callable[[Fleet, Workload, int | None, Tools], Invocation]
    needs: tuple[str, ...] = ()  # binaries (absolute or on PATH) or 'py:module' in the bench venv


def _flag(flag: str, forks: int | None) -> list[str]:
    return [] if forks is None else [flag, str(forks)]


def _fleetrun(fleet: Fleet, workload: Workload, forks: int | None, tools: Tools) -> Invocation:
    common = ["-i", str(fleet.inventory), "--hosts", fleet.pattern, *_flag("--forks", forks)]
    if workload.command is not None:
        argv = [str(tools.fleetrun), "exec", workload.command, *common, "--format", "json"]
    else:
        assert tools.push_local is not None
        argv = [str(tools.fleetrun), "push", str(tools.push_local), PUSH_REMOTE, *common]
        if "--format" in tools.push_help:
            argv += ["--format", "json"]
    return Invocation(argv, fleet.env(), _check_fleetrun(fleet, workload))


def _fleetrun_raw(fleet: Fleet, workload: Workload, forks: int | None, tools: Tools) -> Invocation:
    """fleetrun without its wrapper (--raw): what the wrapper's extra processes cost the servers."""
    invocation = _fleetrun(fleet, workload, forks, tools)
    return Invocation([*invocation.argv, "--raw"], invocation.env, invocation.check)


def _fleetrun_patient(fleet: Fleet, workload: Workload, forks: int | None, tools: Tools) -> Invocation:
    """fleetrun with time to connect when hundreds of handshakes queue for two cores (the 1000-host check)."""
    invocation = _fleetrun(fleet, workload, forks, tools)
    return Invocation([*invocation.argv, "--connect-timeout", "60"], invocation.env, invocation.check)


def _fleetrun_procs(count: int) -> Callable[[Fleet, Workload, int | None, Tools], Invocation]:
    """fleetrun with `--procs count` worker processes (the plain row runs at its default: the usable cores)."""

    def build(fleet: Fleet, workload: Workload, forks: int | None, tools: Tools) -> Invocation:
        invocation = _fleetrun(fleet, workload, forks, tools)
        return Invocation([*invocation.argv, "--procs", str(count)], invocation.env, invocation.check)

    return build


def _fleetrun_procs2_one_cpu(fleet: Fleet, workload: Workload, forks: int | None, tools: Tools) -> Invocation:
    """`--procs 2` with the client held to one CPU (the lab's servers still have both): what the second
    process costs in itself, apart from two client processes and the servers contending for two cores."""
    invocation = _fleetrun_procs(2)(fleet, workload, forks, tools)
    return Invocation(["taskset", "-c", "0", *invocation.argv], invocation.env, invocation.check)


def _reference(fleet: Fleet, workload: Workload, forks: int | None, tools: Tools) -> Invocation:
    # fleetrun's own interpreter: the very paramiko and cryptography builds fleetrun runs on, and no bench venv needed.
    base = [sys.executable, str(CLIENTS / "paramiko_loop.py"), "--spec", str(fleet.spec)]
    argv = [*base, "--forks", str(forks or 0), "--command", workload.command or ""]
    return Invocation(argv, fleet.env(), _check_reports(fleet, workload))


def _sftp(fleet: Fleet, workload: Workload, forks: int | None, tools: Tools) -> Invocation:
    assert tools.push_local is not None
    argv = [sys.executable, str(CLIENTS / "paramiko_sftp.py"), "--spec", str(fleet.spec),
            "--forks", "20", "--put", str(tools.push_local), PUSH_REMOTE]  # fmt: skip
    return Invocation(argv, fleet.env(), _check_reports(fleet, workload))


def _pdsh(fleet: Fleet, workload: Workload, forks: int | None, tools: Tools) -> Invocation:
    argv = ["pdsh", "-S", "-R", "ssh", "-w", f"^{fleet.addresses_file}", *_flag("-f", forks), workload.command or ""]
    env = fleet.env(PDSH_SSH_ARGS=f"-F {fleet.ssh_config} -x -l%u %h")
    return Invocation(argv, env, _check_prefixed(fleet, workload, _PDSH_FAIL))


def _pssh(fleet: Fleet, workload: Workload, forks: int | None, tools: Tools) -> Invocation:
    common = ["-h", str(fleet.pssh_hosts), "-t", "0", "-x", f"-F {fleet.ssh_config}", *_flag("-p", forks)]
    if workload.command is not None:
        argv = ["parallel-ssh", *common, "-i", workload.command]
    else:
        argv = ["parallel-scp", *common, str(tools.push_local), PUSH_REMOTE]
    return Invocation(argv, fleet.env(), _check_pssh(fleet, workload))


def _clush(fleet: Fleet, workload: Workload, forks: int | None, tools: Tools) -> Invocation:
    argv = [str(BENCH_VENV / "bin" / "clush"), "--hostfile", str(fleet.addresses_file), "--nostdin",
            "-o", f"-F {fleet.ssh_config}", *_flag("-f", forks), workload.command or ""]  # fmt: skip
    return Invocation(argv, fleet.env(), _check_prefixed(fleet, workload, _CLUSH_FAIL))


def _script(name: str) -> Callable[[Fleet, Workload, int | None, Tools], Invocation]:
    def build(fleet: Fleet, workload: Workload, forks: int | None, tools: Tools) -> Invocation:
        argv = [str(tools.bench_python), str(CLIENTS / name), "--spec", str(fleet.spec),
                "--forks", str(forks or 0), "--command", workload.command or ""]  # fmt: skip
        return Invocation(argv, fleet.env(), _check_reports(fleet, workload))

    return build


def _ansible(fleet: Fleet, workload: Workload, forks: int | None, tools: Tools) -> Invocation:
    argv = [str(BENCH_VENV / "bin" / "ansible"), "all", "-m", "raw", "-a", workload.command or "",
            *_flag("-f", forks)]  # fmt: skip
    ansible = fleet.ansible_cfg.parent
    env = fleet.env(ANSIBLE_CONFIG=str(fleet.ansible_cfg), ANSIBLE_HOME=str(ansible),
                    ANSIBLE_LOCAL_TEMP=str(ansible / "tmp"), ANSIBLE_NOCOLOR="1")  # fmt: skip
    return Invocation(argv, env, _check_ansible(fleet, workload))


EXEC = ("true", "sleep", "output")
PEERS: tuple[Peer, ...] = (
    Peer("fleetrun", "fleetrun", "fleetrun", (*EXEC, "push"), None, _fleetrun),
    Peer("fleetrun-raw", "fleetrun --raw", "variant", ("true",), None, _fleetrun_raw),
    Peer("fleetrun-patient", "fleetrun --connect-timeout 60", "variant", ("true",), None, _fleetrun_patient),
    Peer("fleetrun-procs1", "fleetrun --procs 1", "variant", ("true",), None, _fleetrun_procs(1)),
    Peer("fleetrun-procs2", "fleetrun --procs 2", "variant", ("true",), None, _fleetrun_procs(2)),
    Peer("fleetrun-procs2-1cpu", "fleetrun --procs 2, client on one CPU", "variant", ("true",), None,
         _fleetrun_procs2_one_cpu, ("taskset",)),
    Peer("paramiko", "bare paramiko loop", "reference", EXEC, None, _reference),
    Peer("sftp", "bare paramiko sftp loop", "reference", ("push",), None, _sftp),
    Peer("pdsh", "pdsh -R ssh", "peer", EXEC, "32", _pdsh, ("pdsh",)),
    Peer("pssh", "parallel-ssh (pssh)", "peer", EXEC, "32", _pssh, ("parallel-ssh",)),
    Peer("pscp", "parallel-scp (pssh)", "peer", ("push",), None, _pssh, ("parallel-scp",)),
    Peer("clush", "ClusterShell clush", "peer", EXEC, None, _clush, (str(BENCH_VENV / "bin" / "clush"),)),
    Peer("pssh-lib", "parallel-ssh library", "peer", EXEC, "100", _script("pssh_lib.py"), ("py:pssh.clients",)),
    Peer("fabric", "Fabric ThreadingGroup", "peer", EXEC, "all hosts", _script("fabric_group.py"), ("py:fabric",)),
    Peer("ansible", "Ansible ad-hoc -m raw", "peer", EXEC, "5", _ansible, (str(BENCH_VENV / "bin" / "ansible"),)),
)
PEER_KEYS = tuple(peer.key for peer in PEERS)


def find_missing(tools: Tools, wanted: tuple[str, ...]) -> dict[str, str]:
    """Why each wanted tool cannot run here (absent from the dict: it can)."""
    missing: dict[str, str] = {}
    modules = sorted({need[3:] for p in PEERS if p.key in wanted for need in p.needs if need.startswith("py:")})
    importable: set[str] = set()
    if modules and tools.bench_python.exists():
        probe = "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if u.find_spec(m)))"
        try:
            done = subprocess.run([str(tools.bench_python), "-c", probe, *modules], capture_output=True, text=True,
                                  timeout=60, check=False)  # fmt: skip
            importable = set(done.stdout.split())
        except (OSError, subprocess.TimeoutExpired):
            pass
    for peer in PEERS:
        if peer.key not in wanted:
            continue
        for need in peer.needs:
            if need.startswith("py:"):
                if not tools.bench_python.exists():
                    missing[peer.key] = f"no bench virtualenv at {BENCH_VENV} (run without --no-install)"
                elif need[3:] not in importable:
                    missing[peer.key] = f"Python module {need[3:]} is not installed in {BENCH_VENV}"
            elif not (Path(need).is_file() if need.startswith("/") else shutil.which(need)):
                missing[peer.key] = f"{need} not found"
        if peer.key == "fleetrun" and not tools.fleetrun.exists():
            missing[peer.key] = f"{tools.fleetrun} not found"
    missing.update({key: why for key, why in tools.missing.items() if key in wanted})
    return missing
