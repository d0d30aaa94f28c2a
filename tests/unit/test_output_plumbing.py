"""Fan-out, --quiet, colours, the table fitted to a terminal, and the runner's per-host output seam."""

from __future__ import annotations

import io

import pytest

from fleetrun.lines import LINE_BATCH, MAX_LINE, Lines, LineSplitter
from fleetrun.models import Host, HostResult, Outcome, OutputLine, RunSummary
from fleetrun.output.base import paint, use_colour
from fleetrun.output.fanout import Fanout, OnlyProblems
from fleetrun.output.table import TableRenderer, fit
from fleetrun.runner import _output_callback
from fleetrun.status import ExitStatus

WEB1, WEB2 = Host("web01", "10.0.0.1"), Host("web02", "10.0.0.2")
SUMMARY = RunSummary(2, {Outcome.OK: 1, Outcome.FAILED: 1}, 1.0, ExitStatus.COMMAND_FAILED)


class Recorder:
    def __init__(self, wants_lines: bool = False, fail_on: str | None = None) -> None:
        self.wants_lines = wants_lines
        self.fail_on = fail_on
        self.calls: list[str] = []

    def _record(self, what: str) -> None:
        self.calls.append(what)
        if what == self.fail_on:
            raise BrokenPipeError(32, "Broken pipe")

    def on_start(self, hosts):
        self._record("start")

    def on_started(self, host):
        self._record(f"started {host.name}")

    def on_line(self, line):
        self._record(f"line {line.text.decode()}")

    def on_result(self, result):
        self._record(f"result {result.host.name}")

    def on_finish(self, summary):
        self._record("finish")


def test_fanout_feeds_everyone_and_drops_a_broken_renderer_only():
    screen, files = Recorder(wants_lines=True, fail_on="result web01"), Recorder()
    fanout = Fanout([screen, files])
    assert fanout.wants_lines
    fanout.on_start([WEB1, WEB2])
    fanout.on_line(OutputLine(WEB1, "stdout", b"hi"))
    with pytest.raises(BrokenPipeError):
        fanout.on_result(HostResult(WEB1, Outcome.OK))
    fanout.on_result(HostResult(WEB2, Outcome.OK))
    fanout.on_finish(SUMMARY)
    assert screen.calls == ["start", "line hi", "result web01"]
    assert files.calls == ["start", "result web01", "result web02", "finish"]  # no lines: it did not ask


def test_quiet_passes_only_problems():
    inner = Recorder(wants_lines=True)
    quiet = OnlyProblems(inner)
    assert not quiet.wants_lines
    quiet.on_start([WEB1, WEB2])
    quiet.on_line(OutputLine(WEB1, "stdout", b"hi"))
    quiet.on_result(HostResult(WEB1, Outcome.OK))
    quiet.on_result(HostResult(WEB2, Outcome.FAILED, exit_code=1))
    quiet.on_finish(SUMMARY)
    assert inner.calls == ["start", "result web02", "finish"]


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(FakeTty()) and not use_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(FakeTty())
    assert paint("ok", Outcome.OK, False) == "ok" and paint("ok", Outcome.OK, True) == "\x1b[32mok\x1b[0m"


def test_fit_cuts_or_wraps():
    assert fit("abcdefghij\nxy", 4, wrap=False) == "abc…\nxy"
    assert fit("abcdefghij\nxy", 4, wrap=True) == "abcd\nefgh\nij\nxy"


def table(width: int | None, verbose: bool = False, colour: bool = False) -> str:
    out = io.StringIO()
    renderer = TableRenderer(out, verbose=verbose, width=width, colour=colour)
    renderer.on_start([WEB1, WEB2])
    renderer.on_result(HostResult(WEB1, Outcome.OK, exit_code=0, stdout=b"x" * 300 + b"\n", duration=1.0))
    renderer.on_result(HostResult(WEB2, Outcome.FAILED, exit_code=1, error="exit status 1", duration=1.0))
    renderer.on_finish(SUMMARY)
    return out.getvalue()


def test_table_fits_wide_output_to_the_terminal():
    assert max(len(line) for line in table(None).splitlines()) > 120  # not a TTY: as before (cut at 120)
    fitted = table(60)
    assert max(len(line) for line in fitted.splitlines()) <= 60 and "…" in fitted
    wrapped = table(60, verbose=True)
    assert max(len(line) for line in wrapped.splitlines()) <= 60
    assert "".join(line[34:] for line in wrapped.splitlines() if line.endswith("x")) == "x" * 300  # all, wrapped


def test_table_colours_status_words_when_asked():
    assert "\x1b[" not in table(None)
    coloured = table(None, colour=True)
    assert "\x1b[32mok\x1b[0m" in coloured and "\x1b[31mfailed\x1b[0m" in coloured


class Sink:
    def __init__(self) -> None:
        self.chunks: list[tuple[str, bytes]] = []

    def write(self, stream: str, chunk: bytes) -> None:
        self.chunks.append((stream, chunk))

    def close(self) -> None:
        pass


def test_output_callback_feeds_the_raw_sink_and_the_line_splitters():
    assert _output_callback({}, None) is None
    events: list[object] = []
    sink = Sink()
    splitters = {name: LineSplitter(WEB1, name, events.append) for name in ("stdout", "stderr")}
    callback = _output_callback(splitters, sink)
    assert callback is not None
    callback("stdout", b"one\ntw")
    callback("stderr", b"\xff\n")
    callback("stdout", b"o\nthree")
    splitters["stdout"].flush()
    assert sink.chunks == [("stdout", b"one\ntw"), ("stderr", b"\xff\n"), ("stdout", b"o\nthree")]
    lines = [(line.stream, line.text) for event in events if isinstance(event, Lines) for line in event.lines]
    assert lines == [("stdout", b"one"), ("stderr", b"\xff"), ("stdout", b"two"), ("stdout", b"three")]
    assert len(events) == 4  # one event per chunk (and one for the flush), not one per line


def test_line_splitter_batches_lines_into_few_bounded_events():
    events: list[object] = []
    splitter = LineSplitter(WEB1, "stdout", events.append)
    splitter.feed(b"".join(b"line %05d\n" % n for n in range(1000)))  # 11,000 bytes
    first = -(-LINE_BATCH // 11)  # the line that brings the batch to LINE_BATCH bytes closes it
    assert [len(event.lines) for event in events] == [first, 1000 - first]
    assert [line.text for event in events for line in event.lines] == [b"line %05d" % n for n in range(1000)]
    events.clear()
    splitter.feed(b"x" * (3 * MAX_LINE + 5))  # longer than MAX_LINE: still one line (see test_lines.py)
    splitter.flush()
    assert [b"".join(line.chunks()) for event in events for line in event.lines] == [b"x" * (3 * MAX_LINE + 5)]
