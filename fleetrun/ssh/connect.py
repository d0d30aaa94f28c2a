"""Open a connection: its stream (TCP, ProxyCommand or a bastion's channel), the SSH handshake, host-key
verification and authentication, in one time budget."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure
from fleetrun.hostkeys import HostKeyCheck, KnownHosts, Verdict, bare_fallback, host_key_files, host_key_names
from fleetrun.models import Host, Outcome
from fleetrun.ssh import lean as lean_client
from fleetrun.ssh.auth import authenticate
from fleetrun.ssh.hostkeyorder import CERT, host_key_types
from fleetrun.ssh.keys import KeyFile
from fleetrun.ssh.lean import Handover, Offer
from fleetrun.ssh.lean_session import LeanSession
from fleetrun.ssh.lean_wire import WireError
from fleetrun.ssh.link import Link, TcpLink, tcp_link

if TYPE_CHECKING:
    from fleetrun.ssh.gateway import Gateway, Gateways
    from fleetrun.ssh.session import Session

HostKeyPolicy = str  # "yes" | "accept-new" | "no"


@dataclass(frozen=True)
class ConnectSettings:
    """Everything `connect` needs besides the host; one per run, shared read-only by all workers."""

    known_hosts: KnownHosts  # every file any host (or gateway) of the run reads, loaded once
    host_key_checking: HostKeyPolicy = "yes"
    connect_timeout: float = 10.0
    keys: dict[str, KeyFile] | None = None  # key path -> loaded key, loaded once per run
    encrypted_identities: dict[str, bytes] | None = None  # encrypted key path -> public blob (agent may sign)
    certificates: dict[str, bytes] | None = None  # user certificate path -> its blob, loaded once per run
    use_agent: bool = True
    gateways: Gateways | None = None  # the run's shared bastion connections
    warn: Callable[[str], None] = lambda message: None


# AES-GCM first: its tag is checked inside OpenSSL, where CTR mode needs an HMAC computed and compared in
# Python for every packet: 12% less client CPU per connection (instructions counted under callgrind, issue 13).
# OpenSSH itself prefers chacha20-poly1305, which paramiko lacks; a server without GCM gets paramiko's order.
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def preferred_ciphers(supported: Sequence[str]) -> tuple[str, ...]:
    """paramiko's ciphers with the AEAD ones it has moved to the front."""
    first = tuple(cipher for cipher in PREFERRED_CIPHERS if cipher in supported)
    return first + tuple(cipher for cipher in supported if cipher not in first)


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
        handed_over = False
        if lean and isinstance(link, TcpLink) and _lean_eligible(host, settings, password):
            try:
                return _lean_connect(host, settings, link, remaining, limit, cancel)
            except Handover as handover:
                sock = handover.replay_socket(link.sock)  # paramiko goes on from the start of the conversation
                handed_over = True
        from fleetrun.ssh.paramiko_connect import paramiko_connect

        if handed_over:
            # The lean client left paramiko `_handover_margin` of the budget to say what went wrong; importing
            # paramiko (the first time in a process, ~0.1 s on a busy machine) must not eat it, or a silent
            # server is reported as a bare "connect timed out" instead of "no SSH banner within ...".
            deadline = max(deadline, time.monotonic() + _handover_margin(limit))

        return paramiko_connect(host, settings, password, cancel, link, sock, remaining, limit, started)
    finally:
        cancel.remove_callback(handle)


def _lean_eligible(host: Host, settings: ConnectSettings, password: str | None) -> bool:
    """Whether fleetrun.ssh.lean can make this connection: a TCP host authenticating with key files only."""
    if not lean_client.enabled():
        return False
    agent = settings.use_agent and host.identity_agent != "none" and bool(
        host.identity_agent or os.environ.get("SSH_AUTH_SOCK"))
    return lean_client.eligible(host, password, settings.keys or {}, agent, settings.certificates or {})


