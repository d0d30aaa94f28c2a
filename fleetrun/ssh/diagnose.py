"""Say why an SSH handshake failed, from the bytes the server sent and the error paramiko raised."""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import paramiko

# Enough for pre-banner text, the banner and a server's KEXINIT (OpenSSH 9 sends ~1.1 KB of it).
RECORD_LIMIT = 16 * 1024
_MSG_KEXINIT = 20
# The name-lists of a KEXINIT in wire order: (list, the field of Ours it is matched against, its name in a message).
_KEXINIT_LISTS = (
    ("kex", "kex", "key exchange"),
    ("host_key", "host_key", "host key type"),
    ("cipher_c2s", "cipher", "cipher"),
    ("cipher_s2c", "cipher", "cipher"),
    ("mac_c2s", "mac", "MAC"),
    ("mac_s2c", "mac", "MAC"),
    ("compression_c2s", "compression", "compression"),
    ("compression_s2c", "compression", "compression"),
)
# Algorithms OpenSSH servers still offer that paramiko 5 dropped, and why, for a message that says what to fix.
_DROPPED = {
    "ssh-rsa": "SHA-1 signatures",
    "ssh-dss": "DSA",
    "diffie-hellman-group1-sha1": "SHA-1",
    "diffie-hellman-group14-sha1": "SHA-1",
    "diffie-hellman-group-exchange-sha1": "SHA-1",
}
_PRINTABLE = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True)
class ServerHello:
    """What the server sent before the handshake failed: text lines, its SSH banner, its algorithm lists."""

    received: bytes
    banner: str | None  # the "SSH-…" line, if one came
    before: tuple[str, ...]  # lines before the banner (all lines when none came)
    algorithms: Mapping[str, tuple[str, ...]] | None  # the server's KEXINIT lists by family, if one came whole
    socket_error: OSError | None = None  # what the socket said, which paramiko may have turned into a bare EOF


@dataclass(frozen=True)
class Ours:
    """The algorithms this client offers, by family (paramiko's security options)."""

    kex: tuple[str, ...]
    host_key: tuple[str, ...]
    cipher: tuple[str, ...]
    mac: tuple[str, ...]
    compression: tuple[str, ...]


def read_hello(received: bytes, socket_error: OSError | None = None) -> ServerHello:
    """Split what the server sent into lines before the banner, the banner, and its KEXINIT lists."""
    before: list[str] = []
    rest = received
    while b"\n" in rest:
        raw, rest = rest.split(b"\n", 1)
        line = raw.rstrip(b"\r").decode("utf-8", "replace")
        if line.startswith("SSH-"):
            return ServerHello(received, line, tuple(before), _kexinit(rest), socket_error)
        before.append(line)
    if rest:
        before.append(rest.decode("utf-8", "replace"))  # a partial line (or binary) is still what came
    return ServerHello(received, None, tuple(before), None, socket_error)


def _kexinit(packet: bytes) -> dict[str, tuple[str, ...]] | None:
    """The name-lists of an unencrypted SSH_MSG_KEXINIT packet (RFC 4253 §7.1), None unless it came whole."""
    try:
        length, padding = struct.unpack(">IB", packet[:5])
        payload = packet[5 : 4 + length - padding]
        if length > RECORD_LIMIT or len(packet) < 4 + length or not payload or payload[0] != _MSG_KEXINIT:
            return None
        offset = 17  # message number and 16-byte cookie
        lists: dict[str, tuple[str, ...]] = {}
        for family, _, _ in _KEXINIT_LISTS:
            (size,) = struct.unpack(">I", payload[offset : offset + 4])
            text = payload[offset + 4 : offset + 4 + size]
            if len(text) != size:
                return None
            lists[family] = tuple(name for name in text.decode("ascii").split(",") if name)
            offset += 4 + size
        return lists
    except (struct.error, UnicodeDecodeError):
        return None


def ours(transport: paramiko.Transport) -> Ours:
    """What this client offers, as set on the transport (other code may have reordered or narrowed it)."""
    options = transport.get_security_options()
    return Ours(
        kex=tuple(options.kex),
        host_key=tuple(options.key_types),
        cipher=tuple(options.ciphers),
        mac=tuple(options.digests),
        compression=tuple(options.compression),
    )


