"""`fleetrun runs merge`: load shard results (journal runs or --format json files), check that they are the N
shares of one selection, each exactly once, and join them into one run that renders like a single run.

Refusals are UsageError (exit 2), one line each: an input that is not a finished shard result, shards of
different selections, a shard given twice, a missing shard, a host in two shards.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetrun.errors import UsageError
from fleetrun.models import BatchSummary, BecomeStatus, Host, HostResult, Outcome, RolloutStop, RunSummary
from fleetrun.shard import selection_digest, share_names
from fleetrun.status import ExitStatus, worst

_OUTCOMES = {outcome.value: outcome for outcome in Outcome}


@dataclass(frozen=True)
class ShardResult:
    """One shard's result as read from a file or a run directory."""

    source: str  # the path, as messages name it
    index: int
    total: int
    selection_sha256: str
    selection_count: int
    records: tuple[Mapping[str, Any], ...]  # the fleetrun/1 host records
    summary: Mapping[str, Any]  # the fleetrun/1 summary record
    kind: str | None = None  # exec, push or pull when the input says (journal runs do)
    command: str | None = None

    @property
    def label(self) -> str:
        return f"shard {self.index}/{self.total} ({self.source})"

    @property
    def exit_status(self) -> ExitStatus:
        return ExitStatus(self.summary["exit_status"])


@dataclass(frozen=True)
class Merged:
    """The shards joined: every host's result once (in name order) and the summary one run would have had."""

    shards: tuple[ShardResult, ...]  # by index
    results: tuple[HostResult, ...]
    summary: RunSummary
    records: tuple[Mapping[str, Any], ...] = field(default=())  # the host records, in `results` order

    @property
    def total(self) -> int:
        return self.shards[0].total

    def record(self) -> dict[str, Any]:
        """The merged summary's extra field: which shards it was made of."""
        first = self.shards[0]
        return {"merged": {
            "total": first.total, "selection_sha256": first.selection_sha256,
            "selection_count": first.selection_count,
            "shards": [{"index": shard.index, "exit_status": int(shard.exit_status), "hosts": len(shard.records),
                        "source": shard.source} for shard in self.shards],
        }}


# -- reading -----------------------------------------------------------------------------------------------------


def _not_a_shard(source: str, why: str) -> UsageError:
    return UsageError(f"{source}: not a shard result: {why}")


def _shard_fields(source: str, shard: Any) -> tuple[int, int, str, int]:
    if shard is None:
        raise _not_a_shard(source, "it was run without --shard (run each shard with --shard K/N or --shard auto)")
    try:
        index, total = int(shard["index"]), int(shard["total"])
        digest, count = str(shard["selection_sha256"]), int(shard["selection_count"])
    except (KeyError, TypeError, ValueError):
        raise _not_a_shard(source, f"its shard field is malformed: {json.dumps(shard)[:120]}") from None
    if not 1 <= index <= total:
        raise _not_a_shard(source, f"its shard field says shard {index} of {total}")
    return index, total, digest, count


def _checked(source: str, shard: Any, records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any] | None,
             kind: str | None = None, command: str | None = None) -> ShardResult:
    if summary is None:
        raise _not_a_shard(source, "no summary record: the shard did not finish (killed, or still running?); "
                                   "run that shard again")
    index, total, digest, count = _shard_fields(source, shard)
    try:
        ExitStatus(summary["exit_status"])
    except (KeyError, TypeError, ValueError):
        raise _not_a_shard(source, f"its summary has no valid exit_status ({summary.get('exit_status')!r})") from None
    names = [str(record.get("host")) for record in records]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise _not_a_shard(source, f"host {name} has two records in it")
        seen.add(name)
    if len(records) != summary.get("total"):
        raise _not_a_shard(source, f"{len(records)} host records but its summary counts {summary.get('total')} "
                                   "hosts: the file is incomplete")
    for record in records:
        if record.get("status") not in _OUTCOMES:
            raise _not_a_shard(source, f"host {record.get('host')} has an unknown status {record.get('status')!r}")
    return ShardResult(source, index, total, digest, count, tuple(records), summary, kind, command)


