"""Plans a run over the selected hosts: secrets, keys, host keys, limits, signals and deadlines, then the pool."""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure
from fleetrun.lines import Lines, LineSplitter
from fleetrun.models import Host, HostResult, Outcome, RunSummary
from fleetrun.output.base import OutputSink, Renderer, SinkFactory
from fleetrun.pool import Finished, PoolCallbacks, Started, run_pool
from fleetrun.status import ExitStatus, worst

if TYPE_CHECKING:
    from fleetrun.ssh import ConnectSettings, Session

FDS_PER_FORK = 6  # socket, the channel's select pipe (2), SFTP and a margin


@dataclass(frozen=True)
class RunOptions:
    """Connection and run settings that apply to every host of one run."""

    forks: int = 64
    connect_timeout: float = 10.0  # for hosts whose inventory sets none
    timeout: float | None = None  # per command
    deadline: float | None = None  # whole run, seconds from start
    max_output: int = 4 << 20  # per stream per host
    host_key_checking: str = "yes"
    key_passphrase: str | None = None
    password: str | None = None  # from --ask-pass: for hosts without a password source of their own
    use_agent: bool = True
    raw: bool = False


@dataclass(frozen=True)
class HostContext:
    """What a task gets besides the session: the run's cancel flag and limits, and a way to emit lines."""

    options: RunOptions
    cancel: Cancel
    on_output: Callable[[str, bytes], None] | None


HostTask = Callable[["Session", Host, HostContext], HostResult]


def apply_overrides(
    hosts: Sequence[Host],
    *,
    user: str | None = None,
    port: int | None = None,
    key: str | None = None,
    connect_timeout: float | None = None,
) -> list[Host]:
    """Command-line --user/--port/--key/--connect-timeout win over the inventory."""
    changes: dict[str, object] = {}
    if connect_timeout is not None:
        changes["connect_timeout"] = connect_timeout
    if user is not None:
        changes["user"] = user
    if port is not None:
        changes["port"] = port
    if key is not None:
        changes["key"] = str(Path(key).expanduser())
    return [replace(host, **changes) for host in hosts] if changes else list(hosts)  # type: ignore[arg-type]


