"""The socket between the parent and a worker process: pickled records, with open files passed as descriptors."""

from __future__ import annotations

import io
import os
import pickle
import socket
import struct
import threading
from collections.abc import Sequence
from typing import Any

from fleetrun.models import Host
from fleetrun.spill import Spill

_HEADER = struct.Struct("!IB")  # payload length, number of file descriptors passed with it (or PLAIN)
MAX_FDS = 64  # per record: a batch of lines ends at its first spilled line, a result has two streams
# A record of plain values only (most of them: "run", "started", a result without spill files): pickled and
# loaded without the per-object hooks below, which cost more than the rest of the record's way together.
PLAIN = 0x80
_SCALARS = frozenset({int, str, bytes, float, bool, type(None)})


def is_plain(record: tuple[Any, ...]) -> bool:
    """Whether `record` holds only scalars and tuples of scalars (no host, no open file, no object)."""
    for item in record:
        kind = type(item)
        if kind not in _SCALARS and not (kind is tuple and all(type(part) in _SCALARS for part in item)):
            return False
    return True


def positions(hosts: Sequence[Host]) -> dict[str, int]:
    """Each host's position in the selection: how a host travels between the processes."""
    return {host.name: position for position, host in enumerate(hosts)}


class _Pickler(pickle.Pickler):
    """Hosts by their index in the selection, open files by descriptor: neither is copied byte by byte."""

    def __init__(self, file: io.BytesIO, index: dict[str, int]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.index = index
        self.fds: list[int] = []

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, Host):
            position = self.index.get(obj.name)
            return None if position is None else ("host", position)
        if isinstance(obj, Spill):
            self.fds.append(obj.fileno())
            return ("spill", len(self.fds) - 1, obj.size)
        if isinstance(obj, io.BufferedRandom):  # a long line's spill file (fleetrun.lines)
            # Its last writes may still sit in this process's buffer: the parent reads the file through its own
            # descriptor, and would see the line cut at a multiple of the buffer size (flaky: unless this side's
            # close, right after the send, flushed them before the parent read).
            obj.flush()
            self.fds.append(obj.fileno())
            return ("file", len(self.fds) - 1)
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, hosts: Sequence[Host], fds: list[int]) -> None:
        super().__init__(io.BytesIO(data))
        self.hosts, self.fds = hosts, fds

    def persistent_load(self, pid: Any) -> Any:
        kind = pid[0]
        if kind == "host":
            return self.hosts[pid[1]]
        if kind == "spill":
            return Spill.from_fd(self.fds[pid[1]], pid[2])
        if kind == "file":
            return open(self.fds[pid[1]], "rb+", closefd=True)  # closed by Lines.release
        raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")


class Channel:
    """One end of a parent-child socketpair: whole records in, whole records out; sends are serialised."""

    def __init__(self, sock: socket.socket, hosts: Sequence[Host], index: dict[str, int] | None = None) -> None:
        """`index`, each host's position in `hosts`, when the caller has it already (one for all channels)."""
        self.sock, self.hosts = sock, hosts
        self.index = index if index is not None else positions(hosts)
        self.send_lock = threading.Lock()

    def send(self, record: object) -> list[int]:
        """Send `record`; returns the descriptors it carried (the caller may close its copies now)."""
        if type(record) is tuple and is_plain(record):
            self.send_plain(record)
            return []
        buffer = io.BytesIO()
        pickler = _Pickler(buffer, self.index)
        pickler.dump(record)
        payload = buffer.getvalue()
        header = _HEADER.pack(len(payload), len(pickler.fds))
        with self.send_lock:
            if pickler.fds:
                socket.send_fds(self.sock, [header], pickler.fds)
                self.sock.sendall(payload)
            else:
                self.sock.sendall(header + payload)
        return pickler.fds

    def send_plain(self, record: tuple[Any, ...]) -> None:
        """Send a record the caller knows `is_plain`, without looking at it again."""
        payload = pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
        with self.send_lock:
            self.sock.sendall(_HEADER.pack(len(payload), PLAIN) + payload)  # one write: one wake-up

    def receive(self) -> object:
        """The next record; EOFError when the other side has gone."""
        header, fds = self._exactly(_HEADER.size, want_fds=True)
        length, count = _HEADER.unpack(header)
        if count == PLAIN and not fds:
            return pickle.loads(self._exactly(length, want_fds=False)[0])
        if len(fds) != count:
            for fd in fds:
                os.close(fd)
            raise EOFError(f"record announced {count} descriptors, {len(fds)} arrived")
        payload, _ = self._exactly(length, want_fds=False)
        return _Unpickler(payload, self.hosts, fds).load()

    def _exactly(self, size: int, *, want_fds: bool) -> tuple[bytes, list[int]]:
        chunks: list[bytes] = []
        fds: list[int] = []
        got = 0
        while got < size:
            if want_fds:
                data, received, _, _ = socket.recv_fds(self.sock, size - got, MAX_FDS)
                fds += received
            else:
                data = self.sock.recv(min(size - got, 1 << 20))
            if not data:
                for fd in fds:
                    os.close(fd)
                raise EOFError("the other side closed the channel")
            chunks.append(data)
            got += len(data)
        return b"".join(chunks), fds


# -- the child -------------------------------------------------------------------------------------------------------
