"""The only module that imports paramiko: connect with a verified host key, authenticate, run, open SFTP."""

from __future__ import annotations

import os
import shlex
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST

from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure, UsageError
from fleetrun.hostkeys import KnownHosts, Verdict, fingerprint, known_hosts_name
from fleetrun.models import Host, Outcome

HostKeyPolicy = str  # "yes" | "accept-new" | "no"
OutputCallback = Callable[[str, bytes], None]  # (stream name, bytes just received)

# Runs the user's command in its own process group with stdin as a lifeline: when our side of the
# channel sends EOF or the connection dies, sshd closes the pipe, `read` returns and the whole group is
# killed. That is how a timed-out, cancelled or orphaned command is killed on the remote host (sshd
# itself would leave `sleep 60` running). A command killed by a signal is re-raised on the wrapper so
# sshd reports it as exit-signal, as it would without the wrapper. (The protocol's own `signal` request
# is no substitute: OpenSSH refuses it for root sessions, "session signalling requires privilege
# separation", older servers lack it, and it cannot help once the connection is gone.)
_WRAPPER = (
    # Background jobs of a non-interactive shell get /dev/null as stdin; keep the channel's stdin on fd 3.
    "exec 3<&0; "
    # The command itself runs in the login shell ($SHELL, set by sshd), exactly as plain ssh would run it.
    'if command -v setsid >/dev/null 2>&1; then setsid "${SHELL:-/bin/sh}" -c "$1" </dev/null 3<&- & '
    'else "${SHELL:-/bin/sh}" -c "$1" </dev/null 3<&- & fi; '
    "c=$!; "
    # The shell's own `read` (not `cat`) waits for EOF: one exec less per host on the server.
    "{ while read -r _ <&3; do :; done; kill -TERM -$c 2>/dev/null || kill -TERM $c 2>/dev/null; "
    "sleep 2; kill -KILL -$c 2>/dev/null; } >/dev/null 2>&1 & "
    "w=$!; exec 3<&-; wait $c 2>/dev/null; r=$?; kill $w 2>/dev/null; "
    'if [ "$r" -gt 128 ] && [ "$r" -lt 160 ]; then kill -$((r - 128)) $$; fi; exit $r'
)

READ_SIZE = 65536
STOP_GRACE = 2.0  # seconds to wait for the remote side to exit after we sent EOF


def wrap_command(command: str) -> str:
    """The command line sent to the server: the user's command inside the kill-on-EOF wrapper."""
    return f"sh -c {shlex.quote(_WRAPPER)} fleetrun {shlex.quote(command)}"


@dataclass(frozen=True)
class ConnectSettings:
    """Everything `connect` needs besides the host; one per run, shared read-only by all workers."""

    known_hosts: KnownHosts
    accept_new_path: Path  # where accept-new appends for hosts without a known_hosts of their own
    host_key_checking: HostKeyPolicy = "yes"
    connect_timeout: float = 10.0
    keys: dict[str, paramiko.PKey] | None = None  # key path -> loaded key, loaded once per run
    use_agent: bool = True
    warn: Callable[[str], None] = lambda message: None


@dataclass(frozen=True)
class ExecResult:
    """How a remote command ended, before it is turned into a HostResult."""

    ended: str  # "exited" | "timeout" | "cancelled" | "lost"
    exit_code: int | None
    signal: str | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool


def load_keys(paths: Sequence[str], passphrase: str | None) -> dict[str, paramiko.PKey]:
    """Load each distinct private key file once; a key that cannot be used is a usage error (exit 2)."""
    keys: dict[str, paramiko.PKey] = {}
    secret = passphrase.encode() if passphrase is not None else None  # cryptography wants bytes
    for path in dict.fromkeys(paths):
        try:
            keys[path] = paramiko.PKey.from_path(path, password=secret)  # type: ignore[arg-type]  # stubs say str
        except FileNotFoundError:
            raise UsageError(f"key file {path} does not exist: fix 'key' in the inventory or --key") from None
        except PermissionError:
            raise UsageError(f"key file {path} is not readable by this user") from None
        except (paramiko.PasswordRequiredException, TypeError) as error:
            if "password" not in str(error).lower():
                raise UsageError(f"key file {path} cannot be loaded: {error}") from None
            # cryptography says "password-protected, but password was not provided" with a TypeError.
            raise UsageError(
                f"key file {path} is encrypted: pass --key-passphrase-env NAME with the passphrase in $NAME"
            ) from None
        except (paramiko.SSHException, ValueError) as error:
            hint = "wrong passphrase?" if passphrase else "is it a private key in PEM or OpenSSH format?"
            raise UsageError(f"key file {path} cannot be loaded ({error.__class__.__name__}): {hint}") from None
    return keys


