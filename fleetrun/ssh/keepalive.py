"""ServerAliveInterval and ServerAliveCountMax as ssh(1) applies them, on a paramiko transport.

After `interval` seconds in which the server sent nothing, a `keepalive@openssh.com` global request that
wants a reply goes out; anything the server sends resets the count. With `count_max` probes unanswered the
connection counts as lost, as ssh's "Timeout, server not responding": a frozen host (SIGSTOP, a dead link
that still ACKs nothing) ends `unreachable` instead of hanging the run. paramiko's own keepalive sends
probes nobody answers and never gives up.

The check runs in the transport's own thread: paramiko calls the packetizer's keepalive callback each time
its socket read times out (every 0.1 s while idle). Raising EOFError there ends the transport the way an
EOF from the server would, so every channel on it wakes up closed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import paramiko
from paramiko.common import cMSG_GLOBAL_REQUEST

PARAMIKO_IDLE_KEEPALIVE = 30  # seconds: without ServerAliveInterval, paramiko's unanswered probe keeps NATs open
_POLL = 0.5  # seconds: how often the packetizer asks us, at most, while nothing is sent


class KeepaliveTimeout(EOFError):
    """The server answered none of the last ServerAliveCountMax probes; str() says so."""


class ServerAlive:
    """The keepalive state of one transport; `heard` is called for every read that returned data."""

    def __init__(self, interval: float, count_max: int) -> None:
        self.interval = interval
        self.count_max = count_max
        self._lock = threading.Lock()
        self._last_heard = time.monotonic()
        self._last_probe = 0.0
        self.unanswered = 0
        self.failed: str | None = None  # set once the server counts as not responding

    def heard(self) -> None:
        self._last_heard = time.monotonic()

    def wrap_recv(self, recv: Callable[..., bytes]) -> Callable[..., bytes]:
        """`recv` that also notes that the server said something."""

        def receive(size: int, *flags: int) -> bytes:
            data = recv(size, *flags)
            if data:
                self._last_heard = time.monotonic()
            return data

        return receive

    def install(self, transport: paramiko.Transport) -> None:
        transport.packetizer.set_keepalive(_POLL, lambda: self._tick(transport))

    def _tick(self, transport: paramiko.Transport) -> None:
        with self._lock:
            now = time.monotonic()
            if self._last_heard > self._last_probe:
                self.unanswered = 0
            if now - max(self._last_heard, self._last_probe) < self.interval:
                return
            if self.unanswered >= self.count_max:
                self.failed = self.describe()
                raise KeepaliveTimeout(self.failed)
            self.unanswered += 1
            self._last_probe = now
        probe = paramiko.Message()
        probe.add_byte(cMSG_GLOBAL_REQUEST)
        probe.add_string("keepalive@openssh.com")
        probe.add_boolean(True)  # want reply: OpenSSH answers with SSH_MSG_REQUEST_FAILURE, which is enough
        transport._send_user_message(probe)  # type: ignore[attr-defined]

    def describe(self) -> str:
        probes = "keepalive" if self.count_max == 1 else "keepalives"
        return (f"no answer to {self.count_max} {probes} in {self.interval * (self.count_max + 1):g} s "
                f"(ServerAliveInterval {self.interval:g}, ServerAliveCountMax {self.count_max})")


def install_keepalive(transport: paramiko.Transport, interval: float, count_max: int,
                      recorder: object) -> ServerAlive | None:
    """ServerAlive on `transport` when an interval is set (its reads go through `recorder.recv`), else
    paramiko's plain idle keepalive. Returns the state, or None."""
    if interval <= 0:
        transport.set_keepalive(PARAMIKO_IDLE_KEEPALIVE)
        return None
    alive = ServerAlive(interval, max(count_max, 0))
    recorder.recv = alive.wrap_recv(recorder.recv)  # type: ignore[attr-defined]
    alive.install(transport)
    return alive
