"""--shard K/N and --shard auto: a deterministic share of the selection, taken from the command line or from the
scheduler's variables, and the selection digest that lets `fleetrun runs merge` check the shards belong together.

Pure: no I/O but reading the environment mapping it is given. The rule (issue 13): sort the selected names in
plain string order; the host at 0-based position i goes to shard (i mod N) + 1. Shares differ in size by at most
one, need no coordination, and are the same on every machine that selects the same hosts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from fleetrun.errors import UsageError

TOTAL_ENV = "FLEETRUN_SHARD_TOTAL"


class Named(Protocol):
    @property
    def name(self) -> str: ...


H = TypeVar("H", bound=Named)


@dataclass(frozen=True)
class Scheduler:
    """Where one scheduler puts a copy's position: its index variable, its total variable and the index's base."""

    name: str
    index_var: str
    total_var: str | None  # None: the scheduler injects no total (Kubernetes); --shard-total gives it
    base: int  # 0 or 1: what the first copy's index variable says


SCHEDULERS: tuple[Scheduler, ...] = (
    Scheduler("Kubernetes Indexed Job", "JOB_COMPLETION_INDEX", None, 0),
    Scheduler("GitLab", "CI_NODE_INDEX", "CI_NODE_TOTAL", 1),
    Scheduler("Buildkite", "BUILDKITE_PARALLEL_JOB", "BUILDKITE_PARALLEL_JOB_COUNT", 0),
    Scheduler("CircleCI", "CIRCLE_NODE_INDEX", "CIRCLE_NODE_TOTAL", 0),
)


@dataclass(frozen=True)
class ShardSpec:
    """Which share this process takes: shard `index` (1-based) of `total`, and what said so (for messages)."""

    index: int
    total: int
    source: str  # "--shard 2/4", "GitLab CI_NODE_INDEX=2 CI_NODE_TOTAL=4"


@dataclass(frozen=True)
class ShardInfo:
    """What a shard run records (journal run header, JSON summary): enough for a merge to check its shards."""

    index: int
    total: int
    selection_sha256: str  # of the WHOLE selection, before the share was taken
    selection_count: int
    source: str

    def record(self) -> dict[str, Any]:
        return {"index": self.index, "total": self.total, "selection_sha256": self.selection_sha256,
                "selection_count": self.selection_count, "source": self.source}


def selection_digest(names: Iterable[str]) -> str:
    """sha256 (hex) of the names sorted in plain string order, each followed by "\\n": the journal's
    `selection.sha256` too, and the same as `fleetrun hosts -H PATTERN --names | LC_ALL=C sort | sha256sum`."""
    from fleetrun.journal import selection_sha256

    return selection_sha256(names)


def shard_of(position: int, total: int) -> int:
    """The 1-based shard of the host at 0-based `position` in name order."""
    return position % total + 1


def share(hosts: Sequence[H], index: int, total: int) -> list[H]:
    """The hosts of shard `index` of `total`, in the order `hosts` had them (the dispatch order stays --order's)."""
    ranked = sorted(range(len(hosts)), key=lambda position: hosts[position].name)
    mine = {position for rank, position in enumerate(ranked) if shard_of(rank, total) == index}
    return [host for position, host in enumerate(hosts) if position in mine]


def take_share(hosts: Sequence[H], spec: ShardSpec) -> tuple[list[H], ShardInfo]:
    """(this shard's hosts, what to record about it) out of the whole selection."""
    names = [host.name for host in hosts]
    info = ShardInfo(spec.index, spec.total, selection_digest(names), len(names), spec.source)
    return share(hosts, spec.index, spec.total), info


# -- reading --shard ---------------------------------------------------------------------------------------------

_AUTO_HINT = ("set by a Kubernetes Indexed Job (JOB_COMPLETION_INDEX, with --shard-total N), GitLab parallel: "
              "(CI_NODE_INDEX/CI_NODE_TOTAL), Buildkite (BUILDKITE_PARALLEL_JOB/BUILDKITE_PARALLEL_JOB_COUNT) or "
              "CircleCI (CIRCLE_NODE_INDEX/CIRCLE_NODE_TOTAL); elsewhere pass --shard K/N")


def _number(text: str, what: str, hint: str) -> int:
    value = text.strip()
    if not value.isascii() or not value.isdigit():
        raise UsageError(f"{what}={text!r} is not a whole number: {hint}")
    return int(value)


def parse_explicit(text: str) -> ShardSpec:
    """'2/4' → shard 2 of 4. K counts from 1, as GitLab names its jobs (`deploy 2/4`)."""
    hint = "give --shard K/N with 1 <= K <= N (shards count from 1: --shard 1/4 … 4/4), or --shard auto"
    index_text, slash, total_text = text.strip().partition("/")
    if not slash or not index_text.strip() or not total_text.strip():
        raise UsageError(f"--shard {text!r} is not K/N: {hint}")
    index = _number(index_text, "--shard K", hint)
    total = _number(total_text, "--shard N", hint)
    if total < 1:
        raise UsageError(f"--shard {text!r}: N must be at least 1: {hint}")
    if not 1 <= index <= total:
        raise UsageError(f"--shard {text!r}: K must be between 1 and {total}: {hint}")
    return ShardSpec(index, total, f"--shard {index}/{total}")


def _given_total(shard_total: int | None, environ: Mapping[str, str]) -> tuple[int, str] | None:
    """(the total from --shard-total, else $FLEETRUN_SHARD_TOTAL; where it came from), or None."""
    if shard_total is not None:
        if shard_total < 1:
            raise UsageError(f"--shard-total {shard_total}: the number of shards is at least 1; pass the Job's "
                             "spec.completions")
        return shard_total, "--shard-total"
    text = environ.get(TOTAL_ENV, "")
    if not text.strip():
        return None
    total = _number(text, TOTAL_ENV, "set it to the number of shards (the Job's spec.completions), or unset it")
    if total < 1:
        raise UsageError(f"{TOTAL_ENV}={text!r}: the number of shards is at least 1; fix or unset it")
    return total, TOTAL_ENV


def _from_scheduler(scheduler: Scheduler, environ: Mapping[str, str],
                    given_total: tuple[int, str] | None) -> ShardSpec | None:
    """The shard `scheduler`'s variables say, or None when they are not set; bad values are exit 2."""
    index_text = environ.get(scheduler.index_var, "")
    total_text = environ.get(scheduler.total_var, "") if scheduler.total_var else ""
    if not index_text.strip() and not total_text.strip():
        return None
    base = scheduler.base
    if scheduler.total_var is None:  # Kubernetes: the total is the Job's spec.completions, passed by hand
        if given_total is None:
            raise UsageError(f"{scheduler.index_var}={index_text} is set but the number of shards is not: pass "
                             f"--shard-total N (the Job's spec.completions) or set {TOTAL_ENV}")
        total, total_source = given_total
        total_said = f"{total_source} {total}"
    else:
        if not total_text.strip():
            raise UsageError(f"{scheduler.index_var}={index_text} is set but {scheduler.total_var} is not: set both "
                             f"({scheduler.name} does) or pass --shard K/N")
        total = _number(total_text, scheduler.total_var, "it must be the number of parallel jobs; unset it or "
                        "pass --shard K/N")
        if total < 1:
            raise UsageError(f"{scheduler.total_var}={total_text!r}: the number of parallel jobs is at least 1; "
                             "fix it or pass --shard K/N")
        total_said = f"{scheduler.total_var}={total}"
        if not index_text.strip():
            if total == 1:  # GitLab: a job without `parallel:` has CI_NODE_TOTAL=1 and no CI_NODE_INDEX
                return ShardSpec(1, 1, f"{scheduler.name} {total_said} (not parallel)")
            raise UsageError(f"{scheduler.total_var}={total} is set but {scheduler.index_var} is not: set both "
                             f"({scheduler.name} does) or pass --shard K/N")
        if given_total is not None and given_total[0] != total:
            raise UsageError(f"{given_total[1]} {given_total[0]} and {scheduler.total_var}={total} disagree: drop "
                             f"{given_total[1]} ({scheduler.name} gives the total) or make them the same")
    first, last = base, total - 1 + base
    index = _number(index_text, scheduler.index_var,
                    f"{scheduler.name} counts its jobs from {base}; unset it or pass --shard K/N")
    if not first <= index <= last:
        raise UsageError(f"{scheduler.index_var}={index} is out of range: with {total_said} it must be {first} to "
                         f"{last} ({scheduler.name} counts from {base}); check the job's variables or pass --shard K/N")
    said = f"{scheduler.name} {scheduler.index_var}={index}"
    return ShardSpec(index - base + 1, total, f"{said} {total_said}")


def from_environment(environ: Mapping[str, str], shard_total: int | None = None) -> ShardSpec:
    """--shard auto: the shard the scheduler's variables give. None set, or two that disagree, is exit 2."""
    given_total = _given_total(shard_total, environ)
    found = [spec for scheduler in SCHEDULERS
             if (spec := _from_scheduler(scheduler, environ, given_total)) is not None]
    if not found:
        raise UsageError(f"--shard auto: no scheduler variable is set; they are {_AUTO_HINT}")
    # A GitLab job without parallel: says 1/1 in passing (CI_NODE_TOTAL=1); a real index elsewhere outranks it.
    real = [spec for spec in found if not spec.source.endswith("(not parallel)")] or found[:1]
    first = real[0]
    for other in real[1:]:
        if (other.index, other.total) != (first.index, first.total):
            raise UsageError(f"--shard auto: {first.source} (shard {first.index}/{first.total}) and {other.source} "
                             f"(shard {other.index}/{other.total}) disagree: unset the variables that do not belong "
                             "to this job, or pass --shard K/N")
    return first


def parse_shard(text: str | None, shard_total: int | None, environ: Mapping[str, str]) -> ShardSpec | None:
    """--shard and --shard-total as given (None: not sharded)."""
    if text is None:
        if shard_total is not None:
            raise UsageError("--shard-total goes with --shard auto (the number of shards of a Kubernetes Indexed "
                             "Job); add --shard auto, or drop it")
        return None
    if text.strip().lower() == "auto":
        return from_environment(environ, shard_total)
    spec = parse_explicit(text)
    if shard_total is not None and shard_total != spec.total:
        raise UsageError(f"--shard {text} and --shard-total {shard_total} disagree: drop --shard-total "
                         "(K/N already gives the total)")
    return spec


def share_names(names: Sequence[str], index: int, total: int) -> list[str]:
    """`share` over bare names (fleetrun hosts --fold/--expand/--count)."""
    ranked = sorted(set(names))
    mine = {name for rank, name in enumerate(ranked) if shard_of(rank, total) == index}
    return [name for name in names if name in mine]


def check_options(spec: ShardSpec, *, retry_failed: bool, rerun: bool, pick: int | None, seed: str | None) -> None:
    """Refuse what would make the shards' selections differ, so that their results could not be merged."""
    if retry_failed or rerun:
        # Each shard's journal holds only its own share: shares of those would not add up to one selection.
        what = "--retry-failed" if retry_failed else "rerun"
        raise UsageError(f"--shard does not go with {what}: each shard's journal holds only its own hosts; list the "
                         "hosts to retry with `fleetrun runs merge SHARDS… --names --status not-ok > retry.txt`, then "
                         "run every shard with -H ^retry.txt --shard K/N")
    if pick is not None and seed is None:
        raise UsageError(f"--pick {pick} picks differently in each shard, so the shards would not share one "
                         "selection: add --seed S (the same in every shard)")


def empty_share_note(info: ShardInfo) -> str:
    """The stderr line for a shard with no hosts (N > the number of selected hosts): not an error."""
    count = info.selection_count
    return (f"fleetrun: note: shard {info.index}/{info.total} has no hosts (the selection has {count} "
            f"host{'s' if count != 1 else ''}); recorded as a run of none, so `fleetrun runs merge` sees this shard\n")
