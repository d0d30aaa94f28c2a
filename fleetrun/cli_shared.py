"""What the commands share between parsing and running: secrets and prompts, renderers, host selection and
resolution, and run_on_hosts, the body of exec/push/pull."""

from __future__ import annotations

import getpass
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from fleetrun.cli_options import shard_spec
from fleetrun.errors import UsageError
from fleetrun.status import ExitStatus

if TYPE_CHECKING:  # imported where used: `fleetrun --help` stays quick
    from fleetrun.output.base import Renderer, SinkFactory
    from fleetrun.output.progress import ProgressRenderer

def _read_secret_env(name: str | None, what: str) -> str | None:
    from fleetrun.secrets import read_env_secret

    return read_env_secret(name, what)  # taken out of the environment, and masked wherever it would show


def _password_prompt(ask: bool) -> Callable[[], str] | None:
    """--ask-pass: the prompt the run calls once its keys and files are read, or None.

    No terminal (stdin a pipe, a file, /dev/null or closed) is exit 2 at once, before anything else.
    """
    return _terminal_prompt("SSH password: ", "--ask-pass", "password_env or password_file") if ask else None


def _ask_become_prompt(ask: bool) -> Callable[[], str] | None:
    """-K: the sudo password prompt the run calls once, after --ask-pass; no terminal is exit 2 at once."""
    if not ask:
        return None
    return _terminal_prompt("sudo password: ", "-K/--ask-become-pass", "become_password_env or become_password_file")


def _terminal_prompt(text: str, option: str, instead: str) -> Callable[[], str]:
    """A prompt on the terminal for one secret, which redaction then masks; UsageError at once without one."""
    if sys.stdin is None or not sys.stdin.isatty():
        raise UsageError(f"{option} needs a terminal; without one use {instead} in the inventory")

    def prompt() -> str:
        from fleetrun.secrets import remember

        try:
            password = getpass.getpass(text)
        except EOFError:  # Ctrl-D
            raise UsageError(f"{option}: no password entered") from None
        remember(password)
        return password

    return prompt


def _masked(text: str) -> str:
    """`text` with every secret this process read masked (an error's text may come from anywhere), and
    printable whatever bytes a name in it had."""
    from fleetrun.errors import printable
    from fleetrun.secrets import redact

    return printable(redact(text))


def _output_format(params: dict[str, Any]) -> str:
    """--format, with -g and --diff folded in."""
    output_format: str = params["output_format"]
    if params["gather"] or params["diff"]:
        if output_format not in ("table", "gather"):
            raise UsageError(f"-g/--diff show gathered output; they do not go with --format {output_format}")
        output_format = "gather"
    return output_format


def _make_renderer(params: dict[str, Any], out: TextIO, err: TextIO) -> Any:
    """The renderer for the screen, as --format, -v and the terminal ask."""
    from fleetrun.output.base import use_colour

    output_format, verbose = _output_format(params), params["verbose"]
    if output_format == "json":
        from fleetrun.output.json import JsonRenderer

        return JsonRenderer(out, {"shard": params["_shard"]} if params.get("_shard") else None)
    if output_format == "stream":
        from fleetrun.output.stream import StreamRenderer

        return StreamRenderer(out, err)
    if output_format == "gather":
        from fleetrun.output.gather import GatherRenderer

        return GatherRenderer(out, diff=params["diff"], verbose=verbose, colour=use_colour(out))
    from fleetrun.output.table import TableRenderer

    width = shutil.get_terminal_size().columns if out.isatty() else None
    return TableRenderer(out, verbose=verbose, width=width, colour=use_colour(out))


