"""Open a connection: TCP, SSH handshake, host-key verification and authentication, in one time budget."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko

from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure
from fleetrun.hostkeys import KnownHosts, Verdict, fingerprint, known_hosts_name
from fleetrun.models import Host, Outcome
from fleetrun.ssh.auth import authenticate
from fleetrun.ssh.session import HANDLERS, Session

HostKeyPolicy = str  # "yes" | "accept-new" | "no"


@dataclass(frozen=True)
class ConnectSettings:
    """Everything `connect` needs besides the host; one per run, shared read-only by all workers."""

    known_hosts: KnownHosts
    accept_new_path: Path  # where accept-new appends for hosts without a known_hosts of their own
    host_key_checking: HostKeyPolicy = "yes"
    connect_timeout: float = 10.0
    keys: dict[str, paramiko.PKey] | None = None  # key path -> loaded key, loaded once per run
    encrypted_identities: dict[str, bytes] | None = None  # encrypted key path -> public blob (agent may sign)
    use_agent: bool = True
    warn: Callable[[str], None] = lambda message: None



def _preferred_key_types(known: list[str], offered: Sequence[str]) -> list[str]:
    """Ask the server for a host key type we already know, so a known host is not reported changed."""
    wanted: list[str] = []
    for keytype in known:
        wanted += ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if keytype == "ssh-rsa" else [keytype]
    first = [t for t in dict.fromkeys(wanted) if t in offered]
    return first + [t for t in offered if t not in first]



def connect(host: Host, settings: ConnectSettings, password: str | None, cancel: Cancel) -> Session:
    """TCP, handshake, host-key check and authentication, all within the host's connect timeout.

    Raises HostFailure with the outcome (unreachable, host key, auth failed, cancelled) and one line.
    """
    limit = host.connect_timeout or settings.connect_timeout
    deadline = time.monotonic() + limit

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise HostFailure(Outcome.UNREACHABLE, f"connect timed out after {limit:g} s (TCP, handshake and auth)")
        return left

    where = f"{host.address}:{host.port}"
    try:
        sock = socket.create_connection((host.address, host.port), timeout=remaining())
    except socket.gaierror as error:
        raise HostFailure(Outcome.UNREACHABLE, f"cannot resolve {host.address!r}: {error.strerror}") from None
    except ConnectionRefusedError:
        raise HostFailure(Outcome.UNREACHABLE, f"connection refused by {where}") from None
    except TimeoutError:
        raise HostFailure(Outcome.UNREACHABLE, f"TCP connect to {where} timed out after {limit:g} s") from None
    except OSError as error:
        raise HostFailure(Outcome.UNREACHABLE, f"cannot connect to {where}: {error.strerror or error}") from None

    def abort() -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    handle = cancel.add_callback(abort)
    transport = paramiko.Transport(sock)
    try:
        transport._channel_handler_table = HANDLERS  # type: ignore[attr-defined]
        _handshake(host, settings, transport, remaining, limit)
        authenticate(host, settings, transport, password, remaining)
        transport.set_keepalive(30)
        return Session(host, transport, limit)
    except HostFailure:
        transport.close()
        if cancel.is_set():
            raise HostFailure(Outcome.CANCELLED, f"cancelled while connecting ({cancel.reason})") from None
        raise
    except BaseException as error:
        transport.close()
        if cancel.is_set():
            raise HostFailure(Outcome.CANCELLED, f"cancelled while connecting ({cancel.reason})") from None
        if isinstance(error, (paramiko.SSHException, OSError, EOFError)):
            raise HostFailure(Outcome.UNREACHABLE, _describe_connect_error(error, limit)) from None
        raise
    finally:
        cancel.remove_callback(handle)


def _describe_connect_error(error: BaseException, limit: float) -> str:
    text = str(error) or error.__class__.__name__
    if "banner" in text.lower():
        return f"no SSH banner within {limit:g} s: is an SSH server listening there?"
    if isinstance(error, EOFError) or "EOF" in text:
        return "the server closed the connection during the SSH handshake"
    return f"SSH handshake failed: {text}"


def _handshake(
    host: Host,
    settings: ConnectSettings,
    transport: paramiko.Transport,
    remaining: Callable[[], float],
    limit: float,
) -> None:
    names = [known_hosts_name(host.address, host.port)]
    if host.name != host.address:
        names.append(known_hosts_name(host.name, host.port))
    options = transport.get_security_options()
    options.key_types = _preferred_key_types(settings.known_hosts.key_types_for(names), options.key_types)
    transport.banner_timeout = remaining()
    transport.start_client(timeout=remaining())
    if not transport.is_active() or not getattr(transport, "initial_kex_done", True):
        # start_client returns quietly, without raising, when its timeout runs out.
        raise HostFailure(Outcome.UNREACHABLE, f"no SSH handshake within {limit:g} s: is an SSH server listening?")

    key = transport.get_remote_server_key()
    blob = key.asbytes()
    offered = f"{key.get_name()} {fingerprint(blob)}"
    verdict = settings.known_hosts.check(names, key.get_name(), blob)
    if verdict is Verdict.KNOWN:
        return
    if verdict is Verdict.REVOKED:
        raise HostFailure(Outcome.HOST_KEY, f"host key {offered} for {names[0]} is REVOKED in known_hosts: refusing")
    if verdict is Verdict.CHANGED:
        raise HostFailure(
            Outcome.HOST_KEY,
            f"HOST KEY CHANGED for {names[0]}: offered {offered} differs from known_hosts; possible attack. "
            f"If the host was rebuilt, verify the new key and remove the old one: ssh-keygen -R '{names[0]}'",
        )
    policy = host.host_key_checking or settings.host_key_checking  # ssh_config's StrictHostKeyChecking, mapped
    if policy == "accept-new":
        target = Path(host.known_hosts[0]) if host.known_hosts else settings.accept_new_path
        added = settings.known_hosts.add(target, names[0], key.get_name(), blob)
        # Not added: another process recorded a key for this name since we checked; judge against that one.
        if not added and settings.known_hosts.check(names, key.get_name(), blob) is not Verdict.KNOWN:
            raise HostFailure(Outcome.HOST_KEY, f"host key for {names[0]} changed during the run: refusing")
        return
    if policy == "no":
        settings.warn(f"{host.name}: host key NOT verified ({offered}): --host-key-checking no is for labs only")
        return
    raise HostFailure(
        Outcome.HOST_KEY,
        f"unknown host key for {names[0]} ({offered}): verify the fingerprint, then add it to known_hosts "
        "or run once with --host-key-checking accept-new",
    )
