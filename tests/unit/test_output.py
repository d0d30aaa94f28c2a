"""Renderers with hand-made results: the table, the stream, and the pinned JSON contract."""

from __future__ import annotations

import io
import json

from fleetrun.models import BecomeStatus, Host, HostResult, Outcome, OutputLine, RunSummary
from fleetrun.output.json import SCHEMA, JsonRenderer
from fleetrun.output.stream import StreamRenderer
from fleetrun.output.table import TableRenderer
from fleetrun.status import ExitStatus

WEB1 = Host("web01", "10.0.0.1")
WEB2 = Host("web02", "10.0.0.2", port=2222)


def summary(**counts: int) -> RunSummary:
    by_outcome = {Outcome(name.replace("_", " ")): n for name, n in counts.items()}
    status = ExitStatus.COMMAND_FAILED
    return RunSummary(total=sum(counts.values()), counts=by_outcome, elapsed=3.42, exit_status=status)


def test_table_is_in_inventory_order_with_summary():
    out = io.StringIO()
    table = TableRenderer(out)
    table.on_start([WEB1, WEB2])
    failed = HostResult(WEB2, Outcome.FAILED, exit_code=3, stderr=b"boom\n", error="exit status 3", duration=0.5)
    table.on_result(failed)
    table.on_result(HostResult(WEB1, Outcome.OK, exit_code=0, stdout=b"a\nb\nc\nd\ne\n", duration=1.25))
    table.on_finish(summary(ok=1, failed=1))
    text = out.getvalue()
    assert text.index("web01") < text.index("web02")
    assert "… (2 more lines)" in text and "boom" in text and "exit status 3" in text
    assert text.rstrip().endswith("1 ok, 1 failed in 3.4 s")


def test_table_verbose_shows_everything():
    out = io.StringIO()
    table = TableRenderer(out, verbose=True)
    table.on_start([WEB1])
    table.on_result(HostResult(WEB1, Outcome.OK, exit_code=0, stdout=b"1\n2\n3\n4\n5\n"))
    table.on_finish(summary(ok=1))
    assert "5" in out.getvalue() and "more lines" not in out.getvalue()


def test_stream_lines_whole_and_prefixed():
    out, err = io.StringIO(), io.StringIO()
    stream = StreamRenderer(out, err)
    stream.on_start([WEB1, WEB2])
    stream.on_line(OutputLine(WEB1, "stdout", b"hello \xff"))
    stream.on_line(OutputLine(WEB2, "stderr", b"oops"))
    stream.on_result(HostResult(WEB2, Outcome.FAILED, exit_code=1, error="exit status 1"))
    stream.on_finish(summary(failed=1))
    assert out.getvalue() == "web01 | hello \ufffd\n"
    assert "web02 | oops\n" in err.getvalue() and "web02 ! failed: exit status 1" in err.getvalue()


def test_json_contract_is_pinned():
    out = io.StringIO()
    renderer = JsonRenderer(out)
    renderer.on_result(HostResult(WEB2, Outcome.FAILED, exit_code=2, stdout=b"\xffok\n", error="exit status 2",
                                  duration=1.23456, host_key_verified=True))
    renderer.on_result(HostResult(WEB1, Outcome.OK, exit_code=0, host_key_verified=False))
    renderer.on_result(HostResult(WEB1, Outcome.UNREACHABLE, error="connection refused by 10.0.0.1:22"))
    renderer.on_finish(summary(failed=1))
    host, unverified, unreachable, final = (json.loads(line) for line in out.getvalue().splitlines())
    assert SCHEMA == "fleetrun/1"
    assert host == {
        "schema": "fleetrun/1", "type": "host", "host": "web02", "address": "10.0.0.2", "port": 2222,
        "status": "failed", "exit_code": 2, "signal": None, "stdout": "\ufffdok\n", "stderr": "",
        "stdout_truncated": False, "stderr_truncated": False, "duration": 1.235, "error": "exit status 2",
        "changed": None, "details": [], "host_key_verified": True, "reason": None, "become": None,
    }
    # false: connected without known_hosts vouching for the key; null: never got as far as the key.
    assert unverified["host_key_verified"] is False and unreachable["host_key_verified"] is None
    assert final == {"schema": "fleetrun/1", "type": "summary", "total": 1, "counts": {"failed": 1},
                     "elapsed": 3.42, "exit_status": 1, "interrupted": False, "changed": 0, "unchanged": 0,
                     "batches": [], "stopped": None}


def test_json_become_record_says_whom_and_how_sudo_went():
    out = io.StringIO()
    JsonRenderer(out).on_result(HostResult(WEB1, Outcome.AUTH_FAILED, error="sudo rejected the password",
                                           become=BecomeStatus("root", "rejected")))
    JsonRenderer(out).on_result(HostResult(WEB2, Outcome.UNREACHABLE, become=BecomeStatus("postgres", None)))
    rejected, unreached = (json.loads(line) for line in out.getvalue().splitlines())
    assert rejected["become"] == {"user": "root", "status": "rejected"}
    assert unreached["become"] == {"user": "postgres", "status": None}  # never got as far as sudo


def test_json_contract_for_a_stopped_rollout():
    from dataclasses import replace

    from fleetrun.models import BatchSummary, RolloutStop
    from fleetrun.output.base import summary_line

    out = io.StringIO()
    renderer = JsonRenderer(out)
    renderer.on_result(HostResult(WEB1, Outcome.NOT_STARTED, error="rollout stopped after batch 1",
                                  reason="rollout stopped"))
    stop = RolloutStop("max-fail", 1, "rollout stopped after batch 1: 1 failure > --max-fail 0")
    batches = (BatchSummary(1, 1, {Outcome.FAILED: 1, Outcome.OK: 0}), BatchSummary(2, 1, {Outcome.NOT_STARTED: 1}))
    final_summary = replace(summary(failed=1, not_started=1), batches=batches, stopped=stop)
    renderer.on_finish(final_summary)
    host, final = (json.loads(line) for line in out.getvalue().splitlines())
    assert host["status"] == "not started" and host["reason"] == "rollout stopped"
    assert final["batches"] == [{"index": 1, "size": 1, "counts": {"failed": 1}},
                                {"index": 2, "size": 1, "counts": {"not started": 1}}]
    assert final["stopped"] == {"reason": "max-fail", "after_batch": 1,
                                "message": "rollout stopped after batch 1: 1 failure > --max-fail 0"}
    assert summary_line(final_summary) == ("1 failed, 1 not started in 3.4 s; "
                                           "rollout stopped after batch 1: 1 failure > --max-fail 0")


def test_summary_line_says_what_ok_meant_for_transfers():
    from dataclasses import replace

    from fleetrun.output.base import summary_line

    base = summary(ok=5, failed=1)
    assert summary_line(replace(base, changed=2, unchanged=3)) == "5 ok (2 changed, 3 unchanged), 1 failed in 3.4 s"
    assert summary_line(replace(base, unchanged=5)) == "5 ok (5 unchanged), 1 failed in 3.4 s"