def _make_outputs(
    params: dict[str, Any], out: TextIO, err: TextIO, journal: Callable[[TextIO], Renderer] | None = None
) -> tuple[Renderer, SinkFactory | None, ProgressRenderer | None, TextIO]:
    """(renderer fanning out to screen, progress, --out-dir, --junit and the run journal; the raw-output sink
    factory or None; the progress display or None; stderr to use from now on)."""
    from fleetrun.output.fanout import Fanout, OnlyProblems

    renderers: list[Renderer] = []
    progress = None
    # --confirm's question and a redrawn progress line would fight over the same terminal line. -q trims the
    # results, not the progress (issue 14).
    if err.isatty() and not params["no_progress"] and not params.get("confirm"):
        from fleetrun.output.progress import ProgressRenderer

        progress = ProgressRenderer(err)
        out, err = progress.guard(out), progress.guard(err)  # both erase the progress line before writing
        renderers.append(progress)
    screen = _make_renderer(params, out, err)
    renderers.append(OnlyProblems(screen) if params["quiet"] else screen)
    sinks = None
    if params["out_dir"]:
        from fleetrun.output.outdir import OutDirRenderer

        out_dir = OutDirRenderer(params["out_dir"], err)
        renderers.append(out_dir)
        sinks = out_dir.open_sink
    if params["junit"]:
        from fleetrun.output.junit import JunitRenderer

        context = click.get_current_context()
        described = {k: v for k, v in context.params.items() if k in ("command", "local", "remote", "pattern")}
        renderers.append(JunitRenderer(params["junit"], err, suite=context.command_path,
                                       properties={k: str(v) for k, v in described.items() if v is not None}))
    if journal is not None:
        renderers.append(journal(err))
    return Fanout(renderers), sinks, progress, err


def _load(params: dict[str, Any]) -> Any:
    """Every -i and --ansible-inventory source, merged; their warnings go to stderr once.

    Raises NoInventory when none was given and none is found (the caller may then treat -H names as hosts).
    """
    from fleetrun.inventory import find_inventory
    from fleetrun.sources import load_sources

    specs = list(params.get("inventory") or ())
    ansible_sources = tuple(params.get("ansible_inventory") or ())
    if not specs and not ansible_sources:
        specs = [str(find_inventory(None))]
    inventory = load_sources(specs, ansible_sources)
    for warning in inventory.warnings:
        sys.stderr.write(f"fleetrun: warning: {warning}\n")
    return inventory


def _inventory(params: dict[str, Any]) -> Any:
    """The merged inventory, or None when none was given or found (then -H names the hosts themselves)."""
    from fleetrun.inventory import NoInventory

    try:
        return _load(params)
    except NoInventory:
        return None


def _select(params: dict[str, Any], pattern: str, *, listing: bool = False,
            quiet: bool = False) -> tuple[list[Any], bool]:
    """(selected hosts, whether the inventory lets ssh_config apply); with no inventory, -H names the hosts.

    -x and --pick then narrow what -H selected. `listing` (fleetrun hosts): hosts that cannot be run on are
    listed, not refused, and unless `quiet` (output for scripts) stderr says which pattern syntax was read.
    """
    return select_in(_inventory(params), pattern, params, listing=listing, quiet=quiet)


def select_in(inventory: Any, pattern: str, params: dict[str, Any], *, listing: bool = False,
              quiet: bool = False) -> tuple[list[Any], bool]:
    """`_select` within an inventory already loaded (None: ad-hoc hosts); -x/--pick come from `params`."""
    from fleetrun.inventory import Inventory
    from fleetrun.selection import select

    _check_pick(params)
    if inventory is None:
        if pattern.strip() in ("all", "*"):
            from fleetrun.inventory import find_inventory

            find_inventory(None)  # raises: "all" of nothing, so say where we looked for an inventory
        from fleetrun.adhoc import adhoc_hosts

        hosts = adhoc_hosts(pattern)
        # -x picks among the -H hosts, as if they were the inventory: globs and ranges work, typos are caught.
        named = Inventory(path=Path("-H"), hosts={host.name: host for host in hosts}, groups={})
        return _pick(params, _exclude(params, hosts, named, pattern)), True
    hosts = _exclude(params, select(inventory, pattern), inventory, pattern)
    refused = [host.name for host in hosts if host.name in inventory.unsupported]
    if refused and not listing:
        first = refused[0]
        more = f" (and {len(refused) - 1} more: {', '.join(refused[1:4])}{'…' if len(refused) > 4 else ''})" \
            if len(refused) > 1 else ""
        from fleetrun.selection import syntax

        # Said in the pattern's own syntax, so that pasting it back works.
        joiner = ("," if "," in pattern else ":") if syntax(inventory, pattern) == "ansible" else ""
        raise UsageError(f"host {first!r}{more} cannot be run on: {inventory.unsupported[first]}; leave it out "
                         f"of the pattern (e.g. -H '{pattern}{joiner}!{first}')")
    if listing:
        _describe_selection(inventory, pattern, refused, syntax_line=not quiet)
    return _pick(params, hosts), inventory.ssh_config


