"""The task behind `fleetrun exec`: run the command on one host (under sudo, with variables and stdin), and say
how it ended as only what fleetrun knows is true."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from fleetrun.commandplan import ExecSpec, command_for, host_env
from fleetrun.models import BecomeStatus, Host, HostResult, Outcome
from fleetrun.spill import SPILL_AT

if TYPE_CHECKING:
    from fleetrun.become import BecomeRequest
    from fleetrun.runner import HostContext, HostTask, RunOptions
    from fleetrun.ssh import Session


def exec_task(spec: ExecSpec | str) -> HostTask:
    """The task behind `fleetrun exec`: run the command (under sudo, with variables and stdin) and classify how
    it ended."""
    return ExecTask(ExecSpec(spec) if isinstance(spec, str) else spec)


class ExecTask:
    """One run's exec task, called once per host by the pool's workers (it holds nothing per host)."""

    becomes = True  # the runner gives its become hosts a "become" record even when they never got to sudo

    def __init__(self, plan: ExecSpec) -> None:
        self.plan = plan

    def lean_for(self, host: Host) -> bool:
        """Whether this host's command needs only one exec channel: no sudo, nothing sent to its stdin (so its
        connection may go through fleetrun.ssh.lean; the agent forwarding and the rest are connect's to judge)."""
        return not host.become and self.plan.script is None and not self.plan.stdin

    def __call__(self, session: Session, host: Host, context: HostContext) -> HostResult:
        plan = self.plan
        from fleetrun.ssh.wrapper import ScriptLoad, script_command
        from fleetrun.stdin_spool import Feed

        options = context.options
        command, args = command_for(plan, host)
        script = plan.script
        load = None
        if script is not None:
            command = script_command(list(script.interpreter), list(args))
            load = ScriptLoad(len(script.data), exact=plan.stdin is not None)
        become = _become_request(plan, host, context.become_password)
        stdin = None if become is not None and become.pty else plan.stdin  # a terminal is no pipe for data
        feed = Feed(script.data if script is not None else b"", stdin) if script is not None or stdin else None
        ended = session.run(
            command,
            cancel=context.cancel,
            timeout=options.timeout,
            max_output=options.max_output,
            on_output=context.on_output,
            raw=options.raw,
            env=None if options.raw else host_env(host, plan.env),
            become=become,
            feed=feed,
            script=load,
            spill_at=SPILL_AT,
        )
        base = HostResult(
            host,
            Outcome.OK,
            exit_code=ended.exit_code,
            signal=ended.signal,
            stdout=ended.stdout,
            stderr=ended.stderr,
            stdout_truncated=ended.stdout_truncated,
            stderr_truncated=ended.stderr_truncated,
            stdout_file=ended.stdout_file,
            stderr_file=ended.stderr_file,
            become=None if become is None else BecomeStatus(become.user, ended.become),
        )
        if ended.ended == "become":
            outcome, error = become_failure(ended.become, ended.become_message, host, become, options)
            return replace(base, outcome=outcome, error=error)
        if ended.ended in ("timeout", "cancelled"):
            outcome, error = _stopped(ended.ended, options, context.cancel.reason)
            return replace(base, outcome=outcome, error=error)
        if ended.ended == "lost":
            return replace(base, outcome=Outcome.UNREACHABLE, error="connection lost mid-command")
        if ended.signal is not None:
            return replace(base, outcome=Outcome.FAILED, error=f"killed by signal {ended.signal}")
        if ended.exit_code != 0:
            return replace(base, outcome=Outcome.FAILED, error=f"exit status {ended.exit_code}")
        return base


def _become_request(plan: ExecSpec, host: Host, password: str | None) -> BecomeRequest | None:
    if not host.become:
        return None
    from fleetrun.become import BecomeRequest

    return BecomeRequest(user=host.become_user or "root", run_id=plan.run_id, password=password,
                         pty=plan.become_pty, timeout=plan.become_timeout)


def _stopped(ended: str, options: RunOptions, reason: str | None) -> tuple[Outcome, str]:
    """Outcome and error of a command fleetrun stopped by disconnecting: only what fleetrun knows is true."""
    if ended == "timeout":
        outcome, what = Outcome.TIMEOUT, f"command timed out after {options.timeout:g} s"
    elif reason == "deadline":
        outcome, what = Outcome.TIMEOUT, "the run's --deadline was reached"
    else:
        outcome, what = Outcome.CANCELLED, "cancelled"
    if options.raw:
        # No watcher on the host: closing the connection does not stop a command that ignores it.
        return outcome, (f"{what}; fleetrun disconnected, and without the wrapper (--raw) "
                         "the command may still be running on the host")
    it = "it" if ended == "timeout" else "the command"
    return outcome, f"{what}; fleetrun disconnected and the host's wrapper kills {it}"


def become_failure(status: str | None, said: str, host: Host, become: BecomeRequest | None,
                   options: RunOptions) -> tuple[Outcome, str]:
    """Outcome and error of a command sudo did not run; sudo's own last line is quoted, never interpreted."""
    import getpass

    from fleetrun import become as sudo

    login = host.user or getpass.getuser()
    quoted = f" ({said})" if said else ""
    timeout = become.timeout if become is not None else 0.0
    if status == sudo.TIMEOUT:
        return Outcome.TIMEOUT, (f"sudo gave neither a password prompt nor the start marker within "
                                 f"--become-timeout {timeout:g} s")
    if status == sudo.REJECTED:
        return Outcome.AUTH_FAILED, f"sudo rejected the password for {login} on {host.name}{quoted}"
    if status == sudo.PASSWORD_REQUIRED:
        return Outcome.AUTH_FAILED, (f"sudo on {host.name} asks {login} for a password and none was given: "
                                     "use -K or become_password_env (or become_password_file)")
    if status == sudo.TTY_REQUIRED:
        return Outcome.AUTH_FAILED, (f"sudo on {host.name} refuses {login} without a terminal (requiretty){quoted}: "
                                     "use --become-pty")
    return Outcome.AUTH_FAILED, f"sudo on {host.name} did not run the command for {login}{quoted}"
