"""Big outputs kept on disk, not in memory: past SPILL_AT bytes a stream goes on in a private temporary file.

200 hosts printing 1 MB each held 275 MiB (issue 13): every finished host's output sat in memory until the
collector had rendered it, and the queue between them holds dozens of results. Now a host's result holds at
most SPILL_AT bytes of each stream (its start, which the table and the journal show) and, when the stream was
longer, a `Spill`: an already unlinked 0600 file with the whole stream (up to --max-output), read back in
pieces by the renderer that needs all of it (JSON, gather, -v) while it renders that one host. The file
disappears with its last descriptor: after rendering, or with the process whatever happens.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

SPILL_AT = 64 * 1024  # bytes of each stream kept in memory per host; equal to the journal's output cap
READ_SIZE = 1 << 20


class Spill:
    """The whole of one stream's output in an unlinked private file, read with pread (no shared offset, so a
    descriptor passed to another process or duplicated for a renderer never disturbs another reader)."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd: int | None = fd
        self.size = size

    @classmethod
    def create(cls) -> Spill:
        """A new empty spill file (mode 0600, already unlinked: private, and never left behind)."""
        handle = tempfile.TemporaryFile(prefix="fleetrun-output-", buffering=0)  # noqa: SIM115 (fd kept)
        fd = os.dup(handle.fileno())
        handle.close()
        return cls(fd, 0)

    @classmethod
    def from_fd(cls, fd: int, size: int) -> Spill:
        return cls(fd, size)

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("spill file already closed")
        return self._fd

    def append(self, data: bytes) -> None:
        """Add bytes at the end (only the one thread that fills it calls this, before anyone reads)."""
        view = memoryview(data)
        while view:
            written = os.pwrite(self.fileno(), view, self.size)
            self.size += written
            view = view[written:]

    def read(self, start: int = 0, length: int | None = None) -> bytes:
        """`length` bytes from `start` (all the rest by default)."""
        end = self.size if length is None else min(self.size, start + length)
        parts: list[bytes] = []
        position = start
        while position < end:
            chunk = os.pread(self.fileno(), min(READ_SIZE, end - position), position)
            if not chunk:
                break
            parts.append(chunk)
            position += len(chunk)
        return b"".join(parts)

    def chunks(self, size: int = READ_SIZE) -> Iterator[bytes]:
        """The whole content in pieces of at most `size` bytes; may be iterated again."""
        for start in range(0, self.size, size):
            yield self.read(start, size)

    def tail(self, length: int) -> bytes:
        return self.read(max(0, self.size - length))

    def dup(self) -> Spill:
        """Another handle on the same file, closed independently (a renderer that keeps it until the end)."""
        return Spill(os.dup(self.fileno()), self.size)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with suppress(OSError):
                os.close(fd)

    def __repr__(self) -> str:
        return f"Spill(fd={self._fd}, size={self.size})"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a Spill crosses processes as a descriptor (fleetrun.procs), never pickled by value")


class Capture:
    """One stream of a running command: the first `limit` bytes are kept (the rest counted and marked
    truncated); the first `spill_at` of them in memory, and all of them in a Spill once there are more.
    `spill_at=None` keeps everything in memory (short internal commands)."""

    def __init__(self, limit: int, spill_at: int | None = None) -> None:
        self.limit, self.spill_at = limit, spill_at
        self.head = bytearray()
        self.spill: Spill | None = None
        self.size = 0
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        room = self.limit - self.size
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
        if not chunk:
            return
        self.size += len(chunk)
        if self.spill is not None:
            self.spill.append(chunk)
            return
        self.head += chunk
        if self.spill_at is not None and len(self.head) > self.spill_at:
            try:
                spill = Spill.create()
                spill.append(bytes(self.head))
            except OSError:
                self.spill_at = None  # no room on disk for it: keep it in memory, as before spilling existed
                return
            self.spill = spill
            del self.head[self.spill_at:]

    def data(self) -> bytes:
        """What is kept in memory: everything, or the first spill_at bytes when the rest is in `spill`."""
        return bytes(self.head)

    def close(self) -> None:
        if self.spill is not None:
            self.spill.close()


def rewrite(head: bytes, spill: Spill | None, feed: Callable[[bytes], bytes], end: Callable[[], bytes],
            spill_at: int = SPILL_AT) -> tuple[bytes, Spill | None]:
    """A stream passed through a chunk filter (`feed` each piece, then `end`): the new head and spill.

    Used to mask secrets in a spilled output; the old spill is left to its owner to close."""
    if spill is None:
        data = feed(head) + end()
        return data, None
    new = Spill.create()
    try:
        for chunk in spill.chunks():
            new.append(feed(chunk))
        new.append(end())
        return new.read(0, spill_at), new
    except BaseException:
        new.close()
        raise
