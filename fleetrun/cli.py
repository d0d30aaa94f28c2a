"""The click commands: parse flags, call one core function, render, return an exit status. No paramiko here."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from fleetrun import __version__
from fleetrun.cli_runs import journal_options, rerun_command, rollout_options, runs_group
from fleetrun.errors import FleetrunError, UsageError
from fleetrun.status import ExitStatus

if TYPE_CHECKING:  # imported where used: `fleetrun --help` stays quick
    from fleetrun.output.base import Renderer, SinkFactory
    from fleetrun.output.progress import ProgressRenderer

F = TypeVar("F", bound=Callable[..., Any])

SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """'4M' → 4194304; plain numbers are bytes."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = value[-1:] if value[-1:] in SIZE_UNITS else ""
    number = value[: len(value) - len(unit)]
    if not number.isdigit():
        raise UsageError(f"--max-output: {text!r} is not a size like 4M, 512K or 1048576")
    return int(number) * SIZE_UNITS[unit]


def _complete_pattern(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    from fleetrun.completion import complete_pattern  # only on a TAB

    return complete_pattern(ctx, incomplete)


def _complete_files(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    from fleetrun.completion import complete_files

    return complete_files(ctx, param, incomplete)


def host_list_options(function: F) -> F:
    """-x, --pick and --seed: applied to the hosts -H selected, whatever the pattern's syntax."""
    options = [
        click.option("-x", "--exclude", "exclude", metavar="PATTERN", multiple=True, shell_complete=_complete_pattern,
                     help="Leave out the hosts PATTERN selects (after -H; repeatable), like clush -x. Hosts a "
                          "^FILE list names that are not there are fine; a name typed that matches none is an "
                          "error."),
        click.option("--pick", type=click.IntRange(min=1), metavar="N",
                     help="Only N hosts of the selection, at random (like clush --pick)."),
        click.option("--seed", metavar="S", help="Make --pick choose the same hosts every time for the same S."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def inventory_option(function: F) -> F:
    function = click.option(
        "--ansible-inventory", "ansible_inventory", metavar="SRC", multiple=True, shell_complete=_complete_files,
        help="Read SRC through `ansible-inventory -i SRC --list` (plugins, vault); needs Ansible. Repeatable.",
    )(function)
    return click.option(
        "-i",
        "--inventory",
        metavar="SRC",
        multiple=True,
        shell_complete=_complete_files,
        help="Inventory: fleetrun YAML, Ansible INI/YAML, an Ansible inventory directory, an executable, "
        "--list JSON, or - for JSON on stdin. Repeatable; merged in order (default: $FLEETRUN_INVENTORY, "
        "./inventory.yaml, ~/.config/fleetrun/inventory.yaml).",
    )(function)


def ssh_config_option(function: F) -> F:
    return click.option(
        "--ssh-config", "ssh_config", metavar="FILE|none", envvar="FLEETRUN_SSH_CONFIG", shell_complete=_complete_files,
        help="OpenSSH client config to resolve hosts with, instead of ~/.ssh/config and /etc/ssh/ssh_config "
             "(like ssh -F); 'none' reads none. Env: FLEETRUN_SSH_CONFIG.",
    )(function)


def run_options(function: F) -> F:
    """Options shared by every command that connects to hosts."""
    options = [
        click.option("-H", "--hosts", "pattern", metavar="PATTERN", shell_complete=_complete_pattern,
                     help="Hosts to act on: names, groups, all, globs, ranges, ^FILE or @FILE (names one per "
                          "line); ',' union, '&' and, '!' except. With no inventory: host names themselves "
                          "('web01,deploy@10.0.0.5:2222', ranges, ^FILE), resolved through ssh_config like pdsh -w. "
                          "Required, except with --retry-failed."),
        host_list_options,
        inventory_option,
        ssh_config_option,
        click.option("-u", "--user", help="Log in as USER (overrides the inventory and ssh_config)."),
        click.option("-p", "--port", type=click.IntRange(1, 65535),
                     help="SSH port (overrides the inventory and ssh_config)."),
        click.option("-k", "--key", metavar="FILE",
                     help="Private key file, tried first (overrides the inventory; ssh_config's IdentityFiles next)."),
        click.option("--key-passphrase-env", metavar="NAME", help="Read the key passphrase from $NAME."),
        click.option("--ask-pass", is_flag=True, help="Prompt once for a password (only on a terminal)."),
        click.option("--no-agent/--agent", "no_agent", default=False, help="Do not offer ssh-agent keys."),
        click.option("--host-key-checking", type=click.Choice(["yes", "accept-new", "no"]), default=None,
                     help="accept-new: record unknown keys; no: labs only, never changed keys. Default: "
                          "ssh_config's StrictHostKeyChecking (ask: yes; no: accept-new), else yes."),
        click.option("--connect-timeout", type=click.FloatRange(min=0.1), default=None,
                     help="Seconds for TCP connect, SSH handshake and authentication together "
                     "(overrides the inventory; default 10)."),
        click.option("-J", "--jump", metavar="SPEC",
                     help="Reach every host through these bastions, like ssh -J: '[user@]host[:port],…' visited "
                          "in order, or 'none' (overrides the inventory's jump and ssh_config's ProxyJump)."),
        click.option("--max-per-gateway", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Hosts connected at once through one bastion (default: --forks)."),
        click.option("--forward-agent", is_flag=True,
                     help="Forward your ssh-agent to the hosts (ssh -A); root on them can use it meanwhile."),
        click.option("-t", "--timeout", type=click.FloatRange(min=0.1), default=None,
                     help="Seconds per host for the command; it is killed on the host when exceeded."),
        click.option("--deadline", type=click.FloatRange(min=0.1), default=None,
                     help="Seconds for the whole run; running hosts time out, queued ones are not started."),
        click.option("--lock", metavar="FILE",
                     help="Hold an exclusive lock on FILE for the run; if another run holds it, exit 75."),
        click.option("-f", "--forks", type=click.IntRange(1, 4096), default=64, show_default=True,
                     help="Hosts worked on at once."),
        click.option("--format", "output_format", type=click.Choice(["table", "gather", "stream", "json"]),
                     default="table", show_default=True,
                     help="table: a row per host; gather: hosts with the same output folded into one block; "
                          "stream: 'host | line' live; json: JSON Lines."),
        click.option("-g", "gather", is_flag=True, help="Same as --format gather."),
        click.option("--diff", is_flag=True, help="Gather, showing each minority group as a diff against the largest."),
        click.option("-v", "--verbose", is_flag=True, help="Show full output (table, gather: stderr of ok hosts too)."),
        click.option("-q", "--quiet", is_flag=True, help="Only hosts that did not end ok, and the summary line "
                     "(the progress line still shows on a terminal)."),
        click.option("--no-progress/--progress", "no_progress", default=False,
                     help="No live progress line on the terminal's stderr."),
        click.option("--out-dir", metavar="DIR",
                     help="Write DIR/<host>.out, .err (complete raw output), .status (JSON) and DIR/summary.json."),
        click.option("--junit", metavar="FILE", help="Write a JUnit XML report, one testcase per host."),
    ]
    function = journal_options(function)  # listed after the others in --help
    for option in reversed(options):
        function = option(function)
    return function


def _read_secret_env(name: str | None, what: str) -> str | None:
    from fleetrun.secrets import read_env_secret

    return read_env_secret(name, what)  # taken out of the environment, and masked wherever it would show


def _password_prompt(ask: bool) -> Callable[[], str] | None:
    """--ask-pass: the prompt the run calls once its keys and files are read, or None.

    No terminal (stdin a pipe, a file, /dev/null or closed) is exit 2 at once, before anything else.
    """
    if not ask:
        return None
    if sys.stdin is None or not sys.stdin.isatty():
        raise UsageError("--ask-pass needs a terminal; without one use password_env or password_file in the inventory")
    def prompt() -> str:
        from fleetrun.secrets import remember

        try:
            password = getpass.getpass("SSH password: ")
        except EOFError:  # Ctrl-D
            raise UsageError("--ask-pass: no password entered") from None
        remember(password)
        return password

    return prompt


def _masked(text: str) -> str:
    """`text` with every secret this process read masked: an error's text may come from anywhere."""
    from fleetrun.secrets import redact

    return redact(text)


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

        return JsonRenderer(out)
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
        err.write("fleetrun: pattern read as fleetrun syntax (',' '&' '!' strictly left to right)\n")
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
    from fleetrun.cli_runs import confirm_question, journal_for, plan_hosts, rollout_from
    from fleetrun.runner import RunOptions, execute

    rollout = rollout_from(params)
    planned = plan_hosts(params, sys.stderr)
    if planned is None:  # --retry-failed / rerun --failed with nothing left: done, nowhere connected
        return int(ExitStatus.OK)
    hosts = _resolve(planned.hosts, params, planned.ssh_config, planned.inventory_hosts)
    if adjust is not None:
        hosts = adjust(hosts)
    question = confirm_question(rollout, sys.stderr)
    defaults = _split_defaults(params)[1]
    options = RunOptions(
        forks=params["forks"],
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


def _completion_option(name: str, help_text: str) -> Callable[[F], F]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        from fleetrun.completion import show_or_install

        show_or_install(ctx, param, value)

    return click.option(name, type=click.Choice(["bash", "zsh", "fish"]), metavar="SHELL", expose_value=False,
                        is_eager=True, callback=callback, help=help_text)


# show_default: each option's help shows its default, the defaults file's value when it sets one.
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100, "show_default": True})
@click.version_option(__version__, prog_name="fleetrun")
@click.option("--config", metavar="FILE|none", shell_complete=_complete_files,
              help="The defaults file (default: $FLEETRUN_CONFIG, else ~/.config/fleetrun/config.yaml); 'none' "
                   "reads none. Give it before the command: fleetrun --config FILE exec …")
@_completion_option("--install-completion", "Install TAB completion for SHELL (bash, zsh, fish) and exit.")
@_completion_option("--show-completion", "Print the completion script for SHELL and exit (to install it yourself).")
@click.pass_context
def cli(ctx: click.Context, config: str | None) -> None:
    """Run commands and move files across a fleet over SSH, in parallel, safely.

    \b
    Exit status (when several apply, the first in this order wins: 143, 130, 129, 5, 4, 3, 1, 0):
      0    every host ok
      1    a command failed (non-zero exit or killed by a signal), or a transfer failed
      2    usage or configuration error; nothing ran
      3    a host timed out (--timeout, or --deadline reached)
      4    a host could not be reached or authenticated
      5    host key verification failed (unknown, changed or revoked)
      70   internal error (a bug; FLEETRUN_DEBUG=1 shows the traceback)
      75   another run holds the --lock file
      129  hung up (SIGHUP: the terminal or ssh session went away)
      130  interrupted (SIGINT, Ctrl-C)
      143  terminated (SIGTERM)

    Defaults for the options: ~/.config/fleetrun/config.yaml (see the README, Defaults file).
    """
    from fleetrun.defaults import default_map, load_defaults

    if ctx.invoked_subcommand == "lab":
        return  # the lab takes nothing from the file: a mistake in it must not stand in the way of `lab down`
    # Before the command's own options are parsed: they take these as defaults, and --help shows them.
    defaults = load_defaults(config)
    ctx.meta[_DEFAULTS_KEY] = defaults
    ctx.default_map = default_map(defaults, cli)


MISSING_COMMAND = "Missing argument 'COMMAND...' (or --script FILE)."
COMMAND_HINT = ("put the options first and the command words last, as with ssh (fleetrun exec -H web ls -l), "
                "or quote the command as one word ('ls -l')")


class ExecCommand(click.Command):
    """`exec`'s parsing: as with ssh, everything from the first command word on is the command.

    `fleetrun exec -H all ls -l` runs `ls -l`. The quoted form `fleetrun exec 'df -h' -H web --format json`,
    where -H comes after the command, is not ambiguous either and keeps working: when -H/--hosts is not among
    the options before the first command word, that word must be the whole command and what follows it is
    parsed as fleetrun's options. Several words are then refused rather than guessed at (is `-v` grep's
    or fleetrun's in `grep -v x -H web`?).
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.allow_interspersed_args = not self._hosts_before_command(ctx, args)
        given = list(args)  # the parser consumes its list
        try:
            rest = super().parse_args(ctx, args)
        except click.NoSuchOption as error:
            if not ctx.allow_interspersed_args or not self._after_a_command_word(ctx, given, error.option_name):
                raise  # a mistyped option before any command word: click's own "did you mean"
            raise click.UsageError(f"{error.message.rstrip('.')}: {COMMAND_HINT}", ctx) from None
        if not ctx.params.get("command") and ctx.params.get("script_path") is None and not ctx.resilient_parsing:
            raise click.UsageError(MISSING_COMMAND, ctx)
        return rest

    def _after_a_command_word(self, ctx: click.Context, args: list[str], option: str) -> bool:
        """Whether `option` comes after a word that is neither an option nor an option's value: then it may
        well be the command's own option (`ls -l -H web`), not a typo of fleetrun's."""
        takes_value = {name for param in self.get_params(ctx) if isinstance(param, click.Option)
                       and not param.is_flag and not param.count for name in param.opts}
        expect_value = False
        for word in args:
            if word == option or word.startswith(option + "="):
                return False
            if expect_value:
                expect_value = False
            elif word.startswith("-"):
                expect_value = word in takes_value
            else:
                return True
        return False

    def _hosts_before_command(self, ctx: click.Context, args: list[str]) -> bool:
        parser = self.make_parser(ctx)
        parser.allow_interspersed_args = False
        try:
            options, _, _ = parser.parse_args(args=list(args))  # a copy: the parser consumes its list
        except click.UsageError:
            return False  # the real parse below reports it
        return "pattern" in options


def _join_command(ctx: click.Context, param: click.Parameter, words: tuple[str, ...]) -> str:
    """The command words joined by single spaces, as ssh joins them (the words themselves are kept for
    --script, whose arguments they are)."""
    if ctx.allow_interspersed_args and len(words) > 1:
        raise click.UsageError(f"-H/--hosts does not come before the command, so the command must be one "
                               f"quoted word, not {len(words)} ({' '.join(words)}): {COMMAND_HINT}", ctx)
    joined = " ".join(words)
    ctx.meta["fleetrun.command_words"] = (joined, words)
    return joined


def _ask_become_prompt(ask: bool) -> Callable[[], str] | None:
    """-K: the sudo password prompt the run calls once, after --ask-pass; no terminal is exit 2 at once."""
    if not ask:
        return None
    if sys.stdin is None or not sys.stdin.isatty():
        raise UsageError("-K/--ask-become-pass needs a terminal; without one use become_password_env or "
                         "become_password_file in the inventory")

    def prompt() -> str:
        from fleetrun.secrets import remember

        try:
            password = getpass.getpass("sudo password: ")
        except EOFError:  # Ctrl-D
            raise UsageError("-K/--ask-become-pass: no password entered") from None
        remember(password)
        return password

    return prompt


def _stdin_forwarded(no_stdin: bool) -> bool:
    """ssh's rule: stdin goes to the commands unless it is a terminal, or -n/--no-stdin says not to."""
    if no_stdin:
        return False
    try:
        return not os.isatty(0)
    except OSError:
        return False


@cli.command("exec", cls=ExecCommand)
@run_options
@rollout_options
@click.option("--max-output", default="4M", show_default=True, metavar="SIZE",
              help="Output kept per stream per host; the rest is counted and marked truncated.")
@click.option("--raw", is_flag=True,
              help="Send the command as is, without the wrapper (for non-POSIX login shells); a command that "
                   "times out or is cancelled is then only disconnected and may keep running.")
@click.option("-b", "--become", "--sudo", "become", is_flag=True,
              help="Run the command through sudo, as --become-user (default root).")
@click.option("--become-user", metavar="USER", help="The user sudo runs the command as (implies -b).")
@click.option("-K", "--ask-become-pass", "ask_become_pass", is_flag=True,
              help="Prompt once for the sudo password (only on a terminal), for hosts without a "
                   "become_password_env/become_password_file.")
@click.option("--become-pty", is_flag=True,
              help="Run sudo on a terminal, for hosts whose sudoers say requiretty (the command's stdin is then "
                   "empty, and stdout and stderr are one stream).")
@click.option("--become-timeout", type=click.FloatRange(min=0.1), default=15.0, show_default=True, metavar="S",
              help="Seconds for sudo to ask for the password or start the command (--timeout counts after).")
@click.option("-n", "--no-stdin", is_flag=True,
              help="Send nothing on the commands' stdin (as ssh -n); by default fleetrun's stdin, when it is not "
                   "a terminal, goes to every host.")
@click.option("--script", "script_path", metavar="FILE",
              help="Run the local script FILE on every host (its #! line picks the interpreter); the command "
                   "words are its arguments. Nothing of it is left on the host.")
@click.option("--env", "env_options", metavar="NAME=VALUE", multiple=True,
              help="Export NAME=VALUE to the command (repeatable; over the inventory's env). Never a secret: "
                   "it is on the host's command line.")
@click.option("--template", is_flag=True,
              help="Replace {host}, {address} and {vars.NAME} in the command per host, quoted for the shell "
                   "({{ and }} for literal braces).")
@click.argument("command", nargs=-1, required=False, callback=_join_command)
def exec_command(command: str, max_output: str, **params: Any) -> int:
    """Run COMMAND on every selected host, in the login shell, as `ssh host COMMAND` would.

    Options come first, then the command; its words are joined by spaces, as ssh joins them:
    `fleetrun exec -H web df -h`. `--` ends the options. A command quoted as one word may also come
    first: `fleetrun exec 'df -h' -H web`. With --script FILE, the words are the script's arguments.
    """
    from fleetrun.exec_task import exec_task

    params["max_output_bytes"] = parse_size(max_output)
    spec = _exec_spec(command, params)
    return run_on_hosts(params, lambda: exec_task(spec), adjust=lambda hosts: _exec_hosts(hosts, spec, params))


def _exec_spec(command: str, params: dict[str, Any]) -> Any:
    """exec's run-wide plan (fleetrun.commandplan.ExecSpec) from its options; usage errors here are exit 2."""
    import shlex

    from fleetrun.become import new_run_id
    from fleetrun.commandplan import ExecSpec, load_script, parse_env_options

    context = click.get_current_context()
    script = None
    if params["script_path"] is not None:
        joined, words = context.meta.get("fleetrun.command_words", ("", ()))
        args = list(words) if joined == command else shlex.split(command or "")  # rerun: recorded shlex-joined
        script = load_script(params["script_path"], args)
        context.params["command"] = command = shlex.join(args)  # what the journal records (rerun splits it)
        if params["raw"]:
            raise UsageError("--script needs the wrapper, which --raw leaves out; drop one of them")
        if params["become_pty"]:
            raise UsageError("--script is sent on stdin, which --become-pty makes a terminal; drop one of them")
    elif not command:
        raise click.UsageError(MISSING_COMMAND, context)
    env = parse_env_options(params["env_options"])
    if env and params["raw"]:
        raise UsageError("--env is exported by the wrapper, which --raw leaves out; drop one of them")
    stdin = None
    if _stdin_forwarded(params["no_stdin"]):
        from fleetrun.stdin_spool import StdinSpool

        stdin = StdinSpool(0)
    return ExecSpec(
        command="" if script is not None else command,
        script=script,
        template=params["template"],
        env=env,
        become_pty=params["become_pty"],
        become_timeout=params["become_timeout"],
        stdin=stdin,
        run_id=new_run_id(),
    )


def _exec_hosts(hosts: list[Any], spec: Any, params: dict[str, Any]) -> list[Any]:
    """-b/--become-user over the inventory's become settings; then every host's plan is checked (exit 2)."""
    from dataclasses import replace

    from fleetrun.commandplan import check

    if params["become"] or params["become_user"]:
        hosts = [replace(host, become=True, become_user=params["become_user"] or host.become_user)
                 for host in hosts]
    becoming = [host.name for host in hosts if host.become]
    if params["ask_become_pass"] and not becoming:
        raise UsageError("-K/--ask-become-pass: no selected host runs its command through sudo; add -b")
    if becoming and params["raw"]:
        raise UsageError(f"host {becoming[0]} becomes another user, which needs the wrapper --raw leaves out")
    check(spec, hosts)
    return hosts


@cli.command("push")
@click.argument("local")
@click.argument("remote")
@run_options
@rollout_options
@click.option("-r", "--recursive", is_flag=True,
              help="Push a directory tree: directory modes are kept, symlinks recreated, special files skipped.")
@click.option("-L", "--copy-links", is_flag=True, help="With -r: push what symlinks point to, not the links.")
@click.option("--mode", metavar="OCTAL",
              help="File mode on the host, e.g. 0644 (default: the local file's; directories keep theirs).")
@click.option("--mkdir", is_flag=True, help="Create missing parent directories on the host.")
@click.option("--backup", is_flag=True, help="Keep the replaced file as NAME.fleetrun-bak.")
@click.option("--owner", metavar="USER[:GROUP]",
              help="chown the pushed files and symlinks (a link itself, never its target; needs the right to).")
@click.option("--verify", is_flag=True, help="Check the SHA-256 on the host after uploading, before the rename.")
@click.option("-c", "--checksum", is_flag=True,
              help="Compare files of the same size by SHA-256, whatever their mtimes (as rsync -c); default: "
                   "same size and mtime is unchanged, unread.")
@click.option("--max-transfers", type=click.IntRange(min=1), default=None,
              help="Uploads in flight at once across all hosts (default: --forks).")
def push_command(local: str, remote: str, recursive: bool, copy_links: bool, mode: str | None, mkdir: bool,
                 backup: bool, owner: str | None, verify: bool, checksum: bool, max_transfers: int | None,
                 **params: Any) -> int:
    """Copy LOCAL to REMOTE on every selected host: atomically, and only where it differs.

    REMOTE ending in / (or an existing directory there) means "into this directory".
    """
    from fleetrun.transfer import parse_mode, plan_push, push_task

    plan = plan_push(local, remote, recursive=recursive, mode=parse_mode(mode), mkdir=mkdir, backup=backup,
                     owner=owner, verify=verify, copy_links=copy_links, checksum=checksum)
    return run_on_hosts(params, lambda: push_task(plan, max_transfers or params["forks"]))


@cli.command("pull")
@click.argument("remote")
@click.argument("local_dir", metavar="LOCALDIR")
@run_options
@click.option("-r", "--recursive", is_flag=True, help="Pull a directory tree.")
def pull_command(remote: str, local_dir: str, recursive: bool, **params: Any) -> int:
    """Copy REMOTE from every selected host to LOCALDIR/<host>/."""
    from fleetrun.pull import plan_pull, pull_task

    plan = plan_pull(remote, local_dir, recursive=recursive)
    return run_on_hosts(params, lambda: pull_task(plan))


TRANSFER_TIMEOUT_HELP = ("Seconds per host for the whole transfer once connected (checks, copying, rename); when "
                         "exceeded the host is 'timeout', its temp file removed and the target left as it was.")
for _command in (push_command, pull_command):  # -t bounds the transfer here, not a command
    next(p for p in _command.params if p.name == "timeout").help = TRANSFER_TIMEOUT_HELP


@cli.command("hosts")
@click.argument("arguments", nargs=-1, metavar="[PATTERN | NAMES...]", shell_complete=_complete_pattern)
@click.option("-H", "--hosts", "hosts_pattern", metavar="PATTERN", shell_complete=_complete_pattern,
              help="Hosts to list, as for exec (default: all). The PATTERN argument does the same.")
@host_list_options
@inventory_option
@ssh_config_option
@click.option("--names", is_flag=True, help="Only the names, one per line (for scripts).")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table",
              help="json: JSON Lines, one object per host (name, address, port, user, groups, vars).")
@click.option("--explain", is_flag=True,
              help="Every resolved connection setting of each host and where it came from (command line, "
                   "inventory, ssh_config file:line, default), like ssh -G.")
@click.option("--fold", is_flag=True,
              help="Print the names folded into one node set, e.g. web[01-05,07],db1 (as nodeset -f).")
@click.option("--expand", is_flag=True, help="Print every name, sorted as nodeset -e does.")
@click.option("--count", is_flag=True, help="Print how many names there are (as nodeset -c).")
@click.option("-S", "--separator", default=" ", show_default=repr,
              help="What --expand puts between names (\\n for one per line), as nodeset -S.")
def hosts_command(arguments: tuple[str, ...], hosts_pattern: str | None, names: bool, output_format: str,
                  explain: bool, fold: bool, expand: bool, count: bool, separator: str, **params: Any) -> int:
    """List the hosts PATTERN selects, as ssh_config resolves them, without connecting.

    With no inventory, PATTERN names the hosts themselves: `fleetrun hosts --explain web01` shows what
    fleetrun (like `ssh -G web01`) would use for web01.

    With --fold, --expand or --count (ClusterShell's nodeset -f, -e, -c) the arguments are NAMES: node sets
    such as web[01-05],db1 (',' '&' '!' left to right, ^FILE), read without any inventory; with none, they are
    read from stdin. -H PATTERN folds, expands or counts what the inventory selects instead.
    """
    actions = [flag for flag, given in (("--fold", fold), ("--expand", expand), ("--count", count)) if given]
    if len(actions) > 1:
        raise UsageError(f"{' and '.join(actions)} do not go together: pick one")
    if actions:
        for flag, given in (("--names", names), ("--format json", output_format == "json"), ("--explain", explain)):
            if given:
                raise UsageError(f"{flag} and {actions[0]} do not go together: pick one")
        return _node_set(actions[0], arguments, hosts_pattern, separator, params)
    if len(arguments) > 1:
        raise UsageError(f"one PATTERN, not {len(arguments)} ({' '.join(arguments)}): join them with ',' "
                         "(node sets go with --fold, --expand or --count)")
    pattern = arguments[0] if arguments else None
    if pattern is not None and hosts_pattern is not None and pattern != hosts_pattern:
        raise UsageError(f"two patterns given ({pattern!r} and -H {hosts_pattern!r}): give one")
    if names and output_format == "json":
        raise UsageError("--names and --format json do not go together: pick one")
    inventory = _inventory(params)
    selected, ssh_config_allowed = select_in(inventory, hosts_pattern or pattern or "all", params, listing=True,
                                             quiet=names or output_format == "json")
    out = sys.stdout
    local = getpass.getuser()
    if names:
        out.write("".join(f"{host.name}\n" for host in selected))
        return int(ExitStatus.OK)
    hosts = _resolve(selected, {**params, "jump": None, "forward_agent": False}, ssh_config_allowed,
                     dict(inventory.hosts) if inventory is not None else {})
    if output_format == "json":
        from fleetrun.output.json import inventory_record

        out.write("".join(inventory_record(host, local) for host in hosts))
        return int(ExitStatus.OK)
    if explain:
        from fleetrun.resolve import explain as explain_host

        for index, host in enumerate(hosts):
            settings = explain_host(host, local)
            widths = [max(len(row[column]) for row in settings) for column in (0, 1)]
            out.write(("\n" if index else "") + f"{host.name}\n")
            out.write("".join(f"  {name.ljust(widths[0])}  {value.ljust(widths[1])}  {where}\n"
                              for name, value, where in settings))
        return int(ExitStatus.OK)
    from fleetrun.output.base import aligned

    rows = [(h.name, h.address, str(h.port), h.user or local, ",".join(h.groups)) for h in hosts]
    out.write(aligned(("HOST", "ADDRESS", "PORT", "USER", "GROUPS"), rows))
    out.write(f"{len(hosts)} host{'s' if len(hosts) != 1 else ''}\n")
    return int(ExitStatus.OK)


def _node_set(action: str, arguments: tuple[str, ...], hosts_pattern: str | None, separator: str,
              params: dict[str, Any]) -> int:
    """`fleetrun hosts --fold/--expand/--count`: over NAMES (or stdin) without an inventory, or over -H's hosts."""
    from fleetrun.nodesets import given_names, render

    if hosts_pattern is not None:
        if arguments:
            raise UsageError(f"{action} takes NAMES or -H PATTERN (the inventory's hosts), not both")
        names = [host.name for host in _select(params, hosts_pattern, listing=True, quiet=True)[0]]
    else:
        _check_pick(params)
        context = click.get_current_context()
        if any(context.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE
               for name in ("inventory", "ansible_inventory")):  # the defaults file's is simply not read here
            raise UsageError(f"{action} over NAMES reads no inventory: for the inventory's hosts use -H PATTERN")
        names = given_names(arguments, sys.stdin, params.get("exclude") or (), params.get("pick"),
                            params.get("seed"), action)
    sys.stdout.write(render(action, names, separator))
    return int(ExitStatus.OK)


@cli.group("inventory")
def inventory_group() -> None:
    """Inspect and convert inventories (fleetrun YAML, Ansible INI/YAML/directories/scripts/JSON)."""


@inventory_group.command("export")
@inventory_option
@click.option("--format", "form", type=click.Choice(["ansible-json", "ansible-yaml", "fleetrun"]),
              default="ansible-yaml", show_default=True,
              help="ansible-json: the `ansible-inventory --list` shape; ansible-yaml: an Ansible YAML inventory; "
              "fleetrun: fleetrun's YAML.")
def inventory_export(form: str, **params: Any) -> int:
    """Write the whole inventory to stdout in another format: every host with its resolved settings."""
    from fleetrun.sources.export import export

    text, warnings = export(_load(params), form)
    for warning in warnings:
        sys.stderr.write(f"fleetrun: warning: {warning}\n")
    sys.stdout.write(text)
    return int(ExitStatus.OK)


cli.add_command(runs_group)
cli.add_command(rerun_command)


@cli.group("lab")
def lab_group() -> None:
    """A throwaway local fleet of real sshd processes on loopback (for demos, tests and benchmarks)."""


@lab_group.command("up")
@click.argument("count", type=click.IntRange(1, 5000))
@click.option("--dir", "directory", default=".lab", show_default=True, help="Where the lab keeps its files.")
def lab_up(count: int, directory: str) -> int:
    """Start COUNT sshd hosts on loopback and write an inventory for them."""
    from fleetrun.lab import shown_path as shown
    from fleetrun.lab import start_lab

    lab = start_lab(count, Path(directory).resolve())
    err = sys.stderr
    srv = "each with its own /srv" if lab.private_srv else "sharing this machine's filesystem"

    # All the hosts run on this machine: $FLEETRUN_LAB_HOST is what tells them apart.
    err.write(
        f"started {len(lab.hosts)} hosts ({lab.hosts[0].address} … {lab.hosts[-1].address}), {srv}\n"
        f"try:  fleetrun exec -i {shown(lab.inventory)} 'echo $FLEETRUN_LAB_HOST; uptime' --hosts all\n"
        f"stop: fleetrun lab down --dir {shown(lab.directory)}\n"
    )
    return int(ExitStatus.OK)


@lab_group.command("down")
@click.option("--dir", "directory", default=".lab", show_default=True, help="The lab's directory.")
def lab_down(directory: str) -> int:
    """Stop the lab's sshd processes (exactly those it started)."""
    from fleetrun.lab import stop_lab

    stopped = stop_lab(Path(directory).resolve())
    sys.stderr.write(f"stopped {stopped} sshd processes\n")
    return int(ExitStatus.OK)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: the one place that turns errors into messages and exit statuses."""
    err = sys.stderr
    # paramiko imports `invoke` (and with it unittest.mock) only for its own ssh_config's "Match exec"; fleetrun
    # reads ssh_config with fleetrun.sshconfig (Match exec via subprocess): 0.1-0.2 s of CPU per run saved.
    sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
    from fleetrun import quiet

    quiet.install(debug=bool(os.environ.get("FLEETRUN_DEBUG")))
    try:
        args = list(sys.argv[1:] if argv is None else argv)
        status = cli.main(args=args, prog_name="fleetrun", standalone_mode=False, obj={"argv": args})
    except click.exceptions.Exit as done:
        status = done.exit_code
    except click.Abort:
        err.write("fleetrun: aborted\n")
        status = ExitStatus.INTERRUPTED
    except click.UsageError as error:
        from fleetrun.usage import usage_message

        words = sys.argv[1:] if argv is None else argv
        err.write(f"fleetrun: error: {_masked(usage_message(error, cli, words))}\n")
        status = ExitStatus.USAGE
    except click.ClickException as error:
        err.write(f"fleetrun: error: {_masked(' '.join(error.format_message().split()))}\n")
        status = ExitStatus.USAGE if error.exit_code == 2 else error.exit_code
    except FleetrunError as error:
        err.write(f"fleetrun: error: {_masked(str(error))}\n")
        status = error.exit_status
    except KeyboardInterrupt:
        err.write("fleetrun: interrupted\n")
        status = ExitStatus.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more to say to it; keep Python quiet at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = ExitStatus.OK
    except Exception as error:
        hint = " (set FLEETRUN_DEBUG=1 for a traceback)"
        if os.environ.get("FLEETRUN_DEBUG"):
            import traceback

            # Printed here rather than re-raised: a traceback shows the error's text, which may hold a secret.
            err.write(_masked("".join(traceback.format_exception(error))))
            hint = ""
        err.write(_masked(f"fleetrun: internal error: {error.__class__.__name__}: {error}{hint}\n"))
        status = ExitStatus.INTERNAL
    _flush_or_drop()
    sys.exit(int(status or 0))


def _flush_or_drop() -> None:
    """Flush stdout and stderr now; one that cannot be written (a hung-up terminal, a closed pipe) is pointed at
    /dev/null, so Python's own flush at exit neither prints a traceback nor turns the exit status into 120."""
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, stream.fileno())
                os.close(devnull)
