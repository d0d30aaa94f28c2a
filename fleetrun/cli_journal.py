"""`fleetrun runs` (list, show, merge, prune) and `fleetrun rerun`: the run journal on the command line."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import click

from fleetrun.errors import UsageError, printable
from fleetrun.status import ExitStatus

if TYPE_CHECKING:
    pass

from fleetrun.cli_runs import _NOT_REPEATED, _OUTPUT_OVERRIDES, Rerun


@click.group("runs")
def runs_group() -> None:
    """The run journal: what ran, when, on which hosts, and how it ended.

    Runs are kept under $XDG_STATE_HOME/fleetrun/runs (~/.local/state when unset; FLEETRUN_STATE_DIR overrides).
    """


def _outcome_text(summary: dict[str, Any] | None, going: bool) -> str:
    if summary is None:
        return "running" if going else "incomplete"
    counts = summary.get("counts") or {}
    text = ", ".join(f"{count} {status}" for status, count in counts.items()) or "no hosts"
    if summary.get("stopped"):
        text += " (stopped)"
    return text


def _what(info: dict[str, Any] | Any) -> str:
    kind = info.get("kind", "?")
    if kind == "exec":
        return f"exec {info.get('command')!r}"
    transfer = info.get("transfer") or {}
    # printable: a path that is not UTF-8 is recorded as it was given (its bytes kept as surrogates)
    if kind == "push":
        return printable(f"push {transfer.get('local')} {transfer.get('remote')}")
    return printable(f"pull {transfer.get('remote')} {transfer.get('local_dir')}")


def _local_time(text: str | None) -> str:
    if not text:
        return "-"
    from datetime import datetime

    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return text


@runs_group.command("list")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="The newest N runs.")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
def runs_list(limit: int, output_format: str) -> int:
    """The recorded runs, newest first: id, start, command, hosts, results, exit status."""
    import json

    from fleetrun.journal import is_going, runs_dir
    from fleetrun.journal_read import list_runs

    runs = list_runs(runs_dir())[-limit:][::-1]
    out = sys.stdout
    if output_format == "json":
        for run in runs:
            out.write(json.dumps({**run.info, "summary": run.summary()}, ensure_ascii=True) + "\n")
        return int(ExitStatus.OK)
    from fleetrun.output.base import aligned

    rows = []
    for run in runs:
        info, summary = run.info, run.summary()
        what = _what(info)
        status = info.get("exit_status")
        rows.append((run.id, _local_time(info.get("started")), what if len(what) <= 50 else what[:49] + "…",
                     str((info.get("selection") or {}).get("count", "?")),
                     _outcome_text(summary, not run.finished and is_going(run.path)),
                     "-" if status is None else str(status)))
    if rows:
        out.write(aligned(("ID", "STARTED", "WHAT", "HOSTS", "RESULT", "EXIT"), rows))
    else:
        sys.stderr.write(f"fleetrun: no runs recorded in {runs_dir()}\n")
    return int(ExitStatus.OK)


def _statuses(text: str | None) -> set[str] | None:
    """--status: outcome words (dashes for spaces allowed), comma-separated; `not-ok` is all but ok."""
    if text is None:
        return None
    from fleetrun.models import Outcome

    valid = {outcome.value for outcome in Outcome}
    wanted: set[str] = set()
    for part in text.split(","):
        word = part.strip().replace("-", " ").replace("_", " ")
        if word == "not ok":
            wanted |= valid - {"ok"} | {"no record"}
        elif word in valid or word == "no record":
            wanted.add(word)
        else:
            raise UsageError(f"--status {part.strip()!r}: use one of {', '.join(sorted(valid))}, no-record "
                             "or not-ok (comma-separated)")
    return wanted


@runs_group.command("show")
@click.argument("run_ref", metavar="RUN", default="latest")
@click.option("--status", "status_filter", metavar="S[,S…]",
              help="Only hosts with these statuses (e.g. failed,unreachable; not-ok: all but ok).")
@click.option("--names", is_flag=True, help="Only the host names, one per line.")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="json: the run record, the fleetrun/1 host records, then the summary record (JSON Lines).")
def runs_show(run_ref: str, status_filter: str | None, names: bool, output_format: str) -> int:
    """One run: what ran and each host's result. RUN is an id, a unique prefix, `latest` or a run directory."""
    import json

    from fleetrun.journal import runs_dir
    from fleetrun.journal_read import resolve_run

    run = resolve_run(runs_dir(), run_ref)
    wanted = _statuses(status_filter)
    records = run.host_records()
    selected = run.selection() or list(records)
    rows = [(name, records.get(name)) for name in selected]
    rows = [(name, record) for name, record in rows
            if wanted is None or (record.get("status") if record else "no record") in wanted]
    out = sys.stdout
    if names:
        out.write("".join(f"{name}\n" for name, _ in rows))
        return int(ExitStatus.OK)
    summary = run.summary()
    if output_format == "json":
        out.write(json.dumps({**run.info, "type": "run"}, ensure_ascii=True) + "\n")
        for _, record in rows:
            if record is not None:
                out.write(json.dumps(record, ensure_ascii=True) + "\n")
        if summary is not None:
            out.write(json.dumps(summary, ensure_ascii=True) + "\n")
        return int(ExitStatus.OK)
    from fleetrun.output.base import aligned

    info = run.info
    out.write(f"run {run.id}: {_what(info)} on {(info.get('selection') or {}).get('count', '?')} hosts\n")
    status = info.get("exit_status")
    out.write(f"started {_local_time(info.get('started'))}, ended {_local_time(info.get('ended'))}, "
              f"exit {'-' if status is None else status}"
              + (f", retrying {info['parent']}" if info.get("parent") else "") + "\n")
    table = [(name, record["status"] if record else "no record",
              "" if not record or record.get("exit_code") is None else str(record["exit_code"]),
              (record.get("error") or "") if record else "") for name, record in rows]
    if table:
        out.write(aligned(("HOST", "STATUS", "EXIT", "ERROR"), table))
    if summary is not None:
        out.write(f"{_outcome_text(summary, False)}"
                  + (f"; {summary['stopped']['message']}" if summary.get("stopped") else "") + "\n")
    return int(ExitStatus.OK)


