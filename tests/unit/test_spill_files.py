"""Spilled outputs: kept on disk past SPILL_AT, private, and every renderer shows exactly what it shows for the
same output held in memory."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from fleetrun.journal import JournalWriter, RunMeta
from fleetrun.models import Host, HostResult, Outcome, RunSummary
from fleetrun.output.gather import GatherRenderer
from fleetrun.output.json import JsonRenderer
from fleetrun.output.junit import JunitRenderer
from fleetrun.output.table import TableRenderer
from fleetrun.redact import Redactor
from fleetrun.spill import READ_SIZE, SPILL_AT, Capture, Spill
from fleetrun.status import ExitStatus

HOSTS = [Host(f"web{n}", f"10.0.0.{n}") for n in range(1, 5)]
BIG = b"".join(b"line %06d of a long output\n" % n for n in range(20_000))  # 540 KB


def result(host: Host, stdout: bytes, *, spill: bool, outcome: Outcome = Outcome.OK, stderr: bytes = b"",
           limit: int = 4 << 20) -> HostResult:
    captures = [Capture(limit, SPILL_AT if spill else None) for _ in range(2)]
    for capture, data in zip(captures, (stdout, stderr), strict=True):
        for start in range(0, len(data), 32768):
            capture.add(data[start:start + 32768])
    out, err = captures
    return HostResult(host, outcome, exit_code=0 if outcome is Outcome.OK else 2, stdout=out.data(),
                      stderr=err.data(), stdout_file=out.spill, stderr_file=err.spill,
                      stdout_truncated=out.truncated, stderr_truncated=err.truncated,
                      error=None if outcome is Outcome.OK else "exit status 2")


def summary(total: int) -> RunSummary:
    return RunSummary(total=total, counts={Outcome.OK: total}, elapsed=1.0, exit_status=ExitStatus.OK)


def test_a_short_stream_stays_in_memory_and_a_long_one_goes_to_a_private_unlinked_file():
    short = Capture(4 << 20, SPILL_AT)
    short.add(b"x" * SPILL_AT)
    assert short.spill is None and short.data() == b"x" * SPILL_AT
    long = Capture(4 << 20, SPILL_AT)
    for start in range(0, len(BIG), 32768):
        long.add(BIG[start:start + 32768])
    assert long.spill is not None
    assert long.data() == BIG[:SPILL_AT] and long.spill.read() == BIG and long.spill.size == len(BIG)
    fd = long.spill.fileno()
    assert os.readlink(f"/proc/self/fd/{fd}").endswith("(deleted)")
    assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
    assert long.spill.tail(10) == BIG[-10:] and b"".join(long.spill.chunks(1000)) == BIG
    copy = long.spill.dup()
    long.close()
    assert copy.read() == BIG  # a renderer's own copy outlives the result's
    copy.close()
    with pytest.raises(ValueError):
        copy.read()


def test_max_output_still_truncates_a_spilled_stream():
    capture = Capture(100_000, SPILL_AT)
    for start in range(0, len(BIG), 32768):
        capture.add(BIG[start:start + 32768])
    assert capture.truncated and capture.spill is not None and capture.spill.read() == BIG[:100_000]
    capture.close()


def test_result_accessors_read_a_spilled_stream_whole_or_in_part():
    spilled = result(HOSTS[0], BIG, spill=True, stderr=BIG[::-1])
    assert spilled.stdout == BIG[:SPILL_AT] and spilled.output("stdout") == BIG
    assert spilled.output_size("stdout") == len(BIG) and spilled.output_tail("stderr", 7) == BIG[::-1][-7:]
    assert spilled.output_head("stdout", SPILL_AT + 5) == BIG[:SPILL_AT + 5]
    spilled.release()


@pytest.mark.parametrize("where", [5, SPILL_AT - 3, READ_SIZE - 4, len(BIG) - 5])
def test_secrets_in_a_spilled_output_are_masked_wherever_they_fall(where):
    secret = "Zq9-db-Secret"
    data = BIG[:where] + secret.encode() + BIG[where:] + b"end " + secret.encode()[:4]
    data = data + b"x" * max(0, READ_SIZE + 10 - len(data))  # past one read of the spill file
    masked = Redactor([secret]).result(result(HOSTS[0], data, spill=True))
    whole = masked.output("stdout")
    assert secret.encode() not in whole and whole.count(b"***") == 1
    assert masked.stdout == whole[:SPILL_AT]
    assert whole == Redactor([secret]).data(data)
    masked.release()


def test_a_truncated_spilled_output_has_a_cut_secret_masked_too():
    secret = "Zq9-db-Secret"
    data = BIG[:200_000] + secret.encode()
    masked = Redactor([secret]).result(result(HOSTS[0], data, spill=True, limit=200_005))
    assert masked.output("stdout").endswith(b"***") and secret.encode()[:5] not in masked.output("stdout")[-20:]
    masked.release()


def render(renderer_factory, results: list[HostResult]) -> str:
    out = io.StringIO()
    renderer = renderer_factory(out)
    renderer.on_start(HOSTS)
    for item in results:
        renderer.on_result(item)
        item.release()  # as the runner does once every renderer had it
    renderer.on_finish(summary(len(results)))
    return out.getvalue()


def outputs() -> list[bytes]:
    other = BIG.replace(b"line 010000", b"LINE 010000")
    return [BIG, BIG, other, b"short\n"]


@pytest.mark.parametrize("factory", [
    lambda out: TableRenderer(out),
    lambda out: TableRenderer(out, verbose=True),
    lambda out: GatherRenderer(out),
    lambda out: GatherRenderer(out, diff=True),
    lambda out: JsonRenderer(out),
], ids=["table", "table -v", "gather", "diff", "json"])
def test_renderers_show_a_spilled_output_exactly_as_one_in_memory(factory):
    def build(spill: bool) -> list[HostResult]:
        return [result(host, data, spill=spill, stderr=b"warn\n" * 20_000 if host.name == "web3" else b"")
                for host, data in zip(HOSTS, outputs(), strict=True)]

    in_memory, spilled = render(factory, build(False)), render(factory, build(True))
    assert in_memory == spilled
    assert len(in_memory) > 100


def test_json_has_every_byte_of_a_spilled_output():
    text = render(lambda out: JsonRenderer(out), [result(HOSTS[0], BIG, spill=True)])
    assert json.loads(text.splitlines()[0])["stdout"] == BIG.decode()


def test_junit_and_journal_read_only_the_parts_they_keep(tmp_path: Path):
    failing = result(HOSTS[0], BIG, spill=True, outcome=Outcome.FAILED, stderr=BIG + b"the reason\n")
    junit = JunitRenderer(tmp_path / "j.xml", io.StringIO())
    junit.on_start(HOSTS[:1])
    junit.on_result(failing)
    junit.on_finish(summary(1))
    assert "the reason" in (tmp_path / "j.xml").read_text()
    journal = JournalWriter(tmp_path / "runs", RunMeta(kind="exec", argv=("exec",)), io.StringIO())
    journal.on_start(HOSTS[:1])
    journal.on_result(failing)
    journal.on_finish(summary(1))
    assert journal.directory is not None
    record = json.loads((journal.directory / "hosts.jsonl").read_text())
    assert record["stdout"] == BIG[:64 * 1024].decode() and record["stdout_truncated"] is True
    assert record["stderr_truncated"] is True
    failing.release()


def test_spill_objects_do_not_pickle_by_value():
    import pickle

    spill = Spill.create()
    with pytest.raises(TypeError):
        pickle.dumps(spill)
    spill.close()
