"""The signals that stop a run: the first cancels it the orderly way, a second Ctrl-C exits at once."""

from __future__ import annotations

import errno
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import TextIO

from fleetrun.cancel import Cancel
from fleetrun.status import ExitStatus

# The signals that stop a run the orderly way: every host accounted for, files completed, then this status.
_STOPPING: dict[int, tuple[ExitStatus, str]] = {
    signal.SIGINT: (ExitStatus.INTERRUPTED, "interrupted"),
    signal.SIGTERM: (ExitStatus.TERMINATED, "terminated"),
    signal.SIGHUP: (ExitStatus.HANGUP, "hung up"),  # the operator's terminal or ssh session went away
}


def _drop_dead_outputs() -> None:
    """Point stdout/stderr at /dev/null if they are a terminal that hung up (writes fail with EIO) or a pipe
    nobody reads (EPIPE): the table has no reader left, and a failing write must not stop --junit/--out-dir."""
    for fd in (1, 2):
        try:
            os.write(fd, b"")  # a hung-up terminal refuses even an empty write
        except OSError as error:
            if error.errno in (errno.EIO, errno.EPIPE):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)


@contextmanager
def stopping_signals(cancel: Cancel, err: TextIO) -> Iterator[list[ExitStatus]]:
    """SIGINT/SIGTERM/SIGHUP cancel the run; a second SIGINT exits at once. Yields the interrupt statuses.

    SIGHUP is left alone when it is ignored on entry: under `nohup` the operator asked the run to outlive the
    terminal.
    """
    received: list[ExitStatus] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        status, reason = _STOPPING[signum]
        if received and signum == signal.SIGINT:
            os._exit(int(ExitStatus.INTERRUPTED))  # the operator insists: no cleanup, no waiting
        if signum == signal.SIGHUP:
            _drop_dead_outputs()
        received.append(status)
        if cancel.set(reason):
            # The handler runs between any two bytecodes of the main thread: an error here would surface there.
            with suppress(OSError, ValueError):
                err.write(f"fleetrun: stopping ({reason}): cancelling running hosts (Ctrl-C again to exit at once)\n")
                err.flush()

    previous = {
        sig: signal.signal(sig, on_signal)
        for sig in _STOPPING
        if not (sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN)
    }
    try:
        yield received
    finally:
        # After an interrupt the handler stays: a further Ctrl-C while the partial result is printed
        # must still mean "exit now" (130), not a KeyboardInterrupt somewhere in the output code.
        if not received:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