@runs_group.command("merge")
@click.argument("paths", nargs=-1, required=True, metavar="DIR_OR_FILES...")
@click.option("--format", "output_format", type=click.Choice(["table", "gather", "json"]), default="table",
              show_default=True, help="As for exec: a row per host, hosts with the same output folded, or JSON Lines "
                                      "(whose summary lists the shards under `merged`).")
@click.option("--diff", is_flag=True, help="Gather, showing each minority group as a diff against the largest.")
@click.option("-v", "--verbose", is_flag=True, help="Show full output (stderr of ok hosts too).")
@click.option("-q", "--quiet", is_flag=True, help="Only hosts that did not end ok, and the summary line.")
@click.option("--junit", metavar="FILE", help="Write a JUnit XML report of the merged run, one testcase per host.")
@click.option("--names", is_flag=True, help="Only the host names, one per line (with --status: a list to retry); "
                                           "exits 0 once the shards check out.")
@click.option("--status", "status_filter", metavar="S[,S…]",
              help="Only hosts with these statuses (e.g. failed,unreachable; not-ok: all but ok).")
def runs_merge(paths: tuple[str, ...], output_format: str, diff: bool, verbose: bool, quiet: bool,
               junit: str | None, names: bool, status_filter: str | None) -> int:
    """Join the results of `--shard K/N` runs into one run, shown as that run would have been, with the exit
    status it would have had.

    Each of DIR_OR_FILES is a shard's `--format json` output, a run directory of the journal, or a directory
    holding such files. Refused (exit 2): an input that is not a finished shard result, shards of different
    selections, a shard given twice or missing, a host in two shards.
    """
    from fleetrun.runs_merge import load_all, merge

    wanted = _statuses(status_filter)
    if wanted is not None and not names:
        raise UsageError("--status goes with --names (the host names to retry, say); add --names")
    merged = merge(load_all(paths))
    out, err = sys.stdout, sys.stderr
    if names:
        out.write("".join(f"{result.host.name}\n" for result in merged.results
                          if wanted is None or result.outcome.value in wanted))
        return int(ExitStatus.OK)
    from fleetrun.output.base import Renderer
    from fleetrun.output.fanout import Fanout, OnlyProblems

    if output_format == "json":
        from fleetrun.output.json import JsonRenderer

        screen: Renderer = JsonRenderer(out, merged.record())
    else:
        from fleetrun.cli_shared import _make_renderer

        screen = _make_renderer({"output_format": output_format, "gather": False, "diff": diff, "verbose": verbose},
                                out, err)
    renderers: list[Renderer] = [OnlyProblems(screen) if quiet else screen]
    if junit:
        from fleetrun.output.junit import JunitRenderer

        first = merged.shards[0]
        properties = {"shards": str(merged.total)}
        if first.command is not None:
            properties["command"] = first.command
        renderers.append(JunitRenderer(junit, err, suite=f"fleetrun {first.kind or 'runs merge'}",
                                       properties=properties))
    renderer = Fanout(renderers)
    renderer.on_start([result.host for result in merged.results])
    for result in merged.results:
        renderer.on_result(result)
    renderer.on_finish(merged.summary)
    return int(merged.summary.exit_status)


