"""Turns the raw benchmark results into bench/RESULTS.md: tables, the floor, and the issue's targets."""

from __future__ import annotations

import argparse
import math
import re
import statistics
from pathlib import Path
from typing import Any

from bench.peers import WORKLOADS

Row = dict[str, Any]
TARGET_HOSTS = 200
MIB = 1024.0


def _median(row: Row, field: str) -> float:
    return statistics.median(run[field] for run in row["runs"])


def _ok(row: Row) -> bool:
    return bool(row["runs"]) and all(run["success"] for run in row["runs"])


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _fleetrun(rows: list[Row], hosts: int, workload: str, forks: int) -> Row | None:
    for row in rows:
        if (row["hosts"], row["workload"], row["peer"], row["forks"]) == (hosts, workload, "fleetrun", str(forks)):
            return row if _ok(row) else None
    return None


def _row_line(row: Row, base: Row | None, meta: dict[str, Any]) -> str:
    forks = row["forks"]
    name = f"**{row['label']}**" if row["role"] in ("fleetrun", "variant") else row["label"]
    if row["role"] == "reference":
        name += " *(reference)*"
    if row["skipped"]:
        return f"| {name} | {forks} | {row['skipped']} |||||||"
    if any(run["timed_out"] for run in row["runs"]):
        return f"| {name} | {forks} | slower than the {meta.get('timeout', '?'):g} s time box: killed |||||||"
    if not _ok(row):
        failed = next(run for run in row["runs"] if not run["success"])
        why = "; ".join(failed["problems"][:2] + failed["problems"][-1:]) or f"exit {failed['returncode']}"
        good = sum(run["success"] for run in row["runs"])
        return (f"| {name} | {forks} | **failed** ({failed['ok']}/{failed['expected']} hosts ok; {good}/"
                f"{len(row['runs'])} runs ok): {why} |||||||")  # fmt: skip
    count = row["host_count"]
    wall = _median(row, "wall")
    ratio = "1.00" if base is row else (_fmt(wall / _median(base, "wall")) if base else "–")
    cpu = _median(row, "cpu") / count * 1000
    server = _median(row, "server_cpu") / count * 1000
    rss = _median(row, "maxrss_kib") / MIB
    tree = _median(row, "tree_kib") / MIB
    walls = [run["wall"] for run in row["runs"]]
    notes = [f"{len(walls)} runs, {min(walls):.2f}–{max(walls):.2f} s"] if len(walls) > 1 else []
    if len(walls) < int(meta.get("runs", 1)):
        notes.append(f"{len(walls)} run only: over {meta.get('slow', '?'):g} s, not repeated")
    other = statistics.median(run["foreign_cpu"] / max(run["wall"], 1e-3) for run in row["runs"])
    if other >= 0.2:
        notes.append(f"other load {other:.1f} cores")
    escaped = max(run["escaped_cpu"] / max(run["cpu"], 1e-3) for run in row["runs"])
    if escaped > 0.15:
        notes.append(f"cgroup saw {escaped:.0%} more CPU than wait4 (unreaped children)")
    leftovers = max(run["leftovers"] for run in row["runs"])
    if leftovers:
        notes.append(f"{leftovers} processes left running")
    return (f"| {name} | {forks} | {wall:.2f} | {ratio} | {cpu:.2f} | {server:.2f} | {rss:.1f} | {tree:.1f} "
            f"| {count}/{count} | {'; '.join(notes)} |")  # fmt: skip


def _floor(rows: list[Row], hosts: int, workload: str, forks: int, cores: int) -> str:
    others = [r for r in rows if _ok(r) and r["role"] in ("peer", "reference")]
    servers = [_median(r, "server_cpu") / r["host_count"] for r in others]
    if not servers:
        return ""
    count = rows[0]["host_count"]
    per = min(servers)
    text = (f"Floor: the lab's sshd (the server side, on these same {cores} cores) spends at least "
            f"**{per * 1000:.1f} ms CPU per connection** here, so {count} hosts cannot finish in under "
            f"**{per * count / cores:.2f} s** even with a client that costs nothing")
    if workload == "sleep":
        text += f", nor under {math.ceil(count / forks) * 2} s of sleeping at {forks} at a time"
    text += "."
    ours = next((r for r in rows if r["role"] == "fleetrun" and r["forks"] == str(forks) and _ok(r)), None)
    if ours is not None:
        both = (_median(ours, "cpu") + _median(ours, "server_cpu")) / count
        text += (f" With fleetrun's own client CPU added (client + server {both * 1000:.1f} ms per host), the "
                 f"CPU-bound limit for fleetrun here is **{both * count / cores:.2f} s**.")
    return text


