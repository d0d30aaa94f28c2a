"""Client CPU per host of fleetrun checkouts against the parallel-ssh library, interleaved on one lab (issue 13).

A shared 2-core machine's load moves every figure by 10-30 % from minute to minute, so a comparison is only
fair within one run: this starts one lab, then runs each variant once per round, round after round, and
reports each variant's median and minimum with its ratio to the library's in the same rounds.

    .venv/bin/python bench/cpu_ab.py --hosts 200 --runs 5 \\
        --variant 'fleetrun=.' --variant 'procs1=. --procs 1' --variant 'before=/tmp/old-checkout'

A variant is NAME=CHECKOUT [FLAGS...]: fleetrun from that checkout (its package put first on PYTHONPATH)
with those extra flags; `pssh-lib` (and any other peer of bench/peers.py by key) runs as in bench/run.py.
Every fleetrun run is `exec true --forks F --format json` over the whole lab, as bench/run.py's rows.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/cpu_ab.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fleet import Fleet, make_fleet
from bench.measure import ServerMeter, run_measured
from bench.peers import MAIN_BIN, PEERS, WORKLOADS, Invocation, Tools, _check_fleetrun, find_missing
from fleetrun.errors import LabError
from fleetrun.lab import start_lab, stop_lab

BENCH_DIR = Path(__file__).resolve().parent
LIBRARY = "pssh-lib"


@dataclass(frozen=True)
class Variant:
    name: str
    checkout: Path | None  # None: a peer of bench/peers.py, by `name`
    flags: tuple[str, ...] = ()

    def invocation(self, fleet: Fleet, forks: int, tools: Tools) -> Invocation:
        if self.checkout is None:
            peer = next(peer for peer in PEERS if peer.key == self.name)
            return peer.build(fleet, WORKLOADS["true"], forks, tools)
        argv = [str(MAIN_BIN / "python"), "-c", "import sys; from fleetrun.cli import main; main()", "exec", "true",
                "-i", str(fleet.inventory), "--hosts", fleet.pattern, "--forks", str(forks), "--format", "json",
                *self.flags]  # fmt: skip
        # Judged as bench/run.py's fleetrun rows: every host's JSON record must say ok, not the exit status alone.
        return Invocation(argv, fleet.env(PYTHONPATH=str(self.checkout)), _check_fleetrun(fleet, WORKLOADS["true"]))


def parse_variant(text: str) -> Variant:
    name, equals, rest = text.partition("=")
    if not equals:
        if not any(peer.key == name for peer in PEERS):
            raise argparse.ArgumentTypeError(f"{text!r}: write NAME=CHECKOUT [FLAGS], or a peer's key")
        return Variant(name, None)
    words = shlex.split(rest)
    if not words or not (Path(words[0]) / "fleetrun" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: {words[0] if words else '(nothing)'} is no fleetrun checkout")
    return Variant(name, Path(words[0]).resolve(), tuple(words[1:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5, help="rounds; each runs every variant once")
    parser.add_argument("--forks", type=int, default=64)
    parser.add_argument("--variant", type=parse_variant, action="append", default=[])
    parser.add_argument("--work", default=str(BENCH_DIR / "work" / "cpu_ab"))
    args = parser.parse_args(argv)
    variants: list[Variant] = args.variant or [Variant("fleetrun", BENCH_DIR.parent), Variant(LIBRARY, None)]
    if not any(variant.name == LIBRARY for variant in variants):
        variants.append(Variant(LIBRARY, None))
    tools = Tools()
    missing = find_missing(tools, tuple(variant.name for variant in variants if variant.checkout is None))
    for name, why in missing.items():
        print(f"  {name}: not run ({why}; bench/run.py installs it)", flush=True)
    variants = [variant for variant in variants if variant.name not in missing]
    work = Path(args.work).resolve()
    directory = work / f"lab{args.hosts}"
    with contextlib.suppress(LabError):
        stop_lab(directory)
    shutil.rmtree(directory, ignore_errors=True)
    lab = start_lab(args.hosts, directory)
    cpu: dict[str, list[float]] = {variant.name: [] for variant in variants}
    library_by_round: list[float] = []
    try:
        fleet = make_fleet(lab, directory / "fleet", kex="curve25519-sha256")
        meter = ServerMeter([host.pid for host in lab.hosts])
        for round_number in range(1, args.runs + 1):
            for variant in variants:
                call = variant.invocation(fleet, args.forks, tools)
                done = run_measured(call.argv, env=call.env, cwd=fleet.directory, timeout=600,
                                    stdout=directory / "out", stderr=directory / "err", server=meter)  # fmt: skip
                verdict = call.check(done.stdout, done.stderr, done.returncode)
                per_host = done.cpu / args.hosts * 1000
                if verdict.success:
                    cpu[variant.name].append(per_host)
                    if variant.name == LIBRARY:
                        library_by_round.append(per_host)
                print(f"round {round_number} {variant.name:<12} client CPU {per_host:6.2f} ms/host, wall "
                      f"{done.wall:5.2f} s{'' if verdict.success else ' FAILED: ' + '; '.join(verdict.problems)}",
                      flush=True)
    finally:
        stop_lab(directory)
    library = statistics.median(library_by_round) if library_by_round else None
    print(f"\n{args.hosts} hosts, {args.forks} forks, {args.runs} rounds; client CPU per host (ms):")
    for variant in variants:
        values = cpu[variant.name]
        if not values:
            print(f"  {variant.name:<12} no successful run")
            continue
        median = statistics.median(values)
        ratio = f", {median / library:.2f}x the library" if library else ""
        print(f"  {variant.name:<12} median {median:6.2f}, min {min(values):6.2f}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
