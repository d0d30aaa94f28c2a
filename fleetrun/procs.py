"""Several worker processes (--procs): the hosts dealt out over N processes, the parent stays in charge.

One Python process runs Python code on one core at a time, whatever the machine has: SSH's packet handling is
Python, so a controller with N cores runs N shares. Share 0 runs in the parent itself, on worker threads like
one process's; shares 1..N-1 run in forked children (fleetrun.procs_child). The parent keeps everything that
must be global, exactly as with one process: it iterates the dispatcher (batches, barriers, --pause,
--confirm), admits each host just before it starts and settles each result (the failure budget), and its one
collector thread renders every event. Children only run `work` for the hosts they are handed.

    parent main thread:  dispatcher.jobs() -> host k goes to share k mod N (a deterministic share), in order
    parent, per share:   a host is handed over only when that share has an idle worker (credit), so it starts
                         at once, and the parent's admit() is the last word on whether it starts
    share 0:             forks/N worker threads in the parent: the host's events go straight to the collector
    child (share k>0):   forks/N worker threads; Started, output lines and the Finished result come back
                         over its channel, and the parent's reader for it settles them
    parent collector:    renders, in arrival order, as with one process

Why the parent works too: a child costs its fork, the pages it copies, a reader thread and a round trip per
host, and the parent would otherwise spend its core waiting. At 200 hosts on 2 cores, client CPU per host
against one process's (bench/cpu_ab.py): 2.96 against 2.54 ms with N children, 2.71 against 2.43 now.

The channel is a Unix socketpair per child carrying pickled records (fleetrun.procs_channel). Children ignore
SIGINT, SIGTERM and SIGHUP (a terminal's Ctrl-C reaches the whole process group): the parent handles the signal
and sends "cancel" with its reason. A child whose parent is gone (its socket reads EOF, e.g. after a second
Ctrl-C) exits at once; its connections close, and each host's wrapper kills its command.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import queue
import select
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fleetrun.cancel import Cancel
from fleetrun.models import Host, HostResult, Outcome
from fleetrun.pool import TICK, Finished, PoolCallbacks, Started
from fleetrun.procs_channel import Channel, positions
from fleetrun.procs_child import STOP, ChildSpec, Work, child_main, run_host

__all__ = ["CannotFork", "ChildSpec", "Processes", "Work", "WorkerDied", "split"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class CannotFork(Exception):
    """Worker processes cannot be forked safely here (another thread is running): run in one process."""


class WorkerDied(Exception):
    """A worker process ended without returning every host it was given (killed, or a bug of ours)."""


# -- the parent ------------------------------------------------------------------------------------------------------


@dataclass
class _Child:
    """A share run by a forked child: hosts go over its channel."""

    index: int
    pid: int
    channel: Channel
    free: int  # idle worker threads
    running: dict[str, Host] = field(default_factory=dict)  # handed over, no result yet
    gone: bool = False  # its socket reached EOF
    bye: bool = False  # it said goodbye after its last result
    reaped: bool = False  # waited for: its pid may belong to another process now

    def hand(self, job: int) -> None:
        self.channel.send(("run", job))


@dataclass
class _Local:
    """Share 0, run by the parent's own worker threads: hosts go on a queue, results come back as calls."""

    index: int
    free: int
    jobs: queue.Queue[object] = field(default_factory=queue.Queue)
    threads: list[threading.Thread] = field(default_factory=list)
    running: dict[str, Host] = field(default_factory=dict)
    gone: bool = False  # its threads have ended

    def hand(self, job: int) -> None:
        self.jobs.put(job)


def split(total: int, parts: int) -> list[int]:
    """`total` worker threads over `parts` processes: differ by at most one, each at least one."""
    base, extra = divmod(total, parts)
    return [max(1, base + (1 if index < extra else 0)) for index in range(parts)]


