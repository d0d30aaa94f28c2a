"""A worker process's life (--procs): run the hosts the parent hands over, send back what happened.

The child is forked with everything it needs (fleetrun.procs): the hosts, the work, the keys. It runs its share
of the `--forks` worker threads; a host arrives as its index in the selection, and its Started, output lines and
result go back over the channel (fleetrun.procs_channel). It ignores the terminal's signals: the parent decides,
and sends "cancel". A child whose parent is gone exits at once; its connections close with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from fleetrun.cancel import Cancel
from fleetrun.lines import Lines
from fleetrun.models import Host, HostResult
from fleetrun.procs_channel import Channel, is_plain

STOP = object()

Work = Callable[[Host, Callable[[object], None]], HostResult]


@dataclass
class ChildSpec:
    """What a child needs besides its socket; all of it inherited by fork, nothing pickled."""

    hosts: Sequence[Host]
    work: Work
    crashed: Callable[[Host, BaseException], HostResult]
    not_started: Callable[[Host], HostResult]
    cancel: Cancel
    # Per-process state: (share index, how to warn). A child gets a warn that goes over its channel; share 0,
    # run by the parent itself, gets None: its warnings go where the parent's always go.
    setup: Callable[[int, Callable[[str], None] | None], None]
    forks: list[int] = field(default_factory=list)  # worker threads per share (share 0: the parent's own)
    announce_started: bool = True  # a "started" message per host (PoolCallbacks.announce_started)


def child_main(index: int, channel: Channel, spec: ChildSpec) -> NoReturn:
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

        def started(job: int) -> None:
            channel.send(("started", job))

        def worker() -> None:
            while (job := jobs.get()) is not STOP:
                assert isinstance(job, int)
                _send_result(channel, job, run_host(spec, job, spec.cancel, started, emit))

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
            jobs.put(STOP)
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


def run_host(spec: ChildSpec, job: int, cancel: Cancel, started: Callable[[int], None],
             emit: Callable[[object], None]) -> HostResult:
    """Host `job` of the selection, as every share's workers run it (a child's, and share 0's in the parent):
    not started once the run is cancelled, else announced (if anything shows it) and worked on."""
    host = spec.hosts[job]
    if cancel.is_set():
        return spec.not_started(host)
    if spec.announce_started:
        started(job)
    try:
        return spec.work(host, emit)
    except BaseException as error:  # a worker never dies from a job
        return spec.crashed(host, error)


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
