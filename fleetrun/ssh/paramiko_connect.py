"""The connection paramiko makes: its Transport over the stream fleetrun opened (or took back from the lean
client, replayed), the handshake, host-key verification and authentication, with fleetrun's diagnostics."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Collection

import paramiko
from paramiko.common import DEBUG
from paramiko.packet import Packetizer

from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure
from fleetrun.hostcert import CertificateError, read_certificate
from fleetrun.hostkeys import HostKeyCheck, KnownHosts, bare_fallback, host_key_files, host_key_names
from fleetrun.keyblob import parse_blob
from fleetrun.models import Host, Outcome
from fleetrun.ssh import diagnose
from fleetrun.ssh.auth import authenticate
from fleetrun.ssh.connect import ConnectSettings, _settle, preferred_ciphers
from fleetrun.ssh.diagnose import RecordingSocket
from fleetrun.ssh.gateway import GatewayFailure
from fleetrun.ssh.hostkeyorder import CERT, host_key_types
from fleetrun.ssh.keepalive import install_keepalive
from fleetrun.ssh.lean import BANNER
from fleetrun.ssh.link import Link
from fleetrun.ssh.session import HANDLERS, Session


class _Packetizer(Packetizer):
    """paramiko's Packetizer with the handshake's time limit kept as a deadline, not a Timer thread.

    paramiko starts a threading.Timer per connection for it (one more thread per host, created and torn down
    within the handshake); its read loop already checks handshake_timed_out() at every 0.1 s socket timeout,
    so a clock read there does the same job. fleetrun's own connect timeout is the one that rules anyway.
    """

    _deadline: float | None = None
    _complete = False

    def start_handshake(self, timeout: float) -> None:
        if self._deadline is None:
            self._deadline = time.monotonic() + float(timeout)

    def handshake_timed_out(self) -> bool:
        return self._deadline is not None and not self._complete and time.monotonic() >= self._deadline

    def complete_handshake(self) -> None:
        if self._deadline is not None:
            self._complete = True


class _Transport(paramiko.Transport):
    """paramiko's Transport, minus per-connection work nobody reads."""

    def _parse_debug(self, m: paramiko.Message) -> None:
        # sshd sends an SSH_MSG_DEBUG on most logins (the key's authorized_keys options); paramiko escapes it
        # byte by byte in Python for a debug log line that fleetrun only shows under FLEETRUN_DEBUG.
        if self.logger.isEnabledFor(DEBUG):
            super()._parse_debug(m)  # type: ignore[misc]


def paramiko_connect(host: Host, settings: ConnectSettings, password: str | None, cancel: Cancel, link: Link,
                      sock: object, remaining: Callable[[], float], limit: float, started: float) -> Session:
    """The handshake, host-key check and authentication through paramiko's Transport."""
    recorder = RecordingSocket(sock)  # type: ignore[arg-type]
    transport = _Transport(recorder, packetizer_class=_Packetizer)  # type: ignore[arg-type]  # socket-like
    # One client version for every fleetrun connection: a connection the lean client handed over sent it already.
    transport.local_version = BANNER.decode()
    # paramiko's own 15 s handshake limit would end a longer connect budget early with a bare EOF; ours rules.
    transport.handshake_timeout = limit + 5
    verified: bool | None = None  # the host-key check's result: every outcome after it carries it
    try:
        transport._channel_handler_table = HANDLERS  # type: ignore[attr-defined]
        verified = _handshake(host, settings, transport, remaining, limit)
        recorder.stop()  # what the server sent has served its purpose: from here on, no copy
        alive = install_keepalive(transport, host.server_alive_interval, host.server_alive_count_max, recorder)
        authenticate(host, settings, transport, password, remaining)
        return Session(host, transport, limit, host_key_verified=verified, link=link, alive=alive)
    except HostFailure as failure:
        # Raised once paramiko's thread was started (it has an ident) but before the key exchange finished, it is
        # start_client's quiet timeout: say which step hung, and with what, if the thread died meanwhile.
        # Read before close(): closing makes the thread fail with an EOF of our own making.
        stalled = transport.ident is not None and not transport.initial_kex_done
        died_of, hello = transport.get_exception(), recorder.hello()
        link.close(transport)
        if cancel.is_set():
            raise HostFailure(Outcome.CANCELLED, f"cancelled while connecting ({cancel.reason})",
                              host_key_verified=verified) from None
        _raise_if_gateway_lost(link, verified)
        if stalled:
            message = _describe_connect_error(died_of, hello, transport, link, time.monotonic() - started)
            raise HostFailure(Outcome.UNREACHABLE, message) from None
        if verified is not None:
            failure.host_key_verified = verified
        raise
    except BaseException as error:
        hello = recorder.hello()
        link.close(transport)
        if cancel.is_set():
            raise HostFailure(Outcome.CANCELLED, f"cancelled while connecting ({cancel.reason})",
                              host_key_verified=verified) from None
        if isinstance(error, (paramiko.SSHException, OSError, EOFError)):
            _raise_if_gateway_lost(link, verified)
            if transport.initial_kex_done:
                raise HostFailure(Outcome.UNREACHABLE, diagnose.describe_after_handshake(error, link.where),
                                  host_key_verified=verified) from None
            message = _describe_connect_error(error, hello, transport, link, time.monotonic() - started)
            raise HostFailure(Outcome.UNREACHABLE, message, host_key_verified=verified) from None
        raise


