"""Several worker processes (--procs): children run hosts in their own thread pools, the parent stays in charge.

One Python process runs Python code on one core at a time, whatever the machine has: paramiko's packet
handling is Python, so a controller with N cores runs N children. The parent keeps everything that must be
global, exactly as with one process: it iterates the dispatcher (batches, barriers, --pause, --confirm), admits
each host just before it starts and settles each result (the failure budget), and its one collector thread
renders every event. Children only run `work` for the hosts they are handed.

    parent main thread:  dispatcher.jobs() -> host k goes to child k mod N (a deterministic share), queued in order
    parent, per child:   a host is sent only when that child has an idle worker (credit), so it starts at once,
                         and the parent's admit() is the last word on whether it starts
    child:               forks/N worker threads; Started, output lines and the Finished result go back
    parent reader:       settle() the result, hand the freed worker its next host, queue the event
    parent collector:    renders, in arrival order, as with one process

The channel is a Unix socketpair per child carrying pickled records. A host travels as its index in the
selection (both sides hold the same list, inherited by fork); an open file (a spilled line or output) travels
as a file descriptor (SCM_RIGHTS), so big outputs never cross as bytes. Children ignore SIGINT, SIGTERM and
SIGHUP (a terminal's Ctrl-C reaches the whole process group): the parent handles the signal and sends
"cancel" with its reason. A child whose parent is gone (its socket reads EOF, e.g. after a second Ctrl-C)
exits at once; its connections close, and each host's wrapper kills its command.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import pickle
import queue
import select
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from fleetrun.cancel import Cancel
from fleetrun.lines import Lines
from fleetrun.models import Host, HostResult, Outcome
from fleetrun.pool import TICK, Finished, PoolCallbacks, Started
from fleetrun.procs_channel import Channel, is_plain

_STOP = object()
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

Work = Callable[[Host, Callable[[object], None]], HostResult]


class CannotFork(Exception):
    """Worker processes cannot be forked safely here (another thread is running): run in one process."""


class WorkerDied(Exception):
    """A worker process ended without returning every host it was given (killed, or a bug of ours)."""


# -- records over a socket -------------------------------------------------------------------------------------------


@dataclass
class ChildSpec:
    """What a child needs besides its socket; all of it inherited by fork, nothing pickled."""

    hosts: Sequence[Host]
    work: Work
    crashed: Callable[[Host, BaseException], HostResult]
    not_started: Callable[[Host], HostResult]
    cancel: Cancel
    setup: Callable[[int, Callable[[str], None]], None]  # (child index, warn over the channel): per-process state
    forks: list[int] = field(default_factory=list)  # worker threads per child
    announce_started: bool = True  # a "started" message per host (PoolCallbacks.announce_started)


def _child(index: int, channel: Channel, spec: ChildSpec) -> None:
    """A worker process's whole life; never returns (os._exit: no atexit, no flushing the parent's buffers)."""
    status = 0
    try:
        spec.cancel.after_fork()  # a pipe of its own: setting it here must not wake the parent's waiters
        spec.setup(index, lambda text: _quietly(channel, ("warn", text)))
        jobs: queue.Queue[object] = queue.Queue()

        def emit(event: object) -> None:
            if isinstance(event, Lines):
                _send_and_release(channel, ("lines", event), event)
            else:  # nothing else is emitted by the runner's work today; say so rather than drop it
                raise TypeError(f"cannot send a {type(event).__name__} event to the parent")

        def worker() -> None:
            while (job := jobs.get()) is not _STOP:
                assert isinstance(job, int)
                host = spec.hosts[job]
                if spec.cancel.is_set():
                    result = spec.not_started(host)
                else:
                    if spec.announce_started:
                        channel.send(("started", job))
                    try:
                        result = spec.work(host, emit)
                    except BaseException as error:  # a worker never dies from a job
                        result = spec.crashed(host, error)
                _send_result(channel, job, result)

        workers = [threading.Thread(target=worker, name=f"fleetrun-worker-{index}.{n}")
                   for n in range(spec.forks[index])]
        for thread in workers:
            thread.start()
        while True:
            try:
                message = channel.receive()
            except (EOFError, OSError):
                os._exit(3)  # the parent is gone: nobody to report to; closing our sockets stops the hosts
            assert isinstance(message, tuple)
            if message[0] == "run":
                jobs.put(message[1])
            elif message[0] == "cancel":
                spec.cancel.set(message[1])
            elif message[0] == "end":
                break
        for _ in workers:
            jobs.put(_STOP)
        for thread in workers:
            thread.join()
        channel.send(("bye",))
    except BaseException:  # a bug of ours: the parent reports each host this child still had
        status = 70
        with contextlib.suppress(BaseException):
            import traceback

            _quietly(channel, ("warn", f"worker process {index} failed: {traceback.format_exc().strip()}"))
    finally:
        os._exit(status)


def _exit_watch(pid: int) -> int | None:
    """A descriptor that becomes readable when child `pid` exits (Linux 5.3+), or None where there is none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux, an old kernel, or the child is already reaped
        return None