def fit_forks(forks: int, hosts: int, warn: Callable[[str], None]) -> int:
    """Raise the open-files soft limit for `forks` connections; if it can't go that high, lower forks."""
    forks = max(1, min(forks, hosts))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = forks * FDS_PER_FORK + 64
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
        if soft < needed:
            fitted = max(1, (soft - 64) // FDS_PER_FORK)
            warn(f"open-files limit {soft} fits only {fitted} connections: lowering --forks from {forks} to {fitted}")
            return fitted
    return forks


def connect_settings(hosts: Sequence[Host], options: RunOptions, warn: Callable[[str], None]) -> ConnectSettings:
    """Load known_hosts and every distinct key once, before any connection (bad input is exit 2 here)."""
    from fleetrun.hostkeys import KnownHosts
    from fleetrun.ssh import ConnectSettings, load_keys

    user_file = Path("~/.ssh/known_hosts").expanduser()
    files = [str(user_file), *dict.fromkeys(path for host in hosts for path in host.known_hosts)]
    known = KnownHosts.load(files)
    for warning in known.warnings:
        warn(f"known_hosts: {warning}")
    keys = load_keys([host.key for host in hosts if host.key], options.key_passphrase)
    return ConnectSettings(
        known_hosts=known,
        accept_new_path=user_file,
        host_key_checking=options.host_key_checking,
        connect_timeout=options.connect_timeout,
        keys=keys,
        use_agent=options.use_agent,
        warn=warn,
    )


def resolve_passwords(hosts: Sequence[Host], fallback: str | None) -> dict[str, str]:
    """Every host's password, read before connecting so a bad source stops the run with exit 2."""
    from fleetrun.secrets import read_password

    passwords: dict[str, str] = {}
    for host in hosts:
        password = read_password(host)
        if password is None:
            password = fallback
        if password is not None:
            passwords[host.name] = password
    return passwords


def _output_callback(
    splitters: dict[str, LineSplitter], sink: OutputSink | None
) -> Callable[[str, bytes], None] | None:
    """What the session calls with each chunk: the line splitters, the raw sink, both or neither."""
    if not splitters and sink is None:
        return None

    def on_output(stream: str, chunk: bytes) -> None:
        if sink is not None:
            sink.write(stream, chunk)  # before the splitter: the raw copy is complete whatever the screen does
        if splitters:
            splitters[stream].feed(chunk)

    return on_output


@contextmanager
def _signals(cancel: Cancel, err: TextIO) -> Iterator[list[ExitStatus]]:
    """SIGINT/SIGTERM cancel the run; a second SIGINT exits at once. Yields the interrupt status, if any."""
    received: list[ExitStatus] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        status = ExitStatus.INTERRUPTED if signum == signal.SIGINT else ExitStatus.TERMINATED
        if received and signum == signal.SIGINT:
            os._exit(int(ExitStatus.INTERRUPTED))  # the operator insists: no cleanup, no waiting
        received.append(status)
        if cancel.set("interrupted" if signum == signal.SIGINT else "terminated"):
            err.write("fleetrun: stopping: cancelling running hosts (Ctrl-C again to exit at once)\n")
            err.flush()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        # After an interrupt the handler stays: a further Ctrl-C while the partial result is printed
        # must still mean "exit now" (130), not a KeyboardInterrupt somewhere in the output code.
        if not received:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def execute(
    hosts: Sequence[Host],
    task: HostTask,
    options: RunOptions,
    renderer: Renderer,
    err: TextIO,
    *,
    sinks: SinkFactory | None = None,
) -> RunSummary:
    """Run `task` on every host through the pool; every host ends with exactly one result.

    `sinks`, when given, makes one OutputSink per started host that gets every chunk of its output as it
    arrives on the worker, uncapped by --max-output (for --out-dir), and is closed before the host's result.
    """
    started = time.monotonic()
    warn_lock = threading.Lock()

    def warn(message: str) -> None:
        with warn_lock:
            err.write(f"fleetrun: warning: {message}\n")
            err.flush()

    passwords = resolve_passwords(hosts, options.password)
    settings = connect_settings(hosts, options, warn)
    forks = fit_forks(options.forks, len(hosts), warn)
    from fleetrun.ssh import connect

    cancel = Cancel()
    counts: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
    changes = {"changed": 0, "unchanged": 0}
    deadline = None if options.deadline is None else started + options.deadline

    def check_deadline() -> None:
        if deadline is not None and time.monotonic() >= deadline:
            cancel.set("deadline")

    def work(host: Host, emit: Callable[[object], None]) -> HostResult:
        begin = time.monotonic()
        splitters: dict[str, LineSplitter] = {}
        if renderer.wants_lines:
            splitters = {name: LineSplitter(host, name, emit) for name in ("stdout", "stderr")}
        sink = sinks(host) if sinks is not None else None
        context = HostContext(options, cancel, _output_callback(splitters, sink))
        try:
            session = connect(host, settings, passwords.get(host.name), cancel)
            try:
                result = task(session, host, context)
            finally:
                session.close()
        except HostFailure as failure:
            result = HostResult(host, failure.outcome, error=failure.message)
        finally:
            if sink is not None:
                sink.close()
        for splitter in splitters.values():
            splitter.flush()
        if result.outcome is Outcome.CANCELLED and cancel.reason == "deadline":
            result = replace(result, outcome=Outcome.TIMEOUT, error="the run's --deadline was reached")
        return replace(result, duration=time.monotonic() - begin)

    def not_started(host: Host) -> HostResult:
        why = "the run's --deadline was reached" if cancel.reason == "deadline" else f"run {cancel.reason}"
        return HostResult(host, Outcome.NOT_STARTED, error=why)

    def crashed(host: Host, error: BaseException) -> HostResult:
        # A bug of ours on one host must not take the others down; say what it was so it can be reported.
        return HostResult(host, Outcome.FAILED, error=f"internal error: {error.__class__.__name__}: {error}")

    def handle(event: object) -> None:
        if isinstance(event, Lines):
            try:
                for line in event.lines:
                    renderer.on_line(line)
            finally:
                event.release()
        elif isinstance(event, Started):
            renderer.on_started(event.job)
        elif isinstance(event, Finished):
            counts[event.result.outcome] += 1
            if event.result.ok and event.result.changed is not None:
                changes["changed" if event.result.changed else "unchanged"] += 1
            renderer.on_result(event.result)

    renderer.on_start(hosts)
    with _signals(cancel, err) as interrupts:
        callbacks: PoolCallbacks[Host, HostResult] = PoolCallbacks(work, not_started, crashed, handle)
        handler_errors = run_pool(hosts, callbacks, forks=forks, cancel=cancel, deadline_check=check_deadline)
    cancel.close()
    for error in handler_errors:
        if not isinstance(error, BrokenPipeError):
            raise error
    statuses = [outcome.exit_status for outcome, count in counts.items() if count]
    status = worst([*statuses, *interrupts])
    summary = RunSummary(
        total=len(hosts),
        counts=counts,
        elapsed=time.monotonic() - started,
        exit_status=status,
        interrupted=bool(interrupts),
        changed=changes["changed"],
        unchanged=changes["unchanged"],
    )
    # Always finished, even after a broken pipe: a fan-out still has files (--junit, --out-dir) to complete.
    with suppress(BrokenPipeError):
        renderer.on_finish(summary)
    return summary


def exec_task(command: str) -> HostTask:
    """The task behind `fleetrun exec`: run one command and classify how it ended."""

    def run(session: Session, host: Host, context: HostContext) -> HostResult:
        options = context.options
        ended = session.run(
            command,
            cancel=context.cancel,
            timeout=options.timeout,
            max_output=options.max_output,
            on_output=context.on_output,
            raw=options.raw,
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
        )
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

    return run


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
