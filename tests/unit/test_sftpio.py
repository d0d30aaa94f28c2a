"""The pipelined SFTP download against a scripted server: order, short and early replies, growth, errors, memory."""

from __future__ import annotations

import errno
import os
import struct
import threading
from collections.abc import Callable

import paramiko
import pytest
from paramiko.sftp import CMD_DATA, CMD_READ, CMD_STATUS, SFTP_EOF, SFTP_FAILURE, SFTP_PERMISSION_DENIED

from fleetrun.ssh.sftpio import CHUNK, download


class FakeServer:
    """Speaks the part of paramiko's SFTPClient that download() uses; answers reads from `content`.

    `pick` chooses which outstanding read is answered next (default: the oldest, like OpenSSH);
    `cap` limits reply sizes (short reads); `fail_at` answers a read covering that offset with `fail_code`.
    """

    def __init__(self, content: bytes, *, pick: Callable[[list[int]], int] = min, cap: int = CHUNK,
                 fail_at: int | None = None, fail_code: int = SFTP_FAILURE) -> None:
        self.content = content
        self.pick, self.cap, self.fail_at, self.fail_code = pick, cap, fail_at, fail_code
        self.outstanding: dict[int, tuple[int, int]] = {}
        self.requests: list[tuple[int, int]] = []
        self.max_outstanding = 0
        self.writes = 0  # channel writes: each carries a batch of reads
        self.delivered = 0  # bytes answered so far
        self.closed = False
        # What paramiko's SFTPClient keeps for its replies, which download() shares.
        self._lock = threading.Lock()
        self.request_number = 1
        self._expecting: dict[int, object] = {}
        self.sock = self

    def open(self, path: str, mode: str) -> FakeServer:
        assert mode == "rb"
        return self

    handle = b"handle-1"

    def close(self) -> None:
        self.closed = True

    def sendall(self, data: bytes) -> None:
        """The channel: parse the SSH_FXP_READ packets in one write."""
        self.writes += 1
        while data:
            (size,) = struct.unpack(">I", data[:4])
            body, data = data[4 : 4 + size], data[4 + size :]
            kind, number, handle_size = struct.unpack(">BII", body[:9])
            handle = body[9 : 9 + handle_size]
            offset, length = struct.unpack(">QI", body[9 + handle_size :])
            assert (kind, handle) == (CMD_READ, self.handle) and 0 < length <= CHUNK and number in self._expecting
            self.outstanding[number] = (offset, length)
            self.requests.append((offset, length))
        self.max_outstanding = max(self.max_outstanding, len(self.outstanding))

    def _read_response(self) -> None:
        number = self.pick(list(self.outstanding))
        offset, length = self.outstanding.pop(number)
        fileobj = self._expecting.pop(number)
        reply = paramiko.Message()
        if self.fail_at is not None and offset <= self.fail_at < offset + length:
            kind = CMD_STATUS
            reply.add_int(self.fail_code)
            reply.add_string("no")
        elif offset >= len(self.content):
            kind = CMD_STATUS
            reply.add_int(SFTP_EOF)
            reply.add_string("End of file")
        else:
            kind = CMD_DATA
            data = self.content[offset : offset + min(length, self.cap)]
            reply.add_string(data)
            self.delivered += len(data)
        reply.rewind()
        fileobj._async_response(kind, reply, number)  # type: ignore[attr-defined]


class Sink:
    """The local file: records what was written and the most bytes ever answered but not yet written."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.data = bytearray()
        self.max_unwritten = 0

    def write(self, chunk: bytes) -> None:
        self.max_unwritten = max(self.max_unwritten, self.server.delivered - len(self.data))
        self.data += chunk


def fetch(server: FakeServer, size_hint: int, window: int = 8) -> Sink:
    sink = Sink(server)
    count = download(server, "/f", sink.write, size_hint=size_hint, window=window)  # type: ignore[arg-type]
    assert count == len(sink.data) and server.closed
    return sink


CONTENT = os.urandom(40 * CHUNK + 1234)


def test_reads_in_order_within_the_window_and_asks_once_past_the_end():
    server = FakeServer(CONTENT)
    sink = fetch(server, len(CONTENT))
    assert bytes(sink.data) == CONTENT
    assert server.max_outstanding <= 8 and sink.max_unwritten <= 8 * CHUNK
    assert len(server.requests) == 41 + 1, "one read per chunk, then one to see the end: no window of waste"
    assert server.writes <= 2 + 41 // (8 // 4), "reads go out in batches of a quarter window, not one by one"


def test_replies_out_of_order_are_written_in_file_order():
    server = FakeServer(CONTENT, pick=max)  # always the newest read first
    sink = fetch(server, len(CONTENT))
    assert bytes(sink.data) == CONTENT and sink.max_unwritten <= 8 * CHUNK


def test_short_replies_are_asked_for_again():
    server = FakeServer(CONTENT, cap=10_000)
    sink = fetch(server, len(CONTENT))
    assert bytes(sink.data) == CONTENT
    assert server.max_outstanding <= 2 * 8, "a short reply adds one read for its rest, never a window"


@pytest.mark.parametrize("hint", [0, 5, len(CONTENT) - 1, len(CONTENT), len(CONTENT) + 1, 10 * len(CONTENT)])
def test_reads_to_the_real_end_whatever_the_stat_said(hint):
    # A file that grew since it was listed (a log) is read to its new end; one that shrank, to its new end.
    assert bytes(fetch(FakeServer(CONTENT), hint).data) == CONTENT


def test_empty_file():
    server = FakeServer(b"")
    assert fetch(server, 0).data == b"" and server.requests == [(0, CHUNK)]


def test_error_replies_raise_with_the_errno_describe_understands():
    with pytest.raises(OSError, match="no"):
        fetch(FakeServer(CONTENT, fail_at=20 * CHUNK), len(CONTENT))
    with pytest.raises(OSError) as raised:
        fetch(FakeServer(CONTENT, fail_at=0, fail_code=SFTP_PERMISSION_DENIED), len(CONTENT))
    assert raised.value.errno == errno.EACCES


def test_check_stops_the_download_and_the_handle_is_closed():
    server = FakeServer(CONTENT)
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) > 10:
            raise TimeoutError("time is up")

    with pytest.raises(TimeoutError):
        download(server, "/f", lambda chunk: None, size_hint=len(CONTENT), check=check)  # type: ignore[arg-type]
    assert server.closed
