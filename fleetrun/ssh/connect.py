"""Open a connection: TCP, SSH handshake, host-key verification and authentication, in one time budget."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.common import DEBUG

from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure
from fleetrun.hostkeys import KnownHosts, Verdict, known_hosts_name
from fleetrun.models import Host, Outcome
from fleetrun.ssh import diagnose
from fleetrun.ssh.auth import authenticate
from fleetrun.ssh.diagnose import RecordingSocket
from fleetrun.ssh.session import HANDLERS, Session

HostKeyPolicy = str  # "yes" | "accept-new" | "no"


@dataclass(frozen=True)
class ConnectSettings:
    """Everything `connect` needs besides the host; one per run, shared read-only by all workers."""

    known_hosts: KnownHosts
    # ~/.ssh/known_hosts: read for every host, and where accept-new appends for hosts without a file of their own
    accept_new_path: Path
    host_key_checking: HostKeyPolicy = "yes"
    connect_timeout: float = 10.0
    keys: dict[str, paramiko.PKey] | None = None  # key path -> loaded key, loaded once per run
    encrypted_identities: dict[str, bytes] | None = None  # encrypted key path -> public blob (agent may sign)
    use_agent: bool = True
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


class _Transport(paramiko.Transport):
    """paramiko's Transport, minus per-connection work nobody reads."""

    def _parse_debug(self, m: paramiko.Message) -> None:
        # sshd sends an SSH_MSG_DEBUG on most logins (the key's authorized_keys options); paramiko escapes it
        # byte by byte in Python for a debug log line that fleetrun only shows under FLEETRUN_DEBUG.
        if self.logger.isEnabledFor(DEBUG):
            super()._parse_debug(m)  # type: ignore[misc]


def _preferred_key_types(known: Collection[str], supported: Sequence[str]) -> list[str]:
    """Host key algorithms in the order ssh asks for them (OpenSSH's order_hostkeyalgs), among `supported`.

    ssh keeps its default order when a key of its best algorithm's type is known for the host, and otherwise
    moves the algorithms of the known key types first, each group in its own order. So a host with a stale
    line of one type and a right one of the type ssh prefers is asked for the right one, as ssh asks.
    Certificate algorithms are never asked for: fleetrun does not verify host certificates.
    """
    order = list(OPENSSH_HOST_KEY_ALGORITHMS)
    if OPENSSH_HOST_KEY_ALGORITHMS[order[0]] not in known:
        first = [alg for alg in order if OPENSSH_HOST_KEY_ALGORITHMS[alg] in known]
        order = first + [alg for alg in order if alg not in first]
    # Only what ssh would ask for: an algorithm paramiko has but ssh dropped (ssh-rsa, ssh-dss) stays out.
    wanted = [alg for alg in order if alg in supported and not alg.endswith("-cert-v01@openssh.com")]
    return wanted or list(supported)


def connect(host: Host, settings: ConnectSettings, password: str | None, cancel: Cancel) -> Session:
    """TCP, handshake, host-key check and authentication, all within the host's connect timeout.

    Raises HostFailure with the outcome (unreachable, host key, auth failed, cancelled) and one line.
    """
    limit = host.connect_timeout or settings.connect_timeout
    started = time.monotonic()
    deadline = started + limit

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
    except ConnectionResetError:
        # The server accepted and reset at once, before connect() returned (loopback is that fast): the same
        # event as a reset before the banner, and the same words.
        raise HostFailure(Outcome.UNREACHABLE, diagnose.reset_before_banner(where)) from None
    except OSError as error:
        raise HostFailure(Outcome.UNREACHABLE, f"cannot connect to {where}: {error.strerror or error}") from None

    def abort() -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    handle = cancel.add_callback(abort)
    recorder = RecordingSocket(sock)
    transport = _Transport(recorder)  # type: ignore[arg-type]  # any object with socket's methods
    # paramiko's own 15 s handshake limit would end a longer connect budget early with a bare EOF; ours rules.
    transport.handshake_timeout = limit + 5
    verified: bool | None = None  # the host-key check's result: every outcome after it carries it
    try:
        transport._channel_handler_table = HANDLERS  # type: ignore[attr-defined]
        verified = _handshake(host, settings, transport, remaining, limit)
        recorder.stop()  # what the server sent has served its purpose: from here on, no copy
        authenticate(host, settings, transport, password, remaining)
        transport.set_keepalive(30)
        return Session(host, transport, limit, host_key_verified=verified)
    except HostFailure as failure:
        # Raised once paramiko's thread was started (it has an ident) but before the key exchange finished, it is
        # start_client's quiet timeout: say which step hung, and with what, if the thread died meanwhile.
        # Read before close(): closing makes the thread fail with an EOF of our own making.
        stalled = transport.ident is not None and not transport.initial_kex_done
        died_of, hello = transport.get_exception(), recorder.hello()
        transport.close()
        if cancel.is_set():
            raise HostFailure(Outcome.CANCELLED, f"cancelled while connecting ({cancel.reason})",
                              host_key_verified=verified) from None
        if stalled:
            message = _describe_connect_error(died_of, hello, transport, where, time.monotonic() - started)
            raise HostFailure(Outcome.UNREACHABLE, message) from None
        if verified is not None:
            failure.host_key_verified = verified
        raise
    except BaseException as error:
        hello = recorder.hello()
        transport.close()
        if cancel.is_set():
            raise HostFailure(Outcome.CANCELLED, f"cancelled while connecting ({cancel.reason})",
                              host_key_verified=verified) from None
        if isinstance(error, (paramiko.SSHException, OSError, EOFError)):
            if transport.initial_kex_done:
                raise HostFailure(Outcome.UNREACHABLE, diagnose.describe_after_handshake(error, where),
                                  host_key_verified=verified) from None
            message = _describe_connect_error(error, hello, transport, where, time.monotonic() - started)
            raise HostFailure(Outcome.UNREACHABLE, message, host_key_verified=verified) from None
        raise
    finally:
        cancel.remove_callback(handle)


