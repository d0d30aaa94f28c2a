"""Open a connection: its stream (TCP, ProxyCommand or a bastion's channel), the SSH handshake, host-key
verification and authentication, in one time budget."""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, overload

import paramiko
from paramiko.common import DEBUG
from paramiko.packet import Packetizer

from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure
from fleetrun.hostcert import CertificateError, read_certificate
from fleetrun.hostkeys import HostKeyCheck, KnownHosts, Verdict, host_key_files, host_key_names
from fleetrun.keyblob import parse_blob
from fleetrun.models import Host, Outcome
from fleetrun.ssh import diagnose
from fleetrun.ssh import lean as lean_client
from fleetrun.ssh.auth import authenticate
from fleetrun.ssh.diagnose import RecordingSocket
from fleetrun.ssh.gateway import Gateway, GatewayFailure, Gateways, tunnel
from fleetrun.ssh.keepalive import install_keepalive
from fleetrun.ssh.lean import Handover, Offer
from fleetrun.ssh.lean_session import LeanSession
from fleetrun.ssh.lean_wire import WireError
from fleetrun.ssh.link import Link, TcpLink, tcp_link
from fleetrun.ssh.proxycommand import ProxyCommandLink
from fleetrun.ssh.session import HANDLERS, Session

HostKeyPolicy = str  # "yes" | "accept-new" | "no"
_CERT = "-cert-v01@openssh.com"


@dataclass(frozen=True)
class ConnectSettings:
    """Everything `connect` needs besides the host; one per run, shared read-only by all workers."""

    known_hosts: KnownHosts  # every file any host (or gateway) of the run reads, loaded once
    host_key_checking: HostKeyPolicy = "yes"
    connect_timeout: float = 10.0
    keys: dict[str, paramiko.PKey] | None = None  # key path -> loaded key, loaded once per run
    encrypted_identities: dict[str, bytes] | None = None  # encrypted key path -> public blob (agent may sign)
    certificates: dict[str, bytes] | None = None  # user certificate path -> its blob, loaded once per run
    use_agent: bool = True
    gateways: Gateways | None = None  # the run's shared bastion connections
    warn: Callable[[str], None] = lambda message: None


# ssh's default HostKeyAlgorithms, best first (OpenSSH 9.2: `ssh -G host | grep hostkeyalgorithms`), each with
# the key type a known_hosts line must hold to vouch for it.
OPENSSH_HOST_KEY_ALGORITHMS: dict[str, str] = {
    "ssh-ed25519-cert-v01@openssh.com": "ssh-ed25519",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com": "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com": "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com": "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519-cert-v01@openssh.com": "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com": "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com": "ssh-rsa",
    "rsa-sha2-256-cert-v01@openssh.com": "ssh-rsa",
    "ssh-ed25519": "ssh-ed25519",
    "ecdsa-sha2-nistp256": "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384": "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521": "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com": "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com": "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512": "ssh-rsa",
    "rsa-sha2-256": "ssh-rsa",
}


# AES-GCM first: its tag is checked inside OpenSSL, where CTR mode needs an HMAC computed and compared in
# Python for every packet: 12% less client CPU per connection (instructions counted under callgrind, issue 13).
# OpenSSH itself prefers chacha20-poly1305, which paramiko lacks; a server without GCM gets paramiko's order.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def preferred_ciphers(supported: Sequence[str]) -> tuple[str, ...]:
    """paramiko's ciphers with the AEAD ones it has moved to the front."""
    first = tuple(cipher for cipher in PREFERRED_CIPHERS if cipher in supported)
    return first + tuple(cipher for cipher in supported if cipher not in first)


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


def _preferred_key_types(known: Collection[str], supported: Sequence[str], authority: bool = False) -> list[str]:
    """Host key algorithms in the order ssh asks for them (OpenSSH's order_hostkeyalgs), among `supported`.

    ssh keeps its default order when a key of its best algorithm's type is known for the host, and otherwise
    moves the algorithms of the known key types first, each group in its own order. So a host with a stale
    line of one type and a right one of the type ssh prefers is asked for the right one, as ssh asks.
    A @cert-authority line for the host moves every certificate algorithm first too.
    """
    order = list(OPENSSH_HOST_KEY_ALGORITHMS)
    if OPENSSH_HOST_KEY_ALGORITHMS[order[0]] not in known:
        first = [alg for alg in order
                 if OPENSSH_HOST_KEY_ALGORITHMS[alg] in known or (authority and alg.endswith(_CERT))]
        order = first + [alg for alg in order if alg not in first]
    # Only what ssh would ask for: an algorithm paramiko has but ssh dropped (ssh-rsa, ssh-dss) stays out.
    wanted = [alg for alg in order if alg in supported]
    return wanted or list(supported)


@overload
def connect(host: Host, settings: ConnectSettings, password: str | None, cancel: Cancel, *,
            through: Gateway | None = None, lean: Literal[False] = False) -> Session: ...