CPU_TARGET_HOSTS = (200, 500)
CPU_TARGET_MS = 4.0
OUTPUT_TARGET_MIB = 100.0


def _find(rows: list[Row], hosts: int, workload: str, peer: str, forks: int | str) -> Row | None:
    for row in rows:
        if (row["hosts"], row["workload"], row["peer"], row["forks"]) == (hosts, workload, peer, str(forks)):
            return row if _ok(row) else None
    return None


def _per_host_cpu(row: Row) -> float:
    return _median(row, "cpu") / row["host_count"] * 1000


def _cpu_target(rows: list[Row], hosts: int, forks: int, verdict: Any) -> list[str]:
    """Client CPU per host on `true` ≤ 4 ms and at or below the parallel-ssh C library's in the same run."""
    ours = _find(rows, hosts, "true", "fleetrun", forks)
    if ours is None:
        return [f"| client CPU per host ≤ {CPU_TARGET_MS:g} ms (`true`@{hosts}) | not measured | – |"]
    cpu = _per_host_cpu(ours)
    lines = [f"| client CPU per host ≤ {CPU_TARGET_MS:g} ms (`true`@{hosts}, {forks} forks) | {cpu:.2f} ms "
             f"| {verdict(cpu <= CPU_TARGET_MS)} |"]
    library = _find(rows, hosts, "true", "pssh-lib", forks)
    if library is not None:
        theirs = _per_host_cpu(library)
        lines.append(f"| … at or below the parallel-ssh C library (ssh2-python) in the same run | {cpu / theirs:.2f}× "
                     f"({theirs:.2f} ms) | {verdict(cpu <= theirs)} |")
    return lines


def _procs_targets(rows: list[Row], forks: int) -> list[str]:
    """--procs 2 against --procs 1 (no target in the issue: measured, reported as ratios)."""
    lines = []
    for hosts in sorted({row["hosts"] for row in rows}):
        one = _find(rows, hosts, "true", "fleetrun-procs1", forks)
        two = _find(rows, hosts, "true", "fleetrun-procs2", forks)
        if one is None or two is None:
            continue
        wall = _median(two, "wall") / _median(one, "wall")
        cpu = _per_host_cpu(two) / _per_host_cpu(one)
        lines.append(f"| `--procs 2` against `--procs 1`, `true`@{hosts}, {forks} forks (measured, no target) | wall "
                     f"{_median(one, 'wall'):.2f} → {_median(two, 'wall'):.2f} s ({wall:.2f}×), client CPU "
                     f"{_per_host_cpu(one):.2f} → {_per_host_cpu(two):.2f} ms/host ({cpu:.2f}×) | – |")
        pinned = _find(rows, hosts, "true", "fleetrun-procs2-1cpu", forks)
        if pinned is not None:
            lines.append(f"| … `--procs 2` with the client on one CPU (`taskset -c 0`) | client CPU "
                         f"{_per_host_cpu(pinned):.2f} ms/host ({_per_host_cpu(pinned) / _per_host_cpu(one):.2f}× "
                         f"`--procs 1`), wall {_median(pinned, 'wall'):.2f} s | – |")
    return lines


def _output_target(rows: list[Row], forks: int, verdict: Any) -> list[str]:
    """200 hosts × 1 MB of output ≤ 100 MiB peak RSS, next to pdsh in the same run."""
    ours = _find(rows, TARGET_HOSTS, "output", "fleetrun", forks)
    if ours is None:
        return [f"| {TARGET_HOSTS} hosts × 1 MB of output ≤ {OUTPUT_TARGET_MIB:g} MiB | not measured | – |"]
    rss = max(run["maxrss_kib"] for run in ours["runs"]) / MIB
    tree = max(run["tree_kib"] for run in ours["runs"]) / MIB
    # The tree's memory cgroup is also charged the page cache of the spill files fleetrun writes (reclaimable, and
    # on disk where TMPDIR is a disk): the process's own memory is its peak RSS.
    text = (f"{rss:.1f} MiB peak RSS ({tree:.1f} MiB tree, the spill files' page cache included; largest of "
            f"{len(ours['runs'])} runs)")
    pdsh = _find(rows, TARGET_HOSTS, "output", "pdsh", forks)
    if pdsh is not None:
        theirs = max(run["maxrss_kib"] for run in pdsh["runs"]) / MIB
        their_tree = max(run["tree_kib"] for run in pdsh["runs"]) / MIB
        text += f"; pdsh {theirs:.1f} MiB peak RSS, {their_tree:.1f} MiB tree"
    return [f"| {TARGET_HOSTS} hosts × 1 MB of output: peak RSS ≤ {OUTPUT_TARGET_MIB:g} MiB | {text} "
            f"| {verdict(rss <= OUTPUT_TARGET_MIB)} |"]


