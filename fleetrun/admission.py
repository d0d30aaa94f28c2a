"""Admission control for SSH handshakes: at most N hosts between "TCP connect" and "authenticated" at once.

`--forks` says how many hosts are worked on at once; most of that time a host waits on its command, which
costs nothing. The handshake is different: key exchange, host-key check and authentication are CPU work on
both ends, and on a controller that runs hundreds of them at once each one gets a sliver of the cores. Their
connect timeouts then expire while they wait for CPU, and reachable hosts are reported unreachable (issue 13:
256 handshakes at once on 2 cores, 889-919 of 1000 ok). So a host takes a handshake slot before its TCP
connect and gives it back once authenticated (or failed); its connect timeout starts when it gets the slot.

With several worker processes (--procs) each gets its share of the slots: the hosts are dealt out evenly, so
the shares fill evenly, and no slot has to cross a process boundary.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure
from fleetrun.models import Outcome

PER_CORE = 16  # handshakes in flight per usable core by default (bench/RESULTS.md: the scale rows)
MIN_LIMIT = 8


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, as taskset or a container's cpuset allow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def default_limit(cores: int | None = None) -> int:
    """Handshakes in flight when --max-handshakes is not given: PER_CORE per usable core, at least MIN_LIMIT."""
    return max(MIN_LIMIT, PER_CORE * (cores if cores is not None else usable_cores()))


def share(limit: int, processes: int, index: int) -> int:
    """Process `index`'s (0-based) share of `limit` slots: the shares differ by at most one and sum to
    `limit`, and each is at least 1."""
    base, extra = divmod(limit, processes)
    return max(1, base + (1 if index < extra else 0))


class Admission:
    """`limit` handshake slots shared by the worker threads of one process.

    A condition, not a semaphore polled with a timeout: a returned slot wakes exactly one waiter, and the
    run's cancel wakes them all, so 200 waiting workers cost nothing while they wait.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"handshake limit {limit} is below 1")
        self.limit = limit
        self._free = limit
        self._changed = threading.Condition(threading.Lock())
        self.waited = 0  # hosts that had to wait for a slot (for tests and diagnostics)

    @contextmanager
    def slot(self, cancel: Cancel) -> Iterator[None]:
        """Hold one handshake slot for the block; raises HostFailure(CANCELLED) if the run is cancelled first."""
        handle = cancel.add_callback(self._wake_all)
        try:
            self._take(cancel)
        finally:
            cancel.remove_callback(handle)
        try:
            yield
        finally:
            with self._changed:
                self._free += 1
                self._changed.notify()

    def _take(self, cancel: Cancel) -> None:
        with self._changed:
            if self._free == 0:
                self.waited += 1
            while self._free == 0 and not cancel.is_set():
                self._changed.wait()
            if cancel.is_set():
                self._changed.notify()  # pass on any wake-up meant for a waiter that can still use it
                raise HostFailure(Outcome.CANCELLED, f"cancelled before connecting ({cancel.reason}), while "
                                  "waiting for a handshake slot (--max-handshakes)")
            self._free -= 1

    def _wake_all(self) -> None:
        with self._changed:
            self._changed.notify_all()
