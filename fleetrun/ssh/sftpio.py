"""Pipelined SFTP download with bounded memory: a window of 32 KiB reads, handed on in file order as they arrive.

paramiko's own prefetch (SFTPFile.prefetch) bounds only the requests in flight: when the reader catches up with
the prefetch thread it marks the prefetch done, falls back to one synchronous read per round trip (~5 MB/s),
while the thread's replies keep piling up unread (a 1 GB pull held 1 GiB; paramiko PR #2519). Here one thread
both issues and consumes: requests in flight plus replies not yet written never exceed the window.
"""

from __future__ import annotations

import contextlib
import errno
import struct
from collections.abc import Callable, Sequence
from typing import cast

import paramiko
from paramiko.sftp import (
    CMD_CLOSE,
    CMD_DATA,
    CMD_HANDLE,
    CMD_NAME,
    CMD_OPENDIR,
    CMD_READ,
    CMD_READDIR,
    CMD_STATUS,
    SFTP_EOF,
    SFTP_NO_SUCH_FILE,
    SFTP_PERMISSION_DENIED,
)
from paramiko.sftp_attr import SFTPAttributes

CHUNK = 32768  # the largest read every SFTP server must serve (and paramiko's MAX_REQUEST_SIZE)
WINDOW = 64  # reads in flight per file: 2 MiB, as much as paramiko's channel window lets the server send ahead
# New reads go out once a quarter of the window is free, in one channel write: one SSH packet, not one per
# read. Sent one by one from the reading thread, a pull ran ~25% slower than paramiko's get(); batched, as fast.
_LENGTH, _READ_HEAD, _RANGE = struct.Struct(">I"), struct.Struct(">BII"), struct.Struct(">QI")


class _Replies:
    """Stands in for an SFTPFile in paramiko's table of expected replies: it only files them by request."""

    def __init__(self) -> None:
        self.replies: dict[int, tuple[int, paramiko.Message]] = {}

    def _async_response(self, kind: int, message: paramiko.Message, number: int) -> None:
        self.replies[number] = (kind, message)


def wire(path: str) -> bytes:
    """The bytes a path names on the host: UTF-8, with the bytes that are not (kept as surrogates, as
    os.fsdecode and list_directory keep them) restored as they were, as OpenSSH's sftp and scp send them."""
    return path.encode("utf-8", "surrogateescape")


class ByteNamesSFTP(paramiko.SFTPClient):
    """paramiko's SFTP client with names as bytes (see `wire`): paramiko encodes a str path as strict UTF-8,
    so a name that is not UTF-8 could not be sent, and a link target that is not comes back as bytes."""

    def _adjust_cwd(self, path: str | bytes) -> bytes:  # every call that takes a path goes through here
        return super()._adjust_cwd(wire(path) if isinstance(path, str) else path)  # type: ignore[misc, no-any-return]

    def symlink(self, source: str | bytes, dest: str | bytes) -> None:  # its target goes by another way
        super().symlink(wire(source) if isinstance(source, str) else source, dest)

    def readlink(self, path: str | bytes) -> str | None:
        target: str | bytes | None = super().readlink(path)
        return target.decode("utf-8", "surrogateescape") if isinstance(target, bytes) else target


def list_directory(sftp: paramiko.SFTPClient, path: str) -> list[SFTPAttributes]:
    """A remote directory's entries but . and .., each `filename` as the host has it (see `wire`).

    paramiko's listdir_attr decodes every name as UTF-8 and fails the whole listing on one that is not (and
    leaves the directory handle open on the host); OpenSSH's sftp lists and fetches such a name byte for byte.
    """
    # The same requests as paramiko's listdir_attr, through its public-in-practice _request (paramiko 5.x).
    kind, message = sftp._request(CMD_OPENDIR, wire(path))  # type: ignore[attr-defined]
    if kind != CMD_HANDLE:
        raise paramiko.SFTPError("Expected handle")
    handle = message.get_binary()
    entries: list[SFTPAttributes] = []
    try:
        _read_listing(sftp, handle, entries)
    except BaseException:
        with contextlib.suppress(Exception):  # the error that stopped the listing is the one to report
            sftp._request(CMD_CLOSE, handle)  # type: ignore[attr-defined]
        raise
    sftp._request(CMD_CLOSE, handle)  # type: ignore[attr-defined]
    return entries


