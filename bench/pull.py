"""Pull benchmark: MB/s and peak RSS pulling one file from one lab host, fleetrun vs paramiko's get() and OpenSSH.

    python bench/pull.py [--sizes 128,1024] [--runs 3]

Writes its section of bench/RESULTS.md (between the pull markers; the rest of the file is left as it is).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/pull.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import report
from bench.fleet import Fleet, make_fleet
from bench.measure import ServerMeter, machine_busy, run_measured
from fleetrun.lab import start_lab, stop_lab

BENCH_DIR = Path(__file__).resolve().parent
CLIENTS = BENCH_DIR / "clients"
MAIN_BIN = Path(sys.executable).parent
MIB = 1 << 20
BEGIN, END = "<!-- bench/pull.py: begin -->", "<!-- bench/pull.py: end -->"
TOOLS = {
    "fleetrun": "fleetrun pull",
    "paramiko": "bare paramiko `get()` (default prefetch)",
    "paramiko-64": "paramiko `get()`, `max_concurrent_prefetch_requests=64` (fleetrun before)",
    "scp": "OpenSSH `scp` (SFTP protocol)",
}


@dataclass(frozen=True)
class Sample:
    tool: str
    size: int
    wall: float
    rss_kib: int
    cpu: float
    server_cpu: float
    ok: bool
    note: str


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="128,1024", help="file sizes in MiB (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool and size, alternating tools")
    parser.add_argument("--tools", default=",".join(TOOLS), help="of: " + ",".join(TOOLS))
    parser.add_argument("--work", default=str(BENCH_DIR / "work" / "pull"), help="lab and pulled files")
    parser.add_argument("--out", default=str(BENCH_DIR / "RESULTS.md"), help="the report to write the section into")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before one run is killed")
    parser.add_argument("--report-only", action="store_true", help="rewrite the section from WORK/pull.json")
    parser.add_argument("--slow", type=float, default=90,
                        help="a tool whose first run of a size takes longer than this is not repeated")
    args = parser.parse_args()
    args.sizes = [int(size) for size in args.sizes.split(",") if size]
    args.tools = [tool for tool in args.tools.split(",") if tool]
    unknown = [tool for tool in args.tools if tool not in TOOLS]
    if unknown:
        parser.error(f"--tools: unknown {', '.join(unknown)}")
    return args


def write_file(path: Path, size: int) -> str:
    """`size` bytes that do not compress, and their SHA-256."""
    block, digest = os.urandom(MIB), hashlib.sha256()
    with path.open("wb") as out:
        for index in range(size // MIB):
            piece = block[index % 61 :] + block[: index % 61]
            out.write(piece)
            digest.update(piece)
    return digest.hexdigest()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def argv(tool: str, fleet: Fleet, remote: str, local_dir: Path) -> list[str]:
    host = fleet.hosts[0]
    if tool == "fleetrun":
        return [str(MAIN_BIN / "fleetrun"), "pull", "-i", str(fleet.inventory), remote, str(local_dir), "-H", "all",
                "--format", "json"]
    if tool.startswith("paramiko"):
        cap = ["--max-requests", "64"] if tool == "paramiko-64" else []
        return [sys.executable, str(CLIENTS / "paramiko_get.py"), "--spec", str(fleet.spec),
                "--get", remote, str(local_dir), *cap]
    (local_dir / host.name).mkdir(parents=True, exist_ok=True)
    return ["scp", "-q", "-F", str(fleet.ssh_config), f"{host.address}:{remote}", str(local_dir / host.name)]


def measure(tool: str, fleet: Fleet, size: int, expected: str, work: Path, timeout: float) -> Sample:
    remote = f"/srv/pull-{size}m.bin"
    local_dir = work / f"out-{tool}"
    shutil.rmtree(local_dir, ignore_errors=True)
    local_dir.mkdir(parents=True)
    server = ServerMeter([fleet.hosts[0].pid])
    os.sync()  # the last run's gigabyte is on disk: no tool pays for another's writeback
    result = run_measured(argv(tool, fleet, remote, local_dir), env=fleet.env(), cwd=work, timeout=timeout,
                          stdout=work / f"{tool}.out", stderr=work / f"{tool}.err", server=server)
    pulled = local_dir / fleet.hosts[0].name / os.path.basename(remote)
    note = ""
    if result.timed_out:
        note = f"killed after {timeout:g} s"
    elif result.returncode != 0:
        note = f"exit {result.returncode}: {result.stderr.read_text()[-200:].strip()}"
    elif not pulled.is_file() or pulled.stat().st_size != size * MIB or sha256(pulled) != expected:
        note = "pulled file differs"
    shutil.rmtree(local_dir, ignore_errors=True)
    return Sample(tool, size, result.wall, result.maxrss_kib, result.cpu, result.server_cpu, not note, note)


def wait_quiet(limit: float = 10.0, cores: float = 0.5) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = machine_busy()
        time.sleep(1.0)
        if machine_busy() - before < cores:
            return


def render(samples: list[Sample], args: argparse.Namespace) -> str:
    lines = [BEGIN, "## Pull: one file from one host (bench/pull.py)", "",
             f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by `bench/pull.py --sizes "
             f"{','.join(map(str, args.sizes))} --runs {args.runs}`: one lab host (real sshd, the file on its "
             "private tmpfs `/srv`), the same key, known_hosts and curve25519 key exchange for every tool, the "
             "pulled file checked byte for byte (SHA-256) after each run. **MB/s** is the file size over the median "
             "wall time (connection included). **Peak RSS** is the largest run's ru_maxrss of the tool's biggest "
             "process (the page cache of the written file is not in it). Runs alternate the order of the tools; "
             f"the machine's cores are shared with other work, so single runs vary: medians of {args.runs} runs.", "",
             "| tool | file | wall s (median) | MB/s | peak RSS MiB | client CPU s | server CPU s | runs ok |",
             "|---|---|---|---|---|---|---|---|"]
    rates: dict[tuple[str, int], float] = {}
    for size in args.sizes:
        for tool in args.tools:
            mine = [s for s in samples if s.tool == tool and s.size == size]
            good = [s for s in mine if s.ok]
            if not good:
                lines.append(f"| {TOOLS[tool]} | {size} MiB | **failed**: {mine[0].note if mine else 'not run'} "
                             f"|||||| 0/{len(mine)} |")
                continue
            wall = statistics.median(s.wall for s in good)
            rates[tool, size] = size * MIB / wall / 1e6
            lines.append(f"| {'**fleetrun pull**' if tool == 'fleetrun' else TOOLS[tool]} | {size} MiB | {wall:.2f} | "
                         f"{rates[tool, size]:.1f} | {max(s.rss_kib for s in good) / 1024:.1f} | "
                         f"{statistics.median(s.cpu for s in good):.2f} | "
                         f"{statistics.median(s.server_cpu for s in good):.2f} | {len(good)}/{len(mine)}"
                         f"{' (over --slow, not repeated)' if len(mine) < args.runs else ''} |")
    small, big = min(args.sizes), max(args.sizes)
    if ("fleetrun", small) in rates and ("fleetrun", big) in rates and small != big:
        lines += ["", f"fleetrun's {big} MiB pull runs at {rates['fleetrun', big] / rates['fleetrun', small]:.2f}× "
                  f"the rate of its {small} MiB pull (the connection costs the same for both). Its memory does not "
                  "grow with the file: at most 64 reads of 32 KiB are in flight or waiting to be written (2 MiB), "
                  "see `fleetrun/ssh/sftpio.py`."]
    lines += ["", "paramiko's prefetch is a race (paramiko PR #2519): when its reader catches up with the thread "
              "that sends the reads, it reads one block per round trip from then on, while the replies to that "
              "thread's reads pile up unread. Whether a run hits it varies from run to run; one that does runs at "
              "about 5 MB/s and ends up holding most of the file in memory."]
    lines.append(END)
    return "\n".join(lines) + "\n"


def main() -> int:
    args = parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        samples = [Sample(**record) for record in json.loads((work / "pull.json").read_text())]
        report.write_section(Path(args.out), BEGIN, END, render(samples, args))
        return 0
    lab_dir = work / "lab"
    lab = start_lab(1, lab_dir, srv_size=f"{sum(args.sizes) + 64}m")
    samples: list[Sample] = []
    try:
        fleet = make_fleet(lab, work / "fleet")
        host = lab.hosts[0]
        expected = {size: write_file(Path(f"/proc/{host.pid}/root/srv/pull-{size}m.bin"), size * MIB)
                    for size in args.sizes}
        slow: set[tuple[str, int]] = set()
        for run in range(args.runs):
            order = args.tools[run % len(args.tools) :] + args.tools[: run % len(args.tools)]
            for size in args.sizes:
                for tool in order:
                    if (tool, size) in slow:
                        continue
                    wait_quiet()
                    sample = measure(tool, fleet, size, expected[size], work, args.timeout)
                    samples.append(sample)
                    if sample.wall > args.slow:
                        slow.add((tool, size))
                    print(f"run {run + 1}: {tool:12} {size:5} MiB {sample.wall:7.2f} s "
                          f"{sample.rss_kib / 1024:7.1f} MiB {'ok' if sample.ok else sample.note}", flush=True)
    finally:
        stop_lab(lab_dir)
    (work / "pull.json").write_text(json.dumps([s.__dict__ for s in samples], indent=1) + "\n")
    report.write_section(Path(args.out), BEGIN, END, render(samples, args))
    return 0 if all(s.ok for s in samples if s.tool == "fleetrun") else 1


if __name__ == "__main__":
    sys.exit(main())
