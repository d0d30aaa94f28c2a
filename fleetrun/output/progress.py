"""Live progress on the terminal's stderr: done/total, outcome counts, elapsed, ETA, the last hosts running."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO, cast

from fleetrun.models import Host, HostResult, Outcome, OutputLine, RunSummary

INTERVAL = 0.25  # seconds between redraws: lively enough, and cheap on a slow terminal
FEW_LEFT = 5  # name the hosts still running once this few remain and none are queued
CLEAR = "\r\x1b[K"  # back to column 0, erase to the end of the line

_FAILED = (Outcome.FAILED, Outcome.TIMEOUT)
_UNREACHABLE = (Outcome.UNREACHABLE, Outcome.AUTH_FAILED, Outcome.HOST_KEY)


def duration(seconds: float) -> str:
    """12s, 2m05s, 1h02m: short enough for a status line."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class _Guarded:
    """A stream that erases the progress line before anything is written to it, so the two never mix."""

    def __init__(self, stream: TextIO, progress: ProgressRenderer) -> None:
        self._stream = stream
        self._progress = progress
        self.at_line_start = True  # the line is only drawn when no one is halfway through a line

    def write(self, text: str) -> int:
        with self._progress.lock:
            self._progress.clear()
            written = self._stream.write(text)
            if text:
                self.at_line_start = text.endswith("\n")
            return written

    def flush(self) -> None:
        with self._progress.lock:
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding… as the real stream has them
        return getattr(self._stream, name)


class ProgressRenderer:
    """Counts results from the collector; a daemon thread redraws one line on `err` a few times a second.

    Only for a terminal: the caller decides (stderr a TTY, no --quiet). Whatever else writes to the
    terminal goes through `guard()`, which erases the line first; it is redrawn at the next tick.
    """

    wants_lines = False
    wants_started = True

    def __init__(self, err: TextIO, *, interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic,
                 width: Callable[[], int] | None = None) -> None:
        self.err = err
        self.interval = interval
        self.clock = clock
        self.width = width or self._terminal_width
        self.lock = threading.RLock()  # re-entrant: a signal handler may write while the main thread holds it
        self.total = 0
        self.done = 0
        self.counts: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self.running: dict[str, None] = {}  # insertion-ordered: the longest running first
        self.started = clock()
        self._guarded: list[_Guarded] = []
        self._drawn = False
        self._shown = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def guard(self, stream: TextIO) -> TextIO:
        guarded = _Guarded(stream, self)
        self._guarded.append(guarded)
        return cast(TextIO, guarded)

    def on_start(self, hosts: Sequence[Host]) -> None:
        with self.lock:
            self.total = len(hosts)
            self.started = self.clock()
        # A daemon: the ticker's work does not matter once the run is over, and it must never delay exit.
        self._thread = threading.Thread(target=self._tick, name="fleetrun-progress", daemon=True)
        self._thread.start()

    def on_started(self, host: Host) -> None:
        with self.lock:
            self.running[host.name] = None

    def on_line(self, line: OutputLine) -> None:
        pass

    def on_result(self, result: HostResult) -> None:
        with self.lock:
            self.running.pop(result.host.name, None)
            self.done += 1
            self.counts[result.outcome] += 1

    def on_finish(self, summary: RunSummary) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop redrawing and erase the line; safe to call more than once, and from a failed run."""
        self._stop.set()
        with self.lock:
            self.clear()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1.0)

    def line(self) -> str:
        """The progress text for now."""
        with self.lock:
            elapsed = self.clock() - self.started
            failed = sum(self.counts[o] for o in _FAILED)
            unreachable = sum(self.counts[o] for o in _UNREACHABLE)
            parts = [f"[{self.done:>{len(str(self.total))}}/{self.total}] {self.counts[Outcome.OK]} ok"]
            parts += [f"{failed} failed"] if failed else []
            parts += [f"{unreachable} unreachable"] if unreachable else []
            text = ", ".join(parts) + f" | {duration(elapsed)}"
            if 0 < self.done < self.total:
                text += f", ETA {duration(elapsed / self.done * (self.total - self.done))}"
            queued = self.total - self.done - len(self.running)
            if self.running and queued <= 0 and len(self.running) <= FEW_LEFT:
                text += " | waiting for " + ", ".join(self.running)
            elif self.running:
                text += f" | {len(self.running)} running"
            return text

    def clear(self) -> None:
        """Erase the line if it is drawn; the caller holds `lock`."""
        if self._drawn:
            self._drawn = False
            self.err.write(CLEAR)
            self.err.flush()

    def draw(self) -> None:
        text = self.line()[: max(self.width() - 1, 10)]  # never wrap: "\r" only returns to the last row
        with self.lock:
            if self._stop.is_set() or not all(g.at_line_start for g in self._guarded):
                return
            if self._drawn and text == self._shown:  # already on screen: spare a slow terminal the bytes
                return
            for guarded in self._guarded:  # what others wrote must reach the terminal before the line does
                guarded.flush()
            self.err.write(CLEAR + text)
            self.err.flush()
            self._drawn, self._shown = True, text

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.draw()
            except (OSError, ValueError):  # the terminal went away: nothing left to show progress on
                return

    def _terminal_width(self) -> int:
        try:
            return os.get_terminal_size(self.err.fileno()).columns or 80
        except (OSError, ValueError, AttributeError):
            return 80