def load_json_lines(path: Path) -> ShardResult:
    """A `--format json` output (or `fleetrun runs show --format json`): host records, then the summary."""
    source = str(path)
    records: list[Mapping[str, Any]] = []
    summary: Mapping[str, Any] | None = None
    run_info: Mapping[str, Any] = {}
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    raise _not_a_shard(f"{source}:{number}", "not JSON (shard results are --format json output)") \
                        from None
                kind = record.get("type") if isinstance(record, dict) else None
                if summary is not None:
                    raise _not_a_shard(f"{source}:{number}", "a record after the summary (two outputs in one file?)")
                if kind == "host" and isinstance(record.get("host"), str):
                    records.append(record)
                elif kind == "summary":
                    summary = record
                elif kind == "run" and number == 1:  # `fleetrun runs show --format json` starts with the run record
                    run_info = record
                else:
                    raise _not_a_shard(f"{source}:{number}", "not a fleetrun --format json record")
    except UnicodeDecodeError:
        raise _not_a_shard(source, "not text (shard results are --format json output)") from None
    except OSError as error:
        raise UsageError(f"{source}: cannot read it: {error.strerror or error}") from None
    if not records and summary is None:
        raise _not_a_shard(source, "it is empty (did the shard fail before it started? see its log)")
    shard = (summary or {}).get("shard", run_info.get("shard"))
    if summary is not None and "merged" in summary:
        raise _not_a_shard(source, f"it is already a merge of {len(summary['merged'].get('shards', []))} shards")
    return _checked(source, shard, records, summary, run_info.get("kind"), run_info.get("command"))


def load_run_directory(path: Path) -> ShardResult:
    """A run of the journal (its directory), as journal.py writes it."""
    from fleetrun.journal_read import load_run

    run = load_run(path)
    records = run.host_records()
    ordered = [records[name] for name in run.selection() if name in records]
    ordered += [record for name, record in records.items() if name not in set(run.selection())]
    return _checked(str(path), run.info.get("shard"), ordered, run.summary(), run.info.get("kind"),
                    run.info.get("command"))


def load(path: Path) -> list[ShardResult]:
    """The shard results at `path`: a --format json file, a run directory (or its run.json), or a directory
    holding such files (*.json, *.jsonl) and run directories."""
    if path.is_dir():
        if (path / "run.json").exists():
            return [load_run_directory(path)]
        # The journal's `latest` links to a run listed anyway, and hidden names are half-made or half-removed.
        found = sorted(entry for entry in path.iterdir() if not entry.is_symlink() and not entry.name.startswith(".")
                       and ((entry.is_dir() and (entry / "run.json").exists())
                            or (entry.is_file() and entry.suffix in (".json", ".jsonl"))))
        if not found:
            raise UsageError(f"{path}: no shard results in it (no run.json, no *.json files): give the shards' "
                             "--format json files or run directories")
        return [result for entry in found for result in load(entry)]
    if path.name == "run.json" and path.is_file():
        return [load_run_directory(path.parent)]
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    return [load_json_lines(path)]


def load_all(paths: Iterable[str]) -> list[ShardResult]:
    return [result for path in paths for result in load(Path(path))]


# -- checking and joining ----------------------------------------------------------------------------------------


def _selection_text(shard: ShardResult) -> str:
    return f"{shard.selection_count} hosts, selection {shard.selection_sha256[:12]}"


def check(shards: Sequence[ShardResult]) -> None:
    """Refuse shards that do not add up to one selection, each share once; raises UsageError (exit 2)."""
    if not shards:
        raise UsageError("no shard results given: name the shards' --format json files or run directories")
    first = shards[0]
    for other in shards[1:]:
        if (other.total, other.selection_sha256) != (first.total, first.selection_sha256):
            raise UsageError(f"shards of different selections: {first.label} ({_selection_text(first)}) and "
                             f"{other.label} ({_selection_text(other)}); run every shard with "
                             "the same inventory, -H and --shard N")
    by_index: dict[int, ShardResult] = {}
    for shard in shards:
        if shard.index in by_index:
            raise UsageError(f"shard {shard.index}/{shard.total} is given twice: {by_index[shard.index].source} and "
                             f"{shard.source}; give each shard once")
        by_index[shard.index] = shard
    missing = [index for index in range(1, first.total + 1) if index not in by_index]
    if missing:
        listed = ", ".join(f"{index}/{first.total}" for index in missing)
        verb = "is" if len(missing) == 1 else "are"
        raise UsageError(f"shard{'s' if len(missing) > 1 else ''} {listed} {verb} missing (have "
                         f"{len(shards)} of {first.total}): give every shard's result")
    owner: dict[str, ShardResult] = {}
    for shard in sorted(shards, key=lambda item: item.index):
        for record in shard.records:
            name = str(record["host"])
            if name in owner:
                raise UsageError(f"host {name} is in two shards: {owner[name].label} and {shard.label}; "
                                 "the shards were not made with the same --shard N")
            owner[name] = shard
    names = list(owner)
    if len(names) != first.selection_count or selection_digest(names) != first.selection_sha256:
        raise UsageError(f"the shards hold {len(names)} hosts, not the {first.selection_count} hosts of the selection "
                         f"they record ({first.selection_sha256[:12]}): a shard result is incomplete or was edited")
    for shard in shards:
        expected = set(share_names(names, shard.index, shard.total))
        if {str(record["host"]) for record in shard.records} != expected:
            raise UsageError(f"{shard.label} does not hold its share of the selection (sorted by name, host i in "
                             f"shard (i mod {shard.total})+1): it was not made by fleetrun's --shard")