def _describe_connect_error(
    error: BaseException | None, hello: diagnose.ServerHello, transport: paramiko.Transport, where: str, waited: float
) -> str:
    """What went wrong before login, from what the server really sent (see fleetrun.ssh.diagnose)."""
    return diagnose.describe(error, hello, diagnose.ours(transport), where, waited)


def _handshake(
    host: Host,
    settings: ConnectSettings,
    transport: paramiko.Transport,
    remaining: Callable[[], float],
    limit: float,
) -> bool:
    """Key exchange and host-key verification; True if known_hosts vouched for the key, False if the policy
    let an unverified key through (accept-new recorded it, or checking is off). Raises HostFailure otherwise."""
    names = [known_hosts_name(host.address, host.port)]
    if host.name != host.address:
        names.append(known_hosts_name(host.name, host.port))
    # The user's file and the host's own, as ssh reads UserKnownHostsFile per host.
    files = {str(settings.accept_new_path), *host.known_hosts}
    known = settings.known_hosts
    options = transport.get_security_options()
    options.key_types = _preferred_key_types(known.key_types_for(names, files), options.key_types)
    options.ciphers = preferred_ciphers(options.ciphers)
    transport.banner_timeout = remaining()
    transport.start_client(timeout=remaining())
    if not transport.is_active() or not getattr(transport, "initial_kex_done", True):
        # start_client returns quietly, without raising, when its timeout runs out.
        raise HostFailure(Outcome.UNREACHABLE, f"no SSH handshake within {limit:g} s: is an SSH server listening?")

    key = transport.get_remote_server_key()
    blob = key.asbytes()
    check = known.judge(names, key.get_name(), blob, files)
    for problem in check.bad_lines:
        settings.warn(f"known_hosts: {problem}")
    for line in check.unused_ca:
        settings.warn(f"known_hosts: {line.where}: @cert-authority line for {check.name} is not used: "
                      "fleetrun does not verify host certificates yet, so only plain key lines vouch for a host")
    if check.verdict is Verdict.KNOWN:
        return True
    if check.verdict is not Verdict.UNKNOWN:
        raise HostFailure(Outcome.HOST_KEY, check.explain(), host_key_verified=False)
    policy = host.host_key_checking or settings.host_key_checking  # ssh_config's StrictHostKeyChecking, mapped
    if policy == "accept-new":
        target = Path(host.known_hosts[0]) if host.known_hosts else settings.accept_new_path
        added = known.add(target, names[0], key.get_name(), blob, files)
        # Not added: another process recorded a key for this name since we checked; judge against that one.
        if not added and known.check(names, key.get_name(), blob, files) is not Verdict.KNOWN:
            raise HostFailure(Outcome.HOST_KEY, f"host key for {names[0]} changed during the run: refusing",
                              host_key_verified=False)
        return False
    if policy == "no":
        settings.warn(f"{host.name}: host key NOT verified ({check.offered}): --host-key-checking no is for labs only")
        return False
    raise HostFailure(Outcome.HOST_KEY, check.explain(), host_key_verified=False)