def _lab_account(meta: dict[str, Any]) -> list[str]:
    """Which account the lab logged in as, how its shell rc file was kept from running, and the proof."""
    account = meta.get("lab_account")
    if not account:
        return []
    text = (f"**The lab** logs in as `{account['user']}` (uid {account['uid']}, shell `{account['shell']}`, "
            f"rc file {account['bashrc']}). Every lab sshd_config sets `SetEnv SHLVL=1`: bash sources ~/.bashrc "
            f"for a command sshd starts only when SHLVL is unset, so no rc file runs (a heavy one, such as "
            f"`pyenv init`, would multiply the servers' CPU per connection and, through contention, the client's).")
    lean = meta.get("lean_check")
    if lean:
        parts = []
        for tool, variants in lean.get("tools", {}).items():
            row = variants.get("lean (SetEnv SHLVL=1)", {})
            heavy = variants.get("without SHLVL=1", {})
            part = f"{tool}: rc skipped on {row.get('rc skipped', '?')}/{lean['hosts']}"
            if row.get("server ms/conn") and heavy.get("server ms/conn"):
                part += f" (server {row['server ms/conn']:.1f} ms/connection; {heavy['server ms/conn']:.1f} without)"
            parts.append(part)
        text += (f" Checked per tool by `bench/lean_lab.py --hosts {lean['hosts']}` (marker `${lean['marker']}`): "
                 + "; ".join(parts) + ".")
    return [text, ""]


