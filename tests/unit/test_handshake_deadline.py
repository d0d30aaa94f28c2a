"""The handshake's time limit inside paramiko's read loop is a deadline, not a Timer thread per connection."""

from __future__ import annotations

import importlib
import socket
import threading

import paramiko

connect = importlib.import_module("fleetrun.ssh.paramiko_connect")  # paramiko's path of fleetrun.ssh.connect


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_handshake_times_out_at_its_deadline_and_never_after_completing(mocker):
    clock = Clock()
    mocker.patch.object(connect.time, "monotonic", clock)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        packetizer = connect._Packetizer(ours)
        assert not packetizer.handshake_timed_out()  # not started: never timed out (as paramiko's)
        packetizer.start_handshake(15)
        clock.now += 14.9
        assert not packetizer.handshake_timed_out()
        clock.now += 0.2
        assert packetizer.handshake_timed_out()
        packetizer.start_handshake(15)  # a second start keeps the first deadline, as paramiko keeps its timer
        assert packetizer.handshake_timed_out()
        packetizer.complete_handshake()
        assert not packetizer.handshake_timed_out()


def test_completing_before_the_deadline_ends_the_limit():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        packetizer = connect._Packetizer(ours)
        packetizer.complete_handshake()  # before any start: nothing to end, and no limit afterwards either
        packetizer.start_handshake(0)
        assert packetizer.handshake_timed_out()
        packetizer.complete_handshake()
        assert not packetizer.handshake_timed_out()


def test_the_read_loop_gives_up_at_the_deadline_without_a_timer_thread(mocker):
    clock = Clock()
    mocker.patch.object(connect.time, "monotonic", clock)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(0.01)  # paramiko's transport polls its socket like this (0.1 s)
        packetizer = connect._Packetizer(ours)
        before = threading.active_count()
        packetizer.start_handshake(5)
        assert threading.active_count() == before  # paramiko's own Packetizer starts a threading.Timer here
        clock.now += 6  # the server said nothing for longer than the limit
        try:
            packetizer.read_all(4)
        except EOFError:
            pass
        else:
            raise AssertionError("read_all returned although the handshake's time was up")


def test_connect_builds_its_transports_on_the_deadline_packetizer():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        transport = connect._Transport(ours, packetizer_class=connect._Packetizer)
        assert isinstance(transport.packetizer, connect._Packetizer)
        assert isinstance(transport.packetizer, paramiko.Packetizer)
        transport.close()
