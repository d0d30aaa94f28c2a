"""Pipelined SFTP download with bounded memory: a window of 32 KiB reads, handed on in file order as they arrive.

paramiko's own prefetch (SFTPFile.prefetch) bounds only the requests in flight: when the reader catches up with
the prefetch thread it marks the prefetch done, falls back to one synchronous read per round trip (~5 MB/s),
while the thread's replies keep piling up unread (a 1 GB pull held 1 GiB; paramiko PR #2519). Here one thread
both issues and consumes: requests in flight plus replies not yet written never exceed the window.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

import paramiko
from paramiko.sftp import CMD_DATA, CMD_READ, CMD_STATUS, SFTP_EOF, SFTP_NO_SUCH_FILE, SFTP_PERMISSION_DENIED, int64

CHUNK = 32768  # the largest read every SFTP server must serve (and paramiko's MAX_REQUEST_SIZE)
WINDOW = 64  # reads in flight per file: 2 MiB, paramiko's channel window; measured in bench/pull.py


class _Replies:
    """Stands in for an SFTPFile in paramiko's table of expected replies: it only files them by request."""

    def __init__(self) -> None:
        self.replies: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, kind: int, message: paramiko.Message, number: int) -> None:
        self.replies[number] = (kind, message)


def _status_error(message: paramiko.Message, path: str) -> OSError:
    # The same mapping as paramiko's SFTPClient._convert_status, so describe() words it the same way.
    code, text = message.get_int(), message.get_text()
    if code == SFTP_NO_SUCH_FILE:
        return OSError(errno.ENOENT, text, path)
    if code == SFTP_PERMISSION_DENIED:
        return OSError(errno.EACCES, text, path)
    return OSError(text)


def download(
    sftp: paramiko.SFTPClient,
    path: str,
    write: Callable[[bytes], object],
    *,
    size_hint: int,
    check: Callable[[], None] = lambda: None,
    window: int = WINDOW,
) -> int:
    """Read `path` to its end with up to `window` reads in flight, calling `write` with each piece in order.

    Reads until the server says end of file, as OpenSSH's sftp does: a file that grew since `size_hint`
    (its stat) is read to its new end, one that shrank to its new end. Short replies are asked for again.
    `check` runs between replies (it raises to stop). Returns the number of bytes handed to `write`.
    """
    # paramiko has no public call for an asynchronous read; these private ones are stable across 5.x (pinned).
    handle = sftp.open(path, "rb")
    replies = _Replies()
    in_flight: dict[int, tuple[int, int]] = {}  # request number -> (offset, length)
    arrived: dict[int, bytes] = {}  # offset -> data not yet written
    planned = max(size_hint, 0)  # read ahead up to here; past it, one read at a time until end of file
    next_offset = written = 0
    end: int | None = None  # offset of the first end-of-file reply

    def ask(offset: int, length: int) -> None:
        number = sftp._async_request(replies, CMD_READ, handle.handle, int64(offset), int(length))  # type: ignore[attr-defined]
        in_flight[number] = (offset, length)

    try:
        while end is None or written < end:
            while end is None and len(in_flight) + len(arrived) < window:
                if next_offset < planned:
                    length = min(CHUNK, planned - next_offset)
                    ask(next_offset, length)
                    next_offset += length
                elif not in_flight and not arrived:
                    ask(next_offset, CHUNK)  # past the known size: does the file end here?
                    next_offset += CHUNK
                else:
                    break
            if not in_flight:  # cannot happen: every byte before `end` was asked for
                raise OSError(f"SFTP download of {path} stopped at byte {written} with nothing in flight")
            check()
            sftp._read_response()  # type: ignore[attr-defined]  # reads one reply; paramiko files it in `replies`
            check()
            for number in [n for n in replies.replies if n in in_flight]:
                kind, message = replies.replies.pop(number)
                offset, length = in_flight.pop(number)
                if kind == CMD_STATUS:
                    start = message.packet.tell()
                    if message.get_int() == SFTP_EOF:
                        end = offset if end is None else min(end, offset)
                        continue
                    message.packet.seek(start)
                    raise _status_error(message, path)
                if kind != CMD_DATA:
                    raise OSError(f"unexpected SFTP reply type {kind} to a read of {path}")
                data = message.get_string()
                if not data or len(data) > length:
                    raise OSError(f"SFTP server sent {len(data)} bytes for a read of {length} from {path}")
                arrived[offset] = data
                rest = offset + len(data)
                if len(data) < length and (end is None or rest < end):
                    ask(rest, length - len(data))  # a short reply: ask for the rest at once (not windowed)
                if offset >= planned:
                    # A read past the known size returned data: the file grew; read ahead a window again.
                    planned = rest + CHUNK * window
            replies.replies.clear()  # replies to reads no longer waited for
            while written in arrived and (end is None or written < end):
                data = arrived.pop(written)
                if end is not None:
                    data = data[: end - written]
                write(data)
                written += len(data)
    finally:
        # Replies still in flight are filed with `replies` when paramiko reads them, then dropped.
        try:
            handle.close()
        except Exception:  # the channel may be closed already (timeout, cancel): the host closes the handle
            pass
    return written
