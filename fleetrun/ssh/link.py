"""What an SSH transport runs over: a TCP socket, a ProxyCommand, or a channel through a bastion (gateway.py)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from fleetrun.errors import HostFailure
from fleetrun.models import Outcome

if TYPE_CHECKING:
    import paramiko


class Link:
    """The byte stream under one SSH connection, and how to take it down once the transport is done.

    `sock` is what paramiko's Transport reads and writes. `close` ends the transport first, then the stream,
    in the order the stream needs (a tunnelled one must not see a packet after its channel is closed).
    """

    sock: object
    where: str  # for messages: "10.0.0.5:22", "t01 via bastion b1", "ProxyCommand 'nc %h %p'"

    def close(self, transport: paramiko.Transport | None) -> None:
        if transport is not None:
            transport.close()

    def failure_note(self) -> str | None:
        """Something the stream itself can say about a failed connection (a ProxyCommand's stderr), or None."""
        return None

    def lost_reason(self) -> str | None:
        """Why the stream ended under a live session, if it knows better than the transport (a dead gateway)."""
        return None

    def abort(self) -> None:
        """Unblock whatever waits on the stream (the run was cancelled); close() still follows."""


class TcpLink(Link):
    """A direct TCP connection."""

    def __init__(self, sock: socket.socket, where: str) -> None:
        self.sock = self._socket = sock
        self.where = where

    def abort(self) -> None:
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self, transport: paramiko.Transport | None) -> None:
        if transport is not None:
            transport.close()
        self._socket.close()


def _connected(address: str, port: int, timeout: float) -> socket.socket:
    """A TCP socket connected to address:port. An IPv4 address is connected to as it is: create_connection
    would ask getaddrinfo() first, a libc call that releases the GIL, which 64 busy workers pay for in hand-offs."""
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return socket.create_connection((address, port), timeout=timeout)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def tcp_link(address: str, port: int, remaining: Callable[[], float], limit: float) -> TcpLink:
    """Connect to address:port within the budget; HostFailure (unreachable) says why not."""
    where = f"{address}:{port}"
    try:
        sock = _connected(address, port, remaining())
    except socket.gaierror as error:
        raise HostFailure(Outcome.UNREACHABLE, f"cannot resolve {address!r}: {error.strerror}") from None
    except ConnectionRefusedError:
        raise HostFailure(Outcome.UNREACHABLE, f"connection refused by {where}") from None
    except TimeoutError:
        raise HostFailure(Outcome.UNREACHABLE, f"TCP connect to {where} timed out after {limit:g} s") from None
    except ConnectionResetError:
        # The server accepted and reset at once, before connect() returned (loopback is that fast): the same
        # event as a reset before the banner, and the same words.
        from fleetrun.ssh.diagnose import reset_before_banner  # a failure's words: not every run's import

        raise HostFailure(Outcome.UNREACHABLE, reset_before_banner(where)) from None
    except OSError as error:
        raise HostFailure(Outcome.UNREACHABLE, f"cannot connect to {where}: {error.strerror or error}") from None
    return TcpLink(sock, where)
