"""The options exec, push, pull and hosts share (host lists, shards, inventory, connection, output), as click
decorators, and their value parsers."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from fleetrun.cli_runs import journal_options
from fleetrun.errors import UsageError

if TYPE_CHECKING:  # imported where used: `fleetrun --help` stays quick
    pass

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


def shard_options(function: F) -> F:
    """--shard and --shard-total (issue 13): on exec, push, pull and `fleetrun hosts` (a dry run of the share)."""
    options = [
        click.option("--shard", metavar="K/N|auto",
                     help="Act on share K of N (1-based) of the selected hosts: sorted by name, the i-th goes to "
                          "shard (i mod N)+1. auto: K and N from the scheduler's variables (Kubernetes Indexed Job, "
                          "GitLab, Buildkite, CircleCI). Merge the results with `fleetrun runs merge`."),
        click.option("--shard-total", type=int, default=None, metavar="N",
                     help="With --shard auto: the number of shards where the scheduler sets none (a Kubernetes "
                          "Indexed Job's spec.completions). Env: FLEETRUN_SHARD_TOTAL."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def shard_spec(params: dict[str, Any], *, retry_failed: bool = False, rerun: bool = False) -> Any:
    """The --shard the options ask for (a fleetrun.shard.ShardSpec, or None); bad ones are exit 2 at once."""
    if params.get("shard") is None and params.get("shard_total") is None:
        return None
    from fleetrun.shard import check_options, parse_shard

    spec = parse_shard(params.get("shard"), params.get("shard_total"), os.environ)
    if spec is not None:
        check_options(spec, retry_failed=retry_failed, rerun=rerun, pick=params.get("pick"), seed=params.get("seed"))
    return spec


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
                          "line); ',' union, '&' and, '!' except, '^' xor. With no inventory: host names themselves "
                          "('web01,deploy@10.0.0.5:2222', ranges, ^FILE), resolved through ssh_config like pdsh -w. "
                          "Required, except with --retry-failed."),
        host_list_options,
        shard_options,
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
                     help="Seconds for TCP connect, SSH handshake and authentication together, counted from "
                     "when the host gets its handshake slot (see --max-handshakes), not from when it was "
                     "queued (overrides the inventory; default 10)."),
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
        click.option("--procs", type=click.IntRange(1, 256), default=None, metavar="N",
                     help="Processes, each with its share of the hosts and of --forks: fleetrun runs the first and "
                          "forks N-1 workers; one collector. Default: the usable cores (1 on a 1-core machine)."),
        click.option("--max-handshakes", type=click.IntRange(1, 4096), default=None, metavar="N",
                     help="Hosts connecting at once (TCP connect to authenticated), apart from --forks: the "
                          "others wait their turn without their connect timeout running. Default: 16 per "
                          "usable core, at least 8."),
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
