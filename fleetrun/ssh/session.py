"""One authenticated connection: run a command draining both streams, stop it by disconnecting, open SFTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import replace
from typing import TYPE_CHECKING

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST

from fleetrun.become import (
    CANCELLED,
    ERROR,
    NO_PROMPT,
    OK,
    PASSWORD_REQUIRED,
    REJECTED,
    TTY_REQUIRED,
    BecomeRequest,
    CrlfToLf,
    Negotiated,
    negotiate,
)
from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure
from fleetrun.models import Host, Outcome
from fleetrun.spill import Capture
from fleetrun.ssh.agentfwd import agent_socket, request_forwarding
from fleetrun.ssh.results import ExecResult, OutputCallback, _Output
from fleetrun.ssh.sendenv import env_requests
from fleetrun.ssh.sftpio import ByteNamesSFTP
from fleetrun.ssh.wrapper import ScriptLoad, wrap_command
from fleetrun.stdin_spool import Feed

if TYPE_CHECKING:
    from fleetrun.ssh.keepalive import ServerAlive
    from fleetrun.ssh.link import Link

READ_SIZE = 65536
STATUS_POLL = 0.5  # seconds between looks for the exit status after the output ended
PTY_COLUMNS, PTY_ROWS = 200, 50  # --become-pty's terminal; "dumb", so commands send no colours or cursor moves
WRITER_JOIN = 5.0  # seconds to wait for a stdin writer after its channel closed (it ends at once then)


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


HANDLERS = {**paramiko.Transport._channel_handler_table, MSG_CHANNEL_REQUEST: _handle_channel_request}  # type: ignore[attr-defined]


class Session:
    """An authenticated SSH connection to one host; owned by one worker thread, closed in `finally`."""

    def __init__(
        self, host: Host, transport: paramiko.Transport, timeout: float, *, host_key_verified: bool | None = None,
        link: Link | None = None, alive: ServerAlive | None = None,
    ) -> None:
        self.host = host
        self.transport = transport
        self._timeout = timeout
        self.host_key_verified = host_key_verified  # False when --host-key-checking let an unverified key in
        self.link = link  # what the transport runs over, and how to take it down
        self.alive = alive  # ServerAliveInterval state, if set for the host

    def close(self) -> None:
        if self.link is not None:
            self.link.close(self.transport)
        else:
            self.transport.close()

    def lost_reason(self) -> str | None:
        """Why the connection ended under us, when more is known than "lost": a gateway that died, or
        ServerAliveCountMax probes without an answer. None while it lives, or when nothing more is known."""
        if self.link is not None and (why := self.link.lost_reason()) is not None:
            return why
        return self.alive.failed if self.alive is not None else None

    def open_sftp(self) -> paramiko.SFTPClient:
        client = ByteNamesSFTP.from_transport(self.transport)
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
        spill_at: int | None = None,
        env: Mapping[str, str] | None = None,
        become: BecomeRequest | None = None,
        feed: Feed | None = None,
        script: ScriptLoad | None = None,
    ) -> ExecResult:
        """Run one command, draining stdout and stderr together until it exits, times out or is cancelled.

        `feed` is what the command reads on stdin (a --script, the operator's stdin), sent by a thread of its
        own so a command that does not read cannot stall the output; without it stdin is at EOF at once
        (`ssh -n`). `become` runs the command under sudo (fleetrun.become negotiates first; --timeout starts
        when the command does). A command that does not end by itself (timeout, cancel) is stopped by closing
        the connection: the host's watcher (fleetrun.ssh.wrapper) then kills it; under `raw` nothing does.
        With `spill_at`, a stream longer than that goes on in a private temporary file (ExecResult.stdout_file),
        so memory does not grow with output size.
        """
        line = command if raw else wrap_command(command, env=env, become=become, script=script)
        try:
            chan = self.transport.open_session(timeout=self._timeout)
            if become is not None and become.pty:
                chan.get_pty(term="dumb", width=PTY_COLUMNS, height=PTY_ROWS)
            if self.host.forward_agent:
                path = agent_socket(self.host.forward_agent, self.host.identity_agent)
                if path is not None:
                    request_forwarding(chan, path)  # before the command starts, as ssh asks for it
            for name, value in env_requests(self.host):
                chan.set_environment_variable(name, value)  # paramiko sends bytes as they are
            # Bytes the command line held that are not UTF-8 (a non-UTF-8 argv) go as they were, as ssh sends them.
            chan.exec_command(line.encode("utf-8", "surrogateescape"))
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise HostFailure(Outcome.UNREACHABLE,
                              f"could not start the command: {error or 'the connection was lost'}") from None
        stdout, stderr = Capture(max_output, spill_at), Capture(max_output, spill_at)
        waker, handle = _watch(chan, cancel)
        writer: _Writer | None = None
        crlf = CrlfToLf() if become is not None and become.pty else None
        output = _Output(stdout, stderr, on_output, crlf)
        negotiated: Negotiated | None = None
        try:
            if become is not None:
                negotiated = negotiate(_BecomeAdapter(chan, waker, cancel, self.transport), become)
                for stream, data in negotiated.output:
                    output.add(stream, data)
                if negotiated.status != OK:
                    return self._ended_in_sudo(chan, negotiated, become, output, cancel)
            if feed is None:
                # No input: the command reads an empty stdin, as with `ssh -n`: `cat` ends at once instead of
                # waiting for input that never comes. If this fails the connection is gone, which the pump reports.
                with suppress(paramiko.SSHException, OSError, EOFError):
                    chan.shutdown_write()
            else:
                writer = _Writer(chan, feed)
            ended = self._pump(chan, waker, output, cancel, timeout)
            if ended in ("timeout", "cancelled"):
                # Dropping the connection is the kill signal: sshd's session process ends, and the watcher,
                # whose lifeline it is, kills the command's process group. Nothing to wait for here.
                self.transport.close()
        except BaseException:
            stdout.close()  # a spill file nobody will own
            stderr.close()
            raise
        finally:
            cancel.remove_callback(handle)
            chan.close()
            if writer is not None:
                writer.finish()
        output.flush()
        signal = getattr(chan, "fleetrun_exit_signal", None)
        exit_code = chan.exit_status if chan.exit_status >= 0 else None
        if ended == "exited" and exit_code is None and signal is None:
            ended = "lost"  # the channel closed without telling how the command ended
        return ExecResult(
            ended=ended,
            exit_code=exit_code,
            signal=signal,
            stdout=stdout.data(),
            stderr=stderr.data(),
            stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated,
            stdout_file=stdout.spill,
            stderr_file=stderr.spill,
            become=None if negotiated is None else OK,
        )

    def _ended_in_sudo(self, chan: paramiko.Channel, negotiated: Negotiated, become: BecomeRequest,
                       output: _Output, cancel: Cancel) -> ExecResult:
        """The ExecResult of a command sudo never started; a refusal before any prompt is probed on a pty."""
        status, message = negotiated.status, negotiated.last_line
        ended = "become"
        if status in (NO_PROMPT, REJECTED) and chan.exit_status < 0 and not self.transport.is_active():
            ended, status = "lost", CANCELLED  # the connection died under sudo: nothing sudo said
        elif status == NO_PROMPT:
            chan.close()
            status = TTY_REQUIRED if not become.pty and self._tty_would_help(become, cancel) else ERROR
        # sudo may still wait for a password on this channel: the connection's end is its EOF.
        self.transport.close()
        output.flush()
        exit_code = chan.exit_status if chan.exit_status >= 0 else None
        stdout, stderr = output.stdout, output.stderr
        return ExecResult(
            ended="cancelled" if status == CANCELLED and ended == "become" else ended,
            exit_code=exit_code,
            signal=None,
            stdout=stdout.data(),
            stderr=stderr.data(),
            stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated,
            stdout_file=stdout.spill,
            stderr_file=stderr.spill,
            become=None if status == CANCELLED else status,
            become_message=message,
        )

    def _tty_would_help(self, become: BecomeRequest, cancel: Cancel) -> bool:
        """Whether sudo, which refused to start without prompting, starts (or prompts) on a terminal.

        sudo prompts even with -S before checking anything a password could fix, so a refusal without a prompt
        is `requiretty` exactly when a terminal changes it. The probe runs `true` the same way on a pty, on the
        same connection, and writes nothing: a prompt is answer enough.
        """
        probe = replace(become, password=None, pty=True)
        try:
            chan = self.transport.open_session(timeout=self._timeout)
            chan.get_pty(term="dumb", width=PTY_COLUMNS, height=PTY_ROWS)
            chan.exec_command(wrap_command("true", become=probe))
        except (paramiko.SSHException, OSError, EOFError):
            return False
        waker, handle = _watch(chan, cancel)
        try:
            answer = negotiate(_BecomeAdapter(chan, waker, cancel, self.transport), probe)
        finally:
            cancel.remove_callback(handle)
            chan.close()
        return answer.status in (OK, PASSWORD_REQUIRED)

    def _pump(
        self,
        chan: paramiko.Channel,
        waker: _Waker,
        output: _Output,
        cancel: Cancel,
        timeout: float | None,
    ) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            waker.rearm()  # before draining: anything arriving from here on sets it again
            _drain(chan, output)
            drained = not chan.recv_ready() and not chan.recv_stderr_ready()
            if chan.eof_received and drained and _reported(chan):
                return "exited"
            if chan.closed or not self.transport.is_active():
                _drain(chan, output)
                return "exited" if _reported(chan) else "lost"
            if cancel.is_set():
                return "cancelled"
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return "timeout"
            if chan.eof_received:
                # The command closed its output and runs on (`exec >&-; sleep 60`): wait for its exit status,
                # as ssh does. The status does not wake the waker (the channel's close after it does): look.
                wait = STATUS_POLL if wait is None else min(wait, STATUS_POLL)
            waker.wait(wait)


def _reported(chan: paramiko.Channel) -> bool:
    """Whether the server said how the command ended: exit-status, or exit-signal."""
    return chan.exit_status >= 0 or getattr(chan, "fleetrun_exit_signal", None) is not None


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


def _read_now(chan: paramiko.Channel) -> list[tuple[str, bytes]]:
    """Whatever both streams hold right now; reading both is what keeps the window open."""
    chunks: list[tuple[str, bytes]] = []
    for name, ready, receive in (("stdout", chan.recv_ready, chan.recv),
                                 ("stderr", chan.recv_stderr_ready, chan.recv_stderr)):
        while ready():
            chunk = receive(READ_SIZE)
            if not chunk:
                break
            chunks.append((name, chunk))
    return chunks


def _drain(chan: paramiko.Channel, output: _Output) -> None:
    for name, chunk in _read_now(chan):
        output.add(name, chunk)


class _BecomeAdapter:
    """A paramiko channel as fleetrun.become's BecomeChannel."""

    def __init__(self, chan: paramiko.Channel, waker: _Waker, cancel: Cancel, transport: paramiko.Transport) -> None:
        self._chan, self._waker, self._cancel, self._transport = chan, waker, cancel, transport

    def read(self) -> list[tuple[str, bytes]]:
        self._waker.rearm()  # before reading: whatever arrives from here on sets it again
        return _read_now(self._chan)

    def write(self, data: bytes) -> None:
        with suppress(paramiko.SSHException, OSError, EOFError):  # a gone channel shows as ended()
            self._chan.sendall(data)

    def wait(self, timeout: float) -> None:
        if self._chan.eof_received and not _reported(self._chan):
            timeout = min(timeout, STATUS_POLL)  # the exit status does not wake the waker
        self._waker.wait(timeout)

    def ended(self) -> bool:
        chan = self._chan
        drained = not chan.recv_ready() and not chan.recv_stderr_ready()
        if chan.closed or not self._transport.is_active():
            return drained
        return drained and bool(chan.eof_received) and _reported(chan)

    def cancelled(self) -> bool:
        return self._cancel.is_set()


class _Writer:
    """Sends a Feed to the command's stdin on a thread of its own, then EOF.

    paramiko's sendall blocks while the channel's window is full (a command that does not read): the pump
    must go on draining output meanwhile, and a command that exits is finished whatever is left to send.
    The send fails as soon as the channel closes, which ends the thread.
    """

    def __init__(self, chan: paramiko.Channel, feed: Feed) -> None:
        self._chan, self._feed = chan, feed
        self._thread = threading.Thread(target=self._send, name=f"{threading.current_thread().name}-stdin")
        self._thread.start()

    def _send(self) -> None:
        with suppress(paramiko.SSHException, OSError, EOFError):
            for piece in self._feed.pieces():
                self._chan.sendall(piece)
            if not self._feed.stopped:
                self._chan.shutdown_write()

    def finish(self) -> None:
        """Stop sending (the channel is closed by now) and wait for the thread, boundedly."""
        self._feed.stop()
        self._thread.join(WRITER_JOIN)
