"""--format json: JSON Lines, one object per host as it finishes, then one summary object."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from fleetrun.models import Host, HostResult, OutputLine, RunSummary
from fleetrun.output.base import decode

# Bump when a field changes meaning or disappears; adding a field keeps the version.
SCHEMA = "fleetrun/1"


def result_record(result: HostResult, *, outputs: bool = True) -> dict[str, Any]:
    """The JSON object for one host; pinned by tests/unit/test_json_contract.py. Without `outputs`, no
    stdout/stderr keys (--out-dir's .status): a spilled output is then not even read back."""
    record = {
        "schema": SCHEMA,
        "type": "host",
        "host": result.host.name,
        "address": result.host.address,
        "port": result.host.port,
        "status": result.outcome.value,
        "exit_code": result.exit_code,
        "signal": result.signal,
        "stdout": decode(result.output("stdout")) if outputs else None,
        "stderr": decode(result.output("stderr")) if outputs else None,
        "stdout_truncated": result.stdout_truncated,
        "stderr_truncated": result.stderr_truncated,
        "duration": round(result.duration, 3),
        "error": result.error,
        "changed": result.changed,
        "details": list(result.details),
        "host_key_verified": result.host_key_verified,
        "reason": result.reason,
        "become": None if result.become is None else {"user": result.become.user, "status": result.become.status},
    }
    if not outputs:
        del record["stdout"], record["stderr"]
    return record


def inventory_record(host: Host, local_user: str) -> str:
    """`fleetrun hosts --format json`: one JSON line per host, as the inventory resolved it (no connection).

    Pinned by tests/unit/test_cli_help_and_hosts.py. `user` is the one fleetrun logs in as (the local user
    when the inventory sets none); `vars` are the host's merged variables.
    """
    record = {
        "schema": SCHEMA,
        "type": "inventory_host",
        "name": host.name,
        "address": host.address,
        "port": host.port,
        "user": host.user or local_user,
        "groups": list(host.groups),
        "vars": dict(host.vars),
    }
    # default=str: an inventory value YAML typed as something JSON lacks still prints (as its text).
    return json.dumps(record, ensure_ascii=True, default=str) + "\n"


def summary_record(summary: RunSummary, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The closing JSON object: counts, exit status, and how a rolling run went (batches, why it stopped).

    `extra` adds fields after those: a shard run's {"shard": …}, a merged run's {"merged": …} (issue 13)."""
    stopped = summary.stopped
    return {
        "schema": SCHEMA,
        "type": "summary",
        "total": summary.total,
        "counts": {outcome.value: count for outcome, count in summary.counts.items() if count},
        "elapsed": round(summary.elapsed, 3),
        "exit_status": int(summary.exit_status),
        "interrupted": summary.interrupted,
        "changed": summary.changed,
        "unchanged": summary.unchanged,
        "batches": [{"index": batch.index, "size": batch.size,
                     "counts": {outcome.value: count for outcome, count in batch.counts.items() if count}}
                    for batch in summary.batches],
        "stopped": None if stopped is None else {"reason": stopped.reason, "after_batch": stopped.after_batch,
                                                 "message": stopped.message},
        **(extra or {}),
    }


class JsonRenderer:
    wants_lines = False
    wants_started = False

    def __init__(self, out: TextIO, summary_extra: Mapping[str, Any] | None = None) -> None:
        self.out = out
        self.summary_extra = summary_extra

    def on_start(self, hosts: Sequence[Host]) -> None:
        pass

    def on_started(self, host: Host) -> None:
        pass

    def on_line(self, line: OutputLine) -> None:
        pass

    def on_result(self, result: HostResult) -> None:
        self._write(result_record(result))

    def on_finish(self, summary: RunSummary) -> None:
        self._write(summary_record(summary, self.summary_extra))

    def _write(self, record: dict[str, Any]) -> None:
        # ensure_ascii keeps each record one line of plain ASCII whatever bytes the host sent.
        self.out.write(json.dumps(record, ensure_ascii=True) + "\n")
        self.out.flush()
