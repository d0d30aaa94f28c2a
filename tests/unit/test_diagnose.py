"""Why a handshake failed, told from the bytes a server sent: banners, non-SSH answers, KEXINIT lists."""

from __future__ import annotations

import socket
import struct

import pytest

from fleetrun.ssh.diagnose import RECORD_LIMIT, Ours, RecordingSocket, describe, describe_after_handshake, read_hello

WHERE = "10.0.0.7:22"
BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10\r\n"
# What paramiko 5.1 offers by default (a subset is enough: only membership matters).
CLIENT = Ours(
    kex=("curve25519-sha256@libssh.org", "ecdh-sha2-nistp256", "diffie-hellman-group14-sha256"),
    host_key=("ssh-ed25519", "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256"),
    cipher=("aes128-ctr", "aes256-ctr"),
    mac=("hmac-sha2-256", "hmac-sha2-512"),
    compression=("none",),
)
OPENSSH = {
    "kex": "curve25519-sha256,ecdh-sha2-nistp256,diffie-hellman-group14-sha256,ext-info-s,kex-strict-s-v00@openssh.com",
    "host_key": "rsa-sha2-512,rsa-sha2-256,ssh-ed25519",
    "cipher": "chacha20-poly1305@openssh.com,aes128-ctr",
    "mac": "umac-64-etm@openssh.com,hmac-sha2-256",
    "compression": "none,zlib@openssh.com",
}


def kexinit(**lists: str) -> bytes:
    """A server's unencrypted SSH_MSG_KEXINIT packet (RFC 4253 7.1), with OpenSSH's lists unless overridden."""
    chosen = {**OPENSSH, **lists}
    names = [chosen["kex"], chosen["host_key"], chosen["cipher"], chosen["cipher"], chosen["mac"], chosen["mac"],
             chosen["compression"], chosen["compression"], "", ""]
    payload = bytes([20]) + b"\x11" * 16
    for text in names:
        payload += struct.pack(">I", len(text)) + text.encode()
    payload += b"\x00" + b"\x00\x00\x00\x00"
    padding = 8 - (len(payload) + 5) % 8 + 8
    return struct.pack(">IB", len(payload) + padding + 1, padding) + payload + b"\x00" * padding


def test_read_hello_splits_pre_banner_lines_banner_and_algorithms():
    hello = read_hello(b"welcome\r\nto the box\r\n" + BANNER + kexinit())
    assert hello.before == ("welcome", "to the box")
    assert hello.banner == "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10"
    assert hello.algorithms is not None
    assert hello.algorithms["host_key"] == ("rsa-sha2-512", "rsa-sha2-256", "ssh-ed25519")
    assert hello.algorithms["compression_s2c"] == ("none", "zlib@openssh.com")


@pytest.mark.parametrize("cut", [3, 20, 200])
def test_a_kexinit_that_did_not_come_whole_is_not_guessed_at(cut):
    assert read_hello(BANNER + kexinit()[:cut]).algorithms is None


def test_a_packet_that_is_not_kexinit_is_not_read_as_one():
    packet = kexinit()
    assert read_hello(BANNER + packet[:5] + b"\x15" + packet[6:]).algorithms is None


def timeout() -> BaseException:
    try:
        raise TimeoutError
    except TimeoutError:
        try:
            raise RuntimeError("Error reading SSH protocol banner")  # how paramiko wraps it
        except RuntimeError as wrapped:
            return wrapped


def wrapped(cause: BaseException) -> BaseException:
    try:
        raise cause
    except BaseException:
        try:
            raise RuntimeError("Error reading SSH protocol banner" + str(cause))
        except RuntimeError as error:
            return error


