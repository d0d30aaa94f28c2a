"""The rollout and journal side of the command line: --batch & co., --retry-failed, `runs` and `rerun`.

Kept out of cli.py so that file stays one screenful of commands; cli.py imports the option decorators and
registers the commands. Nothing here imports paramiko or starts threads.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from fleetrun.errors import SecretError, UsageError
from fleetrun.status import ExitStatus

if TYPE_CHECKING:
    from fleetrun.dispatch import Question
    from fleetrun.journal import JournalWriter
    from fleetrun.journal_read import Run
    from fleetrun.models import Host
    from fleetrun.rollout import Rollout

F = TypeVar("F", bound=Callable[..., Any])

# Options of a recorded run that `rerun` does not repeat: where the host list came from (the rerun gives the
# hosts), and report files (a rerun must not overwrite the original's --out-dir or --junit report). A shard's
# rerun acts on the hosts that shard recorded (its share), as a plain run: the share is not taken twice.
_NOT_REPEATED = ("pattern", "retry_failed", "out_dir", "junit", "shard", "shard_total")
_OUTPUT_OVERRIDES = ("output_format", "gather", "diff", "verbose", "quiet", "no_progress", "out_dir", "junit",
                     "no_journal")


def journal_options(function: F) -> F:
    """--retry-failed and --no-journal, on every command that connects (exec, push, pull)."""
    options = [
        click.option("--retry-failed", "retry_failed", is_flag=False, flag_value="", default=None, metavar="[RUN]",
                     help="Act on the hosts that did not end ok in RUN (default: the latest run of this inventory), "
                          "within --hosts if given. Put it after COMMAND, or use --retry-failed=RUN."),
        click.option("--no-journal", is_flag=True, help="Do not record this run in the run journal."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def rollout_options(function: F) -> F:
    """Rolling execution, on exec and push."""
    options = [
        click.option("--batch", metavar="SPEC",
                     help="Run in lock-step batches: N hosts, N% of the selected hosts, or a list like 1,5,20% "
                          "(the last size repeats). Batch k+1 starts when every host of batch k has ended."),
        click.option("--canary", metavar="N", help="A first batch of N hosts (or N%) that must all succeed."),
        click.option("--max-fail", metavar="N|N%",
                     help="Failures tolerated over the whole run (N% of the selected hosts); one more stops the "
                          "rollout. 0 stops at the first failure."),
        click.option("--continue-on-batch-failure", is_flag=True,
                     help="Without --max-fail, go on after a batch whose hosts all failed."),
        click.option("--abort-running", is_flag=True,
                     help="When the rollout stops, cancel the hosts still running instead of letting them finish."),
        click.option("--pause", type=click.FloatRange(min=0), default=0.0, metavar="S",
                     help="Seconds to wait between batches."),
        click.option("--confirm", is_flag=True, help="Ask before each batch after the first (needs a terminal)."),
        click.option("--order", default="inventory", show_default=True, metavar="ORDER",
                     help="Dispatch order: inventory, sorted, reverse, reverse_sorted, shuffle or shuffle:SEED."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def rollout_from(params: dict[str, Any]) -> Rollout | None:
    """The rollout the options ask for (None: a plain run); bad specs are exit 2 before anything connects."""
    from fleetrun.rollout import Order, Rollout, parse_batch, parse_canary, parse_max_fail, parse_order

    if "batch" not in params:  # pull: no rollout options
        return None
    rollout = Rollout(
        batch=parse_batch(params["batch"]) if params["batch"] is not None else None,
        canary=parse_canary(params["canary"]) if params["canary"] is not None else None,
        max_fail=parse_max_fail(params["max_fail"]) if params["max_fail"] is not None else None,
        continue_on_batch_failure=params["continue_on_batch_failure"],
        abort_running=params["abort_running"],
        pause=params["pause"] or 0.0,
        confirm=params["confirm"],
        order=parse_order(params["order"]) if params["order"] else Order(),
    )
    return None if rollout == Rollout() else rollout


def confirm_question(rollout: Rollout | None, err: TextIO) -> Question | None:
    """--confirm asks on the terminal; without one it is exit 2, before any connection."""
    if rollout is None or not rollout.confirm:
        return None
    from fleetrun.dispatch import TerminalQuestion

    def terminal(stream: Any) -> bool:
        try:
            return bool(stream.isatty())
        except (AttributeError, ValueError):
            return False

    # The answer comes from stdin and the question goes to stderr: both must be the operator's terminal, or
    # the question lands in a log file while the run waits for an answer nobody knows is wanted.
    if not (terminal(sys.stdin) and terminal(err)):
        raise UsageError("--confirm needs a terminal (stdin and stderr) to ask on; without one use --pause S, "
                         "--canary N or --max-fail N to pace and guard the rollout")
    return TerminalQuestion(sys.stdin.fileno(), err)


@dataclass(frozen=True)
class Rerun:
    """`fleetrun rerun` hands the recorded run to exec/push/pull through this parameter."""

    run: Run
    failed: bool


@dataclass(frozen=True)
class Planned:
    """The hosts a run acts on and where they came from (for the journal)."""

    hosts: list[Host]
    inventories: tuple[str, ...]  # the sources read, files as absolute paths; () for ad-hoc hosts
    pattern: str | None
    parent: str | None  # the run being retried
    ssh_config: bool = True  # whether the inventory lets ssh_config apply
    inventory_hosts: Mapping[str, Host] = field(default_factory=dict)  # every inventory host, for jump hops
    shard: Mapping[str, Any] | None = None  # --shard: fleetrun.shard.ShardInfo.record() (`hosts` is the share)


def plan_hosts(params: dict[str, Any], err: TextIO) -> Planned | None:
    """The selected hosts: --hosts, or a recorded run's (failed) hosts within --hosts. None: nothing to retry
    (already said on stderr; the caller exits 0 without connecting anywhere)."""
    from fleetrun.cli_shared import _inventory, select_in
    from fleetrun.journal import runs_dir
    from fleetrun.journal_read import latest_for, resolve_run

    rerun: Rerun | None = params.get("_rerun")
    pattern: str | None = params.get("pattern")
    retry: str | None = params.get("retry_failed")
    inventory = _inventory(params)
    sources = tuple(_absolute(source) for source in inventory.sources) if inventory is not None else ()
    if rerun is None and retry is None:
        if pattern is None:
            raise UsageError("--hosts is required: name the hosts, a group or 'all' "
                             "(only --retry-failed may go without it)")
        hosts, ssh_config = select_in(inventory, pattern, params)
        return Planned(hosts, sources, pattern, None, ssh_config, _every_host(inventory))
    if rerun is not None:
        run, names = rerun.run, (rerun.run.not_ok() if rerun.failed else rerun.run.selection())
    else:
        root = runs_dir()
        found = resolve_run(root, retry) if retry else latest_for(root, list(sources))
        if found is None:
            where = " of " + ", ".join(sources) if sources else " with ad-hoc hosts"
            raise UsageError(f"--retry-failed: no run{where} is recorded in {root}; "
                             "name one (`fleetrun runs list`) or run without it")
        run, names = found, found.not_ok()
    if not names:
        err.write(f"fleetrun: run {run.id} had no failed hosts: nothing to retry\n"
                  if rerun is None or rerun.failed else f"fleetrun: run {run.id} recorded no hosts\n")
        return None
    if inventory is None:  # ad-hoc hosts: their names are the specs they were given as
        hosts, ssh_config = select_in(None, ",".join(names), {})
        known = {host.name for host in hosts}
    else:
        wanted = set(names)
        hosts, ssh_config = [host for name, host in inventory.hosts.items() if name in wanted], inventory.ssh_config
        known = set(inventory.hosts)
    gone = [name for name in names if name not in known]
    if gone:
        from fleetrun.hostnames import fold

        err.write(f"fleetrun: warning: {len(gone)} host{'s' if len(gone) != 1 else ''} of run {run.id} "
                  f"no longer in {', '.join(sources)}, skipped: {fold(gone)}\n")
    if pattern is not None or params.get("exclude") or params.get("pick") is not None:
        # -H narrows the hosts to retry, and -x/--pick apply as on any run.
        chosen = {host.name for host in select_in(inventory, pattern or "all", params)[0]}
        hosts = [host for host in hosts if host.name in chosen]
    if not hosts:
        where = f" within --hosts {pattern!r}" if pattern is not None else " in the inventory"
        err.write(f"fleetrun: none of the {len(names)} hosts to retry from run {run.id} is left{where}: "
                  "nothing to do\n")
        return None
    return Planned(hosts, sources, pattern, run.id, ssh_config, _every_host(inventory))


def _every_host(inventory: Any) -> dict[str, Host]:
    return dict(inventory.hosts) if inventory is not None else {}


def _absolute(source: str) -> str:
    """An inventory source as the journal records it: files and directories by absolute path."""
    return os.path.abspath(source) if os.path.exists(source) else source


def _secrets(hosts: Sequence[Host], known: Sequence[str | None]) -> list[str]:
    """Every secret value this run could know, to mask in the journal."""
    from fleetrun.secrets import read_password

    found = [value for value in known if value]
    for host in hosts:
        try:
            password = read_password(host)
        except SecretError:  # reported properly when the run reads it
            continue
        if password:
            found.append(password)
    return found


def journal_for(params: dict[str, Any], planned: Planned, hosts: Sequence[Host],
                known_secrets: Sequence[str | None]) -> Callable[[TextIO], JournalWriter] | None:
    """The run journal for this run (None with --no-journal), made once the outputs know their stderr."""
    if params.get("no_journal"):
        return None
    from fleetrun.journal import RunMeta, runs_dir

    context = click.get_current_context()
    kind = context.command.name or "exec"
    options = {key: value for key, value in context.params.items() if not key.startswith("_")}
    # rerun reads the same sources whatever $FLEETRUN_INVENTORY says then
    options["inventory"] = [source for source in planned.inventories if not source.startswith("ansible-inventory ")]
    transfer: dict[str, Any] | None = None
    if kind == "push":
        transfer = {"local": os.path.abspath(options["local"]), "remote": options["remote"]}
    elif kind == "pull":
        transfer = {"remote": options["remote"], "local_dir": os.path.abspath(options["local_dir"])}
    root_obj = context.find_root().obj
    argv = root_obj.get("argv", sys.argv[1:]) if isinstance(root_obj, dict) else sys.argv[1:]
    meta = RunMeta(kind=kind, argv=tuple(argv), command=options.get("command") if kind == "exec" else None,
                   transfer=transfer, inventories=planned.inventories, pattern=planned.pattern, options=options,
                   cwd=os.getcwd(), parent=planned.parent, shard=planned.shard)
    secrets = _secrets(hosts, known_secrets)
    root = runs_dir()

    def make(err: TextIO) -> JournalWriter:
        from fleetrun.journal import JournalWriter

        return JournalWriter(root, meta, err, secrets=secrets)

    return make


# -- fleetrun runs ---------------------------------------------------------------------------------------------------


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
    if kind == "push":
        return f"push {transfer.get('local')} {transfer.get('remote')}"
    return f"pull {transfer.get('remote')} {transfer.get('local_dir')}"


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