@overload
def connect(host: Host, settings: ConnectSettings, password: str | None, cancel: Cancel, *,
            through: Gateway | None = None, lean: bool) -> Session | LeanSession: ...


def connect(host: Host, settings: ConnectSettings, password: str | None, cancel: Cancel, *,
            through: Gateway | None = None, lean: bool = False) -> Session | LeanSession:
    """The stream, handshake, host-key check and authentication, all within the host's connect timeout.

    A host with a jump route goes through the run's shared gateway for it (`settings.gateways`), holding one
    of its channel slots for as long as the session lasts; waiting for the gateway to open, or for a slot,
    is not part of the host's own budget. `through` is for a gateway's own connection through the one
    before it. `lean`: the caller needs only one exec channel without sudo or stdin, so a host reached over TCP
    with key files may go through fleetrun.ssh.lean (no thread of its own; paramiko whenever it cannot).
    Raises HostFailure with the outcome (unreachable, host key, auth failed, cancelled) and one line.
    """
    limit = host.connect_timeout or settings.connect_timeout
    gateway, slot = through, False
    if gateway is None and host.via:
        if settings.gateways is None:
            raise HostFailure(Outcome.UNREACHABLE, "no gateway registry for a host behind a bastion (a bug)")
        gateway = settings.gateways.get(host.via)
        gateway.transport(cancel)  # a gateway known to be dead fails the host here, before it queues for a slot
        gateway.acquire_slot(cancel)
        slot = True
    started = time.monotonic()
    deadline = started + limit

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HostFailure(Outcome.UNREACHABLE, f"connect timed out after {limit:g} s (TCP, handshake and auth)")
        return left

    link = _open_link(host, gateway, slot, remaining, limit, cancel)
    handle = cancel.add_callback(link.abort)
    try:
        sock: object = link.sock
        if lean and isinstance(link, TcpLink) and _lean_eligible(host, settings, password):
            try:
                return _lean_connect(host, settings, link, remaining, limit, cancel)
            except Handover as handover:
                sock = handover.replay_socket(link.sock)  # paramiko goes on from the start of the conversation
        return _paramiko_connect(host, settings, password, cancel, link, sock, remaining, limit, started)
    finally:
        cancel.remove_callback(handle)


def _paramiko_connect(host: Host, settings: ConnectSettings, password: str | None, cancel: Cancel, link: Link,
                      sock: object, remaining: Callable[[], float], limit: float, started: float) -> Session:
    """The handshake, host-key check and authentication through paramiko's Transport."""
    recorder = RecordingSocket(sock)  # type: ignore[arg-type]
    transport = _Transport(recorder, packetizer_class=_Packetizer)  # type: ignore[arg-type]  # socket-like
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


def _lean_eligible(host: Host, settings: ConnectSettings, password: str | None) -> bool:
    """Whether fleetrun.ssh.lean can make this connection: a TCP host authenticating with key files only."""
    if not lean_client.enabled():
        return False
    agent = settings.use_agent and host.identity_agent != "none" and bool(
        host.identity_agent or os.environ.get("SSH_AUTH_SOCK"))
    return lean_client.eligible(host, password, settings.keys or {}, agent, settings.certificates or {})


def _lean_offer(host: Host, settings: ConnectSettings, names: list[str], files: tuple[str, ...]) -> Offer:
    """The KEXINIT lists paramiko's Transport would send this host, as `_handshake` configures it."""
    known = settings.known_hosts
    supported = list(paramiko.Transport._key_info)  # type: ignore[attr-defined]
    key_types = _preferred_key_types(known.key_types_for(names, files), supported,
                                     known.has_authority_for(names, files))
    # Transport.preferred_keys appends a certificate variant of every name, whatever the list holds already.
    sent_key_types = (*key_types, *(f"{name}-cert-v01@openssh.com" for name in key_types))
    transport_class = paramiko.Transport
    return Offer(
        kex=tuple(transport_class._preferred_kex),  # type: ignore[attr-defined]
        key_types=sent_key_types,
        ciphers=preferred_ciphers(transport_class._preferred_ciphers),  # type: ignore[attr-defined]
        macs=tuple(transport_class._preferred_macs),  # type: ignore[attr-defined]
        compression=tuple(transport_class._preferred_compression),  # type: ignore[attr-defined]
    )