def _raise_if_gateway_lost(link: Link, verified: bool | None) -> None:
    lost = link.lost_reason()
    if lost is not None:
        raise GatewayFailure(Outcome.UNREACHABLE, f"{lost} while connecting", host_key_verified=verified) from None


def _describe_connect_error(
    error: BaseException | None, hello: diagnose.ServerHello, transport: paramiko.Transport, link: Link,
    waited: float,
) -> str:
    """What went wrong before login, from what the server really sent (see fleetrun.ssh.diagnose)."""
    message = diagnose.describe(error, hello, diagnose.ours(transport), link.where, waited)
    note = link.failure_note()
    return f"{message}; {note}" if note else message


def _principal(host: Host) -> str:
    """The name a host certificate must list: HostKeyAlias, else the HostName, lowercased unless an address."""
    if host.host_key_alias:
        return host.host_key_alias
    try:
        ipaddress.ip_address(host.address)
        return host.address
    except ValueError:
        return host.address.lower()


def _handshake(
    host: Host,
    settings: ConnectSettings,
    transport: paramiko.Transport,
    remaining: Callable[[], float],
    limit: float,
) -> bool:
    """Key exchange and host-key verification; True if known_hosts vouched for the key, False if the policy
    let an unverified key through (accept-new recorded it, or checking is off). Raises HostFailure otherwise."""
    names = host_key_names(host)
    files, _ = host_key_files(host)
    options = transport.get_security_options()
    supported = list(paramiko.Transport._key_info)  # type: ignore[attr-defined]  # certificates included
    options.key_types = host_key_types(host, settings.known_hosts, names, files, supported)
    options.ciphers = preferred_ciphers(options.ciphers)
    transport.banner_timeout = remaining()
    transport.start_client(timeout=remaining())
    if not transport.is_active() or not getattr(transport, "initial_kex_done", True):
        # start_client returns quietly, without raising, when its timeout runs out.
        raise HostFailure(Outcome.UNREACHABLE, f"no SSH handshake within {limit:g} s: is an SSH server listening?")

    return _check_host_key(host, settings, transport.get_remote_server_key())


def _check_host_key(host: Host, settings: ConnectSettings, key: paramiko.PKey) -> bool:
    """known_hosts' verdict on the key the host offered: True if vouched for, False if the policy let an
    unverified key through (accept-new recorded it, or checking is off). Raises HostFailure otherwise."""
    names = host_key_names(host)
    files, writable = host_key_files(host)
    check, keytype, blob = _judge(host, settings.known_hosts, key, names, files)
    return _settle(host, settings, check, keytype, blob, names, files, writable)


def _judge(host: Host, known: KnownHosts, key: paramiko.PKey, names: list[str],
           files: Collection[str]) -> tuple[HostKeyCheck, str, bytes]:
    """known_hosts' verdict on the offered key, and the plain key that accept-new would record."""
    offered = key.public_blob
    if offered is None or not offered.key_type.endswith(CERT):
        return (known.judge(names, key.get_name(), key.asbytes(), files, bare_fallback=bare_fallback(host)),
                key.get_name(), key.asbytes())
    try:
        cert = read_certificate(offered.key_blob)
    except CertificateError as error:
        # ssh refuses such a key outright (sshkey_from_blob verifies the CA signature), whatever known_hosts says.
        raise HostFailure(Outcome.HOST_KEY, f"the host certificate {names[0]} offered cannot be trusted: {error}",
                          host_key_verified=False) from None
    plain = parse_blob(cert.key.plain)
    return (known.judge_certificate(names, cert, _principal(host), files, bare_fallback=bare_fallback(host)),
            plain.keytype, plain.blob)
