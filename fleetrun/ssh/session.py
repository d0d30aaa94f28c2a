"""One authenticated connection: run a command draining both streams, stop it by disconnecting, open SFTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST

from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure
from fleetrun.models import Host, Outcome
from fleetrun.spill import Capture, Spill
from fleetrun.ssh.wrapper import wrap_command

OutputCallback = Callable[[str, bytes], None]  # (stream name, bytes just received)

READ_SIZE = 65536
STATUS_POLL = 0.5  # seconds between looks for the exit status after the output ended


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
    # Streams longer than `spill_at`: stdout/stderr are their first bytes, these files all of it (fleetrun.spill).
    stdout_file: Spill | None = None
    stderr_file: Spill | None = None


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
        self, host: Host, transport: paramiko.Transport, timeout: float, *, host_key_verified: bool | None = None
    ) -> None:
        self.host = host
        self.transport = transport
        self._timeout = timeout
        self.host_key_verified = host_key_verified  # False when --host-key-checking let an unverified key in

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
        spill_at: int | None = None,
    ) -> ExecResult:
        """Run one command, draining stdout and stderr together until it exits, times out or is cancelled.

        The command's stdin gets EOF at once (`ssh -n`). A command that does not end by itself (timeout,
        cancel) is stopped by closing the connection: the host's watcher (fleetrun.ssh.wrapper) then kills
        it; under `raw` nothing does, and it may keep running. With `spill_at`, a stream longer than that goes
        on in a private temporary file (ExecResult.stdout_file), so memory does not grow with output size.
        """
        try:
            chan = self.transport.open_session(timeout=self._timeout)
            chan.exec_command(command if raw else wrap_command(command))
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise HostFailure(Outcome.UNREACHABLE, f"could not start the command: {error}") from None
        # Until the operator's stdin is forwarded (issue 14), the command reads an empty stdin, as with
        # `ssh -n`: `cat` ends at once instead of waiting for input that never comes. If this fails the
        # connection is gone, which the pump reports.
        with suppress(paramiko.SSHException, OSError, EOFError):
            chan.shutdown_write()
        stdout, stderr = Capture(max_output, spill_at), Capture(max_output, spill_at)
        waker, handle = _watch(chan, cancel)
        try:
            try:
                ended = self._pump(chan, waker, stdout, stderr, cancel, timeout, on_output)
            except BaseException:
                stdout.close()
                stderr.close()
                raise
            if ended in ("timeout", "cancelled"):
                # Dropping the connection is the kill signal: sshd's session process ends, and the watcher,
                # whose lifeline it is, kills the command's process group. Nothing to wait for here.
                self.transport.close()
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
            stdout=stdout.data(),
            stderr=stderr.data(),
            stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated,
            stdout_file=stdout.spill,
            stderr_file=stderr.spill,
        )

    def _pump(
        self,
        chan: paramiko.Channel,
        waker: _Waker,
        stdout: Capture,
        stderr: Capture,
        cancel: Cancel,
        timeout: float | None,
        on_output: OutputCallback | None,
    ) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            waker.rearm()  # before draining: anything arriving from here on sets it again
            _drain(chan, stdout, stderr, on_output)
            drained = not chan.recv_ready() and not chan.recv_stderr_ready()
            if chan.eof_received and drained and _reported(chan):
                return "exited"
            if chan.closed or not self.transport.is_active():
                _drain(chan, stdout, stderr, on_output)
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


def _drain(
    chan: paramiko.Channel, stdout: Capture, stderr: Capture, on_output: OutputCallback | None
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