def result_from_record(record: Mapping[str, Any]) -> HostResult:
    """A fleetrun/1 host record back as the HostResult the renderers take."""
    name = str(record["host"])
    host = Host(name=name, address=str(record.get("address") or name), port=int(record.get("port") or 22))
    become = record.get("become")
    return HostResult(
        host=host,
        outcome=_OUTCOMES[record["status"]],
        exit_code=record.get("exit_code"),
        signal=record.get("signal"),
        stdout=str(record.get("stdout") or "").encode(),
        stderr=str(record.get("stderr") or "").encode(),
        stdout_truncated=bool(record.get("stdout_truncated")),
        stderr_truncated=bool(record.get("stderr_truncated")),
        duration=float(record.get("duration") or 0.0),
        error=record.get("error"),
        changed=record.get("changed"),
        details=tuple(record.get("details") or ()),
        host_key_verified=record.get("host_key_verified"),
        reason=record.get("reason"),
        become=BecomeStatus(str(become.get("user")), become.get("status")) if isinstance(become, dict) else None,
    )


def _batches(shards: Sequence[ShardResult]) -> tuple[BatchSummary, ...]:
    """Batch k of the merged run is batch k of every shard (a rollout's batches run within each shard)."""
    sizes: dict[int, int] = {}
    counts: dict[int, dict[Outcome, int]] = {}
    for shard in shards:
        for batch in shard.summary.get("batches") or ():
            index = int(batch["index"])
            sizes[index] = sizes.get(index, 0) + int(batch["size"])
            into = counts.setdefault(index, {})
            for status, count in dict(batch.get("counts") or {}).items():
                if status in _OUTCOMES:
                    into[_OUTCOMES[status]] = into.get(_OUTCOMES[status], 0) + int(count)
    return tuple(BatchSummary(index, sizes[index], counts[index]) for index in sorted(sizes))


def _stopped(shards: Sequence[ShardResult]) -> RolloutStop | None:
    for shard in shards:
        stop = shard.summary.get("stopped")
        if isinstance(stop, dict):
            return RolloutStop(str(stop.get("reason")), int(stop.get("after_batch") or 0),
                               f"shard {shard.index}/{shard.total}: {stop.get('message')}")
    return None


def merge(shards: Sequence[ShardResult]) -> Merged:
    """Check the shards, then join them: the merged exit status is what one unsharded run would have had."""
    check(shards)
    ordered = tuple(sorted(shards, key=lambda shard: shard.index))
    records = sorted((record for shard in ordered for record in shard.records), key=lambda record: str(record["host"]))
    results = tuple(result_from_record(record) for record in records)
    counts: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
    for result in results:
        counts[result.outcome] += 1
    # Every status a shard exited with (its hosts', an interrupt, a deadline, a "no" at --confirm) applies to
    # the whole, and the precedence picks the same winner as it would over one run's statuses.
    status = worst([*(shard.exit_status for shard in ordered), *(result.outcome.exit_status for result in results)])
    summary = RunSummary(
        total=len(results),
        counts=counts,
        elapsed=max(float(shard.summary.get("elapsed") or 0.0) for shard in ordered),  # the shards ran side by side
        exit_status=status,
        interrupted=any(bool(shard.summary.get("interrupted")) for shard in ordered),
        changed=sum(int(shard.summary.get("changed") or 0) for shard in ordered),
        unchanged=sum(int(shard.summary.get("unchanged") or 0) for shard in ordered),
        batches=_batches(ordered),
        stopped=_stopped(ordered),
    )
    return Merged(ordered, results, summary, tuple(records))
