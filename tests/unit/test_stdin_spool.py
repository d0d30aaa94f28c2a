"""The stdin spool: every reader gets every byte from the start, memory stays bounded, a stop ends a wait."""

from __future__ import annotations

import os
import stat
import threading

from fleetrun.stdin_spool import Feed, StdinSpool


def read_all(spool: StdinSpool) -> bytes:
    return b"".join(Feed(spool=spool).pieces())


def test_readers_that_start_late_get_everything_then_eof():
    read_fd, write_fd = os.pipe()
    spool = StdinSpool(read_fd, memory_limit=1000)
    early: list[bytes] = []
    reader = threading.Thread(target=lambda: early.append(read_all(spool)))
    reader.start()
    data = os.urandom(5000)
    os.write(write_fd, data[:2500])
    os.write(write_fd, data[2500:])
    os.close(write_fd)
    reader.join(30)
    assert early == [data]
    assert read_all(spool) == data  # a host that starts after stdin ended
    assert spool.spilled and spool.size == 5000
    spool.close()
    os.close(read_fd)


def test_the_spill_file_is_private_and_unlinked():
    read_fd, write_fd = os.pipe()
    spool = StdinSpool(read_fd, memory_limit=10)
    os.write(write_fd, b"x" * 100)
    os.close(write_fd)
    assert read_all(spool) == b"x" * 100
    file = spool._file
    assert file is not None
    info = os.fstat(file.fileno())
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_nlink == 0
    assert len(spool._memory) == 0  # memory holds nothing once spilled
    spool.close()
    os.close(read_fd)


def test_a_stopped_feed_returns_while_stdin_stays_open_and_sends_no_eof():
    read_fd, write_fd = os.pipe()
    spool = StdinSpool(read_fd)
    feed = Feed(b"script", spool)
    got: list[bytes] = []
    thread = threading.Thread(target=lambda: got.extend(feed.pieces()))
    thread.start()
    os.write(write_fd, b"abc")
    while spool.size < 3:
        threading.Event().wait(0.01)
    feed.stop()  # the host's command ended: stop waiting for more
    thread.join(30)
    assert not thread.is_alive() and b"".join(got) == b"scriptabc" and feed.stopped
    spool.close()
    os.close(write_fd)
    os.close(read_fd)


def test_a_closed_stdin_reads_as_empty():
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    os.close(read_fd)  # fd number now invalid: EBADF is EOF, as ssh takes it
    assert read_all(StdinSpool(read_fd)) == b""


def test_prefix_only_without_a_spool():
    assert list(Feed(b"#!/bin/sh\n").pieces()) == [b"#!/bin/sh\n"]
