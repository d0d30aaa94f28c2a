"""Bounds one host's transfer in time: on --timeout or cancel it closes the host's channels, so no call blocks on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from fleetrun.cancel import Cancel

# After the limit (or a cancel) the transfer gets this long to clean up on the host (remove its temp file over a
# fresh SFTP channel); a host that does not answer by then has its whole connection closed.
CLEANUP_GRACE = 2.0

Closer = Callable[[], None]


class TransferStopped(Exception):
    """Raised inside a transfer at a safe point once its host's time is up or the run is cancelled."""


class Watchdog:
    """One host's transfer clock: `limit` seconds (None: no limit) from its creation, and the run's cancel.

    A paramiko call waiting for a server that never answers cannot be interrupted from inside; closing its
    channel from another thread wakes it (EOF). So a small thread per transfer waits for the limit or the
    cancel, then calls the channel closers registered with `guard`, and after CLEANUP_GRACE more the
    `last_resort` closer (the whole connection). The transfer itself calls `check()` between steps.
    """

    def __init__(self, limit: float | None, cancel: Cancel, last_resort: Closer, *, name: str = "transfer",
                 grace: float = CLEANUP_GRACE) -> None:
        self.limit = limit
        self.deadline = None if limit is None else time.monotonic() + limit
        self.cancel = cancel
        self.doing = "starting"  # what the transfer is doing now, for the one-line reason
        self.fired: str | None = None  # "timeout" or "cancelled", once the closers ran
        self._last_resort = last_resort
        self._grace = grace
        self._closers: dict[int, Closer] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._finished = False
        self._wake = threading.Event()  # set by a cancel or by stop()
        self._done = threading.Event()  # set only by stop()
        self._handle = cancel.add_callback(self._wake.set)  # runs in a signal handler: only sets an event
        # Daemon: it only hurries the worker along, and a close on a dead connection may block until the
        # worker closes the transport; nothing waits for it and its result never matters.
        self._thread = threading.Thread(target=self._run, name=f"fleetrun-watchdog-{name}", daemon=True)
        self._thread.start()

    def reason(self) -> str | None:
        """Why the transfer must stop ("timeout", "cancelled"), or None while it may go on."""
        if self.fired is not None:
            return self.fired
        if self.cancel.is_set():
            return "cancelled"
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return "timeout"
        return None

    def check(self) -> None:
        """Raise TransferStopped when the time is up or the run was cancelled."""
        reason = self.reason()
        if reason is not None:
            raise TransferStopped(reason)

    def remaining(self) -> float | None:
        """Seconds left (never below a tiny positive value), or None without a limit."""
        if self.deadline is None:
            return None
        return max(self.deadline - time.monotonic(), 0.01)

    def guard(self, closer: Closer) -> int:
        """Close something (a channel) when the watchdog fires; at once if it already has."""
        with self._lock:
            handle = self._next
            self._next += 1
            self._closers[handle] = closer
            fired = self.fired is not None
        if fired:
            _quietly(closer)
        return handle

    def release(self, handle: int) -> None:
        with self._lock:
            self._closers.pop(handle, None)

    def stop(self) -> None:
        """The transfer is over (cleanup included): the thread exits without closing anything more."""
        with self._lock:
            self._finished = True
        self._done.set()
        self._wake.set()
        self.cancel.remove_callback(self._handle)

    def _run(self) -> None:
        wait = None if self.deadline is None else max(self.deadline - time.monotonic(), 0.0)
        self._wake.wait(wait)
        with self._lock:
            if self._finished:
                return
            self.fired = "cancelled" if self.cancel.is_set() else "timeout"
            closers = list(self._closers.values())
        for closer in closers:
            _quietly(closer)
        if not self._done.wait(self._grace):  # stop() not called in time: the host does not answer at all
            _quietly(self._last_resort)


def _quietly(closer: Closer) -> None:
    try:
        closer()
    except Exception:  # closing something already broken: nothing left to do about it
        pass