def _lean_connect(host: Host, settings: ConnectSettings, link: TcpLink, remaining: Callable[[], float],
                  limit: float, cancel: Cancel) -> LeanSession:
    """The connection through fleetrun.ssh.lean; raises Handover when paramiko must make it instead."""
    margin = min(1.0, limit / 10)  # left to paramiko after a handover, to say what went wrong in its words
    deadline = time.monotonic() + remaining()
    verified: bool | None = None
    try:
        names = host_key_names(host)
        files, writable = host_key_files(host)

        def check(keytype: str, blob: bytes) -> bool:
            return _check_plain_host_key(host, settings, keytype, blob, names, files, writable)

        offer = _lean_offer(host, settings, names, files)
        connection, verified = lean_client.handshake(link.sock, link.where, offer, deadline, margin, check)
        authenticate(host, settings, connection, None, remaining)  # type: ignore[arg-type]  # its auth subset
        return LeanSession(host, connection, limit, host_key_verified=verified, link=link)
    except Handover:
        if cancel.is_set():
            link.close(None)
            raise HostFailure(Outcome.CANCELLED, f"cancelled while connecting ({cancel.reason})") from None
        raise
    except HostFailure as failure:
        link.close(None)
        if cancel.is_set():
            raise HostFailure(Outcome.CANCELLED, f"cancelled while connecting ({cancel.reason})",
                              host_key_verified=verified) from None
        if verified is not None:
            failure.host_key_verified = verified
        raise
    except (paramiko.SSHException, OSError, EOFError, WireError) as error:
        link.close(None)
        if cancel.is_set():
            raise HostFailure(Outcome.CANCELLED, f"cancelled while connecting ({cancel.reason})",
                              host_key_verified=verified) from None
        raise HostFailure(Outcome.UNREACHABLE, diagnose.describe_after_handshake(error, link.where),
                          host_key_verified=verified) from None
    except BaseException:
        link.close(None)
        raise


def _open_link(host: Host, gateway: Gateway | None, slot: bool, remaining: Callable[[], float], limit: float,
               cancel: Cancel) -> Link:
    """The stream to the host: a channel through its gateway, its ProxyCommand, or TCP."""
    if gateway is not None:
        return tunnel(gateway, host.address, host.port, remaining(), cancel, slot=slot)
    if host.proxy_command:
        return ProxyCommandLink.start(host.proxy_command)
    return tcp_link(host.address, host.port, remaining, limit)


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
    known = settings.known_hosts
    options = transport.get_security_options()
    supported = list(paramiko.Transport._key_info)  # type: ignore[attr-defined]  # certificates included
    options.key_types = _preferred_key_types(known.key_types_for(names, files), supported,
                                             known.has_authority_for(names, files))
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


def _check_plain_host_key(host: Host, settings: ConnectSettings, keytype: str, blob: bytes, names: list[str],
                          files: tuple[str, ...], writable: str | None) -> bool:
    """_check_host_key for a plain key (not a certificate), as its type and blob."""
    check = settings.known_hosts.judge(names, keytype, blob, files)
    return _settle(host, settings, check, keytype, blob, names, files, writable)


def _settle(host: Host, settings: ConnectSettings, check: HostKeyCheck, keytype: str, blob: bytes,
            names: list[str], files: tuple[str, ...], writable: str | None) -> bool:
    """What the verdict means for the connection under the host's StrictHostKeyChecking policy."""
    known = settings.known_hosts
    for problem in check.bad_lines:
        settings.warn(f"known_hosts: {problem}")
    if check.verdict is Verdict.KNOWN:
        return True
    if check.verdict is not Verdict.UNKNOWN:
        raise HostFailure(Outcome.HOST_KEY, check.explain(), host_key_verified=False)
    policy = host.host_key_checking or settings.host_key_checking  # ssh_config's StrictHostKeyChecking, mapped
    if policy == "accept-new":
        if writable is None:
            raise HostFailure(Outcome.HOST_KEY, check.explain() + " (accept-new has no file to record it in: "
                              "UserKnownHostsFile is none)", host_key_verified=False)
        added = known.add(Path(writable), names[0], keytype, blob, files, hashed=host.hash_known_hosts)
        # Not added: another process recorded a key for this name since we checked; judge against that one.
        if not added and known.check(names, keytype, blob, files) is not Verdict.KNOWN:
            raise HostFailure(Outcome.HOST_KEY, f"host key for {names[0]} changed during the run: refusing",
                              host_key_verified=False)
        return False
    if policy == "no":
        settings.warn(f"{host.name}: host key NOT verified ({check.offered}): --host-key-checking no is for labs only")
        return False
    raise HostFailure(Outcome.HOST_KEY, check.explain(), host_key_verified=False)


def _judge(host: Host, known: KnownHosts, key: paramiko.PKey, names: list[str],
           files: Collection[str]) -> tuple[HostKeyCheck, str, bytes]:
    """known_hosts' verdict on the offered key, and the plain key that accept-new would record."""
    offered = key.public_blob
    if offered is None or not offered.key_type.endswith(_CERT):
        return known.judge(names, key.get_name(), key.asbytes(), files), key.get_name(), key.asbytes()
    try:
        cert = read_certificate(offered.key_blob)
    except CertificateError as error:
        # ssh refuses such a key outright (sshkey_from_blob verifies the CA signature), whatever known_hosts says.
        raise HostFailure(Outcome.HOST_KEY, f"the host certificate {names[0]} offered cannot be trusted: {error}",
                          host_key_verified=False) from None
    plain = parse_blob(cert.key.plain)
    return known.judge_certificate(names, cert, _principal(host), files), plain.keytype, plain.blob
