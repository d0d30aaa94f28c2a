"""Shared bastion connections: one per distinct gateway, opened once under a lock, a direct-tcpip channel per host.

A gateway is opened lazily by the first host that needs it; the others wait for that one attempt rather than
racing their own (a bastion sees one login however many hosts sit behind it, and never its MaxStartups).
A gateway that cannot be opened is tried once; every host behind it fails with that reason, naming it, and
no target credential is ever sent. A gateway that dies under a run fails the hosts in flight through it
("lost connection to gateway b1") and is reconnected once for the hosts still queued.

Teardown order matters (research §0.1): paramiko's Transport.close() returns before its thread has stopped
writing, so closing the tunnelled transport and then its channel lets a stray CHANNEL_DATA follow the
CHANNEL_CLOSE, and OpenSSH drops the *whole* bastion connection ("data packet referred to nonexistent
channel"). The tunnelled transport therefore gets a socket whose close() does nothing; the channel is closed
only once that transport's thread has ended.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import paramiko
from paramiko.common import MSG_CHANNEL_OPEN_FAILURE

from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure
from fleetrun.models import Host, Outcome
from fleetrun.ssh.link import Link

TICK = 0.2  # seconds between checks of the cancel flag while waiting for a gateway or a channel slot
JOIN_TIMEOUT = 5.0  # seconds to wait for a tunnelled transport's thread before closing its channel anyway
RECONNECTS = 1  # a gateway that dies mid-run is reopened this many times for the hosts still queued

# SSH_MSG_CHANNEL_OPEN_FAILURE reason codes (RFC 4254 §5.1) that say something about the target.
_PROHIBITED, _CONNECT_FAILED = 1, 2


class GatewayFailure(HostFailure):
    """A host failed because of a gateway; the message already names it (not to be prefixed again)."""


@dataclass(frozen=True)
class _Failure:
    outcome: Outcome
    message: str
    host_key_verified: bool | None

    def raise_it(self) -> None:
        raise GatewayFailure(self.outcome, self.message, host_key_verified=self.host_key_verified)


class Opened:
    """What the opener returns for a gateway: its authenticated transport and how to close it."""

    def __init__(self, transport: paramiko.Transport, close: Callable[[], None],
                 why_lost: Callable[[], str | None]) -> None:
        self.transport = transport
        self.close = close
        self.why_lost = why_lost  # e.g. "no answer to 3 keepalives ...", once the transport has ended


Opener = Callable[[Host, "Gateway | None", Cancel], Opened]


def gateway_key(host: Host) -> tuple[object, ...]:
    """What makes two hops the same gateway connection: where, as whom, with what credentials, and how."""
    return (host.address, host.port, host.user, host.key, host.identity_files, host.certificate_files,
            host.identity_agent, host.identities_only, host.proxy_command, host.host_key_alias)


class Gateway:
    """One bastion connection shared by every host routed through it."""

    def __init__(self, hop: Host, upstream: Gateway | None, opener: Opener, max_channels: int) -> None:
        self.hop = hop
        self.upstream = upstream
        self._opener = opener
        self._lock = threading.Lock()
        self._opened: Opened | None = None
        self._failure: _Failure | None = None
        self._reconnects = RECONNECTS
        self._slots = threading.BoundedSemaphore(max_channels)
        self.attempts = 0  # connections tried, for tests and the run's accounting
        self._failures: dict[int, tuple[int, str]] = {}  # channel id -> (reason code, server's text)
        self._history: dict[int, Opened] = {}  # every connection made (at most RECONNECTS + 1), by transport id
        self._local = threading.local()  # the channel id this thread is opening

    @property
    def name(self) -> str:
        return self.hop.name

    @property
    def label(self) -> str:
        """How a message names it: `bastion b2 (via b1)` for a second hop."""
        chain = []
        upstream = self.upstream
        while upstream is not None:
            chain.append(upstream.name)
            upstream = upstream.upstream
        return f"bastion {self.name}" + (f" (via {', '.join(reversed(chain))})" if chain else "")

    # --- the shared connection -------------------------------------------------------------------------------

    def transport(self, cancel: Cancel) -> paramiko.Transport:
        """The live connection, opened (or reopened once) by whichever host asks first; the rest wait."""
        while not self._lock.acquire(timeout=TICK):
            if cancel.is_set():
                raise HostFailure(Outcome.CANCELLED, f"cancelled while waiting for {self.label} ({cancel.reason})")
        try:
            if self._failure is not None:
                self._failure.raise_it()
            opened = self._opened
            if opened is not None and opened.transport.is_active():
                return opened.transport
            if opened is not None:
                lost = self._lost_text(opened)
                opened.close()
                self._opened = None
                if self._reconnects <= 0:
                    self._failure = _Failure(Outcome.UNREACHABLE, f"{lost}, and it was reconnected once already",
                                             None)
                    self._failure.raise_it()
                self._reconnects -= 1
                return self._open(cancel, after=lost)
            return self._open(cancel)
        finally:
            self._lock.release()

    def _open(self, cancel: Cancel, after: str | None = None) -> paramiko.Transport:
        if cancel.is_set():  # the host that was opening it was cancelled: nobody else starts another attempt
            raise HostFailure(Outcome.CANCELLED, f"cancelled before connecting to {self.label} ({cancel.reason})")
        self.attempts += 1
        try:
            opened = self._opener(self.hop, self.upstream, cancel)
        except HostFailure as failure:
            if failure.outcome is Outcome.CANCELLED or cancel.is_set():
                raise  # the run is ending: not the gateway's fault, and nothing to remember
            message = failure.message if isinstance(failure, GatewayFailure) else f"via {self.label}: {failure.message}"
            if after is not None:
                message += f" (reconnecting after: {after})"
            outcome = Outcome.HOST_KEY if failure.outcome is Outcome.HOST_KEY else Outcome.UNREACHABLE
            self._failure = _Failure(outcome, message, failure.host_key_verified)
            self._failure.raise_it()
            raise AssertionError("unreachable") from None
        self._opened = opened
        self._history[id(opened.transport)] = opened
        self._failures.clear()  # channel ids start again on a new connection
        transport = opened.transport

        def on_open_failure(message: paramiko.Message) -> None:
            # paramiko keeps only the latest failure, in one slot that every thread reads (and clears): keep
            # each channel's own reason, then let paramiko do its part.
            start = message.packet.tell()
            chanid, code, text = message.get_int(), message.get_int(), message.get_text()
            self._failures[chanid] = (code, text)
            message.packet.seek(start)
            paramiko.Transport._parse_channel_open_failure(transport, message)  # type: ignore[attr-defined]

        transport._handler_table[MSG_CHANNEL_OPEN_FAILURE] = on_open_failure  # type: ignore[attr-defined]
        next_channel = transport._next_channel  # type: ignore[attr-defined]

        def remember_id() -> int:  # paramiko calls this in the opening thread: note which channel is ours
            chanid: int = next_channel()
            self._local.chanid = chanid
            return chanid

        transport._next_channel = remember_id  # type: ignore[attr-defined]
        return transport

    def _lost_text(self, opened: Opened | None) -> str:
        why = opened.why_lost() if opened is not None else None
        return f"lost connection to gateway {self.name}" + (f" ({why})" if why else "")

    def lost(self, transport: paramiko.Transport | None = None) -> str | None:
        """Why the connection ended ("lost connection to gateway b1 (...)"), if it has, else None: the given
        connection's (a channel's own, even once the gateway was reopened since), or the current one's."""
        opened = self._opened
        if transport is not None and (opened is None or opened.transport is not transport):
            return None if transport.is_active() else self._lost_text(self._history.get(id(transport)))
        if opened is None or opened.transport.is_active():
            return None
        return self._lost_text(opened)

    def close(self) -> None:
        with self._lock:
            if self._opened is not None:
                self._opened.close()
                self._opened = None

    # --- channels through it ---------------------------------------------------------------------------------

    def acquire_slot(self, cancel: Cancel) -> None:
        """Wait for room under --max-per-gateway (not part of the host's connect budget)."""
        while not self._slots.acquire(timeout=TICK):
            if cancel.is_set():
                raise HostFailure(Outcome.CANCELLED, f"cancelled while waiting for a channel through {self.label}")

    def release_slot(self) -> None:
        self._slots.release()

    def open_channel(self, address: str, port: int, timeout: float, cancel: Cancel) -> paramiko.Channel:
        """A direct-tcpip channel to address:port, within `timeout`; GatewayFailure names this gateway."""
        transport = self.transport(cancel)
        target = f"{address}:{port}"
        self._local.chanid = None
        try:
            # src 127.0.0.1:0, as `ssh -W` reports it; the budget, not paramiko's default of an hour.
            return transport.open_channel("direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=max(timeout, 0.1))
        except (paramiko.SSHException, EOFError, OSError) as error:
            chanid = getattr(self._local, "chanid", None)
            code, text = self._failures.pop(chanid, (None, "")) if chanid is not None else (None, "")
            if code == _PROHIBITED:
                message = f"gateway {self.name} refused forwarding to {target}: administratively prohibited"
            elif code == _CONNECT_FAILED:
                detail = f" ({text})" if text and text.lower() != "connect failed" else ""
                message = f"gateway {self.name} cannot reach {target}{detail}"
            elif code is not None:
                message = f"gateway {self.name} could not open a channel to {target}: {text or f'code {code}'}"
            elif not transport.is_active():
                message = self.lost(transport) or f"lost connection to gateway {self.name}"
            elif "timeout" in str(error).lower():
                message = f"gateway {self.name} did not open a channel to {target} within {timeout:g} s"
            else:
                message = f"gateway {self.name} could not open a channel to {target}: {error}"
            raise GatewayFailure(Outcome.UNREACHABLE, message) from None


class ChannelSocket:
    """A channel seen as the socket a tunnelled Transport reads; close() is left to ChannelLink (see above)."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self._chan = chan

    def settimeout(self, timeout: float | None) -> None:
        self._chan.settimeout(timeout)

    def recv(self, size: int, *flags: int) -> bytes:
        return self._chan.recv(size)

    def send(self, data: bytes, *flags: int) -> int:
        return self._chan.send(data)

    def sendall(self, data: bytes) -> None:
        self._chan.sendall(data)

    def close(self) -> None:
        pass  # the transport closes its socket before its thread has stopped: see the module docstring

    @property
    def _closed(self) -> bool:  # read by Transport.stop_thread
        return bool(self._chan.closed)


class ChannelLink(Link):
    """A target's stream through a gateway; holds one of the gateway's channel slots until closed."""

    def __init__(self, gateway: Gateway, chan: paramiko.Channel, where: str, *, slot: bool) -> None:
        self.gateway = gateway
        self.chan = chan
        self.sock = ChannelSocket(chan)
        self.where = where
        self._slot = slot
        self._closed = False

    def abort(self) -> None:
        try:
            self.chan.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass

    def close(self, transport: paramiko.Transport | None) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if transport is not None:
                transport.close()  # its socket's close() is a no-op: the channel stays open...
                if transport.ident is not None and transport is not threading.current_thread():
                    transport.join(JOIN_TIMEOUT)  # ...until nothing can write to it any more
            self.chan.close()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the gateway is gone: nothing left to close on it
        finally:
            if self._slot:
                self._slot = False
                self.gateway.release_slot()

    def lost_reason(self) -> str | None:
        return self.gateway.lost(self.chan.get_transport())


def tunnel(gateway: Gateway, address: str, port: int, timeout: float, cancel: Cancel, *, slot: bool) -> ChannelLink:
    """A channel through `gateway` to address:port as a Link; releases the slot (if held) when it fails."""
    try:
        chan = gateway.open_channel(address, port, timeout, cancel)
    except BaseException:
        if slot:
            gateway.release_slot()
        raise
    return ChannelLink(gateway, chan, f"{address}:{port} via {gateway.label}", slot=slot)


class Gateways:
    """The run's gateways by route; `get` makes each one once (it opens lazily, on first use)."""

    def __init__(self, opener: Opener, max_channels: int) -> None:
        self._opener = opener
        self._max_channels = max(1, max_channels)
        self._lock = threading.Lock()
        self._gateways: dict[tuple[tuple[object, ...], ...], Gateway] = {}
        self._order: list[Gateway] = []

    def get(self, route: Sequence[Host]) -> Gateway:
        """The gateway for the last hop of `route`, reached through the hops before it."""
        upstream: Gateway | None = None
        key: tuple[tuple[object, ...], ...] = ()
        with self._lock:
            for hop in route:
                key = (*key, gateway_key(hop))
                gateway = self._gateways.get(key)
                if gateway is None:
                    gateway = Gateway(hop, upstream, self._opener, self._max_channels)
                    self._gateways[key] = gateway
                    self._order.append(gateway)
                upstream = gateway
        assert upstream is not None, "a route has at least one hop"
        return upstream

    def all(self) -> list[Gateway]:
        with self._lock:
            return list(self._order)

    def close(self) -> None:
        """Close every gateway, the ones reached through others first."""
        for gateway in reversed(self.all()):
            gateway.close()