def _exit_watch(pid: int) -> int | None:
    """A descriptor that becomes readable when child `pid` exits (Linux 5.3+), or None where there is none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux, an old kernel, or the child is already reaped
        return None


class Processes:
    """The shares of one run: share 0 in this process, the others in children forked before any thread of
    the run starts."""

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
        self.local = _Local(0, spec.forks[0])
        self.position = positions(spec.hosts)  # one map for every channel, and for share 0's hand-outs
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for index in range(1, count):
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                pid = os.fork()
                if pid == 0:  # the child
                    ours.close()
                    for child in self.children:  # its siblings' channels are none of its business
                        child.channel.sock.close()
                    for signum in _SIGNALS:
                        signal.signal(signum, signal.SIG_IGN)
                    signal.pthread_sigmask(signal.SIG_SETMASK, previous)
                    child_main(index, Channel(theirs, spec.hosts, self.position), spec)
                theirs.close()
                self.children.append(_Child(index, pid, Channel(ours, spec.hosts, self.position),
                                            spec.forks[index]))
        except BaseException:
            self.kill()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        spec.setup(0, None)  # only now: the children had to inherit the state from before any share's setup
        self.shares: list[_Child | _Local] = [self.local, *self.children]
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        # One dispatch at a time, results included: two threads dispatching at once could otherwise deliver
        # their not-started hosts out of dispatch order.
        self.dispatching = threading.Lock()
        self.pending: collections.deque[tuple[Host, _Child | _Local]] = collections.deque()  # dispatch order
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
        """Run every job in the shares, one Finished event per job to `callbacks.handle`: run_pool's contract."""
        self.callbacks, self.cancel, self.warn = callbacks, cancel, warn
        collector = self._collector = threading.Thread(target=self._collect, name="fleetrun-collector")
        collector.start()
        readers = [threading.Thread(target=self._read, args=(child,), name=f"fleetrun-reader-{child.index}")
                   for child in self.children]
        for thread in readers:
            thread.start()
        local = self.local
        local.threads = [threading.Thread(target=self._work_locally, args=(local,), name=f"fleetrun-worker-0.{n}")
                         for n in range(local.free)]
        for thread in local.threads:
            thread.start()
        # A daemon: should the run fail before it is woken, it must not keep the interpreter from exiting.
        forwarder = threading.Thread(target=self._forward_cancel, name="fleetrun-cancel-forwarder", daemon=True)
        forwarder.start()
        try:
            for number, host in enumerate(jobs):
                deadline_check()
                with self.lock:
                    self.pending.append((host, self.shares[number % len(self.shares)]))
                self._dispatch()
            self._wait(lambda: not self.pending and all(not share.running for share in self.shares), deadline_check)
        finally:
            for child in self.children:
                with contextlib.suppress(OSError):
                    child.channel.send(("end",))
            for _ in local.threads:
                local.jobs.put(STOP)
            for thread in local.threads:  # as run_pool's workers: each ends once its host has its result
                while thread.is_alive():
                    deadline_check()
                    thread.join(TICK)
            with self.changed:
                local.gone = True
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
        """Hand out pending hosts, in dispatch order, to their shares' idle workers; hosts the run no longer
        starts get their result here, in order.

        Strictly in order, as one process's queue hands them out: a host whose share has no idle worker holds
        back the hosts after it, so admit() (batches, the failure budget) sees them in the order one process
        would, and a stopped rollout never starts a host after one it left out."""
        with self.dispatching:
            local: list[tuple[Host, HostResult]] = []
            with self.lock:
                while self.pending:
                    host, share = self.pending[0]
                    if share.gone:
                        local.append((host, self.callbacks.crashed(host, WorkerDied(
                            f"worker process {share.index} died before this host was started"))))
                    elif self.stopping or self.cancel.is_set():
                        local.append((host, self.callbacks.not_started(host)))
                    elif share.free <= 0:
                        break  # its share is busy: it, and every host after it, waits
                    elif not self.callbacks.admit(host):
                        self.stopping = True  # admit() said no once: the rollout stopped; so it stays
                        local.append((host, self.callbacks.not_started(host)))
                    else:
                        share.free -= 1
                        share.running[host.name] = host
                        try:
                            share.hand(self.position[host.name])
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
            if not self.pending and not any(share.running for share in self.shares):
                self.changed.notify_all()  # all the run's waiter waits for: no wake-up of it per host

    def _done(self, share: _Child | _Local, host: Host, result: HostResult) -> None:
        """A host of `share` has its result: settle it, and hand the freed worker its next host."""
        with self.lock:
            share.running.pop(host.name, None)
            share.free += 1
        self._finish(host, result)
        self._dispatch()

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

    # -- share 0, in this process ------------------------------------------------------------------------------------

    def _work_locally(self, local: _Local) -> None:
        """One of the parent's worker threads: what a child's worker does, with no channel in between."""
        hosts = self.spec.hosts

        def started(job: int) -> None:
            self.events.put(Started(hosts[job]))

        while (job := local.jobs.get()) is not STOP:
            assert isinstance(job, int)
            self._done(local, hosts[job], run_host(self.spec, job, self.cancel, started, self.events.put))

    # -- the children's results --------------------------------------------------------------------------------------

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
                    self._done(child, host, result)
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
        while (event := self.events.get()) is not STOP:
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
        for thread in self.local.threads:  # normally ended by run() already; else each ends after its host
            if thread.is_alive():
                self.local.jobs.put(STOP)
        self._end_forwarding()
        self._close_over()
        self._stop_collector()  # it renders what is queued, then ends: no thread outlives a failed run

    def _stop_collector(self) -> None:
        if self._collector is not None:
            self._collector = None
            self.events.put(STOP)
