"""The bastion workload: N lab hosts reached only through one lab bastion, fleetrun against its peers.

    .venv/bin/python bench/bastion.py --hosts 200 --runs 3     # writes its section into bench/RESULTS.md
    .venv/bin/python bench/bastion.py --smoke --out /tmp/b.md  # 10 hosts, one run, what is installed

fleetrun opens one connection to the bastion and a direct-tcpip channel per host. pdsh and parallel-ssh run
`ssh` with `ProxyJump` in their ssh_config: OpenSSH then opens one bastion connection per host, through a
second ssh process. Fabric gets its documented `Connection(host, gateway=Connection(bastion))`, one gateway
shared by every host. Every tool gets the same key, known_hosts (strict), parallelism and key exchange.

The bastion runs with OpenSSH's default MaxStartups (10:30:100), as a real one does, and a second pass gives
it the lab's generous 200:30:400, to compare the tools where none is throttled. Measured per run: wall, the
client tree's CPU, the bastion's CPU (its sshd and everything it forked), the bastion's accepted logins, and
how many hosts the tool itself reports ok.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/bastion.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report
from bench.fleet import Fleet, make_fleet
from bench.measure import ServerMeter, run_measured
from bench.peers import (
    _PDSH_FAIL,
    BENCH_VENV,
    CLIENTS,
    MAIN_BIN,
    Check,
    Workload,
    _check_fleetrun,
    _check_prefixed,
    _check_pssh,
    _check_reports,
)
from fleetrun.errors import LabError
from fleetrun.lab import Lab, start_lab, stop_lab

BENCH_DIR = Path(__file__).resolve().parent
BEGIN, END = "<!-- bench/bastion.py: begin -->", "<!-- bench/bastion.py: end -->"  # report.write keeps it
TOOLS = ("fleetrun", "pdsh", "pssh", "fabric")
# One line per host: a host counts as done only when its own line came back (pdsh says nothing for a
# silent success, which a non-zero exit from other hosts would make unverifiable).
WORKLOAD = Workload("bastion", "`echo ok` through one bastion", "echo ok", 1)
OPENSSH_MAX_STARTUPS = "10:30:100"
LAB_MAX_STARTUPS = "200:30:400"


@dataclass
class Row:
    tool: str
    max_startups: str
    runs: list[dict[str, float]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def median(self, key: str) -> float:
        return statistics.median(run[key] for run in self.runs)


@dataclass(frozen=True)
class Setup:
    fleet: Fleet  # the targets, as bench/fleet.py writes them for every tool
    bastion: Lab
    inventory: Path
    ssh_config: Path
    spec: Path


def prepare(work: Path, targets: Lab, bastion: Lab, kex: str) -> Setup:
    fleet = make_fleet(targets, work / "fleet", kex=kex)
    gate = bastion.hosts[0]
    # One key for everything: the bastion also takes the targets' client key.
    with (bastion.directory / "authorized_keys").open("a") as keys:
        keys.write(targets.client_key.with_suffix(".pub").read_text())
    known = work / "known_hosts"
    public = " ".join(gate.host_key.with_suffix(".pub").read_text().split()[:2])
    known.write_text(targets.known_hosts.read_text() + f"[{gate.address}]:{gate.port} {public}\n")
    common = (f"  User {targets.user}\n  IdentityFile {targets.client_key}\n  IdentitiesOnly yes\n"
              f"  IdentityAgent none\n  UserKnownHostsFile {known}\n  GlobalKnownHostsFile /dev/null\n"
              "  StrictHostKeyChecking yes\n  CheckHostIP no\n  BatchMode yes\n  ControlMaster no\n"
              f"  ControlPath none\n  ConnectTimeout 30\n  LogLevel ERROR\n  KexAlgorithms {kex}\n")
    config = work / "ssh_config"
    config.write_text(f"Host bastion\n  HostName {gate.address}\n  Port {gate.port}\n  ProxyJump none\n{common}"
                      f"Host *\n  Port {targets.hosts[0].port}\n  ProxyJump bastion\n{common}")
    config.chmod(0o600)
    hosts: dict[str, object] = {h.name: {"address": h.address, "port": h.port} for h in targets.hosts}
    hosts["bastion"] = {"address": gate.address, "port": gate.port, "jump": "none"}
    inventory = work / "inventory.yaml"
    inventory.write_text(json.dumps({"defaults": {"user": targets.user, "key": str(targets.client_key),
                                                  "known_hosts": str(known), "connect_timeout": 30,
                                                  "jump": "bastion"},
                                     "hosts": hosts, "groups": {"targets": [h.name for h in targets.hosts]}}))
    spec = json.loads(fleet.spec.read_text())
    spec["known_hosts"] = str(known)
    spec["bastion"] = {"address": gate.address, "port": gate.port, "known_name": f"[{gate.address}]:{gate.port}"}
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=1) + "\n")
    return Setup(fleet, bastion, inventory, config, spec_path)


def invocation(tool: str, setup: Setup, forks: int) -> tuple[list[str], dict[str, str], Check]:
    fleet, workload = setup.fleet, WORKLOAD
    command = workload.command or ""
    if tool == "fleetrun":
        argv = [str(MAIN_BIN / "fleetrun"), "exec", command, "-i", str(setup.inventory), "-H", "targets",
                "--forks", str(forks), "--format", "json", "--ssh-config", "none"]
        return argv, fleet.env(), _check_fleetrun(fleet, workload)
    if tool == "pdsh":
        argv = ["pdsh", "-S", "-R", "ssh", "-w", f"^{fleet.addresses_file}", "-f", str(forks), command]
        return argv, fleet.env(PDSH_SSH_ARGS=f"-F {setup.ssh_config} -x -l%u %h"), _check_prefixed(
            fleet, workload, _PDSH_FAIL)
    if tool == "pssh":
        argv = ["parallel-ssh", "-h", str(fleet.pssh_hosts), "-t", "0", "-x", f"-F {setup.ssh_config}",
                "-p", str(forks), "-i", command]
        return argv, fleet.env(), _check_pssh(fleet, workload)
    argv = [str(BENCH_VENV / "bin" / "python"), str(CLIENTS / "fabric_gateway.py"), "--spec", str(setup.spec),
            "--forks", str(forks), "--command", command]
    return argv, fleet.env(), _check_reports(fleet, workload)


def available(tool: str) -> str | None:
    """Why `tool` cannot run here, or None."""
    import shutil

    if tool == "pdsh" and shutil.which("pdsh") is None:
        return "pdsh is not installed (apt-get install pdsh)"
    if tool == "pssh" and shutil.which("parallel-ssh") is None:
        return "parallel-ssh is not installed (apt-get install pssh)"
    if tool == "fabric" and not (BENCH_VENV / "lib").exists():
        return f"no bench virtualenv with Fabric at {BENCH_VENV} (bench/run.py installs it)"
    if tool == "fabric":
        import subprocess

        probe = subprocess.run([str(BENCH_VENV / "bin" / "python"), "-c", "import fabric"], capture_output=True,
                               check=False)
        if probe.returncode != 0:
            return f"Fabric is not installed in {BENCH_VENV} (bench/run.py installs it)"
    return None


def accepted(bastion: Lab) -> int:
    log = bastion.directory / f"{bastion.hosts[0].name}.log"
    return log.read_text(errors="replace").count("Accepted publickey")


def measure(tool: str, setup: Setup, forks: int, work: Path, timeout: float) -> tuple[dict[str, float], list[str]]:
    argv, env, check = invocation(tool, setup, forks)
    logins = accepted(setup.bastion)
    out, err = work / f"{tool}.out", work / f"{tool}.err"
    measured = run_measured(argv, env=env, cwd=work, timeout=timeout, stdout=out, stderr=err,
                            server=ServerMeter([setup.bastion.hosts[0].pid]))
    verdict = check(out, err, measured.returncode)
    problems = list(verdict.problems)
    if measured.timed_out:
        problems.insert(0, f"killed after {timeout:g} s")
    return {"wall": measured.wall, "cpu": measured.cpu, "bastion_cpu": measured.server_cpu,
            "logins": accepted(setup.bastion) - logins, "ok": verdict.ok, "total": verdict.expected,
            "load": measured.load_before}, problems


def render(rows: list[Row], hosts: int, forks: int, runs: int, started: str, command: str) -> str:
    lines = [BEGIN, f"## Bastion: {hosts} hosts through one bastion", "",
             f"Generated {started} by `{command}`. Each target is a lab sshd; the bastion is one more, and every "
             "tool must go through it (fleetrun `jump:`, `ProxyJump` in pdsh's and parallel-ssh's ssh_config, "
             f"Fabric's `gateway=`). `echo ok` on every host (a host counts only when its line came back), "
             f"{forks} at once, median of {runs} run(s). **Bastion "
             "CPU** is what the bastion's sshd and all it forked used; **logins** are the bastion's `Accepted "
             "publickey` lines during the run; **load** is the machine's 1-minute load average before each run "
             "(2 cores, shared with other work: above 2, everything is slower than it would be alone).", ""]
    for max_startups in dict.fromkeys(row.max_startups for row in rows):
        which = "OpenSSH's default" if max_startups == OPENSSH_MAX_STARTUPS else "the lab's"
        lines += [f"Bastion `MaxStartups {max_startups}` ({which}):", "",
                  "| tool | wall s | client CPU s | client CPU ms/host | bastion CPU s | bastion logins | hosts ok "
                  "| notes |", "|---|---|---|---|---|---|---|---|"]
        for row in (r for r in rows if r.max_startups == max_startups):
            if not row.runs:
                lines.append(f"| {row.tool} | | | | | | | {'; '.join(row.problems)} |")
                continue
            oks = [int(run["ok"]) for run in row.runs]
            total = int(row.runs[0]["total"])
            ok = f"{int(statistics.median(oks))}/{total}"
            if min(oks) != max(oks):
                ok += f" ({min(oks)}–{max(oks)})"
            walls = [run["wall"] for run in row.runs]
            spread = f"{len(walls)} run{'s' if len(walls) != 1 else ''}, {min(walls):.2f}–{max(walls):.2f} s"
            load = f"load {min(r['load'] for r in row.runs):.0f}–{max(r['load'] for r in row.runs):.0f}"
            note = "; ".join([spread, load, *row.problems[:2]]).replace("|", "\\|")
            lines.append(f"| {row.tool} | {row.median('wall'):.2f} | {row.median('cpu'):.2f} | "
                         f"{1000 * row.median('cpu') / total:.1f} | {row.median('bastion_cpu'):.2f} | "
                         f"{row.median('logins'):.0f} | {ok} | {note} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


def _on_term(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the labs' `finally`, which stops their sshd processes


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _on_term)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--forks", type=int, default=64)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--max-startups", default=f"{OPENSSH_MAX_STARTUPS},{LAB_MAX_STARTUPS}",
                        help="the bastion's MaxStartups for each pass, ',' between passes")
    parser.add_argument("--kex", default="curve25519-sha256")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--smoke", action="store_true", help="10 hosts, one run, one pass")
    parser.add_argument("--out", default=str(BENCH_DIR / "RESULTS.md"))
    parser.add_argument("--work", default=str(BENCH_DIR / "work" / "bastion"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.hosts, args.runs, args.max_startups = 10, 1, OPENSSH_MAX_STARTUPS
    tools = [tool for tool in args.tools.split(",") if tool]
    unknown = [tool for tool in tools if tool not in TOOLS]
    if unknown:
        parser.error(f"--tools: unknown {', '.join(unknown)} (known: {', '.join(TOOLS)})")
    passes = [value.strip() for value in args.max_startups.split(",") if value.strip()]
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.now().astimezone().isoformat(timespec="seconds")
    rows: list[Row] = []
    labs = Path(tempfile.mkdtemp(prefix="labs-", dir=work))
    targets = start_lab(args.hosts, labs / "targets", private_srv=False)
    try:
        for max_startups in passes:
            bastion_dir = labs / f"bastion-{max_startups.replace(':', '-')}"
            bastion = start_lab(1, bastion_dir, private_srv=False,
                                extra_config=f"LogLevel VERBOSE\nMaxStartups {max_startups}\n")
            try:
                setup = prepare(work / max_startups.replace(":", "-"), targets, bastion, args.kex)
                pass_rows = {tool: Row(tool, max_startups) for tool in tools}
                for tool, row in pass_rows.items():
                    why = available(tool)
                    if why is not None:
                        row.problems.append(why)
                for number in range(args.runs):
                    order = tools if number % 2 == 0 else list(reversed(tools))  # alternate who goes first
                    for tool in order:
                        row = pass_rows[tool]
                        if available(tool) is not None:
                            continue
                        result, problems = measure(tool, setup, args.forks, work, args.timeout)
                        row.runs.append(result)
                        row.problems.extend(p for p in problems if p not in row.problems)
                        print(f"{max_startups} {tool}: {result['wall']:.2f} s, {result['ok']:.0f}/"
                              f"{result['total']:.0f} ok, {result['logins']:.0f} bastion logins", file=sys.stderr)
                        time.sleep(1)  # let the bastion's sessions finish before the next tool
                rows.extend(pass_rows.values())
            finally:
                with contextlib.suppress(LabError):
                    stop_lab(bastion_dir)
    finally:
        with contextlib.suppress(LabError):
            stop_lab(labs / "targets")
    command = "bench/bastion.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = render(rows, args.hosts, args.forks, args.runs, started, command.strip())
    report.write_section(Path(args.out), BEGIN, END, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