def _targets(rows: list[Row], startup: dict[str, Any], forks: int, scale_forks: int) -> list[str]:
    lines = ["| target | measured | |", "|---|---|---|"]

    def verdict(good: bool | None) -> str:
        return "–" if good is None else ("✅ met" if good else "❌ not met")

    ours = _fleetrun(rows, TARGET_HOSTS, "true", forks)
    at = [r for r in rows if r["hosts"] == TARGET_HOSTS and r["workload"] == "true" and r["forks"] == str(forks)]
    peers = [r for r in at if r["role"] == "peer" and _ok(r)]
    reference = next((r for r in at if r["peer"] == "paramiko" and _ok(r)), None)
    if ours is not None and peers:
        fastest = min(peers, key=lambda r: _median(r, "wall"))
        ratio = _median(ours, "wall") / _median(fastest, "wall")
        peer = f"{fastest['label']}: {_median(fastest, 'wall'):.2f} s"
        lines.append(f"| `true`@{TARGET_HOSTS}, {forks} forks: wall ≤ 0.75× fastest peer | {ratio:.2f}× ({peer}) "
                     f"| {verdict(ratio <= 0.75)} |")  # fmt: skip
    else:
        lines.append(f"| `true`@{TARGET_HOSTS}: wall ≤ 0.75× fastest peer | not measured | – |")
    if ours is not None and reference is not None:
        ratio = _median(ours, "wall") / _median(reference, "wall")
        lines.append(f"| … and ≤ 1.05× the bare paramiko loop | {ratio:.2f}× ({_median(reference, 'wall'):.2f} s)"
                     f" | {verdict(ratio <= 1.05)} |")  # fmt: skip
    for hosts in CPU_TARGET_HOSTS:
        lines += _cpu_target(rows, hosts, forks, verdict)
    scale = sorted((r for r in rows if r["peer"] == "fleetrun" and r["workload"] == "true"
                    and r["forks"] == str(scale_forks)), key=lambda r: r["hosts"])  # fmt: skip
    big = next((r for r in scale if r["hosts"] >= 1000), None)
    patient = next((r for r in rows if r["peer"] == "fleetrun-patient" and r["hosts"] >= 1000 and r["runs"]), None)
    if big is not None and big["runs"]:
        runs = big["runs"] + (patient["runs"] if patient else [])
        rss = max(run["maxrss_kib"] for run in runs) / MIB
        files = any("Too many open files" in problem for run in runs for problem in run["problems"])
        reported = min(run.get("reported") if run.get("reported") is not None else -1 for run in big["runs"])
        oks = [run["ok"] for run in big["runs"]]
        accounted = reported == big["hosts"]
        lines.append(f"| {big['hosts']} hosts at --forks {scale_forks}: completes, every host accounted for, no "
                     f"open-files error | {reported if reported >= 0 else '?'}/{big['hosts']} hosts with a result, "
                     f"{'an' if files else 'no'} open-files error | {verdict(accounted and not files)} |")
        every, wall = min(oks) == big["hosts"], statistics.median(run["wall"] for run in big["runs"])
        lines.append(f"| … with the default connect timeout (10 s): every host ok, every run | {min(oks)}–{max(oks)}"
                     f"/{big['hosts']} ok in {len(oks)} runs, {wall:.1f} s | {verdict(every)} |")
        if patient is not None:
            good = all(run["success"] for run in patient["runs"])
            lines.append(f"| … with `--connect-timeout 60`: every host ok | "
                         f"{min(run['ok'] for run in patient['runs'])}/{patient['hosts']} ok in every run, "
                         f"{statistics.median(run['wall'] for run in patient['runs']):.1f} s | {verdict(good)} |")
        lines.append(f"| … peak RSS ≤ 100 MiB | {rss:.1f} MiB (largest of {len(runs)} runs) | {verdict(rss <= 100)} |")
        small = next((r for r in scale if r["hosts"] == TARGET_HOSTS and r["runs"]), None)
        if small is not None:
            low = max(run["maxrss_kib"] for run in small["runs"]) / MIB
            lines.append(f"| … memory flat from {TARGET_HOSTS} to {big['hosts']} hosts at --forks {scale_forks} | "
                         f"{low:.1f} → {rss:.1f} MiB ({rss / low:.2f}×) | {verdict(rss / low <= 1.15)} |")  # fmt: skip
    else:
        lines.append(f"| 1000 hosts at --forks {scale_forks} | not measured | – |")
    lines += _procs_targets(rows, scale_forks)
    lines += _output_target(rows, forks, verdict)
    for title, data in startup.items():
        wall = statistics.median(data["walls"])
        lines.append(f"| `{title}` < 0.3 s | {wall:.3f} s median of {len(data['walls'])} "
                     f"(min {min(data['walls']):.3f}) | {verdict(wall < 0.3 and data['ok'])} |")  # fmt: skip
    return lines


