"""A run-wide cancel flag that threads can also wait on with select(), so nobody polls."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable


class Cancel:
    """Set once (interrupt, deadline, failure budget); every waiter wakes at once.

    Besides the `threading.Event`, it owns a pipe whose read end becomes readable when set,
    so a worker blocked in `select()` on an SSH channel wakes up without a polling interval.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._read_fd, self._write_fd = os.pipe()
        self.reason: str | None = None
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next_id = 0

    def set(self, reason: str) -> bool:
        """Cancel with a reason; returns False if it was already cancelled (the first reason wins)."""
        with self._lock:
            if self._event.is_set():
                return False
            self.reason = reason
            self._event.set()
            os.write(self._write_fd, b"x")
            callbacks = list(self._callbacks.values())
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a callback only hurries a worker along; it must not stop the others
                pass
        return True

    def add_callback(self, callback: Callable[[], None]) -> int:
        """Run `callback` when cancelled (at once if already); returns a handle for `remove_callback`.

        Used to shut down sockets still in the connect phase, which cannot select() on us.
        """
        with self._lock:
            handle = self._next_id
            self._next_id += 1
            self._callbacks[handle] = callback
            already = self._event.is_set()
        if already:
            callback()
        return handle

    def remove_callback(self, handle: int) -> None:
        with self._lock:
            self._callbacks.pop(handle, None)

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def after_fork(self) -> None:
        """In a forked worker process: a pipe of its own, so that setting this copy wakes no one in the parent."""
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._read_fd, self._write_fd = os.pipe()
        if self._event.is_set():
            os.write(self._write_fd, b"x")

    def fileno(self) -> int:
        """Readable once cancelled; never read from, so it stays readable for every waiter."""
        return self._read_fd

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
