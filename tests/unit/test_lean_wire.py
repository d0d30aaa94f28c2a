"""The lean client's packet layer: framing and AES-GCM both ways, bad packets refused, deadlines kept by the
kernel once the socket blocks, and the replay that hands a connection to paramiko from its first byte."""

from __future__ import annotations

import socket
import time

import pytest

from fleetrun.ssh.lean_wire import Deadline, Reader, ReplaySocket, Wire, WireError, mpint, name_list, string, u32

KEY, IV = bytes(range(16)), bytes(range(100, 112))


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_reader_reads_fields_in_order_and_refuses_a_short_message():
    payload = bytes((94,)) + u32(7) + string(b"hello") + name_list(["a", "b"]) + b"\1"
    read = Reader(payload)
    assert (read.u32(), read.string(), read.names(), read.boolean()) == (7, b"hello", ("a", "b"), True)
    with pytest.raises(WireError):
        read.byte()
    with pytest.raises(WireError):
        Reader(bytes((94,)) + u32(99) + b"short").string()


def test_mpint_is_minimal_and_unsigned():
    assert mpint(b"\0\0\x01") == u32(1) + b"\x01"
    assert mpint(b"\x80") == u32(2) + b"\0\x80"
    assert mpint(b"\0") == u32(0)


def test_plain_then_encrypted_packets_cross_intact(pair):
    a, b = pair
    sender, receiver = Wire(a), Wire(b)
    sender.send(b"\x14plain", b"\x15second")
    assert receiver.read() == b"\x14plain"
    assert receiver.read() == b"\x15second"
    sender.encrypt(KEY, IV)
    receiver.decrypt(KEY, IV)
    messages = [bytes((94,)) + bytes(n) for n in (0, 1, 15, 16, 17, 1000, 40000)]
    sender.send(*messages)
    assert [receiver.read() for _ in messages] == messages


def test_a_tampered_or_misframed_packet_is_refused(pair):
    a, b = pair
    sender, receiver = Wire(a), Wire(b)
    sender.encrypt(KEY, IV)
    receiver.decrypt(KEY, IV)
    sealed = bytearray(sender.packet(b"\x5esecret data"))
    sealed[8] ^= 1
    a.sendall(bytes(sealed))
    with pytest.raises(WireError, match="integrity"):
        receiver.read()
    a.sendall(u32(1 << 30))
    with pytest.raises(WireError, match="length"):
        Wire(b).read()


def test_a_closed_peer_is_eof(pair):
    a, b = pair
    a.close()
    with pytest.raises(EOFError):
        Wire(b).read()


@pytest.mark.parametrize("blocking", [False, True])
def test_a_read_ends_at_its_deadline(pair, blocking):
    _, b = pair
    wire = Wire(b)
    if blocking:
        wire.block()
    started = time.monotonic()
    wire.reading(started + 0.3)
    with pytest.raises(Deadline):
        wire.read()
    waited = time.monotonic() - started
    assert 0.25 <= waited < 10


def test_a_kernel_timeout_armed_for_an_earlier_phase_does_not_cut_a_later_one_short(pair):
    a, b = pair
    wire = Wire(b)
    wire.block()
    wire.reading(time.monotonic() + 0.2)
    with pytest.raises(Deadline):
        wire.read()
    started = time.monotonic()
    wire.reading(started + 0.8)  # longer than the timeout still armed from the phase before
    with pytest.raises(Deadline):
        wire.read()
    assert time.monotonic() - started >= 0.7
    wire.reading(None)
    Wire(a).send(b"\x02late but waited for")
    assert wire.read() == b"\x02late but waited for"


def test_a_passed_deadline_fails_at_once_without_touching_the_socket(pair):
    _, b = pair
    wire = Wire(b)
    wire.block()
    wire.reading(time.monotonic() - 1)
    with pytest.raises(Deadline):
        wire.send(b"\x02")


def test_replay_gives_paramiko_what_the_server_said_then_its_error_then_the_socket(pair):
    a, b = pair
    banner = b"SSH-2.0-paramiko_test\r\n"
    replay = ReplaySocket(b, b"SSH-2.0-OpenSSH_9.2\r\nKEXINIT", banner, ConnectionResetError("reset"))
    assert replay.recv(8) == b"SSH-2.0-"
    assert replay.recv(100) == b"OpenSSH_9.2\r\nKEXINIT"
    with pytest.raises(ConnectionResetError):
        replay.recv(100)
    a.sendall(b"more")
    assert replay.recv(100) == b"more"
    assert replay.send(banner) == len(banner)  # already sent by the lean client: not again
    assert replay.send(b"packet") == 6
    assert a.recv(100) == b"packet"
    replay.settimeout(1.5)
    assert b.gettimeout() == 1.5


def test_replay_refuses_a_banner_other_than_the_one_sent(pair):
    _, b = pair
    replay = ReplaySocket(b, b"", b"SSH-2.0-paramiko_1\r\n", None)
    with pytest.raises(OSError, match="banner"):
        replay.send(b"SSH-2.0-paramiko_2\r\n")
