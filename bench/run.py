"""Benchmark fleetrun against its peers on a lab of real sshd hosts and write bench/RESULTS.md."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as `python bench/run.py`: make `bench` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import install, lean_lab, report
from bench.fleet import Fleet, make_fleet
from bench.measure import Measurement, ServerMeter, machine_busy, run_measured
from bench.peers import PEER_KEYS, PEERS, PUSH_REMOTE, WORKLOADS, Peer, Tools, Verdict, Workload, find_missing
from fleetrun.errors import LabError
from fleetrun.lab import Lab, start_lab, stop_lab

BENCH_DIR = Path(__file__).resolve().parent
PUSH_BYTES = 100 << 20
SMOKE_TOOLS = ("fleetrun", "paramiko", "pdsh", "pssh")
BIG_OUTPUT = 8 << 20  # keep a tool's output files only when smaller than this
PROCS_KEYS = ("fleetrun-procs1", "fleetrun-procs2", "fleetrun-procs2-1cpu")
PROCS_MIN_HOSTS = 500  # the --procs rows: from this lab size up


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", default="50,200,500", help="lab sizes, comma-separated (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool and workload, alternating tools")
    parser.add_argument("--workloads", default="true,sleep,output,push", help="of: " + ",".join(WORKLOADS))
    parser.add_argument("--tools", default=",".join(PEER_KEYS), help="of: " + ",".join(PEER_KEYS))
    parser.add_argument("--forks", type=int, default=64, help="the parallelism every tool gets (default: 64)")
    parser.add_argument("--default-rows", default="true,sleep",
                        help="workloads that also get a row per tool at its own default parallelism")
    parser.add_argument("--default-rows-max-hosts", type=int, default=200,
                        help="skip default-parallelism rows above this many hosts (Ansible's 5 forks is slow)")
    parser.add_argument("--scale", default="1000", help="lab sizes for the fleetrun-only scale check ('' = none)")
    parser.add_argument("--scale-forks", type=int, default=256, help="--forks for the scale check")
    parser.add_argument("--startup", action=argparse.BooleanOptionalAction, default=True,
                        help="time `fleetrun --help` and `fleetrun hosts all` on a 1000-host inventory")
    parser.add_argument("--smoke", action="store_true",
                        help="20 hosts, one run, `true`, fleetrun + reference + pdsh/pssh if present; installs nothing")
    parser.add_argument("--no-install", action="store_true", help="use only the peers already installed")
    parser.add_argument("--out", default=str(BENCH_DIR / "RESULTS.md"), help="the Markdown report")
    parser.add_argument("--work", default=str(BENCH_DIR / "work"), help="labs, tool files and raw results")
    parser.add_argument("--merge", action="store_true",
                        help="keep rows from earlier runs in WORK/results.json that this run does not measure")
    parser.add_argument("--kex", default="curve25519-sha256",
                        help="KexAlgorithms for the OpenSSH-based tools ('default': OpenSSH's own, sntrup761x25519)")
    parser.add_argument("--report-only", action="store_true", help="rewrite --out from WORK/results.json; run nothing")
    parser.add_argument("--timeout", type=float, default=600, help="time box: seconds before one tool run is killed")
    parser.add_argument("--slow", type=float, default=90,
                        help="a row whose first run takes longer than this is not repeated")
    parser.add_argument("--quiet-wait", type=float, default=10,
                        help="wait up to this long before each run for other load on the machine to pass")
    parser.add_argument("--quiet-cores", type=float, default=0.5, help="'quiet' means less than this many cores busy")
    args = parser.parse_args(argv)
    if args.smoke:
        args.hosts, args.runs, args.workloads, args.scale, args.startup = "20", 1, "true", "", False
        args.no_install, args.default_rows, args.quiet_wait = True, "", 0
        if args.tools == parser.get_default("tools"):
            args.tools = ",".join(SMOKE_TOOLS)
    for name in ("workloads", "tools"):
        known = WORKLOADS if name == "workloads" else PEER_KEYS
        values = [value for value in getattr(args, name).split(",") if value]
        unknown = [value for value in values if value not in known]
        if unknown:
            parser.error(f"--{name}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
        setattr(args, name, tuple(values))
    args.hosts = tuple(int(n) for n in args.hosts.split(",") if n)
    args.scale = tuple(int(n) for n in args.scale.split(",") if n)
    args.default_rows = tuple(w for w in args.default_rows.split(",") if w)
    args.kex = None if args.kex == "default" else args.kex
    return args


def wait_quiet(limit: float, cores: float) -> float:
    """Wait (at most `limit` s) for a second in which the machine uses < `cores` cores; the last busy reading."""
    deadline = time.monotonic() + limit
    busy = 0.0
    while True:
        before = machine_busy()
        time.sleep(1.0)
        busy = machine_busy() - before
        if busy < cores or time.monotonic() >= deadline:
            return busy


class Bench:
    """One benchmark session: the tools, the raw results so far, and where to put files."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.tools = Tools()
        self.results_path = self.work / "results.json"
        self.rows: list[dict[str, Any]] = []
        self.meta: dict[str, Any] = {}
        self.startup: dict[str, Any] = {}
        self.log: list[str] = []
        self.missing: dict[str, str] = {}

    # ---- set-up -------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        if not self.args.no_install:
            print("installing peers (bench/.venv, pdsh, pssh) where missing …", flush=True)
            self.tools.missing.update(install.install(self.log))
        install.check_fleetrun_push(self.tools)
        self.missing = find_missing(self.tools, self.args.tools)
        if "fleetrun" in self.missing:
            raise SystemExit(f"bench: fleetrun itself cannot run: {self.missing['fleetrun']}")
        if "push" in self.args.workloads:
            self.tools.push_local = self._push_file()
        command = shlex.join(["bench/run.py", *sys.argv[1:]])  # quoted: the report shows commands to paste
        earlier = self.meta.get("commands", []) if self.args.merge else []
        self.meta = {
            "generated": datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": command,
            "commands": [*earlier, command],
            "machine": install.machine(),
            "versions": install.versions(self.tools),
            "forks": self.args.forks,
            "runs": self.args.runs,
            "missing": {**(self.meta.get("missing", {}) if self.args.merge else {}), **self.missing},
            "smoke": self.args.smoke,
            "kex": self.args.kex or "OpenSSH default",
            "timeout": self.args.timeout,
            "slow": self.args.slow,
            "lab_account": lean_lab.account(),
            "lean_check": self._lean_check(),
        }

    def _lean_check(self) -> dict[str, Any] | None:
        """bench/lean_lab.py's last result (WORK/lean.json), if it was run: the rc file per tool, both labs."""
        path = self.work / "lean.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data

    def _push_file(self) -> Path:
        path = self.work / "push-100MiB.bin"
        if not path.exists() or path.stat().st_size != PUSH_BYTES:
            with path.open("wb") as out:
                for _ in range(PUSH_BYTES >> 20):
                    out.write(os.urandom(1 << 20))
        return path

    # ---- measuring ------------------------------------------------------------------------------------------
    def rows_for(self, workload: Workload, hosts: int) -> list[tuple[Peer, int | None, str]]:
        """(peer, forks or None for its default, label) for every row this workload gets."""
        rows: list[tuple[Peer, int | None, str]] = []
        for peer in PEERS:
            if peer.key not in self.args.tools or workload.key not in peer.workloads:
                continue
            rows.append((peer, self.args.forks, str(self.args.forks) if peer.key != "sftp" else "20"))
            if (peer.default_label and workload.key in self.args.default_rows
                    and hosts <= self.args.default_rows_max_hosts):  # fmt: skip
                rows.append((peer, None, f"default ({peer.default_label})"))
        if workload.key == "true" and "fleetrun" in self.args.tools and hosts >= 200 and not self.args.smoke:
            fleetrun = next(p for p in PEERS if p.key == "fleetrun")
            rows.append((fleetrun, self.args.scale_forks, str(self.args.scale_forks)))
        if workload.key == "true" and hosts >= PROCS_MIN_HOSTS:
            rows += self._procs_rows()
        return rows

    def _procs_rows(self) -> list[tuple[Peer, int | None, str]]:
        """--procs 1 against --procs 2 at the scale check's forks (issue 13: at 500 and 1000 hosts)."""
        keys = [key for key in PROCS_KEYS if key in self.args.tools]
        return [(p, self.args.scale_forks, str(self.args.scale_forks)) for p in PEERS if p.key in keys]

    def measure_lab(self, hosts: int, workloads: tuple[str, ...], scale_only: bool = False) -> None:
        directory = self.work / f"lab-{hosts}"
        with self._lab(hosts, directory) as lab:
            meter = ServerMeter([host.pid for host in lab.hosts])
            fleet = make_fleet(lab, directory / "fleet", kex=self.args.kex)
            for key in workloads:
                workload = WORKLOADS[key]
                if scale_only:
                    keys = [key for key in ("fleetrun", "fleetrun-patient") if key in self.args.tools]
                    rows = [(p, self.args.scale_forks, str(self.args.scale_forks)) for p in PEERS if p.key in keys]
                    rows += self._procs_rows() if hosts >= PROCS_MIN_HOSTS else []
                else:
                    rows = self.rows_for(workload, hosts)
                target = fleet
                if workload.hosts is not None:
                    target = make_fleet(lab, directory / f"fleet-{workload.hosts}", workload.hosts, kex=self.args.kex)
                self.measure_rows(lab, target, meter, workload, rows, hosts)

    @contextlib.contextmanager
    def _lab(self, hosts: int, directory: Path) -> Iterator[Lab]:
        with contextlib.suppress(LabError):
            stop_lab(directory)  # a lab left over from an interrupted run
        if directory.exists():
            shutil.rmtree(directory)
        print(f"starting a lab of {hosts} sshd hosts in {directory} …", flush=True)
        started = time.monotonic()
        lab = start_lab(hosts, directory)
        print(f"  up in {time.monotonic() - started:.1f} s", flush=True)
        try:
            yield lab
        finally:
            stopped = stop_lab(directory)
            print(f"  lab of {hosts} stopped ({stopped} sshd)", flush=True)

    def measure_rows(self, lab: Lab, fleet: Fleet, meter: ServerMeter, workload: Workload,
                     rows: list[tuple[Peer, int | None, str]], hosts: int) -> None:  # fmt: skip
        records: dict[tuple[str, str], dict[str, Any]] = {}
        runnable = []
        for peer, forks, label in rows:
            record = self._record(hosts, workload, peer, label)
            records[(peer.key, label)] = record
            why = self._skip_reason(peer, workload, lab) or self._too_slow(hosts, workload, peer, label)
            if why is None:
                runnable.append((peer, forks, label))
            else:
                record["skipped"] = why
        for run in range(self.args.runs):
            # Alternate: each run starts with a different tool, so no tool always runs on a warm or cold machine.
            order = runnable[run % len(runnable):] + runnable[: run % len(runnable)] if runnable else []
            if run % 2:
                order.reverse()
            for peer, forks, label in order:
                record = records[(peer.key, label)]
                if record["runs"] and record["runs"][0]["wall"] > self.args.slow:
                    continue  # one run of a tool this slow tells enough, and the time goes to the others
                result = self._measure_one(fleet, meter, workload, peer, forks, label, run)
                record["runs"].append(result)
        for record in records.values():
            self._store(record)

    def _record(self, hosts: int, workload: Workload, peer: Peer, label: str) -> dict[str, Any]:
        return {"hosts": hosts, "workload": workload.key, "peer": peer.key, "label": peer.label,
                "role": peer.role, "forks": label, "runs": [], "skipped": None,
                "host_count": workload.hosts or hosts}  # fmt: skip

    def _too_slow(self, hosts: int, workload: Workload, peer: Peer, label: str) -> str | None:
        """Skip a row that took so long on a smaller lab that this one would blow the time box."""
        for row in self.rows:
            if ((row["workload"], row["peer"], row["forks"]) == (workload.key, peer.key, label)
                    and row["hosts"] < hosts and row["runs"]):  # fmt: skip
                wall = min(run["wall"] for run in row["runs"])
                estimate = wall * hosts / row["hosts"]
                if estimate > self.args.timeout or any(run["timed_out"] for run in row["runs"]):
                    return (f"skipped: {wall:.0f} s at {row['hosts']} hosts, so ~{estimate:.0f} s here, "
                            f"over the {self.args.timeout:g} s time box")
        return None

    def _skip_reason(self, peer: Peer, workload: Workload, lab: Lab) -> str | None:
        if peer.key in self.missing:
            return f"not installed: {self.missing[peer.key]}"
        if peer.key == "fleetrun" and workload.command is None and "fleetrun-push" in self.tools.missing:
            return f"skipped: {self.tools.missing['fleetrun-push']}"
        if workload.command is None and not lab.private_srv:
            return "skipped: lab hosts share one filesystem (not root), so a push cannot be checked per host"
        return None

    def _measure_one(self, fleet: Fleet, meter: ServerMeter, workload: Workload, peer: Peer, forks: int | None,
                     label: str, run: int) -> dict[str, Any]:  # fmt: skip
        invocation = peer.build(fleet, workload, forks, self.tools)
        out_dir = self.work / "out"
        out_dir.mkdir(exist_ok=True)
        stem = f"{len(fleet.hosts)}-{workload.key}-{peer.key}-{label.split()[0]}-{run}"
        if workload.command is None:
            self._clear_push(fleet)
        busy = wait_quiet(self.args.quiet_wait, self.args.quiet_cores) if self.args.quiet_wait > 0 else 0.0
        measured = run_measured(invocation.argv, env=invocation.env, cwd=fleet.directory, timeout=self.args.timeout,
                                stdout=out_dir / f"{stem}.out", stderr=out_dir / f"{stem}.err",
                                server=meter)  # fmt: skip
        verdict = invocation.check(measured.stdout, measured.stderr, measured.returncode)
        if workload.command is None:
            verdict = self._check_push(fleet, verdict)
        if measured.timed_out:
            verdict = Verdict(verdict.expected, 0, (f"killed after the {self.args.timeout:g} s timeout",), 0)
        stderr_head = measured.stderr.read_bytes()[-4000:].decode(errors="replace")
        if "Too many open files" in stderr_head:
            verdict = replace(verdict, problems=(*verdict.problems, "Too many open files"))
        result = self._summarise(measured, verdict, busy)
        status = "ok" if verdict.success else f"FAILED {verdict.ok}/{verdict.expected}: {'; '.join(verdict.problems)}"
        print(f"  {len(fleet.hosts):>5} {workload.key:<6} {peer.label:<24} {label:<14} run {run + 1}: "
              f"{measured.wall:7.2f} s  cpu {measured.cpu:6.2f} s  rss {measured.maxrss_kib / 1024:6.1f} MiB  "
              f"server {measured.server_cpu:6.2f} s  other {measured.foreign_cpu:5.2f} s  {status}", flush=True)
        for path in (measured.stdout, measured.stderr):
            if path.stat().st_size > BIG_OUTPUT or (verdict.success and run > 0):
                path.unlink()
        return result

    @staticmethod
    def _summarise(measured: Measurement, verdict: Verdict, busy: float) -> dict[str, Any]:
        data = {key: value for key, value in asdict(measured).items() if key not in ("stdout", "stderr", "notes")}
        data.update(cpu=measured.cpu, foreign_cpu=measured.foreign_cpu, busy_before=busy, ok=verdict.ok,
                    expected=verdict.expected, problems=list(verdict.problems), success=verdict.success,
                    reported=verdict.reported)  # fmt: skip
        return data

    # ---- push ------------------------------------------------------------------------------------------------
    @staticmethod
    def _srv(host_pid: int) -> Path:
        return Path(f"/proc/{host_pid}/root/srv")  # the host's private /srv, seen through its mount namespace

    def _clear_push(self, fleet: Fleet) -> None:
        for host in fleet.hosts:
            srv = self._srv(host.pid)
            with contextlib.suppress(OSError):
                for entry in srv.iterdir():
                    if entry.is_file() or entry.is_symlink():
                        entry.unlink()

    def _check_push(self, fleet: Fleet, verdict: Verdict) -> Verdict:
        assert self.tools.push_local is not None
        if not hasattr(self, "_push_digest"):
            self._push_digest = hashlib.sha256(self.tools.push_local.read_bytes()).hexdigest()
        problems = list(verdict.problems)
        bad = 0
        for host in fleet.hosts:
            target = self._srv(host.pid) / Path(PUSH_REMOTE).name
            try:
                digest = hashlib.sha256(target.read_bytes()).hexdigest()
            except OSError as error:
                problems.append(f"{host.name}: {PUSH_REMOTE} not there ({error.strerror})")
                bad += 1
                continue
            if digest != self._push_digest:
                problems.append(f"{host.name}: {PUSH_REMOTE} differs from the local file")
                bad += 1
        ok = min(verdict.ok, len(fleet.hosts) - bad)
        return Verdict(verdict.expected, ok, tuple(problems[:5]), verdict.reported)

    # ---- start-up ------------------------------------------------------------------------------------------------
    def measure_startup(self, repeats: int = 7) -> None:
        directory = self.work / "startup"
        directory.mkdir(exist_ok=True)
        inventory = directory / "inventory.yaml"
        key, known = directory / "id_ed25519", directory / "known_hosts"
        key.write_text("")
        known.write_text("")
        names = [f"lab{i:04d}" for i in range(1, 1001)]
        lines = ["defaults:", "  user: root", f"  key: {key}", f"  known_hosts: {known}", "  connect_timeout: 10",
                 "hosts:", *(f"  {name}: {{address: 127.250.{i // 254}.{i % 254 + 1}, port: 22022}}"
                             for i, name in enumerate(names)),
                 "groups:", f"  lab: [{', '.join(names)}]", f"  odd: [{', '.join(names[0::2])}]",
                 f"  even: [{', '.join(names[1::2])}]"]  # fmt: skip
        inventory.write_text("\n".join(lines) + "\n")
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(directory), "LANG": "C.UTF-8"}
        commands = {"fleetrun --help": [str(self.tools.fleetrun), "--help"],
                    "fleetrun hosts all (1000-host inventory)": [str(self.tools.fleetrun), "hosts", "all", "-i",
                                                                  str(inventory)]}  # fmt: skip
        for title, argv in commands.items():
            walls, cpus, ok = [], [], True
            for _ in range(repeats):
                measured = run_measured(argv, env=env, cwd=directory, timeout=60, stdout=directory / "out",
                                        stderr=directory / "err", server=None)  # fmt: skip
                ok = ok and measured.returncode == 0
                walls.append(measured.wall)
                cpus.append(measured.cpu)
            lines_out = (directory / "out").read_text(errors="replace").splitlines()
            last = lines_out[-1] if lines_out else ""
            self.startup[title] = {"walls": walls, "cpus": cpus, "ok": ok, "last_line": last}
            print(f"  start-up {title}: median {sorted(walls)[len(walls) // 2]:.3f} s (ok={ok})", flush=True)

    # ---- results --------------------------------------------------------------------------------------------------
    def _store(self, record: dict[str, Any]) -> None:
        key = (record["hosts"], record["workload"], record["peer"], record["forks"])
        self.rows = [r for r in self.rows if (r["hosts"], r["workload"], r["peer"], r["forks"]) != key]
        self.rows.append(record)
        self.save()

    def load_previous(self) -> None:
        if self.results_path.exists():
            data = json.loads(self.results_path.read_text())
            self.rows = data.get("rows", [])
            self.startup = data.get("startup", {})
            self.meta = data.get("meta", {})

    def save(self) -> None:
        data = {"meta": self.meta, "rows": self.rows, "startup": self.startup}
        temporary = self.results_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=1) + "\n")
        temporary.replace(self.results_path)


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the lab's `finally`, which stops its sshd processes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_term)
    bench = Bench(args)
    if args.merge or args.report_only:
        bench.load_previous()
    if args.report_only:
        report.write(Path(args.out), report.render(bench.meta, bench.rows, bench.startup, args))
        print(f"wrote {args.out}", flush=True)
        return 0
    bench.prepare()
    if bench.missing:
        for key, why in sorted(bench.missing.items()):
            print(f"  {key}: {why}", flush=True)
    if args.smoke:
        bench.results_path = bench.work / "results-smoke.json"
    try:
        if args.startup:
            bench.measure_startup()
        for index, hosts in enumerate(args.hosts):
            # The push always goes to the first 20 hosts: measure it on the first lab only.
            workloads = tuple(w for w in args.workloads if index == 0 or WORKLOADS[w].hosts is None)
            bench.measure_lab(hosts, workloads)
        for hosts in args.scale:
            if hosts in args.hosts and "true" in args.workloads:
                continue  # measured with the other rows already
            bench.measure_lab(hosts, ("true",), scale_only=True)
    finally:
        bench.save()
        report.write(Path(args.out), report.render(bench.meta, bench.rows, bench.startup, args))
        print(f"wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