def _check_pick(params: dict[str, Any]) -> None:
    if params.get("seed") is not None and params.get("pick") is None:
        raise UsageError("--seed only goes with --pick N (it makes the pick repeatable)")


def _exclude(params: dict[str, Any], hosts: list[Any], universe: Any, pattern: str) -> list[Any]:
    """`hosts` without those each -x pattern selects from `universe` (the inventory, or the -H hosts)."""
    from fleetrun.errors import SelectionError
    from fleetrun.selection import exclude, select

    excludes = tuple(params.get("exclude") or ())
    for excluded in excludes:
        try:
            hosts = exclude(hosts, select(universe, excluded, excluding=True))
        except SelectionError as error:
            raise SelectionError(f"-x {excluded!r}: {error}") from None
    if not hosts:
        given = " ".join(f"-x {excluded!r}" for excluded in excludes)
        raise SelectionError(f"-H {pattern!r} {given} leaves no host")
    return hosts


def _pick(params: dict[str, Any], hosts: list[Any]) -> list[Any]:
    from fleetrun.selection import pick

    count = params.get("pick")
    return hosts if count is None else pick(hosts, count, params.get("seed"))


def _describe_selection(inventory: Any, pattern: str, refused: list[str], *, syntax_line: bool) -> None:
    """For `fleetrun hosts`: which pattern syntax was read, and the hosts that could not be run on."""
    from fleetrun.selection import syntax

    err = sys.stderr
    if not syntax_line or not any(char in pattern for char in ",&!:~["):
        pass  # for scripts, or a pattern that reads the same in both syntaxes: nothing worth saying
    elif syntax(inventory, pattern) == "ansible":
        from fleetrun.ansible_patterns import describe

        err.write(f"fleetrun: pattern read as Ansible syntax (unions, then &, then !): {describe(pattern)}\n")
    else:
        err.write("fleetrun: pattern read as fleetrun syntax (',' '&' '!' '^' strictly left to right)\n")
    for name in refused[:3]:
        err.write(f"fleetrun: note: {name} cannot be run on: {inventory.unsupported[name]}\n")
    if len(refused) > 3:
        err.write(f"fleetrun: note: … and {len(refused) - 3} more hosts that cannot be run on\n")


def _warner(err: TextIO) -> Callable[[str], None]:
    def warn(message: str) -> None:
        err.write(f"fleetrun: warning: {message}\n")
        err.flush()

    return warn


# Flags that override the inventory and ssh_config for every host. Set in the defaults file they are defaults
# instead: below the inventory and ssh_config, used only where neither says anything.
_HOST_SETTINGS = ("user", "connect_timeout", "host_key_checking", "ssh_config")
_DEFAULTS_KEY = "fleetrun.defaults"  # ctx.meta: the Defaults read before the command's options


def _split_defaults(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params without the values click took from the defaults file for per-host settings, the file's values
    for those settings, also for commands without the option, such as `fleetrun hosts`)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return params, {}
    defaults = ctx.meta.get(_DEFAULTS_KEY)
    from_file = {name: defaults.values[name] for name in _HOST_SETTINGS if defaults and name in defaults.values}
    taken = [name for name in _HOST_SETTINGS if name in params and name in ctx.params
             and ctx.get_parameter_source(name) == click.core.ParameterSource.DEFAULT_MAP]
    return {**params, **dict.fromkeys(taken)}, from_file


def _resolve(hosts: list[Any], params: dict[str, Any], ssh_config_allowed: bool,
             inventory: Mapping[str, Any]) -> list[Any]:
    """Command-line overrides, then ssh_config below them and the inventory (issue 9), then the defaults file,
    then jump routes (each hop resolved through `inventory`, every inventory host by name, then ssh_config)."""
    from dataclasses import replace

    from fleetrun.resolve import config_source, resolve_hosts
    from fleetrun.route import parse_jump_option, plan_routes
    from fleetrun.runner import apply_overrides

    params, defaults = _split_defaults(params)
    jump = parse_jump_option(params["jump"]) if params.get("jump") is not None else None
    hosts = apply_overrides(hosts, user=params.get("user"), port=params.get("port"), key=params.get("key"),
                            connect_timeout=params.get("connect_timeout"),
                            host_key_checking=params.get("host_key_checking"), jump=jump)
    # The file's ssh_config ranks below the inventory's `ssh_config: false`, as the built-in default does.
    source = config_source(params.get("ssh_config") or (defaults.get("ssh_config") if ssh_config_allowed else None),
                           ssh_config_allowed)
    resolution = resolve_hosts(hosts, source, _warner(sys.stderr))
    resolved = resolution.hosts
    if defaults.get("user"):  # the local user's stand-in: only for hosts nothing else gave a user
        origin = {"user": (click.get_current_context().meta[_DEFAULTS_KEY].origin("user"),)}
        resolved = [host if host.user else replace(host, user=defaults["user"], origins={**host.origins, **origin})
                    for host in resolved]
    if params.get("forward_agent"):
        resolved = [replace(host, forward_agent=True, origins={**host.origins, "forward_agent": ("--forward-agent",)})
                    for host in resolved]
    return plan_routes(resolved, resolution.config, inventory, host_key_checking=params.get("host_key_checking"),
                       connect_timeout=params.get("connect_timeout"))


