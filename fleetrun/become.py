"""sudo on a channel: the unique prompt, the start marker, the one write of the password (no paramiko here).

The host runs `sudo -S -p '[fleetrun-sudo:<id>] ' -u USER -H -- sh -c '<wrapper>' …` (fleetrun.ssh.wrapper); the
wrapper prints MARKER (`\\x1efleetrun-become-ok-<id>\\n`, on stderr) just before it execs the command. Until
then `negotiate` reads both streams and decides by three signals only, never by sudo's (translated) text:

- the prompt, matched as bytes anywhere in sudo's stream (without a pty it is on stderr, with no newline):
  the first time, the password is written, once; without a password to give, that is `password-required`.
  The prompt seen again means sudo did not take the password: `rejected`;
- the marker: sudo ran the wrapper, `ok`. A marker without a prompt (NOPASSWD, cached) means nothing was
  written. From here on nothing is watched or written for sudo;
- the command ending with neither: after the password, `rejected` (sudo refused it: a wrong password with
  passwd_tries=1, or a user not allowed); before any prompt, sudo refused to start at all. sudo asks for a
  password even with -S before it checks anything that a password could fix, so the one thing left that a
  terminal can fix is `requiretty`: the session confirms it with a probe on a pty (one more round trip, on
  this failure path only) and reports `tty-required`, else `error` with sudo's own last line.

The prompt and the marker never reach the host's output, wherever the chunks of the stream are cut.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

PROMPT_TEMPLATE = "[fleetrun-sudo:{id}] "  # no '%': sudo's -p expands %u, %h, %H, %p, %U
MARKER_TEMPLATE = "\x1efleetrun-become-ok-{id}"

# JSON "become" statuses (README, *sudo*); None: the host never got as far as sudo.
OK, REJECTED, PASSWORD_REQUIRED, TTY_REQUIRED, TIMEOUT, ERROR = (
    "ok", "rejected", "password-required", "tty-required", "timeout", "error")
NO_PROMPT = "no-prompt"  # sudo ended before prompting or starting the wrapper: the probe decides (see above)
CANCELLED = "cancelled"  # the run was cancelled during the negotiation


def new_run_id() -> str:
    """16 hex digits, one per run: in the prompt and the marker, so neither can be met by chance."""
    return os.urandom(8).hex()  # what secrets.token_hex(8) is, without importing secrets (hmac) at start-up


@dataclass(frozen=True)
class BecomeRequest:
    """How one host's command is to run under sudo."""

    user: str  # the user to become
    run_id: str
    password: str | None = field(default=None, repr=False)  # None: sudo must not need one
    pty: bool = False  # --become-pty: sudo on a terminal (requiretty); one merged stream, CRLF line ends
    timeout: float = 15.0  # --become-timeout: the negotiation only

    @property
    def prompt(self) -> bytes:
        return PROMPT_TEMPLATE.format(id=self.run_id).encode()

    @property
    def marker(self) -> bytes:
        """The marker line as it arrives: a terminal turns the wrapper's \\n into \\r\\n."""
        return MARKER_TEMPLATE.format(id=self.run_id).encode() + (b"\r\n" if self.pty else b"\n")

    @property
    def stream(self) -> str:
        """Where sudo's prompt and the marker arrive: stderr, or the terminal's one stream."""
        return "stdout" if self.pty else "stderr"


def sudo_words(request: BecomeRequest) -> list[str]:
    """`sudo …` up to and including `--`: -S reads the password from stdin (never argv), -H sets HOME."""
    return ["sudo", "-S", "-p", PROMPT_TEMPLATE.format(id=request.run_id), "-u", request.user, "-H", "--"]


def marker_printf(request: BecomeRequest) -> str:
    """The wrapper's sh statement printing the marker on stderr."""
    return f"printf '\\036%s\\n' {shlex.quote(MARKER_TEMPLATE.format(id=request.run_id)[1:])} >&2"


class BecomeChannel(Protocol):
    """What the negotiation needs of a channel (fleetrun.ssh.session adapts paramiko's; tests script one)."""

    def read(self) -> list[tuple[str, bytes]]:
        """Whatever stdout and stderr hold now, without waiting: [(stream, bytes)]."""

    def write(self, data: bytes) -> None:
        """Send to the command's stdin."""

    def wait(self, timeout: float) -> None:
        """Until more may have arrived, the channel ended, or the run was cancelled; at most `timeout`."""

    def ended(self) -> bool:
        """The command ended (its exit status arrived or the channel closed) and nothing is left to read."""

    def cancelled(self) -> bool:
        """The run was cancelled."""


