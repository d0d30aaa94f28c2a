"""fleetrun's own stdin, read once into a private spool that every host's command reads from its start.

ssh's semantics, for many hosts: the bytes go to each command as they arrive, then EOF when stdin ends. A
host that starts later (`--forks 2` over 6 hosts, a later batch) still gets all of it, so the bytes are kept
for the run: in memory up to MEMORY_LIMIT, then in an unlinked temporary file (mode 0600, made by mkstemp)
that readers `pread` from, so memory stays bounded whatever the size. Nothing is read until the first host
asks (so `-i -` has read its inventory first), and a pipe that never closes (`sleep 600 | fleetrun exec true`)
keeps no host waiting: a host whose command ends is done, whatever stdin is doing.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import IO

MEMORY_LIMIT = 4 << 20
CHUNK = 1 << 16


class StdinSpool:
    """The bytes of one file descriptor, read by a background thread, for any number of readers."""

    def __init__(self, fd: int = 0, *, memory_limit: int = MEMORY_LIMIT) -> None:
        self._fd = fd
        self._limit = memory_limit
        self._cond = threading.Condition()
        self._memory = bytearray()
        self._file: IO[bytes] | None = None
        self._size = 0
        self._eof = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start reading (once; later calls do nothing)."""
        with self._cond:
            if self._thread is not None:
                return
            # A daemon: it may block in read() on a pipe that never closes, and the run must still end when its
            # last host does. What it read matters only while hosts run, and they wait on it with a stop flag.
            self._thread = threading.Thread(target=self._read_all, name="fleetrun-stdin", daemon=True)
            self._thread.start()

    @property
    def size(self) -> int:
        with self._cond:
            return self._size

    @property
    def spilled(self) -> bool:
        """Whether the bytes went to the temporary file (more than the memory limit arrived)."""
        with self._cond:
            return self._file is not None

    def _read_all(self) -> None:
        try:
            while True:
                try:
                    data = os.read(self._fd, CHUNK)
                except InterruptedError:
                    continue
                except OSError:  # a closed or unreadable stdin reads as empty, as ssh treats it
                    data = b""
                if not data or not self._append(data):
                    break
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _append(self, data: bytes) -> bool:
        """Keep `data`; False once the spool is closed (the run is over: stop reading)."""
        with self._cond:
            if self._closed:
                return False
            file = self._file
            if file is None and self._size + len(data) > self._limit:
                file = tempfile.TemporaryFile(prefix="fleetrun-stdin-")  # noqa: SIM115 (closed by close()); 0600, unlinked
                file.write(self._memory)
                file.flush()
                self._memory = bytearray()
                self._file = file
        if file is None:
            with self._cond:
                self._memory += data
                self._size += len(data)
                self._cond.notify_all()
            return True
        # Only this thread writes, and readers read only below _size: the write needs no lock.
        try:
            os.pwrite(file.fileno(), data, self._size)
        except (OSError, ValueError):  # closed under us (the run ended), or the disk is full
            with self._cond:
                self._eof = True
                self._cond.notify_all()
            return False
        with self._cond:
            self._size += len(data)
            self._cond.notify_all()
        return True

    def wake(self) -> None:
        """Wake every reader waiting in `chunk` (to look at its stop flag)."""
        with self._cond:
            self._cond.notify_all()

    def chunk(self, offset: int, stopped: Callable[[], bool]) -> bytes | None:
        """The bytes from `offset` on (at most CHUNK), waiting for them; None at EOF; b"" once `stopped()`."""
        with self._cond:
            while offset >= self._size and not self._eof:
                if stopped():
                    return b""
                self._cond.wait()
            if offset >= self._size:
                return None
            end = min(self._size, offset + CHUNK)
            if self._file is None:
                return bytes(self._memory[offset:end])
            fileno = self._file.fileno()
        return os.pread(fileno, end - offset, offset)

    def close(self) -> None:
        """Drop the temporary file (the reading thread, if blocked, dies with the process)."""
        with self._cond:
            file, self._file = self._file, None
            self._memory = bytearray()
            self._eof = self._closed = True
            self._size = 0
            self._cond.notify_all()
        if file is not None:
            file.close()


class Feed:
    """What one host's command gets on stdin: `prefix` (a --script), then the spool's bytes, then EOF."""

    def __init__(self, prefix: bytes = b"", spool: StdinSpool | None = None) -> None:
        self.prefix = prefix
        self.spool = spool
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()
        if self.spool is not None:
            self.spool.wake()

    def pieces(self) -> Iterator[bytes]:
        """The bytes to send in order; ends at EOF, or early (without EOF) once stopped."""
        if self.prefix:
            yield self.prefix
        if self.spool is None:
            return
        self.spool.start()
        offset = 0
        while not self._stop.is_set():
            data = self.spool.chunk(offset, self._stop.is_set)
            if data is None:
                return
            if not data:
                break
            offset += len(data)
            yield data

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()
