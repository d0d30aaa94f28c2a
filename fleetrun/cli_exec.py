"""`fleetrun exec`: its command-line parsing (options first, the command last, as ssh), options and plan."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Any

import click

from fleetrun.cli_options import parse_size, run_options
from fleetrun.cli_runs import rollout_options
from fleetrun.cli_shared import run_on_hosts
from fleetrun.errors import UsageError

if TYPE_CHECKING:  # imported where used: `fleetrun --help` stays quick
    pass

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


def _stdin_forwarded(no_stdin: bool) -> bool:
    """ssh's rule: stdin goes to the commands unless it is a terminal, or -n/--no-stdin says not to."""
    if no_stdin:
        return False
    try:
        if os.isatty(0):
            return False
        info = os.fstat(0)
    except OSError:
        return False
    # /dev/null (cron, CI, `</dev/null`): the commands' stdin at EOF at once is the same thing, and needs no
    # spool, so the run may use every core (--procs).
    return not (stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(1, 3))


@click.command("exec", cls=ExecCommand)
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
    if spec.stdin is not None:
        # The spool's reader thread lives in this process; worker processes would not see its bytes.
        if (params.get("procs") or 1) > 1:
            click.echo(f"fleetrun: warning: running in one process, not {params['procs']} (--procs): stdin is "
                       "forwarded to the commands; give -n or </dev/null to use every core", err=True)
        params["procs"] = 1
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
