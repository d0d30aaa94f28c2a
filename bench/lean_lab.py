"""Proves the lab is lean for every tool: no shell rc file runs for a command, and what that saves the servers.

The lab logs in as the user running it (root here, whose ~/.bashrc runs `pyenv init`). bash sources ~/.bashrc
for a command that sshd starts unless SHLVL is already set, so every lab sshd_config sets `SetEnv SHLVL=1`
(fleetrun/lab.py). That is a server setting, so it must hold for every client: this runs each tool twice on
the same hosts, once on the lab as it is and once on a lab without the SHLVL=1, with a command that prints
whether the rc file ran, and measures the servers' CPU per connection for `true` both ways.

    .venv/bin/python bench/lean_lab.py --hosts 30 --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.fleet import make_fleet
from bench.measure import ServerMeter, run_measured
from bench.peers import PEERS, Tools, Workload, find_missing
from fleetrun.errors import LabError
from fleetrun.lab import start_lab, stop_lab

BENCH_DIR = Path(__file__).resolve().parent
TOOLS = ("fleetrun", "paramiko", "pdsh", "pssh", "clush", "pssh-lib", "fabric", "ansible")
# Prints "rc=ran" on a host where the login shell sourced the account's rc file (it sets a variable we can see
# here: pyenv's PYENV_ROOT for root on these machines) and "rc=skipped" where it did not.
MARKER = os.environ.get("LEAN_MARKER", "PYENV_ROOT")
PROBE = Workload("probe", "rc probe", f'if [ -n "${{{MARKER}:-}}" ]; then echo rc=ran; else echo rc=skipped; fi', 1)
TRUE = Workload("true", "`true`", "true", 0)
HEAVY = "SetEnv FLEETRUN_LAB_HOST=lab-without-shlvl"  # replaces the lab's SetEnv line: no SHLVL=1


def account() -> dict[str, str]:
    """Who the lab logs in as, and with which shell and rc file."""
    entry = pwd.getpwuid(os.geteuid())
    rc = Path(entry.pw_dir) / ".bashrc"
    return {"user": entry.pw_name, "uid": str(entry.pw_uid), "shell": entry.pw_shell, "home": entry.pw_dir,
            "bashrc": f"{rc} ({rc.stat().st_size} bytes)" if rc.exists() else f"{rc} (none)"}  # fmt: skip


def measure(hosts: int, runs: int, work: Path, tools: Tools, wanted: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for variant, extra in (("lean (SetEnv SHLVL=1)", ""), ("without SHLVL=1", HEAVY)):
        directory = work / ("lab-lean" if not extra else "lab-heavy")
        with contextlib.suppress(LabError):
            stop_lab(directory)
        shutil.rmtree(directory, ignore_errors=True)
        lab = start_lab(hosts, directory, extra_config=extra)
        try:
            fleet = make_fleet(lab, directory / "fleet", kex="curve25519-sha256")
            meter = ServerMeter([host.pid for host in lab.hosts])
            for key in wanted:
                peer = next(p for p in PEERS if p.key == key)
                probe = peer.build(fleet, PROBE, 32, tools)
                measured = run_measured(probe.argv, env=probe.env, cwd=fleet.directory, timeout=300,
                                        stdout=directory / f"{key}.out", stderr=directory / f"{key}.err",
                                        server=meter)  # fmt: skip
                text = measured.stdout.read_bytes().decode(errors="replace")
                ran, skipped = text.count("rc=ran"), text.count("rc=skipped")
                cpus = []
                for _ in range(runs):
                    call = peer.build(fleet, TRUE, 32, tools)
                    done = run_measured(call.argv, env=call.env, cwd=fleet.directory, timeout=300,
                                        stdout=directory / f"{key}.true.out", stderr=directory / f"{key}.true.err",
                                        server=meter)  # fmt: skip
                    verdict = call.check(done.stdout, done.stderr, done.returncode)
                    if verdict.success:
                        cpus.append(done.server_cpu / hosts * 1000)
                row = {"rc ran": ran, "rc skipped": skipped,
                       "server ms/conn": statistics.median(cpus) if cpus else None, "runs": len(cpus)}
                results.setdefault(key, {})[variant] = row
                print(f"  {variant:<22} {peer.label:<24} rc ran on {ran:>3}, skipped on {skipped:>3} hosts; "
                      f"server {row['server ms/conn'] or float('nan'):6.1f} ms/connection", flush=True)
        finally:
            stop_lab(directory)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--work", default=str(BENCH_DIR / "work" / "lean"))
    parser.add_argument("--out", default=str(BENCH_DIR / "work" / "lean.json"))
    args = parser.parse_args(argv)
    tools = Tools()
    wanted = [key for key in args.tools.split(",") if key]
    missing = find_missing(tools, tuple(wanted))
    for key, why in missing.items():
        print(f"  {key}: {why}", flush=True)
    wanted = [key for key in wanted if key not in missing]
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = {"account": account(), "marker": MARKER, "hosts": args.hosts, "runs": args.runs,
            "tools": measure(args.hosts, args.runs, work, tools, wanted)}  # fmt: skip
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
