"""How a remote command ended, and where its output goes while it runs: shared by both SSH clients (paramiko's in
fleetrun.ssh.session, the lean one in fleetrun.ssh.lean_session), and free of paramiko."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleetrun.spill import Capture, Spill

if TYPE_CHECKING:
    from fleetrun.become import CrlfToLf

OutputCallback = Callable[[str, bytes], None]  # (stream name, bytes just received)


@dataclass(frozen=True)
class ExecResult:
    """How a remote command ended, before it is turned into a HostResult."""

    ended: str  # "exited" | "timeout" | "cancelled" | "lost" | "become" (sudo did not run the command)
    exit_code: int | None
    signal: str | None
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    # Streams longer than `spill_at`: stdout/stderr are their first bytes, these files all of it (fleetrun.spill).
    stdout_file: Spill | None = None
    stderr_file: Spill | None = None
    become: str | None = None  # under sudo: fleetrun.become's status ("ok", "rejected", …); None without
    become_message: str = ""  # sudo's own last line when it did not run the command


class _Output:
    """Where the command's output goes: the captures and the live callback, with a terminal's CRLF undone."""

    def __init__(self, stdout: Capture, stderr: Capture, on_output: OutputCallback | None,
                 crlf: CrlfToLf | None) -> None:
        self.stdout, self.stderr = stdout, stderr
        self._on_output = on_output
        self._crlf = crlf

    def add(self, stream: str, chunk: bytes) -> None:
        if self._crlf is not None:
            chunk = self._crlf.feed(chunk)  # a pty has one stream: stdout
        self._deliver(stream, chunk)

    def flush(self) -> None:
        if self._crlf is not None:
            self._deliver("stdout", self._crlf.flush())

    def _deliver(self, stream: str, chunk: bytes) -> None:
        if not chunk:
            return
        (self.stdout if stream == "stdout" else self.stderr).add(chunk)
        if self._on_output is not None:
            self._on_output(stream, chunk)