def _quietly(channel: Channel, record: object) -> None:
    with contextlib.suppress(OSError):
        channel.send(record)


# A result usually crosses as the plain values of its fields after the host (procs_channel.PLAIN), the
# outcome by its value; one with a spill file or a become status goes whole, through the pickler's hooks.
_RESULT_FIELDS = tuple(item.name for item in dataclasses.fields(HostResult) if item.name != "host")
assert _RESULT_FIELDS[0] == "outcome" and all(item.init for item in dataclasses.fields(HostResult))


def _send_result(channel: Channel, job: int, result: HostResult) -> None:
    packed = ("done", job, result.outcome.value, *(getattr(result, name) for name in _RESULT_FIELDS[1:]))
    try:
        if is_plain(packed):
            channel.send_plain(packed)
        else:
            channel.send(("finished", job, result))
    finally:
        for spill in (result.stdout_file, result.stderr_file):
            if spill is not None:
                spill.close()  # the parent has its own descriptor now


def _send_and_release(channel: Channel, record: object, lines: Lines) -> None:
    try:
        channel.send(record)
    finally:
        lines.release()


# -- the parent ------------------------------------------------------------------------------------------------------


@dataclass
class _Child:
    index: int
    pid: int
    channel: Channel
    free: int  # idle worker threads
    running: dict[str, Host] = field(default_factory=dict)  # sent, no result yet
    gone: bool = False  # its socket reached EOF
    bye: bool = False  # it said goodbye after its last result
    reaped: bool = False  # waited for: its pid may belong to another process now


def split(total: int, parts: int) -> list[int]:
    """`total` worker threads over `parts` processes: differ by at most one, each at least one."""
    base, extra = divmod(total, parts)
    return [max(1, base + (1 if index < extra else 0)) for index in range(parts)]


