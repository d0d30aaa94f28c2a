"""The click commands: parse flags, call one core function, render, return an exit status. No paramiko here."""

from __future__ import annotations

import atexit
import contextlib
import gc
import getpass
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from fleetrun import __version__
from fleetrun.cli_exec import exec_command
from fleetrun.cli_journal import rerun_command, runs_group
from fleetrun.cli_options import (
    F,
    _complete_files,
    _complete_pattern,
    host_list_options,
    inventory_option,
    run_options,
    shard_options,
    shard_spec,
    ssh_config_option,
)
from fleetrun.cli_runs import rollout_options
from fleetrun.cli_shared import (
    _DEFAULTS_KEY,
    _check_pick,
    _inventory,
    _load,
    _masked,
    _resolve,
    _select,
    run_on_hosts,
    select_in,
)
from fleetrun.errors import FleetrunError, UsageError
from fleetrun.status import ExitStatus

if TYPE_CHECKING:  # imported where used: `fleetrun --help` stays quick
    pass

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


cli.add_command(exec_command)


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
@shard_options
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
    such as web[01-05],db1 (',' '&' '!' '^' left to right, ^FILE), read without any inventory; with none, they are
    read from stdin. -H PATTERN folds, expands or counts what the inventory selects instead.
    """
    actions = [flag for flag, given in (("--fold", fold), ("--expand", expand), ("--count", count)) if given]
    if len(actions) > 1:
        raise UsageError(f"{' and '.join(actions)} do not go together: pick one")
    if actions:
        for flag, given in (("--names", names), ("--format json", output_format == "json"), ("--explain", explain)):
            if given:
                raise UsageError(f"{flag} and {actions[0]} do not go together: pick one")
        return _node_set(actions[0], arguments, hosts_pattern, separator, params, shard_spec(params))
    if len(arguments) > 1:
        raise UsageError(f"one PATTERN, not {len(arguments)} ({' '.join(arguments)}): join them with ',' "
                         "(node sets go with --fold, --expand or --count)")
    pattern = arguments[0] if arguments else None
    if pattern is not None and hosts_pattern is not None and pattern != hosts_pattern:
        raise UsageError(f"two patterns given ({pattern!r} and -H {hosts_pattern!r}): give one")
    if names and output_format == "json":
        raise UsageError("--names and --format json do not go together: pick one")
    shard = shard_spec(params)
    inventory = _inventory(params)
    selected, ssh_config_allowed = select_in(inventory, hosts_pattern or pattern or "all", params, listing=True,
                                             quiet=names or output_format == "json")
    footer = ""
    if shard is not None:
        from fleetrun.shard import empty_share_note, take_share

        selected, info = take_share(selected, shard)
        footer = f" (shard {info.index}/{info.total} of {info.selection_count} selected)"
        if not selected:
            sys.stderr.write(empty_share_note(info))
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
    out.write(f"{len(hosts)} host{'s' if len(hosts) != 1 else ''}{footer}\n")
    return int(ExitStatus.OK)


def _node_set(action: str, arguments: tuple[str, ...], hosts_pattern: str | None, separator: str,
              params: dict[str, Any], shard: Any = None) -> int:
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
    if shard is not None:
        from fleetrun.shard import share_names

        names = share_names(names, shard.index, shard.total)
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
    """Console entry point: the one place that turns errors into messages and exit statuses.

    With `argv` None (the `fleetrun` program itself) the process ends in `_exit_now`; a caller passing `argv`
    (the tests, a library) gets SystemExit, and the garbage collector back as it found it."""
    # Start-up allocates a hundred thousand objects that all live for the whole run (modules, the inventory,
    # known_hosts): collecting while they are made only walks them again and again, ~7 ms of every run. The
    # runner freezes them and turns collection back on before the first connection (fleetrun.runner).
    collecting = gc.isenabled()
    gc.disable()
    try:
        status = _run(argv)
    finally:
        if collecting:
            gc.enable()
    if argv is None:
        _exit_now(status)
    sys.exit(status)


def _run(argv: list[str] | None) -> int:
    err = sys.stderr
    # paramiko imports `invoke` (and with it unittest.mock) only for its own ssh_config's "Match exec"; fleetrun
    # reads ssh_config with fleetrun.sshconfig (Match exec via subprocess): 0.1-0.2 s of CPU per run saved.
    sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
    from fleetrun import malloc, quiet

    quiet.install(debug=bool(os.environ.get("FLEETRUN_DEBUG")))
    malloc.hold_mmap_threshold()
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
    return int(status or 0)


def _exit_now(status: int) -> NoReturn:
    """End the process without tearing the interpreter down, once nothing is left to do.

    Python's own exit frees every object one by one (and, after --procs, writes to every page the worker
    processes shared, each a page fault): ~25 ms of CPU per run for nothing, as the kernel takes the memory
    back whole. What that exit would still do is done here: the atexit handlers run and stdout/stderr are
    flushed (both were flushed already; a handler may write). A thread still running that is no daemon
    means some work is not over: then Python's exit waits for it, as ever."""
    if any(not thread.daemon for thread in threading.enumerate() if thread is not threading.main_thread()):
        sys.exit(status)
    atexit._run_exitfuncs()
    _flush_or_drop()
    os._exit(status)


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
