"""Profiles `fleetrun exec true` on a lab with py-spy and prints where the client's CPU goes."""

from __future__ import annotations

import argparse
import collections
import contextlib
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/profile.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers import BENCH_VENV, MAIN_BIN
from fleetrun.errors import LabError
from fleetrun.lab import start_lab, stop_lab

PY_SPY = BENCH_VENV / "bin" / "py-spy"


def _frame_key(frame: str) -> tuple[str, str]:
    """'function (path/to/file.py:12)' -> (module-ish file label, function label without the line)."""
    function, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    for anchor in ("fleetrun", "paramiko", "cryptography", "nacl", "bcrypt", "yaml", "click"):
        if anchor in parts:
            label = "/".join(parts[parts.index(anchor) :])
            break
    else:
        label = Path(path).name
    return label, f"{label}:{function or frame}"


def summarise(raw: Path, top: int) -> str:
    """Self and inclusive sample shares per function and per package, from py-spy's raw (collapsed) output."""
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    package: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [frame for frame in stack.split(";") if frame and not frame.startswith(("process ", "thread "))]
        keys = [_frame_key(frame) for frame in frames]
        for _, function in dict.fromkeys(keys):
            inclusive[function] += count
        if keys:
            label, function = keys[-1]
            leaf[function] += count
            package[label.split("/")[0]] += count
            # Attribute the sample to the innermost fleetrun frame: "what of ours led to this CPU".
            mine = [function for label, function in keys if label.startswith("fleetrun")]
            ours[mine[-1] if mine else "(no fleetrun frame: paramiko transport threads, interpreter)"] += count
    if not total:
        return "no samples\n"

    def table(title: str, counter: collections.Counter[str]) -> list[str]:
        rows = [f"### {title}", "", "| share | samples | where |", "|---:|---:|---|"]
        rows += [f"| {n / total:.1%} | {n} | `{name}` |" for name, n in counter.most_common(top)]
        return [*rows, ""]

    lines = [f"{total} samples", ""]
    lines += table("By package (leaf frame)", package)
    lines += table("Innermost fleetrun frame on the stack", ours)
    lines += table("Self (leaf) time", leaf)
    lines += table("Inclusive time", inclusive)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--forks", type=int, default=64)
    parser.add_argument("--procs", type=int, default=1,
                        help="fleetrun --procs (default 1: one process, whose profile is the cost per host)")
    parser.add_argument("--command", default="true")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--gil", action=argparse.BooleanOptionalAction, default=True,
                        help="sample only the thread holding the GIL: where Python-level CPU goes (default)")
    parser.add_argument("--native", action="store_true", help="include C frames (cryptography, OpenSSL)")
    parser.add_argument("--work", default=str(Path(__file__).resolve().parent / "work" / "profile"))
    args = parser.parse_args()
    if not PY_SPY.exists():
        subprocess.run([str(BENCH_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "py-spy"], check=True)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    lab_dir = work / "lab"
    with contextlib.suppress(LabError):
        stop_lab(lab_dir)
    lab = start_lab(args.hosts, lab_dir)
    try:
        fleetrun = [str(MAIN_BIN / "fleetrun"), "exec", args.command, "-i", str(lab.inventory), "--hosts", "all",
                    "--forks", str(args.forks), "--procs", str(args.procs), "--format", "json",
                    "--no-journal"]  # fmt: skip
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "LANG": "C.UTF-8"}
        for fmt, name in (("raw", "profile.txt"), ("flamegraph", "profile.svg")):
            record = [str(PY_SPY), "record", "--rate", str(args.rate), "--format", fmt, "--output",
                      str(work / name), *(["--gil"] if args.gil else []), *(["--native"] if args.native else []),
                      *(["--subprocesses"] if args.procs > 1 else []), "--", *fleetrun]  # fmt: skip
            done = subprocess.run(record, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  check=False)  # fmt: skip
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                return 1
    finally:
        stop_lab(lab_dir)
    print(summarise(work / "profile.txt", args.top))
    print(f"flame graph: {work / 'profile.svg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