def _lean_offer(host: Host, settings: ConnectSettings, names: list[str], files: tuple[str, ...]) -> Offer:
    """The KEXINIT lists paramiko's Transport would send this host, as `_handshake` configures it."""
    key_types = host_key_types(host, settings.known_hosts, names, files, lean_client.PARAMIKO_KEY_TYPES)
    # Transport.preferred_keys appends a certificate variant of every name, whatever the list holds already.
    sent_key_types = (*key_types, *(name + CERT for name in key_types))
    return Offer(
        kex=lean_client.paramiko_kex(),
        key_types=sent_key_types,
        ciphers=preferred_ciphers(lean_client.PARAMIKO_CIPHERS),
        macs=lean_client.PARAMIKO_MACS,
        compression=lean_client.PARAMIKO_COMPRESSION,
    )


def _handover_margin(limit: float) -> float:
    """The part of the connect budget the lean client leaves to paramiko after a handover, for its words."""
    return min(1.0, limit / 10)


def _lean_connect(host: Host, settings: ConnectSettings, link: TcpLink, remaining: Callable[[], float],
                  limit: float, cancel: Cancel) -> LeanSession:
    """The connection through fleetrun.ssh.lean; raises Handover when paramiko must make it instead."""
    margin = _handover_margin(limit)
    deadline = time.monotonic() + remaining()
    verified: bool | None = None
    try:
        names = host_key_names(host)
        files, writable = host_key_files(host)

        def check(keytype: str, blob: bytes) -> bool:
            return _check_plain_host_key(host, settings, keytype, blob, names, files, writable)

        offer = _lean_offer(host, settings, names, files)
        connection, verified = lean_client.handshake(link.sock, link.where, offer, deadline, margin, check)
        authenticate(host, settings, connection, None, remaining)
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
    except (OSError, EOFError, WireError) as error:
        link.close(None)
        if cancel.is_set():
            raise HostFailure(Outcome.CANCELLED, f"cancelled while connecting ({cancel.reason})",
                              host_key_verified=verified) from None
        from fleetrun.ssh.diagnose import describe_after_handshake

        raise HostFailure(Outcome.UNREACHABLE, describe_after_handshake(error, link.where),
                          host_key_verified=verified) from None
    except BaseException:
        link.close(None)
        raise


def _open_link(host: Host, gateway: Gateway | None, slot: bool, remaining: Callable[[], float], limit: float,
               cancel: Cancel) -> Link:
    """The stream to the host: a channel through its gateway, its ProxyCommand, or TCP."""
    if gateway is not None:
        from fleetrun.ssh.gateway import tunnel

        return tunnel(gateway, host.address, host.port, remaining(), cancel, slot=slot)
    if host.proxy_command:
        from fleetrun.ssh.proxycommand import ProxyCommandLink

        return ProxyCommandLink.start(host.proxy_command)
    return tcp_link(host.address, host.port, remaining, limit)


def _check_plain_host_key(host: Host, settings: ConnectSettings, keytype: str, blob: bytes, names: list[str],
                          files: tuple[str, ...], writable: str | None) -> bool:
    """_check_host_key for a plain key (not a certificate), as its type and blob."""
    check = settings.known_hosts.judge(names, keytype, blob, files, bare_fallback=bare_fallback(host))
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
        try:
            added = known.add(Path(writable), names[0], keytype, blob, files, hashed=host.hash_known_hosts)
        except OSError as error:
            # ssh says "Failed to add the host to the list of known hosts" and connects all the same.
            settings.warn(f"{host.name}: failed to add the host key to known_hosts ({writable}: "
                          f"{error.strerror or error}); connecting unverified")
            return False
        # Not added: another process recorded a key for this name since we checked; judge against that one.
        if not added and known.check(names, keytype, blob, files, bare_fallback=bare_fallback(host)) \
                is not Verdict.KNOWN:
            raise HostFailure(Outcome.HOST_KEY, f"host key for {names[0]} changed during the run: refusing",
                              host_key_verified=False)
        return False
    if policy == "no":
        settings.warn(f"{host.name}: host key NOT verified ({check.offered}): --host-key-checking no is for labs only")
        return False
    raise HostFailure(Outcome.HOST_KEY, check.explain(), host_key_verified=False)