def run_on_hosts(params: dict[str, Any], task_factory: Callable[[], Any],
                 adjust: Callable[[list[Any]], list[Any]] | None = None) -> int:
    """Shared body of exec/push/pull: select hosts, build options, run the task, return the exit status.

    `adjust` (exec) changes and checks the resolved hosts before anything connects."""
    from dataclasses import replace

    from fleetrun.admission import usable_cores
    from fleetrun.cli_runs import confirm_question, journal_for, plan_hosts, rollout_from
    from fleetrun.runner import RunOptions, execute

    rollout = rollout_from(params)
    shard = shard_spec(params, retry_failed=params.get("retry_failed") is not None,
                       rerun=params.get("_rerun") is not None)
    planned = plan_hosts(params, sys.stderr)
    if planned is None:  # --retry-failed / rerun --failed with nothing left: done, nowhere connected
        return int(ExitStatus.OK)
    if shard is not None:
        from fleetrun.shard import empty_share_note, take_share

        share, info = take_share(planned.hosts, shard)
        if not share:  # still a run (journal, JSON summary): the merge must see every shard
            sys.stderr.write(empty_share_note(info))
        planned = replace(planned, hosts=share, shard=info.record())
        params["_shard"] = planned.shard  # for the JSON summary
    hosts = _resolve(planned.hosts, params, planned.ssh_config, planned.inventory_hosts)
    # From here on only the resolved hosts count: the inventory's own copies go before the run (issue 13).
    planned = replace(planned, hosts=[], inventory_hosts={})
    if adjust is not None:
        hosts = adjust(hosts)
    if (params.get("procs") or 1) > 1 and any(host.via for host in hosts):
        # fleetrun.runner runs such a run in one process: one bastion login must carry all its hosts.
        click.echo(f"fleetrun: warning: running in one process, not {params['procs']} (--procs): hosts are "
                   "reached through a bastion, whose one shared login carries them all", err=True)
        params["procs"] = 1
    question = confirm_question(rollout, sys.stderr)
    defaults = _split_defaults(params)[1]
    options = RunOptions(
        forks=params["forks"],
        max_handshakes=params.get("max_handshakes"),
        procs=params.get("procs") or usable_cores(),
        connect_timeout=defaults.get("connect_timeout", 10.0),  # for hosts that have none of their own
        timeout=params["timeout"],
        deadline=params["deadline"],
        max_output=params.get("max_output_bytes", 4 << 20),
        # The command line's, else (below the hosts' own policies) the defaults file's, else yes.
        host_key_checking=params["host_key_checking"] or defaults.get("host_key_checking") or "yes",
        key_passphrase=_read_secret_env(params["key_passphrase_env"], "--key-passphrase-env"),
        ask_password=_password_prompt(params["ask_pass"]),
        ask_become_password=_ask_become_prompt(params.get("ask_become_pass", False)),
        use_agent=not params["no_agent"],
        raw=params.get("raw", False),
        max_per_gateway=params["max_per_gateway"],
    )
    journal = journal_for(params, planned, hosts, (options.password, options.key_passphrase))
    from fleetrun.lock import run_lock

    with run_lock(params["lock"]):
        renderer, sinks, progress, err = _make_outputs(params, sys.stdout, sys.stderr, journal)
        try:
            summary = execute(hosts, task_factory(), options, renderer, err, sinks=sinks, rollout=rollout,
                              question=question)
        finally:
            if progress is not None:  # also when the run failed before finishing: no line left on the terminal
                progress.stop()
    return int(summary.exit_status)