def _read_listing(sftp: paramiko.SFTPClient, handle: bytes, entries: list[SFTPAttributes]) -> None:
    while True:
        try:
            kind, message = sftp._request(CMD_READDIR, handle)  # type: ignore[attr-defined]
        except EOFError:  # the server's SSH_FX_EOF: the listing is complete
            return
        if kind != CMD_NAME:
            raise paramiko.SFTPError("Expected name response")
        for _ in range(message.get_int()):
            name = message.get_string().decode("utf-8", "surrogateescape")
            longname = message.get_string().decode("utf-8", "replace")
            attributes = SFTPAttributes._from_msg(message, name, longname)  # type: ignore[attr-defined]
            if name not in (".", ".."):
                entries.append(attributes)


def _status_error(message: paramiko.Message, path: str) -> OSError:
    # The same mapping as paramiko's SFTPClient._convert_status, so describe() words it the same way.
    code, text = message.get_int(), message.get_text()
    if code == SFTP_NO_SUCH_FILE:
        return OSError(errno.ENOENT, text, path)
    if code == SFTP_PERMISSION_DENIED:
        return OSError(errno.EACCES, text, path)
    return OSError(text)


def _send_reads(sftp: paramiko.SFTPClient, replies: _Replies, handle: bytes,
                reads: Sequence[tuple[int, int]]) -> list[int]:
    """Send SSH_FXP_READ requests for (offset, length) pairs in one write; returns their request numbers.

    The same bookkeeping as paramiko's SFTPClient._async_request (numbers under its lock, replies expected by
    `replies`), which sends one packet per request.
    """
    packets, numbers = [], []
    with sftp._lock:  # type: ignore[attr-defined]
        for offset, length in reads:
            number = sftp.request_number
            sftp.request_number += 1
            sftp._expecting[number] = replies  # type: ignore[attr-defined]
            numbers.append(number)
            body = _READ_HEAD.pack(CMD_READ, number, len(handle)) + handle + _RANGE.pack(offset, length)
            packets.append(_LENGTH.pack(len(body)) + body)
    sftp.sock.sendall(b"".join(packets))
    return numbers


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
    # paramiko has no public call for an asynchronous read; the private parts used here (_read_response,
    # _expecting, request_number, _lock, sock) are unchanged across paramiko 5.x, which pyproject.toml pins.
    handle = sftp.open(path, "rb")  # (ByteNamesSFTP sends a name that is not UTF-8 as its bytes)
    raw_handle = cast(bytes, handle.handle)  # the server's handle string (typed otherwise in types-paramiko)
    replies = _Replies()
    in_flight: dict[int, tuple[int, int]] = {}  # request number -> (offset, length)
    arrived: dict[int, bytes] = {}  # offset -> data not yet written
    planned = max(size_hint, 0)  # read ahead up to here; past it, one read at a time until end of file
    next_offset = written = 0
    end: int | None = None  # offset of the first end-of-file reply

    def ask(reads: list[tuple[int, int]]) -> None:
        for number, read in zip(_send_reads(sftp, replies, raw_handle, reads), reads, strict=True):
            in_flight[number] = read

    try:
        while end is None or written < end:
            room = window - len(in_flight) - len(arrived)
            if end is None and (room >= max(window // 4, 1) or not in_flight):
                reads: list[tuple[int, int]] = []
                while next_offset < planned and len(reads) < room:
                    reads.append((next_offset, min(CHUNK, planned - next_offset)))
                    next_offset += reads[-1][1]
                if not reads and not in_flight and not arrived:
                    reads.append((next_offset, CHUNK))  # past the known size: does the file end here?
                    next_offset += CHUNK
                if reads:
                    ask(reads)
            if not in_flight:  # cannot happen: every byte before `end` was asked for
                raise OSError(f"SFTP download of {path} stopped at byte {written} with nothing in flight")
            sftp._read_response()  # type: ignore[attr-defined]  # reads one reply; paramiko files it in `replies`
            check()
            for number, (kind, message) in replies.replies.items():
                if number not in in_flight:
                    continue  # a reply to a read no longer waited for (past the end)
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
                    ask([(rest, length - len(data))])  # a short reply: ask for the rest at once (not windowed)
                if offset >= planned:
                    # A read past the known size returned data: the file grew; read ahead a window again.
                    planned = rest + CHUNK * window
            replies.replies.clear()
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