class Processes:
    """The worker processes of one run, forked before any thread of the run starts."""

    def __init__(self, count: int, forks: int, spec: ChildSpec) -> None:
        if threading.active_count() != 1:
            # fork() copies only the calling thread; a lock another thread held would stay locked in the child.
            me = threading.current_thread()
            others = sorted({thread.name for thread in threading.enumerate() if thread is not me})
            raise CannotFork(f"{threading.active_count() - 1} other threads are running ({', '.join(others[:5])})")
        self.spec = spec
        spec.forks = split(forks, count)
        self.children: list[_Child] = []
        self._over_r = self._over_w = -1  # made after the forks (below): the children need no copy
        self._collector: threading.Thread | None = None  # while a run's collector has not been told to stop
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()  # buffered text would otherwise be written again by a child
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for index in range(count):
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                pid = os.fork()
                if pid == 0:  # the child
                    ours.close()
                    for child in self.children:  # its siblings' channels are none of its business
                        child.channel.sock.close()
                    for signum in _SIGNALS:
                        signal.signal(signum, signal.SIG_IGN)
                    signal.pthread_sigmask(signal.SIG_SETMASK, previous)
                    _child(index, Channel(theirs, spec.hosts), spec)
                theirs.close()
                self.children.append(_Child(index, pid, Channel(ours, spec.hosts), spec.forks[index]))
        except BaseException:
            self.kill()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        # One dispatch at a time, results included: two threads dispatching at once could otherwise deliver
        # their not-started hosts out of dispatch order.
        self.dispatching = threading.Lock()
        self.pending: collections.deque[tuple[Host, _Child]] = collections.deque()  # dispatch order
        self.stopping = False
        self.events: queue.Queue[object] = queue.Queue(maxsize=max(2 * forks, 16))
        self.handler_errors: list[BaseException] = []
        self.warn: Callable[[str], None] = lambda text: None
        # Readable once the run is over: the forwarder sleeps on it and on the cancel pipe, so the end of a run
        # waits for no tick. A pipe, not an Event: the main thread writes it, and a signal handler running on
        # the main thread meanwhile (Cancel.set) takes no lock of it.
        self._over_r, self._over_w = os.pipe()
        self._over = False

    def run(self, jobs: Iterable[Host], callbacks: PoolCallbacks[Host, HostResult], *, cancel: Cancel,
            deadline_check: Callable[[], None] = lambda: None,
            warn: Callable[[str], None] = lambda text: None) -> list[BaseException]:
        """Run every job in the children, one Finished event per job to `callbacks.handle`: run_pool's contract."""
        self.callbacks, self.cancel, self.warn = callbacks, cancel, warn
        collector = self._collector = threading.Thread(target=self._collect, name="fleetrun-collector")
        collector.start()
        readers = [threading.Thread(target=self._read, args=(child,), name=f"fleetrun-reader-{child.index}")
                   for child in self.children]
        for thread in readers:
            thread.start()
        # A daemon: should the run fail before it is woken, it must not keep the interpreter from exiting.
        forwarder = threading.Thread(target=self._forward_cancel, name="fleetrun-cancel-forwarder", daemon=True)
        forwarder.start()
        try:
            for number, host in enumerate(jobs):
                deadline_check()
                with self.lock:
                    self.pending.append((host, self.children[number % len(self.children)]))
                self._dispatch()
            self._wait(lambda: not self.pending and all(not c.running for c in self.children), deadline_check)
        finally:
            for child in self.children:
                with contextlib.suppress(OSError):
                    child.channel.send(("end",))
            self._wait(lambda: all(c.gone for c in self.children), deadline_check)
            self._end_forwarding()
            for thread in [*readers, forwarder]:
                while thread.is_alive():
                    deadline_check()
                    thread.join(TICK)
            self._reap()
            self._stop_collector()
            while collector.is_alive():
                collector.join(TICK)
        return self.handler_errors

    # -- dispatch ----------------------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Hand out pending hosts, in dispatch order, to their children's idle workers; hosts the run no longer
        starts get their result here, in order.

        Strictly in order, as one process's queue hands them out: a host whose child has no idle worker holds
        back the hosts after it, so admit() (batches, the failure budget) sees them in the order one process
        would, and a stopped rollout never starts a host after one it left out."""
        with self.dispatching:
            local: list[tuple[Host, HostResult]] = []
            with self.lock:
                while self.pending:
                    host, child = self.pending[0]
                    if child.gone:
                        local.append((host, self.callbacks.crashed(host, WorkerDied(
                            f"worker process {child.index} died before this host was started"))))
                    elif self.stopping or self.cancel.is_set():
                        local.append((host, self.callbacks.not_started(host)))
                    elif child.free <= 0:
                        break  # its child is busy: it, and every host after it, waits
                    elif not self.callbacks.admit(host):
                        self.stopping = True  # admit() said no once: the rollout stopped; so it stays
                        local.append((host, self.callbacks.not_started(host)))
                    else:
                        child.free -= 1
                        child.running[host.name] = host
                        try:
                            child.channel.send(("run", child.channel.index[host.name]))
                        except OSError:
                            pass  # the child is gone: its reader accounts for every host it had
                    self.pending.popleft()
            for host, result in local:
                self._finish(host, result)

    def _finish(self, host: Host, result: HostResult) -> None:
        try:
            self.callbacks.settled(host, result)
        except BaseException as error:
            self.handler_errors.append(error)
        self.events.put(Finished(host, result))
        with self.changed:
            if not self.pending and not any(child.running for child in self.children):
                self.changed.notify_all()  # all the run's waiter waits for: no wake-up of it per host

    def _wait(self, done: Callable[[], bool], deadline_check: Callable[[], None]) -> None:
        """Until `done()`; hosts still pending once the run is cancelled are given their result meanwhile."""
        while True:
            deadline_check()
            if self.cancel.is_set():
                self._dispatch()
            with self.changed:
                if done():
                    return
                self.changed.wait(TICK)

    def _forward_cancel(self) -> None:
        """Tell every child once the run is cancelled (a signal handler must not write to sockets itself)."""
        with contextlib.suppress(OSError, ValueError):  # the pipe closed under it: the run failed around it
            select.select([self.cancel.fileno(), self._over_r], [], [])
        if self.cancel.is_set() and not self._over:
            for child in self.children:
                with contextlib.suppress(OSError):
                    child.channel.send(("cancel", self.cancel.reason or "cancelled"))

    # -- results -----------------------------------------------------------------------------------------------------

    def _read(self, child: _Child) -> None:
        try:
            while True:
                message = child.channel.receive()
                assert isinstance(message, tuple)
                kind = message[0]
                if kind == "started":
                    self.events.put(Started(self.spec.hosts[message[1]]))
                elif kind == "lines":
                    self.events.put(message[1])
                elif kind in ("done", "finished"):
                    host: Host = self.spec.hosts[message[1]]
                    result = message[2] if kind == "finished" else HostResult(host, Outcome(message[2]),
                                                                              *message[3:])
                    with self.lock:
                        child.running.pop(host.name, None)
                        child.free += 1
                    self._finish(host, result)
                    self._dispatch()
                elif kind == "warn":
                    self.warn(message[1])
                elif kind == "bye":
                    child.bye = True
        except (EOFError, OSError, pickle.UnpicklingError):
            pass
        finally:
            self._lost(child)

    def _lost(self, child: _Child) -> None:
        """The child's channel ended: every host it still had gets a result, and so do those queued for it."""
        status = self._reap_one(child)
        with self.changed:
            child.gone = True
            left = list(child.running.values())
            child.running.clear()
            self.changed.notify_all()  # the end of the run waits for every child to be gone
        if left:
            why = WorkerDied(f"worker process {child.index} ended ({status}) before this host finished")
            for host in left:
                self._finish(host, self.callbacks.crashed(host, why))
        self._dispatch()

    def _reap_one(self, child: _Child) -> str:
        """Wait for a child whose channel has ended (it is exiting, or was killed), up to 5 s; how it ended."""
        exited = _exit_watch(child.pid)
        try:
            for _ in range(250):
                try:
                    pid, status = os.waitpid(child.pid, os.WNOHANG)
                except ChildProcessError:
                    child.reaped = True
                    return "gone"
                if pid:
                    child.reaped = True
                    code = os.waitstatus_to_exitcode(status)
                    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"
                if exited is None:
                    threading.Event().wait(0.02)
                else:  # readable the moment the child exits: no polling interval at the end of every run
                    select.select([exited], [], [], 0.02)
            return "still running"
        finally:
            if exited is not None:
                os.close(exited)

    def _reap(self) -> None:
        for child in self.children:
            if not child.reaped:
                self._reap_one(child)
            child.channel.sock.close()
        self._close_over()

    def _end_forwarding(self) -> None:
        self._over = True
        if self._over_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._over_w, b"x")

    def _close_over(self) -> None:
        for fd in (self._over_r, self._over_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._over_r = self._over_w = -1

    def _collect(self) -> None:
        while (event := self.events.get()) is not _STOP:
            try:
                self.callbacks.handle(event)
            except BaseException as error:
                self.handler_errors.append(error)

    def kill(self) -> None:
        """Stop every child not yet waited for at once (the run failed around them): nothing of theirs is
        reported."""
        for child in self.children:
            if child.reaped:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, 0)
            child.reaped = True
            with contextlib.suppress(OSError):
                child.channel.sock.close()
        self._end_forwarding()
        self._close_over()
        self._stop_collector()  # it renders what is queued, then ends: no thread outlives a failed run

    def _stop_collector(self) -> None:
        if self._collector is not None:
            self._collector = None
            self.events.put(_STOP)