def _handle_channel_request(chan: paramiko.Channel, message: paramiko.Message) -> None:
    """Like paramiko's handler, but also records `exit-signal`, which paramiko ignores."""
    start = message.packet.tell()
    if message.get_text() == "exit-signal":
        message.get_boolean()  # want_reply: never set for exit-signal
        chan.fleetrun_exit_signal = message.get_text()  # type: ignore[attr-defined]
        chan.status_event.set()
        return
    message.packet.seek(start)
    paramiko.Channel._handle_request(chan, message)  # type: ignore[attr-defined]


_HANDLERS = {**paramiko.Transport._channel_handler_table, MSG_CHANNEL_REQUEST: _handle_channel_request}  # type: ignore[attr-defined]


def _preferred_key_types(known: list[str], offered: Sequence[str]) -> list[str]:
    """Ask the server for a host key type we already know, so a known host is not reported changed."""
    wanted: list[str] = []
    for keytype in known:
        wanted += ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if keytype == "ssh-rsa" else [keytype]
    first = [t for t in dict.fromkeys(wanted) if t in offered]
    return first + [t for t in offered if t not in first]


class Session:
    """An authenticated SSH connection to one host; owned by one worker thread, closed in `finally`."""

    def __init__(self, host: Host, transport: paramiko.Transport, timeout: float) -> None:
        self.host = host
        self.transport = transport
        self._timeout = timeout

    def close(self) -> None:
        self.transport.close()

    def open_sftp(self) -> paramiko.SFTPClient:
        client = paramiko.SFTPClient.from_transport(self.transport)
        if client is None:
            raise HostFailure(Outcome.UNREACHABLE, "the server refused the SFTP subsystem")
        return client

    def run(
        self,
        command: str,
        *,
        cancel: Cancel,
        timeout: float | None = None,
        max_output: int = 4 << 20,
        on_output: OutputCallback | None = None,
        raw: bool = False,
    ) -> ExecResult:
        """Run one command, draining stdout and stderr together until it exits, times out or is cancelled."""
        try:
            chan = self.transport.open_session(timeout=self._timeout)
            chan.exec_command(command if raw else wrap_command(command))
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise HostFailure(Outcome.UNREACHABLE, f"could not start the command: {error}") from None
        stdout, stderr = _Capture(max_output), _Capture(max_output)
        waker, handle = _watch(chan, cancel)
        try:
            ended = self._pump(chan, waker, stdout, stderr, cancel, timeout, on_output)
            if ended != "exited":
                # EOF on stdin is the wrapper's signal to kill the process group; give it a moment.
                _stop_remote(chan, waker, stdout, stderr, on_output)
            elif not chan.status_event.wait(self._timeout):
                ended = "lost"
        finally:
            cancel.remove_callback(handle)
            chan.close()
        signal = getattr(chan, "fleetrun_exit_signal", None)
        exit_code = chan.exit_status if chan.exit_status >= 0 else None
        if ended == "exited" and exit_code is None and signal is None:
            ended = "lost"  # the channel closed without telling how the command ended
        return ExecResult(
            ended=ended,
            exit_code=exit_code,
            signal=signal,
            stdout=bytes(stdout.data),
            stderr=bytes(stderr.data),
            stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated,
        )

    def _pump(
        self,
        chan: paramiko.Channel,
        waker: _Waker,
        stdout: _Capture,
        stderr: _Capture,
        cancel: Cancel,
        timeout: float | None,
        on_output: OutputCallback | None,
    ) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            waker.rearm()  # before draining: anything arriving from here on sets it again
            _drain(chan, stdout, stderr, on_output)
            if chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready():
                return "exited"
            if chan.closed or not self.transport.is_active():
                _drain(chan, stdout, stderr, on_output)
                return "exited" if chan.exit_status >= 0 else "lost"
            if cancel.is_set():
                return "cancelled"
            wait = None if deadline is None else deadline - time.monotonic()
            if (wait is not None and wait <= 0) or not waker.wait(wait):
                return "timeout"