@dataclass(frozen=True)
class Negotiated:
    """How the negotiation ended, and the output it read that belongs to the host (prompt, marker removed)."""

    status: str  # OK, REJECTED, PASSWORD_REQUIRED, NO_PROMPT, TIMEOUT or CANCELLED
    output: tuple[tuple[str, bytes], ...]
    written: bool  # whether the password was sent

    @property
    def last_line(self) -> str:
        """sudo's last line of output, for messages: its own words say what fleetrun cannot know."""
        text = b"".join(data for _, data in self.output).decode("utf-8", "replace")
        lines = [line.strip() for line in text.replace("\r", "\n").split("\n") if line.strip()]
        return lines[-1][:200] if lines else ""


def _held_back(data: bytes, patterns: tuple[bytes, ...]) -> int:
    """Where the longest end of `data` that may start one of `patterns` begins (len(data) if none)."""
    longest = max(len(pattern) for pattern in patterns)
    for start in range(max(0, len(data) - longest + 1), len(data)):
        tail = data[start:]
        if any(pattern.startswith(tail) for pattern in patterns):
            return start
    return len(data)


def negotiate(channel: BecomeChannel, request: BecomeRequest,
              clock: Callable[[], float] = time.monotonic) -> Negotiated:
    """Answer sudo on `channel` until the marker, a failure, the end of the command or request.timeout."""
    prompt, marker = request.prompt, request.marker
    deadline = clock() + request.timeout
    output: list[tuple[str, bytes]] = []
    pending = b""  # sudo's stream, from where a prompt or the marker may begin
    prompts = 0
    written = False
    skip_newline = False  # on a terminal, sudo ends the hidden password's line itself

    def done(status: str, rest: bytes = b"", later: list[tuple[str, bytes]] | None = None) -> Negotiated:
        output.append((request.stream, rest))
        output.extend(later or ())  # read together with the end: the command's already
        return Negotiated(status, tuple((stream, data) for stream, data in output if data), written)

    while True:
        chunks = channel.read()
        for index, (stream, data) in enumerate(chunks):
            later = chunks[index + 1:]
            if stream != request.stream:
                output.append((stream, data))  # stdout without a pty: the command's, once it runs
                continue
            pending += data
            while pending:
                if skip_newline:
                    if pending in (b"\r",):
                        break
                    pending = pending[2:] if pending.startswith(b"\r\n") else pending
                    skip_newline = False
                    continue
                at_prompt, at_marker = pending.find(prompt), pending.find(marker)
                if at_marker >= 0 and (at_prompt < 0 or at_marker < at_prompt):
                    output.append((stream, pending[:at_marker]))
                    return done(OK, pending[at_marker + len(marker):], later)
                if at_prompt < 0:
                    keep = _held_back(pending, (prompt, marker))
                    if keep:
                        output.append((stream, pending[:keep]))
                    pending = pending[keep:]
                    break
                output.append((stream, pending[:at_prompt]))
                pending = pending[at_prompt + len(prompt):]
                prompts += 1
                if prompts > 1:
                    return done(REJECTED, pending, later)
                if request.password is None:
                    return done(PASSWORD_REQUIRED, pending, later)
                channel.write(request.password.encode() + b"\n")  # the one write, after the prompt
                written = True
                skip_newline = request.pty
        output[:] = [(stream, data) for stream, data in output if data]
        if channel.ended():
            return done(REJECTED if written else NO_PROMPT, pending)
        if channel.cancelled():
            return done(CANCELLED, pending)
        left = deadline - clock()
        if left <= 0:
            return done(TIMEOUT, pending)
        channel.wait(left)


class CrlfToLf:
    """A terminal's `\\r\\n` line ends back to `\\n`, chunk by chunk (a `\\r` at a chunk's end waits)."""

    def __init__(self) -> None:
        self._cr = False

    def feed(self, data: bytes) -> bytes:
        if self._cr:
            data, self._cr = b"\r" + data, False
        if data.endswith(b"\r"):
            data, self._cr = data[:-1], True
        return data.replace(b"\r\n", b"\n")

    def flush(self) -> bytes:
        cr, self._cr = self._cr, False
        return b"\r" if cr else b""
