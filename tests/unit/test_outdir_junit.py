"""--out-dir and --junit with hand-made results: file names, byte-exact raw files, status JSON, the XML shape."""

from __future__ import annotations

import io
import json
import os
import xml.etree.ElementTree as ET

import pytest

from fleetrun.errors import UsageError
from fleetrun.models import Host, HostResult, Outcome, RunSummary
from fleetrun.output.json import result_record
from fleetrun.output.junit import JunitRenderer, xml_text
from fleetrun.output.outdir import MARKER, OutDirRenderer, file_stem
from fleetrun.status import ExitStatus

WEB1, WEB2, ODD = Host("web01", "10.0.0.1"), Host("web02", "10.0.0.2"), Host("../etc/passwd", "10.0.0.3")
SUMMARY = RunSummary(3, {Outcome.OK: 1, Outcome.FAILED: 1, Outcome.NOT_STARTED: 1}, 2.5, ExitStatus.COMMAND_FAILED)


def test_file_stems_are_safe_and_distinct():
    assert file_stem("web01.example.com") == "web01.example.com"
    unsafe = ["../etc/passwd", "a/b", "a_b", ".hidden", "sp ace", "", "x" * 300]
    stems = [file_stem(name) for name in unsafe]
    assert all(stem and "/" not in stem and not stem.startswith(".") and len(stem) < 140 for stem in stems)
    assert len(set(stems)) == len(stems)
    assert stems[1] != stems[2] and stems[2] == "a_b"


def test_out_dir_files(tmp_path):
    err = io.StringIO()
    writer = OutDirRenderer(tmp_path / "new" / "dir", err)
    directory = tmp_path / "new" / "dir"
    writer.on_start([WEB1, WEB2, ODD])
    sink = writer.open_sink(WEB1)
    payload = bytes(range(256)) * 1000
    for start in range(0, len(payload), 4096):
        sink.write("stdout", payload[start:start + 4096])
    sink.write("stderr", b"\xff\x00warn\n")
    assert not (directory / "web01.out").exists()  # only renamed into place when complete
    sink.close()
    result = HostResult(WEB1, Outcome.OK, exit_code=0, stdout=payload[:100], stdout_truncated=True, duration=1.5)
    writer.on_result(result)
    writer.on_result(HostResult(ODD, Outcome.NOT_STARTED, error="run interrupted"))
    writer.on_finish(SUMMARY)

    assert (directory / "web01.out").read_bytes() == payload  # complete, whatever the in-memory copy kept
    assert (directory / "web01.err").read_bytes() == b"\xff\x00warn\n"
    status = json.loads((directory / "web01.status").read_text())
    expected = result_record(result)
    del expected["stdout"], expected["stderr"]
    assert status == expected and status["stdout_truncated"] is True
    odd = file_stem(ODD.name)
    assert (directory / f"{odd}.out").read_bytes() == b"" and (directory / f"{odd}.err").read_bytes() == b""
    assert json.loads((directory / f"{odd}.status").read_text())["status"] == "not started"
    assert json.loads((directory / "summary.json").read_text())["counts"] == {"ok": 1, "failed": 1, "not started": 1}
    assert [p for p in os.listdir(directory) if p.startswith(".")] == [MARKER], "no temp files left"
    assert not (tmp_path / "etc").exists() and err.getvalue() == ""


def test_out_dir_write_failure_is_a_warning_not_a_host_failure(tmp_path):
    err = io.StringIO()
    writer = OutDirRenderer(tmp_path, err)
    writer.on_start([WEB1])
    (tmp_path / f".web01.out.{os.getpid()}.tmp").mkdir()  # the temp file cannot be opened
    sink = writer.open_sink(WEB1)
    sink.write("stdout", b"data")
    sink.close()
    writer.on_result(HostResult(WEB1, Outcome.OK, exit_code=0))
    assert "fleetrun: warning: --out-dir: cannot write" in err.getvalue() and "web01.out" in err.getvalue()
    assert not (tmp_path / "web01.out").exists() and (tmp_path / "web01.status").exists()


def test_out_dir_that_cannot_be_made_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="--out-dir"):
        OutDirRenderer(tmp_path / "file" / "sub", io.StringIO())


def _run_into(directory, hosts):
    """One run's worth of --out-dir writes: every host finishes (failed), then the summary."""
    writer = OutDirRenderer(directory, io.StringIO())
    writer.on_start(hosts)
    for host in hosts:
        sink = writer.open_sink(host)
        sink.write("stdout", f"{host.name} output\n".encode())
        sink.close()
        writer.on_result(HostResult(host, Outcome.FAILED, exit_code=1, error="exit status 1"))
    writer.on_finish(RunSummary(len(hosts), {Outcome.FAILED: len(hosts)}, 1.0, ExitStatus.COMMAND_FAILED))
    return writer


