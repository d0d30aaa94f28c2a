"""Live lines for --format stream: whole at any length, the same whatever the chunking, memory bounded."""

from __future__ import annotations

import io
import random
import tempfile

import pytest

from fleetrun.lines import LINE_BATCH, MAX_LINE, Lines, LineSplitter
from fleetrun.models import Host, HostResult, Outcome, OutputLine, RunSummary
from fleetrun.output.stream import StreamRenderer
from fleetrun.status import ExitStatus

WEB1, WEB2 = Host("web01", "10.0.0.1"), Host("web02", "10.0.0.2")


def split(data: bytes, cuts: list[int], max_line: int = MAX_LINE) -> tuple[list[bytes], list[Lines], int]:
    """(lines, events, most bytes held in memory) for `data` fed in pieces cut at `cuts`."""
    events: list[Lines] = []
    splitter = LineSplitter(WEB1, "stdout", events.append, max_line=max_line)  # type: ignore[arg-type]
    held = 0
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        splitter.feed(data[start:end])
        held = max(held, len(splitter.pending))
    splitter.flush()
    return [b"".join(line.chunks()) for event in events for line in event.lines], events, held


def test_a_5_mb_line_comes_out_whole_with_64_kib_in_memory():
    line = random.Random(1).randbytes(5 << 20).replace(b"\n", b"x")  # order matters: no repeating pattern
    data = b"before\n" + line + b"\nafter\n"
    cuts = list(range(65536, len(data), 65536))  # paramiko's largest chunk
    lines, events, held = split(data, cuts)
    assert lines == [b"before", line, b"after"]
    assert held <= MAX_LINE
    spilled = [ln for event in events for ln in event.lines if ln.spill is not None]
    assert len(spilled) == 1 and spilled[0].text == b""
    assert b"".join(spilled[0].chunks()) == line  # readable again: every renderer of a fan-out gets it all
    for event in events:
        event.release()
    assert spilled[0].spill is not None and spilled[0].spill.closed


@pytest.mark.parametrize("seed", range(20))
def test_lines_do_not_depend_on_where_chunks_end(seed):
    rng = random.Random(seed)
    sizes = [0, 1, 5, 100, 1000, 3000, 5000]
    data = b"".join(b"y" * rng.choice(sizes) + b"\n" for _ in range(40)) + b"z" * rng.choice(sizes)
    expected = data.split(b"\n")
    if expected[-1] == b"":
        expected.pop()
    cuts = sorted(rng.sample(range(1, len(data)), min(30, len(data) - 1)))
    lines, _, held = split(data, cuts, max_line=1024)
    assert lines == expected
    assert held <= 1024


def test_an_unterminated_long_line_is_flushed_whole_at_the_end():
    lines, events, _ = split(b"a" * (3 * MAX_LINE + 5), [MAX_LINE, 2 * MAX_LINE, 3 * MAX_LINE])
    assert lines == [b"a" * (3 * MAX_LINE + 5)]
    assert len(events) == 1


def test_short_lines_still_travel_in_batches():
    lines, events, _ = split(b"".join(b"line %05d\n" % n for n in range(1000)), [])
    assert len(lines) == 1000
    assert len(events) == 2 and sum(len(event.lines) for event in events) == 1000
    assert all(sum(len(line.text) + 1 for line in event.lines) <= LINE_BATCH + 11 for event in events)


def test_without_room_for_a_spill_file_the_line_goes_on_in_pieces(monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_space)
    lines, _, held = split(b"b" * 2500 + b"\nc\n", [1000, 2000], max_line=1024)
    assert lines == [b"b" * 1024, b"b" * 1476, b"c"]  # cut where memory ran out, never held beyond
    assert held <= 1024


class FullDisk(io.BytesIO):
    """A spill file that takes `room` bytes and then fails as a full disk does."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, data) -> int:  # type: ignore[override]
        if self.tell() + len(data) > self.room:
            raise OSError(28, "No space left on device")
        return super().write(data)


def test_a_spill_file_that_fills_up_passes_on_what_it_holds(monkeypatch):
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda **kwargs: FullDisk(3000))
    lines, _, _ = split(b"d" * 5000 + b"\n", [1500, 2500, 3500], max_line=1024)
    # 2500 bytes made it into the file, the next piece did not: the line is cut there, nothing is lost.
    assert lines == [b"d" * 2500, b"d" * 2500]


class Recording(io.StringIO):
    def __init__(self, log: list[str], name: str) -> None:
        super().__init__()
        self.log, self.name = log, name

    def write(self, text: str) -> int:
        self.log.append(f"{self.name} write")
        return super().write(text)

    def flush(self) -> None:
        self.log.append(f"{self.name} flush")


def test_stream_writes_a_spilled_line_whole_and_decodes_across_pieces():
    text = "é€" * 50_000  # multi-byte characters cut by every 64 KiB piece
    out, err = io.StringIO(), io.StringIO()
    stream = StreamRenderer(out, err)
    stream.on_start([WEB1, WEB2])
    with tempfile.TemporaryFile() as spill:
        spill.write(text.encode())
        stream.on_line(OutputLine(WEB1, "stdout", b"", spill=spill))
    stream.on_line(OutputLine(WEB2, "stdout", b"short"))
    assert out.getvalue() == f"web01 | {text}\nweb02 | short\n"


def test_stream_flushes_one_stream_before_writing_the_other():
    # With 2>&1 both land in one file: a stdout line half in its buffer must not have a stderr line inside it.
    log: list[str] = []
    stream = StreamRenderer(Recording(log, "out"), Recording(log, "err"))
    stream.on_start([WEB1])
    stream.on_line(OutputLine(WEB1, "stdout", b"one"))
    stream.on_line(OutputLine(WEB1, "stdout", b"two"))
    stream.on_line(OutputLine(WEB1, "stderr", b"three"))
    stream.on_result(HostResult(WEB1, Outcome.FAILED, exit_code=1, error="exit status 1"))
    assert log[:5] == ["out write", "out write", "out flush", "err write", "err write"]
    stream.on_finish(RunSummary(1, {Outcome.FAILED: 1}, 1.0, ExitStatus.COMMAND_FAILED))
