"""ProxyCommand as OpenSSH runs it: `$SHELL -c 'exec COMMAND'` on a socket pair, reaped when the connection ends.

paramiko's own ProxyCommand splits the command without a shell (pipes, `2>/dev/null` and `$VAR` break),
reads it with select() (fails past file descriptor 1024) and never waits for the child (a zombie per host).
Here the child gets one end of a socketpair as stdin and stdout, so the transport reads a real socket with
timeouts; its stderr goes to an unlinked temporary file (never a pipe that could fill and stall it) whose
end is quoted in the host's error line when the connection fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
from typing import IO

import paramiko

from fleetrun.environ import started_environment
from fleetrun.errors import HostFailure
from fleetrun.models import Outcome
from fleetrun.ssh.link import Link

STDERR_TAIL = 400  # characters of the command's stderr quoted in an error line
REAP_GRACE = 2.0  # seconds between SIGHUP and SIGKILL when the connection is closed


def shell() -> str:
    """The user's shell, as ssh picks it for ProxyCommand ($SHELL, else /bin/sh)."""
    return os.environ.get("SHELL") or "/bin/sh"


class ProxyCommandLink(Link):
    """A running ProxyCommand; the transport talks to it through a socket."""

    def __init__(self, command: str, process: subprocess.Popen[bytes], sock: socket.socket, stderr: IO[bytes]) -> None:
        self.command = command
        self.process = process
        self.sock = self._socket = sock
        self.where = f"ProxyCommand {command!r}"
        self._stderr = stderr
        self._closed = False
        self._tail: str | None = None  # the stderr tail, kept when the file is closed

    @classmethod
    def start(cls, command: str) -> ProxyCommandLink:
        """Start `command` (tokens already expanded) through the user's shell; HostFailure if it cannot start."""
        ours, theirs = socket.socketpair()
        stderr = tempfile.TemporaryFile(prefix="fleetrun-proxy-")  # noqa: SIM115  # lives as long as the link
        try:
            # A session of its own: Ctrl-C on the operator's terminal must reach fleetrun (which then closes
            # the connection in order), not kill the proxy under a running command. `exec`, as ssh does, so
            # the process we reap is the command itself.
            # The environment fleetrun was started with, as ssh's ProxyCommand has it (not Python's own LC_CTYPE).
            process = subprocess.Popen([shell(), "-c", f"exec {command}"], stdin=theirs.fileno(),
                                       stdout=theirs.fileno(), stderr=stderr, close_fds=True, start_new_session=True,
                                       env=started_environment())
        except OSError as error:
            ours.close()
            stderr.close()
            raise HostFailure(Outcome.UNREACHABLE, f"cannot run ProxyCommand through {shell()}: "
                              f"{error.strerror or error}") from None
        finally:
            theirs.close()
        return cls(command, process, ours, stderr)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)

    def close(self, transport: paramiko.Transport | None) -> None:
        if transport is not None:
            transport.close()
        if self._closed:
            return
        self._closed = True
        self._socket.close()
        self._reap()
        self._tail = self._stderr_tail()
        self._stderr.close()

    def _reap(self) -> None:
        """ssh sends its ProxyCommand SIGHUP when done; then wait for it (no zombie), SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        for sig, grace in ((signal.SIGHUP, REAP_GRACE), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)  # its group: a pipeline's other commands too
            try:
                self.process.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue

    def failure_note(self) -> str | None:
        """How the command ended, if it did, and the end of what it wrote to stderr."""
        status = self.process.poll()
        text = self._stderr_tail()
        parts = []
        if status is not None:
            parts.append(f"exited with status {status}" if status >= 0 else f"killed by signal {-status}")
        if text:
            parts.append(f"stderr: {text}")
        return f"ProxyCommand {', '.join(parts)}" if parts else None

    def _stderr_tail(self) -> str:
        if self._tail is not None:
            return self._tail
        if self._stderr.closed:
            return ""
        try:
            self._stderr.flush()
            size = os.fstat(self._stderr.fileno()).st_size
            self._stderr.seek(max(0, size - 4 * STDERR_TAIL))
            data = self._stderr.read()
        except (OSError, ValueError):
            return ""
        text = " ".join(data.decode("utf-8", "replace").split())
        return text[-STDERR_TAIL:]
