"""Reading the run journal back: one run's record, hosts and summary; finding runs by id, prefix or inventory.

The format is described in fleetrun/journal.py, which writes it. `runs merge` (issue 15) reads through here too.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleetrun.errors import UsageError
from fleetrun.journal import SCHEMA


@dataclass(frozen=True)
class Run:
    """One recorded run as read back: its directory and run.json."""

    id: str
    path: Path
    info: Mapping[str, Any]

    @property
    def finished(self) -> bool:
        return self.info.get("ended") is not None

    def selection(self) -> list[str]:
        try:
            text = (self.path / "selection.txt").read_text()
        except OSError:
            return []
        return [line for line in text.splitlines() if line]

    def host_records(self) -> dict[str, dict[str, Any]]:
        """The host records by name; a line cut short by a killed run is skipped (that host has no record)."""
        records: dict[str, dict[str, Any]] = {}
        try:
            with open(self.path / "hosts.jsonl", encoding="ascii", errors="replace") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(record, dict) and isinstance(record.get("host"), str):
                        records[record["host"]] = record
        except OSError:
            pass
        return records

    def summary(self) -> dict[str, Any] | None:
        try:
            loaded = json.loads((self.path / "summary.json").read_text())
        except (OSError, ValueError):
            return None
        return loaded if isinstance(loaded, dict) else None

    def not_ok(self) -> list[str]:
        """Selected hosts that did not end ok, in selection order: failed, timeout, unreachable, auth failed,
        host key, cancelled, not started, and any without a record (the run was killed before they ended)."""
        records = self.host_records()
        return [name for name in self.selection() if records.get(name, {}).get("status") != "ok"]


def load_run(path: Path) -> Run:
    try:
        info = json.loads((path / "run.json").read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: not a fleetrun run (no run.json)") from None
    except (OSError, ValueError) as error:
        raise UsageError(f"{path}/run.json: unreadable: {getattr(error, 'strerror', None) or error}") from None
    if not isinstance(info, dict) or not str(info.get("schema", "")).startswith("fleetrun-run/"):
        raise UsageError(f"{path}/run.json: not a fleetrun run record")
    if info["schema"] != SCHEMA:
        raise UsageError(f"{path}/run.json: format {info['schema']} is newer than this fleetrun ({SCHEMA})")
    return Run(str(info.get("id") or path.name), path, info)


def list_runs(root: Path) -> list[Run]:
    """Every readable run, oldest first."""
    try:
        names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir(follow_symlinks=False)
                       and not entry.name.startswith("."))
    except FileNotFoundError:
        return []
    runs: list[Run] = []
    for name in names:
        with contextlib.suppress(UsageError):  # removed meanwhile, or not ours: not listed
            runs.append(load_run(root / name))
    return runs


def resolve_run(root: Path, ref: str) -> Run:
    """RUN as the user gives it: `latest`, an id, a unique prefix of one, or the path of a run directory."""
    if ref == "latest":
        try:
            target = os.readlink(root / "latest")
        except OSError:
            raise UsageError(f"no finished run recorded in {root} yet; run exec, push or pull first") from None
        return load_run(root / target)
    if "/" in ref or ref.startswith("."):
        return load_run(Path(ref))
    if (root / ref / "run.json").exists():
        return load_run(root / ref)
    try:
        matches = sorted(entry.name for entry in os.scandir(root) if entry.name.startswith(ref)
                         and not entry.name.startswith(".") and entry.name != "latest")
    except FileNotFoundError:
        matches = []
    if len(matches) == 1:
        return load_run(root / matches[0])
    if not matches:
        raise UsageError(f"no run {ref!r} in {root}; `fleetrun runs list` shows the recorded runs")
    shown = ", ".join(matches[:5]) + (", …" if len(matches) > 5 else "")
    raise UsageError(f"run {ref!r} is ambiguous in {root}: {shown}; give more of the id")


def latest_for(root: Path, inventories: Sequence[str]) -> Run | None:
    """The most recent run (by its end, else its start) that read exactly these inventory files."""
    wanted = list(inventories)
    best: Run | None = None
    for run in list_runs(root):
        paths = [item.get("path") for item in run.info.get("inventories", []) if isinstance(item, dict)]
        if paths != wanted:
            continue
        if best is None or _when(run) >= _when(best):
            best = run
    return best


def _when(run: Run) -> str:
    return str(run.info.get("ended") or run.info.get("started") or "")
