"""Plans a run over the selected hosts: secrets, keys, host keys, limits, signals and deadlines, then the pool."""

from __future__ import annotations

import gc
import itertools
import resource
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast

from fleetrun.admission import Admission, default_limit, share
from fleetrun.cancel import Cancel
from fleetrun.dispatch import Dispatcher, Question
from fleetrun.errors import HostFailure
from fleetrun.lines import Lines, LineSplitter
from fleetrun.models import BecomeStatus, Host, HostResult, Outcome, RunSummary
from fleetrun.output.base import OutputSink, Renderer, SinkFactory
from fleetrun.pool import Finished, PoolCallbacks, Started, run_pool
from fleetrun.preflight import connect_settings
from fleetrun.redact import Redactor
from fleetrun.rollout import Rollout, make_plan, not_started_reason
from fleetrun.run_signals import stopping_signals
from fleetrun.status import ExitStatus, worst

if TYPE_CHECKING:
    from fleetrun.procs import Processes
    from fleetrun.ssh import Session

FDS_PER_FORK = 6  # socket, the channel's select pipe (2), SFTP and a margin
# A finished paramiko transport is a reference cycle (its handler table holds its own bound methods, its channels
# point back at it): only a full garbage collection frees it, and by then it has lived long enough to be in the
# oldest generation, which Python collects only after ~70,000 net new objects. So ~30 KiB per finished host piled
# up, a few hundred hosts' worth (issue 13: peak RSS 42.7 MiB at 200 hosts, 54.1 MiB at 1000, --forks 256).
# One full collection per this many closed sessions keeps that bounded; the objects of the run before it started
# are frozen (gc.freeze), so each collection only walks the live connections: a few ms.
RECLAIM_EVERY = 64


@dataclass(frozen=True)
class RunOptions:
    """Connection and run settings that apply to every host of one run."""

    forks: int = 64
    # SSH handshakes (TCP connect to authenticated) in flight at once; None: admission.default_limit()
    max_handshakes: int | None = None
    connect_timeout: float = 10.0  # for hosts whose inventory sets none; counted from the host's handshake slot
    timeout: float | None = None  # per command
    deadline: float | None = None  # whole run, seconds from start
    max_output: int = 4 << 20  # per stream per host
    host_key_checking: str = "yes"
    # Secrets: never in a repr, so no log line or debugger print of the options can show them.
    key_passphrase: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)  # for hosts without a password source of their own
    # --ask-pass: asked once, after all local input was read.
    ask_password: Callable[[], str] | None = field(default=None, repr=False)
    # -K/--ask-become-pass: the sudo password, asked once after --ask-pass, for become hosts without a source.
    ask_become_password: Callable[[], str] | None = field(default=None, repr=False)
    use_agent: bool = True
    raw: bool = False
    max_per_gateway: int | None = None  # channels at once through one bastion (default: forks)
    # Processes (fleetrun.procs): share 0 here, N-1 forked; 1 runs every host in this process. CLI default: the cores.
    procs: int = 1


@dataclass(frozen=True)
class HostContext:
    """What a task gets besides the session: the run's cancel flag and limits, and a way to emit lines."""

    options: RunOptions
    cancel: Cancel
    on_output: Callable[[str, bytes], None] | None
    become_password: str | None = field(default=None, repr=False)  # this host's sudo password, if any


HostTask = Callable[["Session", Host, HostContext], HostResult]


def apply_overrides(
    hosts: Sequence[Host],
    *,
    user: str | None = None,
    port: int | None = None,
    key: str | None = None,
    connect_timeout: float | None = None,
    host_key_checking: str | None = None,
    jump: tuple[str, ...] | None = None,
) -> list[Host]:
    """Command-line --user/--port/--key/--connect-timeout/--host-key-checking/--jump win over the inventory and
    ssh_config: each becomes an explicit setting of every host, with the flag as its origin."""
    given = {
        "connect_timeout": (connect_timeout, "--connect-timeout"),
        "user": (user, "--user"),
        "port": (port, "--port"),
        "key": (str(Path(key).expanduser()) if key is not None else None, "--key"),
        "host_key_checking": (host_key_checking, "--host-key-checking"),
        "jump": (jump, "--jump"),
    }
    changes: dict[str, object] = {name: value for name, (value, _) in given.items() if value is not None}
    flags = {name: flag for name, (value, flag) in given.items() if value is not None}
    if not changes:
        return list(hosts)
    dropped: frozenset[str] = frozenset()
    if jump is not None:
        changes["proxy_command"] = None  # -J decides how to reach every host, as ssh -J beats ProxyCommand
        dropped = frozenset({"proxy_command"})
    origins = {name: (flag,) for name, flag in flags.items()}
    return [replace(host, **changes, explicit=(host.explicit - dropped) | flags.keys(),  # type: ignore[arg-type]
                    origins={**host.origins, **origins}) for host in hosts]


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