def _causes(error: BaseException | None) -> list[BaseException]:
    """The error and what it was raised while handling (paramiko wraps socket errors in SSHException)."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _quote(text: str, limit: int = 60) -> str:
    text = _PRINTABLE.sub("?", text.strip())
    return '"' + (text if len(text) <= limit else text[: limit - 1] + "…") + '"'


def _mismatch(hello: ServerHello, client: Ours, where: str) -> str | None:
    """The first family (in the order paramiko checks them) with no algorithm in common, as a sentence."""
    if hello.algorithms is None or hello.banner is None:
        return None
    for family, field, words in _KEXINIT_LISTS:
        offered = hello.algorithms[family]
        if family == "kex":  # markers, not algorithms: they say which extensions the server speaks
            offered = tuple(a for a in offered if not a.startswith(("ext-info-", "kex-strict-")))
        mine: tuple[str, ...] = getattr(client, field)
        if any(name in mine for name in offered):
            continue
        names = ", ".join(offered) or "nothing"
        what = f"{names} host keys" if family == "host_key" else names
        dropped = [_DROPPED[name] for name in offered if name in _DROPPED]
        if offered and len(dropped) == len(offered):
            why = f", which paramiko {_paramiko_major()} no longer accepts ({', '.join(dict.fromkeys(dropped))})"
        else:
            why = ", none of which fleetrun's SSH library (paramiko) supports"
        server = _PRINTABLE.sub("?", hello.banner)[:60]
        return f"no common {words} with {where}: the server ({server}) offers only {what}{why}"
    return None


def _paramiko_major() -> str:
    import paramiko

    return paramiko.__version__.split(".")[0]


def _not_ssh(hello: ServerHello, where: str) -> str:
    """A server that answered, but not with an SSH banner."""
    lines = [line for line in hello.before if line.strip()]
    text = " ".join(lines)
    if "Exceeded MaxStartups" in text:
        return (
            f"{where} turned the connection away: its sshd has too many connections not yet logged in "
            "(\"Exceeded MaxStartups\"); lower --forks or raise MaxStartups there"
        )
    if text.startswith("HTTP/"):
        return f"the server at {where} speaks HTTP, not SSH (it answered {_quote(lines[0])}): wrong port?"
    if hello.received[:1] in (b"\x15", b"\x16") and hello.received[1:2] == b"\x03":
        return f"the server at {where} speaks TLS, not SSH: wrong port?"
    return f"{where} is not an SSH server: it sent {_quote(text)} instead of an SSH banner: wrong port?"


def describe(error: BaseException | None, hello: ServerHello, client: Ours, where: str, waited: float) -> str:
    """One line saying what happened; `error` is None when the handshake simply did not finish in time.

    Facts first (what the server sent, what the socket said), paramiko's wording only as a last resort.
    """
    causes = _causes(error) + ([hello.socket_error] if hello.socket_error is not None else [])
    reset = any(isinstance(cause, ConnectionResetError) for cause in causes)
    closed = any(isinstance(cause, EOFError | ConnectionAbortedError | BrokenPipeError) for cause in causes)
    silent = error is None or any(isinstance(cause, socket.timeout) for cause in causes)
    text = str(error) if error is not None else ""
    if hello.banner is None:
        if any(line.strip() for line in hello.before):
            return _not_ssh(hello, where)
        if reset:
            return reset_before_banner(where)
        if closed:
            return f"{where} accepted the connection and closed it without sending an SSH banner"
        if silent:
            return f"no SSH banner from {where} within {waited:.1f} s: the port accepts connections but nothing answers"
        return f"SSH handshake with {where} failed before the banner: {text or error.__class__.__name__}"
    banner = _quote(hello.banner)
    # Server-sent text reaches the operator's terminal only through _quote/_PRINTABLE: no escape sequences.
    version = _PRINTABLE.sub("?", hello.banner.split("-")[1])[:20] if hello.banner.count("-") >= 2 else ""
    if version not in ("2.0", "1.99"):
        return f"{where} speaks SSH protocol {version or '?'} ({banner}), not 2.0: fleetrun needs SSH 2"
    mismatch = _mismatch(hello, client, where)
    if mismatch is not None:
        return mismatch
    if reset:
        return f"connection reset by {where} during the SSH handshake, after its banner {banner}"
    if closed or "Negotiation failed" in text:
        return f"{where} closed the connection during the SSH handshake, after its banner {banner}"
    if silent:
        return f"SSH handshake with {where} did not finish within {waited:.1f} s (banner {banner}, then silence)"
    return f"SSH handshake with {where} failed: {text or error.__class__.__name__}"


def describe_after_handshake(error: BaseException, where: str) -> str:
    """One line for a connection that failed once the handshake was done (during authentication)."""
    causes = _causes(error)
    if any(isinstance(cause, ConnectionResetError) for cause in causes):
        return f"connection reset by {where} during authentication"
    if any(isinstance(cause, EOFError | ConnectionAbortedError | BrokenPipeError) for cause in causes) or (
        "No existing session" in str(error)  # paramiko's words for a transport that died under it
    ):
        return f"{where} closed the connection during authentication"
    return f"authentication with {where} failed: {error or error.__class__.__name__}"


class RecordingSocket:
    """The socket paramiko reads through during the handshake: it keeps the first bytes the server sends.

    paramiko discards a non-SSH banner and raises before keeping the server's KEXINIT, so without this copy a
    failed handshake could only be guessed at. `stop()` once the handshake is done: from then on `recv` is the
    socket's own method, so the data path costs nothing extra.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._received = bytearray()
        self.error: OSError | None = None  # the first socket error (paramiko reports a failed send as EOF)
        self.recv: Callable[..., bytes] = self._recording_recv
        self.send: Callable[..., int] = self._recording_send

    def _recording_recv(self, size: int, flags: int = 0) -> bytes:
        try:
            data = self._sock.recv(size, flags)
        except OSError as error:
            self._note(error)
            raise
        if len(self._received) < RECORD_LIMIT:
            self._received += data[: RECORD_LIMIT - len(self._received)]
        return data

    def _recording_send(self, data: bytes, flags: int = 0) -> int:
        try:
            return self._sock.send(data, flags)
        except OSError as error:
            self._note(error)
            raise

    def _note(self, error: OSError) -> None:
        if self.error is None and not isinstance(error, TimeoutError):  # timeouts are paramiko's polling
            self.error = error

    @property
    def received(self) -> bytes:
        return bytes(self._received)

    def hello(self) -> ServerHello:
        """What the server sent so far, and the socket's first error; take it before closing the transport."""
        return read_hello(self.received, self.error)

    def stop(self) -> None:
        self.recv, self.send = self._sock.recv, self._sock.send
        self._received = bytearray()

    def __getattr__(self, name: str) -> object:  # send, settimeout, close, getpeername, _closed, …
        return getattr(self._sock, name)


def reset_before_banner(where: str) -> str:
    """A reset before the server said anything, whether connect() or the first read saw it."""
    return (f"connection reset by {where} before any SSH banner "
            "(an sshd past its MaxStartups limit does this: lower --forks?)")