def test_reused_out_dir_holds_only_the_last_runs_files_and_the_users_own(tmp_path):
    six = [Host(f"web0{n}", f"10.0.0.{n}") for n in range(1, 7)]
    _run_into(tmp_path / "out", six)
    out = tmp_path / "out"
    assert len(list(out.glob("*.status"))) == 6
    (out / "notes.txt").write_text("mine\n")  # the operator's own file, added between runs
    (out / "web03.status.orig").write_text("a copy the operator made\n")
    (out / f".web05.out.{os.getpid() + 1}.tmp").write_bytes(b"left by a killed run")

    _run_into(out, six[:1])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MARKER, "notes.txt", "summary.json", "web01.err", "web01.out", "web01.status", "web03.status.orig"])
    assert json.loads((out / "summary.json").read_text())["total"] == 1
    assert json.loads((out / MARKER).read_text())["files"] == ["summary.json", "web01.err", "web01.out",
                                                               "web01.status"]


def test_non_empty_directory_that_is_no_out_dir_is_refused_untouched(tmp_path):
    (tmp_path / "report.status").write_text("someone else's\n")
    with pytest.raises(UsageError, match=r"not empty and was not written by fleetrun .*report\.status"):
        OutDirRenderer(tmp_path, io.StringIO())
    assert [p.name for p in tmp_path.iterdir()] == ["report.status"]
    empty = tmp_path / "empty"
    empty.mkdir()
    OutDirRenderer(empty, io.StringIO())  # an empty directory is fine: it becomes an out-dir
    assert [p.name for p in empty.iterdir()] == [MARKER]


def test_marker_never_makes_fleetrun_delete_what_it_did_not_write(tmp_path):
    outside = tmp_path / "precious.out"
    outside.write_text("keep\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").mkdir()
    (out / "sub" / "x.out").write_text("keep\n")
    (out / "config.yaml").write_text("keep\n")
    (out / ".hidden.out").write_text("keep\n")
    names = ["../precious.out", str(outside), "sub/x.out", "config.yaml", ".hidden.out", 7, "gone.status"]
    (out / MARKER).write_text(json.dumps({"fleetrun_out_dir": 1, "files": names}))
    _run_into(out, [WEB1])
    assert outside.read_text() == (out / "sub" / "x.out").read_text() == (out / "config.yaml").read_text() == "keep\n"
    assert (out / ".hidden.out").exists() and (out / "web01.status").exists()


@pytest.mark.parametrize("marker", ["not json", '{"fleetrun_out_dir": 99, "files": []}', '{"files": "x"}', None])
def test_unreadable_marker_is_a_usage_error(tmp_path, marker):
    if marker is None:
        (tmp_path / MARKER).mkdir()
    else:
        (tmp_path / MARKER).write_text(marker)
    (tmp_path / "web01.status").write_text("{}")
    with pytest.raises(UsageError, match=f"cannot use .*{MARKER}"):
        OutDirRenderer(tmp_path, io.StringIO())
    assert (tmp_path / "web01.status").exists()


def test_previous_files_are_cleared_only_when_the_run_starts(tmp_path):
    _run_into(tmp_path, [WEB1, WEB2])
    OutDirRenderer(tmp_path, io.StringIO())  # a run that then stops with exit 2 (a bad key) before starting
    assert (tmp_path / "web02.status").exists(), "nothing lost by a run that never started"


def test_junit_report_shape(tmp_path):
    path = tmp_path / "report.xml"
    junit = JunitRenderer(path, io.StringIO(), suite="fleetrun exec", properties={"command": "uptime"})
    junit.on_start([WEB1, WEB2, ODD])
    stderr = b"first\n" + b"x" * 10_000 + b"\nlast \x1b\x00\n"
    junit.on_result(HostResult(WEB2, Outcome.FAILED, exit_code=3, stderr=stderr, error="exit status 3", duration=0.25))
    junit.on_result(HostResult(ODD, Outcome.UNREACHABLE, error="connection refused by 10.0.0.3:22"))
    junit.on_result(HostResult(WEB1, Outcome.OK, exit_code=0, duration=1.0))
    junit.on_finish(SUMMARY)

    root = ET.parse(path).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "3"
    (suite,) = root.findall("testsuite")
    assert {k: suite.get(k) for k in ("name", "tests", "failures", "errors", "skipped", "time")} == {
        "name": "fleetrun exec", "tests": "3", "failures": "1", "errors": "1", "skipped": "0", "time": "2.500"}
    assert suite.get("timestamp") and suite.get("hostname")
    assert suite.find("properties/property").attrib == {"name": "command", "value": "uptime"}
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["web01", "web02", "../etc/passwd"]  # inventory order
    assert all(c.get("classname") == "fleetrun exec" and float(c.get("time")) >= 0 for c in cases)
    assert list(cases[0]) == []
    failure = cases[1].find("failure")
    assert failure.get("type") == "failed" and failure.get("message") == "failed: exit status 3"
    assert "exit code: 3" in failure.text and failure.text.endswith("last \ufffd\ufffd") and "first" not in failure.text
    error = cases[2].find("error")
    assert error.get("type") == "unreachable" and "refused" in error.get("message")
    assert not [p for p in os.listdir(tmp_path) if p != "report.xml"]


def test_junit_needs_an_existing_directory(tmp_path):
    with pytest.raises(UsageError, match="--junit"):
        JunitRenderer(tmp_path / "missing" / "report.xml", io.StringIO())


def test_xml_text_drops_what_xml_cannot_carry():
    assert xml_text("ok\ttab\nnl \x00\x1b\ud800 é 😀") == "ok\ttab\nnl \ufffd\ufffd\ufffd é 😀"