def resolve_become_passwords(hosts: Sequence[Host]) -> dict[str, str]:
    """The sudo password of every become host that has a source of its own (read before any prompt)."""
    from fleetrun.secrets import read_become_password

    passwords: dict[str, str] = {}
    for host in hosts:
        password = read_become_password(host) if host.become else None
        if password is not None:
            passwords[host.name] = password
    return passwords


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


class _OutputTap:
    """What the session calls with each chunk: secrets masked first, then the raw sink and the line splitters.

    Masking holds back the end of a chunk that could be the start of a secret; `finish`, once the command
    is over and before the sink closes, passes that on.
    """

    def __init__(self, splitters: dict[str, LineSplitter], sink: OutputSink | None, redactor: Redactor) -> None:
        self.splitters, self.sink = splitters, sink
        self.masks = {name: redactor.stream() for name in ("stdout", "stderr")}

    def __call__(self, stream: str, chunk: bytes) -> None:
        self._deliver(stream, self.masks[stream].feed(chunk))

    def finish(self) -> None:
        for stream, mask in self.masks.items():
            self._deliver(stream, mask.flush())

    def _deliver(self, stream: str, data: bytes) -> None:
        if not data:
            return
        if self.sink is not None:
            self.sink.write(stream, data)  # before the splitter: the raw copy is complete whatever the screen does
        if self.splitters:
            self.splitters[stream].feed(data)


def _output_callback(
    splitters: dict[str, LineSplitter], sink: OutputSink | None, redactor: Redactor | None = None
) -> _OutputTap | None:
    """The session's output callback: the line splitters, the raw sink, both or neither."""
    if not splitters and sink is None:
        return None
    return _OutputTap(splitters, sink, redactor or Redactor())