CASES = [
    # (what came, the error, the socket's own error, words the line must have)
    (b"", None, None, ["no SSH banner from 10.0.0.7:22 within 3.0 s", "nothing answers"]),
    (b"", timeout(), None, ["no SSH banner from 10.0.0.7:22 within 3.0 s"]),
    (b"", wrapped(ConnectionResetError(104, "Connection reset by peer")), None,
     ["connection reset by 10.0.0.7:22 before any SSH banner", "MaxStartups"]),
    (b"", EOFError(), ConnectionResetError(104, "reset"), ["connection reset by 10.0.0.7:22 before any SSH banner"]),
    (b"", wrapped(EOFError()), None, ["10.0.0.7:22 accepted the connection and closed it without sending an SSH"]),
    (b"Exceeded MaxStartups\r\n", wrapped(EOFError()), None,
     ["10.0.0.7:22 turned the connection away", "Exceeded MaxStartups", "lower --forks"]),
    (b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n", wrapped(EOFError()), None,
     ["the server at 10.0.0.7:22 speaks HTTP, not SSH", '"HTTP/1.1 400 Bad Request"']),
    (b"\x15\x03\x01\x00\x02\x02\x32", wrapped(EOFError()), None, ["speaks TLS, not SSH"]),
    (b"220 mail.example.com ESMTP\r\n", timeout(), None,
     ["10.0.0.7:22 is not an SSH server", '"220 mail.example.com ESMTP"']),
    (b"\x00\x01binary\xff", wrapped(EOFError()), None, ["is not an SSH server", '"??binary?"']),
    (BANNER, None, None,
     ["SSH handshake with 10.0.0.7:22 did not finish within 3.0 s", '"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u10"']),
    (BANNER, EOFError(), None, ["10.0.0.7:22 closed the connection during the SSH handshake"]),
    (BANNER, ConnectionResetError(104, "reset"), None, ["connection reset by 10.0.0.7:22 during the SSH handshake"]),
    (b"SSH-1.5-OldServer\r\n", RuntimeError("Incompatible version (1.5 instead of 2.0)"), None,
     ["10.0.0.7:22 speaks SSH protocol 1.5", "fleetrun needs SSH 2"]),
    (BANNER + kexinit(host_key="ssh-rsa"), RuntimeError("Incompatible ssh peer (no acceptable host key)"), None,
     ["no common host key type with 10.0.0.7:22", "offers only ssh-rsa host keys",
      "which paramiko 5 no longer accepts (SHA-1 signatures)"]),
    (BANNER + kexinit(kex="diffie-hellman-group14-sha1,ext-info-s"), RuntimeError("no acceptable kex"), None,
     ["no common key exchange with 10.0.0.7:22", "offers only diffie-hellman-group14-sha1,",
      "no longer accepts (SHA-1)"]),
    (BANNER + kexinit(kex="diffie-hellman-group1-sha1"), EOFError(), None,  # the server hung up first
     ["no common key exchange", "only diffie-hellman-group1-sha1,"]),
    (BANNER + kexinit(cipher="3des-cbc,blowfish-cbc"), RuntimeError("no acceptable ciphers"), None,
     ["no common cipher with 10.0.0.7:22", "only 3des-cbc, blowfish-cbc", "none of which"]),
    (BANNER + kexinit(mac="hmac-md5"), RuntimeError("no acceptable macs"), None, ["no common MAC", "hmac-md5"]),
    (BANNER + kexinit(), RuntimeError("Something else entirely"), None,
     ["SSH handshake with 10.0.0.7:22 failed: Something else entirely"]),
]


@pytest.mark.parametrize(("received", "error", "socket_error", "words"), CASES)
def test_each_failure_is_told_as_what_happened(received, error, socket_error, words):
    line = describe(error, read_hello(received, socket_error), CLIENT, WHERE, 3.04)
    assert "\n" not in line
    for word in words:
        assert word in line, line


def test_text_from_the_server_cannot_put_escape_sequences_on_the_terminal():
    for received in (b"\x1b[2J\x1b]0;owned\x07\r\n", b"SSH-1\x1b[31m.5-x\r\n", BANNER.replace(b"OpenSSH", b"\x1b[5m")
                     + kexinit(kex="diffie-hellman-group1-sha1")):
        line = describe(EOFError(), read_hello(received), CLIENT, WHERE, 1.0)
        assert "\x1b" not in line and "\x07" not in line, line


def test_an_error_without_words_still_names_its_kind():
    line = describe(OSError(), read_hello(b""), CLIENT, WHERE, 1.0)
    assert line == "SSH handshake with 10.0.0.7:22 failed before the banner: OSError"


def test_recording_socket_keeps_what_came_until_stopped_then_is_the_plain_socket():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        recorder = RecordingSocket(ours)
        theirs.sendall(BANNER)
        assert recorder.recv(4096) == BANNER and recorder.received == BANNER
        recorder.settimeout(1.0)  # everything else is the socket's own
        assert ours.gettimeout() == 1.0
        assert recorder.send(b"hi") == 2 and theirs.recv(2) == b"hi"
        assert recorder.hello().banner == BANNER.decode().strip()
        recorder.stop()
        assert recorder.recv == ours.recv and recorder.send == ours.send and recorder.received == b""


def test_recording_socket_is_bounded_and_notes_the_first_socket_error():
    ours, theirs = socket.socketpair()
    with ours:
        recorder = RecordingSocket(ours)
        with theirs:
            theirs.sendall(b"x" * (RECORD_LIMIT + 100))
            while len(recorder.received) < RECORD_LIMIT:
                recorder.recv(65536)
            assert len(recorder.received) == RECORD_LIMIT
        ours.shutdown(socket.SHUT_RD)
        with pytest.raises(OSError):
            recorder.send(b"y" * 1_000_000)
            recorder.send(b"y" * 1_000_000)
        assert isinstance(recorder.error, OSError)


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (EOFError(), "10.0.0.7:22 closed the connection during authentication"),
        (RuntimeError("No existing session"), "10.0.0.7:22 closed the connection during authentication"),
        (wrapped(ConnectionResetError(104, "reset")), "connection reset by 10.0.0.7:22 during authentication"),
        (RuntimeError("Oops, unhandled type 3"), "authentication with 10.0.0.7:22 failed: Oops, unhandled type 3"),
    ],
)
def test_failures_after_the_handshake_are_not_told_as_missing_banners(error, line):
    assert describe_after_handshake(error, WHERE) == line