class _Capture:
    """Keeps the first `limit` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
        self.data += chunk


class _Waker:
    """Wakes the reading worker when a channel buffer gets data, EOF or closes, or the run is cancelled.

    Given to paramiko's buffers in place of the pipe that `Channel.fileno()` builds: that pipe merges
    stdout and stderr readiness without a lock, and a set racing a clear can leave it clear with data
    waiting, so `select` sleeps forever. Here paramiko may only set; the reader clears before it drains,
    so a wake-up can never be lost. It also costs no file descriptors.
    """

    def __init__(self) -> None:
        self.event = threading.Event()

    def set(self) -> None:
        self.event.set()

    def clear(self) -> None:
        pass  # paramiko clears when a buffer runs empty; the reader decides instead (see above)

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: float | None) -> bool:
        return self.event.wait(timeout)

    def rearm(self) -> None:
        self.event.clear()


def _watch(chan: paramiko.Channel, cancel: Cancel) -> tuple[_Waker, int]:
    waker = _Waker()
    chan.in_buffer.set_event(waker)  # type: ignore[arg-type]
    chan.in_stderr_buffer.set_event(waker)  # type: ignore[arg-type]
    return waker, cancel.add_callback(waker.set)


def _drain(
    chan: paramiko.Channel, stdout: _Capture, stderr: _Capture, on_output: OutputCallback | None
) -> None:
    """Read whatever both streams hold right now; reading both is what keeps the window open."""
    streams = (
        ("stdout", chan.recv_ready, chan.recv, stdout),
        ("stderr", chan.recv_stderr_ready, chan.recv_stderr, stderr),
    )
    for name, ready, receive, capture in streams:
        while ready():
            chunk = receive(READ_SIZE)
            if not chunk:
                break
            capture.add(chunk)
            if on_output is not None:
                on_output(name, chunk)


def _stop_remote(
    chan: paramiko.Channel, waker: _Waker, stdout: _Capture, stderr: _Capture, on_output: OutputCallback | None
) -> None:
    """Send EOF (the wrapper then kills the process group) and drain until it closes or the grace ends."""
    try:
        chan.shutdown_write()
    except (OSError, EOFError, paramiko.SSHException):
        return
    end = time.monotonic() + STOP_GRACE
    while not chan.closed and not chan.eof_received:
        remaining = end - time.monotonic()
        if remaining <= 0:
            return
        waker.rearm()
        _drain(chan, stdout, stderr, on_output)
        waker.wait(remaining)
    _drain(chan, stdout, stderr, on_output)


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
        transport._channel_handler_table = _HANDLERS  # type: ignore[attr-defined]
        _handshake(host, settings, transport, remaining, limit)
        _authenticate(host, settings, transport, password, remaining)
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
    if settings.host_key_checking == "accept-new":
        target = Path(host.known_hosts[0]) if host.known_hosts else settings.accept_new_path
        added = settings.known_hosts.add(target, names[0], key.get_name(), blob)
        # Not added: another process recorded a key for this name since we checked; judge against that one.
        if not added and settings.known_hosts.check(names, key.get_name(), blob) is not Verdict.KNOWN:
            raise HostFailure(Outcome.HOST_KEY, f"host key for {names[0]} changed during the run: refusing")
        return
    if settings.host_key_checking == "no":
        settings.warn(f"{host.name}: host key NOT verified ({offered}): --host-key-checking no is for labs only")
        return
    raise HostFailure(
        Outcome.HOST_KEY,
        f"unknown host key for {names[0]} ({offered}): verify the fingerprint, then add it to known_hosts "
        "or run once with --host-key-checking accept-new",
    )


def _authenticate(
    host: Host,
    settings: ConnectSettings,
    transport: paramiko.Transport,
    password: str | None,
    remaining: Callable[[], float],
) -> None:
    """Given key, then agent keys, then password: each tried once, stopping at the first success."""
    user = host.user or _local_user()
    tried: list[str] = []
    allowed: list[str] | None = None

    def attempt(label: str, method: Callable[[], object], kind: str) -> bool:
        nonlocal allowed
        if allowed is not None and kind not in allowed:
            return False
        tried.append(label)
        transport.auth_timeout = remaining()
        try:
            method()
        except paramiko.BadAuthenticationType as error:
            allowed = list(error.allowed_types)
            return False
        except paramiko.AuthenticationException as error:
            if "timeout" in str(error).lower():
                # The server never answered in time: a slow or overloaded host, not a wrong credential.
                raise HostFailure(Outcome.UNREACHABLE, f"no answer to authentication ({label}) in time") from None
            return False
        return transport.is_authenticated()

    if host.key is not None and settings.keys and host.key in settings.keys:
        key = settings.keys[host.key]
        if attempt(f"key {host.key}", lambda: transport.auth_publickey(user, key), "publickey"):
            return
    if settings.use_agent and os.environ.get("SSH_AUTH_SOCK"):
        agent = paramiko.Agent()
        try:
            for number, agent_key in enumerate(agent.get_keys(), 1):
                label = f"agent key {number}"
                if attempt(label, lambda k=agent_key: transport.auth_publickey(user, k), "publickey"):  # type: ignore[misc]
                    return
        finally:
            agent.close()
    if password is not None and attempt(
        "password", lambda: transport.auth_password(user, password), "password"
    ):
        return
    if not tried:
        what = f"the server allows only {', '.join(allowed)}" if allowed else "no key, agent key or password given"
        raise HostFailure(Outcome.AUTH_FAILED, f"cannot authenticate as {user}: {what}")
    suffix = f"; the server allows {', '.join(allowed)}" if allowed else ""
    raise HostFailure(Outcome.AUTH_FAILED, f"authentication as {user} failed (tried {', '.join(tried)}){suffix}")


def _local_user() -> str:
    import getpass

    return getpass.getuser()