def render(meta: dict[str, Any], rows: list[Row], startup: dict[str, Any], args: argparse.Namespace) -> str:
    forks = int(meta.get("forks", args.forks))
    cores = int(str(meta.get("machine", {}).get("CPU", "2")).split()[0] or 2)
    out = ["# fleetrun benchmark results", ""]
    if meta.get("smoke"):
        out += ["*Smoke run (N=20, one run): proves the harness works, measures nothing worth quoting.*", ""]
    commands = meta.get("commands") or [meta.get("command", "bench/run.py")]
    out += [f"Generated {meta.get('generated', '?')} by " + ", then ".join(f"`{c}`" for c in commands) + "."]
    out += [""]
    out += ["## Machine and versions", "", "| | |", "|---|---|"]
    out += [f"| {key} | {value} |" for key, value in meta.get("machine", {}).items()]
    out += [f"| {key} | {value} |" for key, value in meta.get("versions", {}).items()]
    out += ["", "## Method", "",
            f"Every tool gets the same lab (real OpenSSH sshd per host on its own 127.x address, started by "
            f"`fleetrun.lab`), the same client key and known_hosts with strict host key checking (OpenSSH tools "
            f"through one `ssh_config` passed with `-F`; the Python libraries are made to reject unknown keys), "
            f"no agent, an empty HOME, and the same parallelism ({forks}); a second row runs each tool at its "
            f"own default parallelism where that differs. Each cell is the median of the runs; runs alternate "
            f"the order of the tools. **Wall** is from spawn to exit. **Client CPU** is user+sys of the tool's "
            f"whole process tree, per host: the larger of os.wait4's rusage and the cpuacct cgroup the tree ran in "
            f"(the cgroup also sees children a tool never reaped). "
            f"Key exchange: {meta.get('kex', 'curve25519-sha256')} for the OpenSSH-based tools, which is what "
            f"paramiko and libssh2 negotiate (OpenSSH 9's default sntrup761x25519 costs its client about "
            f"130 ms more CPU per connection on this machine). "
            f"**Server CPU** is what the lab's sshd processes and everything they forked used during the run "
            f"(utime+stime+cutime+cstime from /proc), per host: the servers share the client's cores. "
            f"**Peak RSS** is the largest single client process (ru_maxrss); **tree** is the peak memory "
            f"charged to the whole client tree's memory cgroup (private pages of every process; shared "
            f"libraries count once, so pdsh's 64 ssh children are not 64 copies of libcrypto; the tool's stdout "
            f"goes through a pipe to a file written by the harness, so its page cache is not counted). "
            f"A tool counts only if it reports success on every host (its own output or exit status "
            f"per host; pushes are also checked byte for byte on every host). fleetrun runs with "
            f"`--format json` so that every host's output is printed, as the other tools print it.", ""]
    out += _lab_account(meta)
    missing = meta.get("missing", {})
    if missing:
        out += ["## Not measured", ""]
        out += [f"- **{key}**: {why}" for key, why in sorted(missing.items())]
        out += [""]
    out += ["## Targets", "", *_targets(rows, startup, forks, args.scale_forks), ""]
    if startup:
        out += ["## Start-up", "", "| command | median s | min s | max s | CPU s (median) |", "|---|---|---|---|---|"]
        for title, data in startup.items():
            walls, cpus = data["walls"], data["cpus"]
            out.append(f"| `{title}` | {statistics.median(walls):.3f} | {min(walls):.3f} | {max(walls):.3f} "
                       f"| {statistics.median(cpus):.3f} |")  # fmt: skip
        out.append("")
    header = ("| tool | forks | wall s | × fleetrun | client CPU ms/host | server CPU ms/host | peak RSS MiB "
              "| tree MiB | hosts ok | notes |")
    for hosts in sorted({row["hosts"] for row in rows}):
        for workload in WORKLOADS:
            group = [row for row in rows if row["hosts"] == hosts and row["workload"] == workload]
            if not group:
                continue
            base = _fleetrun(rows, hosts, workload, forks)
            count = group[0]["host_count"]
            title = WORKLOADS[workload].title
            out += [f"## {title} — {count} hosts" + (f" (of a {hosts}-host lab)" if count != hosts else ""), ""]
            out += [header, "|---|---|---|---|---|---|---|---|---|---|"]
            order = {"fleetrun": 0, "variant": 1, "reference": 2, "peer": 3}
            group.sort(key=lambda r: (order[r["role"]], not _ok(r), _median(r, "wall") if _ok(r) else 0))
            out += [_row_line(row, base, meta) for row in group]
            if base is None and workload == "push":
                out += ["", "× fleetrun: – because fleetrun's own push was not measured (see the table)."]
            floor = _floor(group, hosts, workload, forks, cores)
            out += ["", floor, ""] if floor else [""]
    return "\n".join(out).rstrip() + "\n"


# Sections other bench scripts own (bench/pull.py, bench/ansible_inventory.py, ...), each between its own
# `<!-- bench/NAME: begin -->` and `<!-- bench/NAME: end -->` lines: rewriting the main report keeps them.
_OWNED_SECTION = re.compile(r"^<!-- (bench/[\w.]+): begin -->$.*?^<!-- \1: end -->$", re.M | re.S)


def write(path: Path, text: str) -> None:
    """Write the main report to `path`, keeping the sections other bench scripts wrote into it."""
    try:
        previous = path.read_text()
    except FileNotFoundError:
        previous = ""
    kept = [match.group(0) for match in _OWNED_SECTION.finditer(previous)]
    path.write_text(text.rstrip("\n") + "\n" + "".join(f"\n{section}\n" for section in kept))


def write_section(path: Path, begin: str, end: str, section: str) -> None:
    """Put one bench script's section (its `begin` line to its `end` line) into the report at `path`,
    replacing the one an earlier run wrote, or appending it; the rest of the report stays as it is."""
    text = path.read_text() if path.exists() else "# fleetrun benchmark results\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