def execute(
    hosts: Sequence[Host],
    task: HostTask,
    options: RunOptions,
    renderer: Renderer,
    err: TextIO,
    *,
    sinks: SinkFactory | None = None,
    rollout: Rollout | None = None,
    question: Question | None = None,
) -> RunSummary:
    """Run `task` on every host through the pool; every host ends with exactly one result.

    `sinks`, when given, makes one OutputSink per started host that gets every chunk of its output as it
    arrives on the worker, uncapped by --max-output (for --out-dir), and is closed before the host's result.
    `rollout` runs the hosts in batches with a failure budget (fleetrun/rollout.py); without it they are one
    batch. `question` asks the operator before each batch after the first when the rollout says --confirm.
    """
    from fleetrun import secrets

    started = time.monotonic()
    warn_lock = threading.Lock()
    for secret in (options.key_passphrase, options.password):
        secrets.remember(secret)

    def write_warning(message: str) -> None:
        with warn_lock:
            err.write(f"fleetrun: warning: {secrets.redact(message)}\n")
            err.flush()

    warn_to: list[Callable[[str], None]] = [write_warning]  # a worker process: over its channel to the parent

    def warn(message: str) -> None:
        warn_to[0](message)

    # Every local input (keys, known_hosts, password sources) is read before --ask-pass prompts: a bad --key
    # must fail at once, not after the operator typed a password.
    from fleetrun.route import hops_of

    passwords = resolve_passwords([*hosts, *hops_of(hosts)], None)
    become_passwords = resolve_become_passwords(hosts)
    settings = connect_settings(hosts, options, warn, passwords)
    fallback = options.password if options.ask_password is None else options.ask_password()
    if fallback is not None:
        passwords.update({host.name: fallback for host in hosts if host.name not in passwords})
    if options.ask_become_password is not None:  # one sudo password for the run: never a prompt per host
        become_fallback = options.ask_become_password()
        become_passwords.update({host.name: become_fallback for host in hosts
                                 if host.become and host.name not in become_passwords})
    # Every secret this process holds, masked in all the run shows or writes: output (screen, --out-dir),
    # error lines, details and warnings. New secret sources only need to call secrets.remember().
    redactor = Redactor(secrets.held())
    plan = make_plan(hosts, rollout)
    forks = fit_forks(options.forks, max((len(batch) for batch in plan.batches), default=0), warn)
    from fleetrun.ssh import connect

    handshakes = options.max_handshakes or default_limit()
    admission = Admission(handshakes)
    cancel = Cancel()
    counts: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
    changes = {"changed": 0, "unchanged": 0}
    deadline = None if options.deadline is None else started + options.deadline

    closed = itertools.count(1)  # sessions closed in this process (next() is atomic: no lock needed)
    # Tasks that need no more of a connection than one exec channel say so per host (ExecTask.lean_for): those
    # hosts may go through fleetrun.ssh.lean, without a paramiko thread.
    lean_for: Callable[[Host], bool] | None = getattr(task, "lean_for", None)

    def check_deadline() -> None:
        if deadline is not None and time.monotonic() >= deadline:
            cancel.set("deadline")

    def work(host: Host, emit: Callable[[object], None]) -> HostResult:
        begin = time.monotonic()
        splitters: dict[str, LineSplitter] = {}
        if renderer.wants_lines:
            splitters = {name: LineSplitter(host, name, emit) for name in ("stdout", "stderr")}
        sink = sinks(host) if sinks is not None else None
        tap = _output_callback(splitters, sink, redactor)
        context = HostContext(options, cancel, tap, become_passwords.get(host.name))
        verified: bool | None = None
        try:
            with admission.slot(cancel):  # the connect timeout starts once the host has its slot
                session = connect(host, settings, passwords.get(host.name), cancel,
                                  lean=lean_for is not None and lean_for(host))
            verified = session.host_key_verified
            try:
                # A LeanSession only for a task whose lean_for(host) said so: it calls nothing but run().
                result = task(cast("Session", session), host, context)
                # "connection lost" says what; a dead gateway or unanswered keepalives say why.
                why = session.lost_reason() if result.outcome is Outcome.UNREACHABLE else None
                if why is not None:
                    result = replace(result, error=f"{result.error}: {why}" if result.error else why)
            except HostFailure as failure:
                why = session.lost_reason() if failure.outcome is Outcome.UNREACHABLE else None
                if why is not None:
                    failure.message = f"{failure.message}: {why}"
                raise
            finally:
                session.close()
                if next(closed) % RECLAIM_EVERY == 0:
                    gc.collect()  # see RECLAIM_EVERY
        except HostFailure as failure:
            verified = failure.host_key_verified if verified is None else verified
            result = HostResult(host, failure.outcome, error=failure.message)
        finally:
            if tap is not None:
                tap.finish()
            if sink is not None:
                sink.close()
        for splitter in splitters.values():
            splitter.flush()
        result = redactor.result(result)
        if result.outcome is Outcome.CANCELLED and cancel.reason == "deadline":
            result = replace(result, outcome=Outcome.TIMEOUT, error="the run's --deadline was reached")
        return replace(result, duration=time.monotonic() - begin, host_key_verified=verified)

    dispatcher = Dispatcher(plan, cancel, err, question=question, deadline_check=check_deadline)

    def not_started(host: Host) -> HostResult:
        stop = dispatcher.stop()
        if stop is not None:  # held back by the rollout (it may have been cancelled since: the stop came first)
            reason = not_started_reason(stop)  # the arithmetic is in the summary; one short line per host
            return HostResult(host, Outcome.NOT_STARTED, error=f"{reason} after batch {stop.after_batch}",
                              reason=reason)
        why = "the run's --deadline was reached" if cancel.reason == "deadline" else f"run {cancel.reason}"
        return HostResult(host, Outcome.NOT_STARTED, error=why, reason=cancel.reason)

    def crashed(host: Host, error: BaseException) -> HostResult:
        # A bug of ours on one host must not take the others down; say what it was so it can be reported.
        message = redactor.text(f"internal error: {error.__class__.__name__}: {error}")
        return HostResult(host, Outcome.FAILED, error=message)

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
            result = event.result
            if result.outcome is Outcome.CANCELLED and result.reason is None:
                result = replace(result, reason=cancel.reason)
            if result.become is None and result.host.become and getattr(task, "becomes", False):
                # exec under sudo on a host that never got as far as sudo: say whom, with no status
                result = replace(result, become=BecomeStatus(result.host.become_user or "root", None))
            try:
                counts[result.outcome] += 1
                if result.ok and result.changed is not None:
                    changes["changed" if result.changed else "unchanged"] += 1
                renderer.on_result(result)
            finally:  # even when a renderer failed: the next batch waits for this count
                result.release()  # spilled output: every renderer had it (one that keeps it took its own copy)
                dispatcher.rendered(result)

    if lean_for is not None:
        from fleetrun.ssh.lean import warm

        warm()  # before the freeze, and before any fork: worker processes share it
    # Everything made so far (modules, inventory, known_hosts, keys) lives for the whole run: frozen, the
    # garbage collector stops re-scanning it every few hundred allocations of the connections (and, before a
    # fork, stops writing to pages the worker processes share). Undone after the run, for library callers.
    # Collection itself is on from here (fleetrun.cli.main turns it off for the start-up): a finished
    # paramiko connection is garbage only a collection finds.
    gc.freeze()
    collecting = gc.isenabled()
    gc.enable()
    procs = max(1, min(options.procs, forks, len(hosts)))
    if any(host.via for host in hosts):
        # A bastion's one login carries every host behind it (issue 9), and --forks/--max-per-gateway count
        # across all of them: that needs one process. The bastion's transport is the bottleneck anyway.
        procs = 1
    # A renderer made outside fleetrun (a library caller's) may not say: it gets the events, as before.
    announce_started = bool(getattr(renderer, "wants_started", True))
    workers: Processes | None = None
    if procs > 1:
        from fleetrun.procs import CannotFork, ChildSpec, Processes

        def for_share(index: int, send_warning: Callable[[str], None] | None) -> None:
            nonlocal admission
            admission = Admission(share(handshakes, procs, index))  # the slots dealt out like the hosts
            if send_warning is not None:  # a child: over its channel; share 0 is the parent itself
                warn_to[0] = send_warning

        # Forked here, before the renderers start any thread (progress) or open any file (journal).
        try:
            workers = Processes(procs, forks, ChildSpec(hosts, work, crashed, not_started, cancel, for_share,
                                                        announce_started=announce_started))
        except CannotFork as why:  # a library caller with threads of its own: one process is always right
            warn(f"running in one process, not {procs} (--procs): {why}")
    try:
        renderer.on_start(hosts)
        with stopping_signals(cancel, err) as interrupts:
            callbacks: PoolCallbacks[Host, HostResult] = PoolCallbacks(
                work, not_started, crashed, handle, admit=dispatcher.admit,
                settled=lambda host, result: dispatcher.settle(result), announce_started=announce_started)
            if workers is not None:
                handler_errors = workers.run(dispatcher.jobs(), callbacks, cancel=cancel,
                                             deadline_check=check_deadline, warn=warn)
            else:
                handler_errors = run_pool(dispatcher.jobs(), callbacks, forks=forks, cancel=cancel,
                                          deadline_check=check_deadline)
    except BaseException:
        if workers is not None:
            workers.kill()
        raise
    finally:
        gc.unfreeze()
        if not collecting:
            gc.disable()
        if settings.gateways is not None:
            settings.gateways.close()  # every host through them is done
    cancel.close()
    # A reader gone (`| head`) is no error; after a hangup neither is a dead terminal (EIO), even one that failed
    # a write just before the signal arrived.
    gone: tuple[type[BaseException], ...] = (OSError,) if ExitStatus.HANGUP in interrupts else (BrokenPipeError,)
    for error in handler_errors:
        if not isinstance(error, gone):
            raise error
    statuses = [outcome.exit_status for outcome, count in counts.items() if count]
    stop = dispatcher.stop()
    if stop is not None and stop.reason == "operator":
        statuses.append(ExitStatus.INTERRUPTED)  # "no" at --confirm is the operator stopping the run, as Ctrl-C
    if cancel.reason == "deadline" and counts[Outcome.NOT_STARTED]:
        statuses.append(ExitStatus.TIMEOUT)  # hosts left out by --deadline (e.g. during a --pause) timed out too
    status = worst([*statuses, *interrupts])
    summary = RunSummary(
        total=len(hosts),
        counts=counts,
        elapsed=time.monotonic() - started,
        exit_status=status,
        interrupted=bool(interrupts),
        changed=changes["changed"],
        unchanged=changes["unchanged"],
        batches=dispatcher.batches(),
        stopped=stop,
    )
    # Always finished, even after a broken pipe: a fan-out still has files (--junit, --out-dir) to complete.
    with suppress(*gone):
        renderer.on_finish(summary)
    return summary