def parse_size_option(text: str, option: str) -> int:
    from fleetrun.cli_options import parse_size

    try:
        return parse_size(text)
    except UsageError:
        raise UsageError(f"{option}: {text!r} is not a size like 500M, 2G or 1048576") from None


@runs_group.command("prune")
@click.option("--keep", type=click.IntRange(min=0), default=200, show_default=True, help="Runs to keep at most.")
@click.option("--max-size", default="500M", show_default=True, metavar="SIZE", help="Total size to keep at most.")
def runs_prune(keep: int, max_size: str) -> int:
    """Remove the oldest runs beyond --keep runs or --max-size (never a run still going, nor `latest`)."""
    from fleetrun.journal import prune, runs_dir

    limit = parse_size_option(max_size, "--max-size")
    done = prune(runs_dir(), keep, limit)
    sys.stderr.write(f"removed {done.removed} run{'s' if done.removed != 1 else ''} ({done.freed / 1e6:.1f} MB); "
                     f"kept {done.kept} ({done.kept_bytes / 1e6:.1f} MB)\n")
    return int(ExitStatus.OK)


# -- fleetrun rerun --------------------------------------------------------------------------------------------------


@click.command("rerun")
@click.argument("run_ref", metavar="[RUN]", default="latest")
@click.option("--failed", is_flag=True, help="Only the hosts of RUN that did not end ok (else all of RUN's hosts).")
@click.option("-H", "--hosts", "pattern", metavar="PATTERN", help="Only those of these hosts that PATTERN selects.")
@click.option("--format", "output_format", type=click.Choice(["table", "gather", "stream", "json"]), default=None,
              help="Output format (default: RUN's).")
@click.option("-g", "gather", is_flag=True, help="Same as --format gather.")
@click.option("--diff", is_flag=True, help="Gather, showing each minority group as a diff against the largest.")
@click.option("-v", "--verbose", is_flag=True, help="Show full output.")
@click.option("-q", "--quiet", is_flag=True, help="Only hosts that did not end ok, and the summary line.")
@click.option("--no-progress", is_flag=True, help="No live progress line.")
@click.option("--out-dir", metavar="DIR", help="As for exec (RUN's --out-dir is not reused).")
@click.option("--junit", metavar="FILE", help="As for exec (RUN's --junit is not reused).")
@click.option("--no-journal", is_flag=True, help="Do not record this rerun.")
@click.pass_context
def rerun_command(context: click.Context, /, run_ref: str, failed: bool, pattern: str | None, **overrides: Any) -> Any:
    """Run RUN's command (or push, or pull) again with its options, on its hosts or, with --failed, on those
    that did not end ok. RUN defaults to `latest`; the rerun is recorded with RUN as its parent.

    Nothing left to retry: says so and exits 0 without connecting, so `until fleetrun rerun --failed; do
    sleep 60; done` ends once every host is ok.
    """
    from fleetrun.journal import runs_dir
    from fleetrun.journal_read import resolve_run

    run = resolve_run(runs_dir(), run_ref)
    info = run.info
    if info.get("redacted"):
        raise UsageError(f"run {run.id} was recorded with a secret masked in its command line: "
                         "rerun it by hand")
    root = context.find_root().command
    command = root.commands.get(str(info.get("kind"))) if isinstance(root, click.Group) else None
    if command is None:
        raise UsageError(f"run {run.id}: cannot rerun a {info.get('kind')!r} run")
    params: dict[str, Any] = {key: value for key, value in dict(info.get("options") or {}).items()
                              if key not in _NOT_REPEATED}
    for key in _OUTPUT_OVERRIDES:
        value = overrides.get(key)
        if value:
            params[key] = os.path.abspath(value) if key in ("out_dir", "junit") else value
    known = {param.name for param in command.params}
    params = {key: value for key, value in params.items() if key in known}
    params.update(pattern=pattern, _rerun=Rerun(run, failed))
    cwd = str(info.get("cwd") or "")
    if cwd and cwd != os.getcwd():
        try:
            os.chdir(cwd)  # relative paths in RUN's options mean what they meant then
        except OSError as error:
            raise UsageError(f"run {run.id} ran in {cwd}, which is gone ({error.strerror}); "
                             "run the command again by hand") from None
    return context.invoke(command, **params)
