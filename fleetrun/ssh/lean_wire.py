"""The SSH binary packet layer of the lean client (fleetrun.ssh.lean): framing, AES-GCM, and field codecs."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

READ_SIZE = 65536
MAX_PACKET = 256 * 1024  # RFC 4253 asks for 35000 at least; OpenSSH refuses more than 256 KiB
GCM_TAG = 16
_U32 = struct.Struct(">I")
_TIMEVAL = struct.Struct("@ll")  # struct timeval, for SO_RCVTIMEO and SO_SNDTIMEO
# A kernel timeout is set again only when the deadline came this much closer than the one armed: most calls
# then set nothing, and a deadline is still kept to within this much.
REARM_SLACK = 0.05


class WireError(Exception):
    """The peer broke the protocol (bad length, bad tag, a message out of place); str() says how."""


class Deadline(TimeoutError):
    """The read or write did not finish within the time it was given."""


def u32(value: int) -> bytes:
    return _U32.pack(value)


def string(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


def text(value: str) -> bytes:
    return string(value.encode())


def name_list(names: list[str] | tuple[str, ...]) -> bytes:
    return string(",".join(names).encode())


def mpint(data: bytes) -> bytes:
    """An unsigned big-endian number as an SSH mpint (RFC 4251 §5): no leading zeros, a zero byte if the top
    bit is set."""
    data = data.lstrip(b"\0")
    if data and data[0] & 0x80:
        data = b"\0" + data
    return string(data)


class Reader:
    """Reads the fields of one message payload in order; a short or malformed payload is a WireError."""

    __slots__ = ("data", "offset")

    def __init__(self, data: bytes, offset: int = 1) -> None:
        self.data = data
        self.offset = offset  # past the message number by default

    def byte(self) -> int:
        if self.offset >= len(self.data):
            raise WireError("message too short")
        self.offset += 1
        return self.data[self.offset - 1]

    def boolean(self) -> bool:
        return self.byte() != 0

    def u32(self) -> int:
        end = self.offset + 4
        if end > len(self.data):
            raise WireError("message too short")
        value: int = _U32.unpack_from(self.data, self.offset)[0]
        self.offset = end
        return value

    def string(self) -> bytes:
        size = self.u32()
        end = self.offset + size
        if end > len(self.data):
            raise WireError("message too short")
        self.offset = end
        return self.data[end - size : end]

    def text(self) -> str:
        return self.string().decode("utf-8", "replace")

    def names(self) -> tuple[str, ...]:
        return tuple(name for name in self.string().decode("ascii", "replace").split(",") if name)


class _Gcm:
    """One direction of aes*-gcm@openssh.com (RFC 5647 as OpenSSH does it): the length is the AAD, the nonce a
    4-byte fixed part and an 8-byte counter that counts packets."""

    __slots__ = ("_aead", "_counter", "_fixed")

    def __init__(self, key: bytes, iv: bytes) -> None:
        self._aead = AESGCM(key)
        self._fixed = iv[:4]
        self._counter = int.from_bytes(iv[4:12], "big")

    def nonce(self) -> bytes:
        value = self._fixed + self._counter.to_bytes(8, "big")
        self._counter = (self._counter + 1) & 0xFFFFFFFFFFFFFFFF
        return value

    def seal(self, body: bytes, length: bytes) -> bytes:
        return self._aead.encrypt(self.nonce(), body, length)

    def open(self, sealed: bytes, length: bytes) -> bytes:
        return self._aead.decrypt(self.nonce(), sealed, length)


class Wire:
    """One connection's packets over a socket, read and written by the one thread that owns it.

    Plain packets until `encrypt`/`decrypt` switch a direction to AES-GCM (at NEWKEYS). Every read and write
    gives up at the deadline that `reading(...)` set. Whatever the socket had buffered beyond a packet is kept.

    Until `block()` the deadline is the socket's timeout, as paramiko would have it if it takes over. After it
    the socket blocks and the kernel keeps the deadline (SO_RCVTIMEO, SO_SNDTIMEO): a socket with a timeout
    makes CPython poll() before every recv and send, twice the system calls and twice the GIL hand-offs
    between busy worker threads, which at 64 workers was most of the client's CPU (issue 13).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = bytearray()  # everything read, until `forget()` (a handover replays it to paramiko)
        self._buffer = bytearray()
        self._recording = True
        self._send_gcm: _Gcm | None = None
        self._recv_gcm: _Gcm | None = None
        self._deadline: float | None = None
        self._blocking = False
        self._armed: float | None = None  # the kernel timeout last set, in seconds (None: none)
        # Random once per connection (one getrandom, which releases the GIL, instead of one per packet): the
        # KEXINIT cookie, and the padding every packet takes its bytes from (encrypted from NEWKEYS on).
        entropy = os.urandom(48)
        self.cookie, self._padding = entropy[:16], entropy[16:]

    def reading(self, deadline: float | None) -> None:
        """From now on, reads (and writes) give up at this monotonic time (None: never)."""
        self._deadline = deadline

    def block(self) -> None:
        """Past the handover point: the socket blocks, and the kernel enforces the deadline."""
        self.sock.settimeout(None)
        self._blocking = True

    def forget(self) -> None:
        """The handshake is past the point of a handover: stop keeping a copy of what came."""
        self._recording = False
        self.received = bytearray()

    def encrypt(self, key: bytes, iv: bytes) -> None:
        self._send_gcm = _Gcm(key, iv)

    def decrypt(self, key: bytes, iv: bytes) -> None:
        self._recv_gcm = _Gcm(key, iv)

    def _wait(self) -> None:
        """Make the next socket call give up at the deadline (or raise Deadline if it has passed)."""
        if self._deadline is None:
            if self._blocking:
                if self._armed is not None:
                    self._arm(None)
            else:
                self.sock.settimeout(None)
            return
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise Deadline("timed out")
        if not self._blocking:
            self.sock.settimeout(left)
        elif self._armed is None or left < self._armed - REARM_SLACK:
            self._arm(left)  # a system call, but one that keeps the GIL: only when the deadline came closer

    def _arm(self, seconds: float | None) -> None:
        whole = 0 if seconds is None else max(int(seconds), 0)
        micro = 0 if seconds is None else max(int((seconds - whole) * 1e6), 1 if whole == 0 else 0)
        value = _TIMEVAL.pack(whole, micro)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        self._armed = seconds

    def _late(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline - REARM_SLACK

    def _fill(self) -> None:
        while True:
            self._wait()
            try:
                data = self.sock.recv(READ_SIZE)
                break
            except (TimeoutError, BlockingIOError):  # the socket's, or the kernel's, timeout
                if not self._blocking or self._late():
                    raise Deadline("timed out") from None
                # armed in an earlier phase, for less than this one has: wait again for what is left
        if not data:
            raise EOFError("the connection was closed")
        self._buffer += data
        if self._recording:
            self.received += data

    def line(self, limit: int = 8192) -> bytes:
        """One line ending in LF (the banner exchange), without its CR LF."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                found = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return found.rstrip(b"\r")
            if len(self._buffer) > limit:
                raise WireError("a line before the SSH banner is too long")
            self._fill()

    def send_raw(self, data: bytes) -> None:
        self._wait()
        try:
            self.sock.sendall(data)
        except (TimeoutError, BlockingIOError):  # a full send buffer until the deadline: the peer stopped reading
            raise Deadline("timed out") from None

    def packet(self, payload: bytes) -> bytes:
        """The wire form of one message, sealed when this direction is encrypted."""
        gcm = self._send_gcm
        if gcm is None:
            padding = 8 - (len(payload) + 5) % 8
            if padding < 4:
                padding += 8
            return u32(len(payload) + padding + 1) + bytes((padding,)) + payload + self._padding[:padding]
        padding = 16 - (len(payload) + 1) % 16
        if padding < 4:
            padding += 16
        length = u32(len(payload) + padding + 1)
        return length + gcm.seal(bytes((padding,)) + payload + self._padding[:padding], length)

    def send(self, *payloads: bytes) -> None:
        """Send messages in one write (a write per packet costs a system call and a segment each)."""
        self.send_raw(b"".join(self.packet(payload) for payload in payloads))

    def read(self) -> bytes:
        """The next message's payload (its first byte is the message number)."""
        buffer = self._buffer
        while len(buffer) < 4:
            self._fill()
        (length,) = _U32.unpack_from(buffer)
        gcm = self._recv_gcm
        extra = GCM_TAG if gcm is not None else 0
        if length > MAX_PACKET or length < 5 or (gcm is not None and length % 16):
            raise WireError(f"bad packet length {length}")
        total = 4 + length + extra
        while len(buffer) < total:
            self._fill()
        if gcm is None:
            body = bytes(buffer[4:total])
        else:
            try:
                body = gcm.open(bytes(buffer[4:total]), bytes(buffer[:4]))
            except InvalidTag:
                raise WireError("a packet failed its integrity check") from None
        del buffer[:total]
        padding = body[0]
        if padding < 4 or padding >= len(body):
            raise WireError("bad packet padding")
        return body[1 : len(body) - padding]


class ReplaySocket:
    """The socket paramiko takes over when the lean client hands a connection over before its key exchange.

    paramiko must see the conversation from its start: `recv` first returns what the server already sent (and
    then the socket error that ended it, once), and `send` drops paramiko's banner, which went out already
    (the lean client sends exactly paramiko's). Everything else is the socket's own.
    """

    def __init__(self, sock: socket.socket, replay: bytes, sent_banner: bytes, error: OSError | None) -> None:
        self._sock = sock
        self._replay = bytearray(replay)
        self._sent_banner = sent_banner
        self._error = error

    def recv(self, size: int, flags: int = 0) -> bytes:
        if self._replay:
            data = bytes(self._replay[:size])
            del self._replay[:size]
            return data
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._sock.recv(size, flags)

    def send(self, data: bytes, flags: int = 0) -> int:
        if self._sent_banner:
            if not data.startswith(self._sent_banner):
                raise OSError("fleetrun: paramiko's banner is not the one the lean client sent (a bug)")
            skipped = len(self._sent_banner)
            self._sent_banner = b""
            return skipped if len(data) == skipped else skipped + self._sock.send(data[skipped:], flags)
        return self._sock.send(data, flags)

    def __getattr__(self, name: str) -> Callable[..., object]:  # settimeout, close, fileno, getpeername, …
        attribute: Callable[..., object] = getattr(self._sock, name)
        return attribute
