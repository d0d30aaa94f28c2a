"""A lean connection's one command (fleetrun.ssh.lean): a session channel, exec, both streams drained, the
exit status; read by the worker thread itself, with Session.run's results and words."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure
from fleetrun.models import Host, Outcome
from fleetrun.spill import Capture
from fleetrun.ssh.lean import MSG_DISCONNECT, MSG_KEXINIT, NOISE, LeanConnection
from fleetrun.ssh.lean_wire import Deadline, Reader, WireError, string, text, u32
from fleetrun.ssh.results import ExecResult, OutputCallback, _Output
from fleetrun.ssh.sendenv import env_requests
from fleetrun.ssh.wrapper import wrap_command

if TYPE_CHECKING:
    from fleetrun.become import BecomeRequest
    from fleetrun.ssh.link import Link
    from fleetrun.ssh.wrapper import ScriptLoad
    from fleetrun.stdin_spool import Feed

MSG_GLOBAL_REQUEST, MSG_REQUEST_FAILURE = 80, 82
MSG_CHANNEL_OPEN, MSG_CHANNEL_OPEN_CONFIRMATION, MSG_CHANNEL_OPEN_FAILURE = 90, 91, 92
MSG_CHANNEL_WINDOW_ADJUST, MSG_CHANNEL_DATA, MSG_CHANNEL_EXTENDED_DATA = 93, 94, 95
MSG_CHANNEL_EOF, MSG_CHANNEL_CLOSE, MSG_CHANNEL_REQUEST = 96, 97, 98
MSG_CHANNEL_SUCCESS, MSG_CHANNEL_FAILURE = 99, 100
WINDOW = 2 << 20  # paramiko's default window and packet size: the server sends what it would send paramiko
MAX_PACKET = 32768
CHANNEL = 0  # our one channel's number
EXTENDED_STDERR = 1


class LeanSession:
    """An authenticated lean connection to one host (fleetrun.ssh.lean); owned by one worker thread."""

    def __init__(self, host: Host, connection: LeanConnection, timeout: float, *, host_key_verified: bool,
                 link: Link) -> None:
        self.host = host
        self.connection = connection
        self._timeout = timeout
        self.host_key_verified = host_key_verified
        self.link = link
        self._eof = self._closed = self._we_closed = False
        self._status: int | None = None
        self._signal: str | None = None
        self._remote = 0  # the server's number for our channel
        self._unacknowledged = 0  # bytes received since the last window adjust

    def close(self) -> None:
        self.link.close(None)

    def lost_reason(self) -> str | None:
        return None  # no gateway, no keepalives on a lean connection: "lost" is all there is to say

    def run(
        self,
        command: str,
        *,
        cancel: Cancel,
        timeout: float | None = None,
        max_output: int = 4 << 20,
        on_output: OutputCallback | None = None,
        raw: bool = False,
        spill_at: int | None = None,
        env: Mapping[str, str] | None = None,
        become: BecomeRequest | None = None,
        feed: Feed | None = None,
        script: ScriptLoad | None = None,
    ) -> ExecResult:
        """Session.run for a command without sudo or stdin (the only kind given a lean connection)."""
        if become is not None or feed is not None or script is not None:
            raise RuntimeError("a lean connection was given a command with sudo or stdin (a bug)")
        line = command if raw else wrap_command(command, env=env)
        handle = cancel.add_callback(self.link.abort)  # a cancel unblocks the read: the socket ends
        stdout, stderr = Capture(max_output, spill_at), Capture(max_output, spill_at)
        output = _Output(stdout, stderr, on_output, None)
        try:
            self._start(line)
            ended = self._pump(output, cancel, timeout)
            if ended in ("timeout", "cancelled"):
                # Dropping the connection is the kill signal, as in Session.run: the host's watcher acts on it.
                self.close()
            elif not self._we_closed:
                self._send_close()
        except BaseException:
            stdout.close()
            stderr.close()
            raise
        finally:
            cancel.remove_callback(handle)
        output.flush()
        if ended == "exited" and self._status is None and self._signal is None:
            ended = "lost"
        return ExecResult(
            ended=ended,
            exit_code=self._status,
            signal=self._signal,
            stdout=stdout.data(),
            stderr=stderr.data(),
            stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated,
            stdout_file=stdout.spill,
            stderr_file=stderr.spill,
        )

    def _start(self, line: str) -> None:
        """Open the session channel and exec the command with stdin at EOF at once, as with `ssh -n`."""
        wire = self.connection.wire
        wire.reading(time.monotonic() + self._timeout)
        try:
            wire.send(bytes((MSG_CHANNEL_OPEN,)) + text("session") + u32(CHANNEL) + u32(WINDOW) + u32(MAX_PACKET))
            opened = self._next(MSG_CHANNEL_OPEN_CONFIRMATION, MSG_CHANNEL_OPEN_FAILURE)
            read = Reader(opened)
            read.u32()
            if opened[0] == MSG_CHANNEL_OPEN_FAILURE:
                code, why = read.u32(), read.text()
                raise HostFailure(Outcome.UNREACHABLE, f"could not start the command: {why or 'refused'} ({code})")
            self._remote = read.u32()
            # SendEnv and SetEnv, before the exec as ssh sends them; no reply asked for, as ssh asks none.
            request = bytes((MSG_CHANNEL_REQUEST,)) + u32(self._remote)
            env = [request + text("env") + b"\0" + string(name) + string(value)
                   for name, value in env_requests(self.host)]
            # The EOF rides with the exec request: the server handles a channel's messages in order, so the
            # command has started, with its stdin at EOF, as if the EOF had waited for the reply.
            # A command that is not UTF-8 (a non-UTF-8 argv, surrogate-escaped) goes as the bytes it was, as ssh
            # sends it.
            command = string(line.encode("utf-8", "surrogateescape"))
            wire.send(*env, bytes((MSG_CHANNEL_REQUEST,)) + u32(self._remote) + text("exec") + b"\1" + command,
                      bytes((MSG_CHANNEL_EOF,)) + u32(self._remote))
            if self._next(MSG_CHANNEL_SUCCESS, MSG_CHANNEL_FAILURE)[0] == MSG_CHANNEL_FAILURE:
                raise HostFailure(Outcome.UNREACHABLE, "could not start the command: the server refused to run it")
        except Deadline:
            raise HostFailure(Outcome.UNREACHABLE, "could not start the command: Timeout opening channel.") from None
        except (EOFError, OSError, WireError) as error:
            raise HostFailure(Outcome.UNREACHABLE,
                              f"could not start the command: {error or 'the connection was lost'}") from None

    def _next(self, *wanted: int) -> bytes:
        """The next message of one of these kinds; what the server may send meanwhile is answered or skipped."""
        while True:
            message = self.connection.wire.read()
            if message[0] in wanted:
                return message
            self._other(message, None)
            if self._closed:
                raise EOFError("the server closed the channel")

    def _pump(self, output: _Output, cancel: Cancel, timeout: float | None) -> str:
        wire = self.connection.wire
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            reported = self._status is not None or self._signal is not None
            if self._closed or (self._eof and reported):
                return "exited" if reported else "lost"
            if cancel.is_set():
                return "cancelled"
            wire.reading(deadline)
            try:
                message = wire.read()
            except Deadline:
                return "cancelled" if cancel.is_set() else "timeout"
            except (EOFError, OSError, WireError):
                if cancel.is_set():
                    return "cancelled"
                return "exited" if self._status is not None or self._signal is not None else "lost"
            self._other(message, output)

    def _other(self, message: bytes, output: _Output | None) -> None:
        """One message on the open connection: data, how the command ended, requests, a rekey."""
        kind = message[0]
        wire = self.connection.wire
        if kind in (MSG_CHANNEL_DATA, MSG_CHANNEL_EXTENDED_DATA):
            read = Reader(message)
            read.u32()
            stream = "stdout"
            if kind == MSG_CHANNEL_EXTENDED_DATA:
                stream = "stderr" if read.u32() == EXTENDED_STDERR else ""
            data = read.string()
            self._unacknowledged += len(data)
            if self._unacknowledged >= WINDOW // 2:  # keep the server sending: give back what was read
                wire.send(bytes((MSG_CHANNEL_WINDOW_ADJUST,)) + u32(self._remote) + u32(self._unacknowledged))
                self._unacknowledged = 0
            if output is not None and stream:
                output.add(stream, data)
        elif kind == MSG_CHANNEL_REQUEST:
            read = Reader(message)
            read.u32()
            name, want_reply = read.text(), read.boolean()
            if name == "exit-status":
                self._status = read.u32()
            elif name == "exit-signal":
                self._signal = read.text()
            elif want_reply:
                wire.send(bytes((MSG_CHANNEL_FAILURE,)) + u32(self._remote))  # keepalive@openssh.com and the like
        elif kind == MSG_CHANNEL_EOF:
            self._eof = True
        elif kind == MSG_CHANNEL_CLOSE:
            self._closed = True
            if not self._we_closed:
                self._send_close()
        elif kind == MSG_GLOBAL_REQUEST:
            read = Reader(message)
            read.text()
            if read.boolean():
                wire.send(bytes((MSG_REQUEST_FAILURE,)))
        elif kind == MSG_KEXINIT:
            self.connection.rekey(message)
        elif kind == MSG_DISCONNECT:
            raise EOFError("the server disconnected")
        elif kind not in (*NOISE, MSG_CHANNEL_WINDOW_ADJUST):
            raise WireError(f"unexpected message {kind}")

    def _send_close(self) -> None:
        self._we_closed = True
        self.connection.wire.reading(time.monotonic() + 1.0)  # a courtesy: not worth waiting for
        try:
            self.connection.wire.send(bytes((MSG_CHANNEL_CLOSE,)) + u32(self._remote))
        except (OSError, WireError):
            pass  # the connection is going anyway



