"""The rollout and journal side of the command line: --batch & co., --retry-failed, and the journal a run writes.

Kept out of cli.py so that file stays one screenful of commands; cli.py imports the option decorators; the
`runs` and `rerun` commands are in cli_journal.py. Nothing here imports paramiko or starts threads.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from fleetrun.errors import SecretError, UsageError

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
