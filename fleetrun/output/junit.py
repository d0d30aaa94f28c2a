"""--junit FILE: a JUnit XML report, one testcase per host, so CI shows a fleet step like a test run."""

from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TextIO

from fleetrun.errors import UsageError
from fleetrun.models import Host, HostResult, Outcome, OutputLine, RunSummary
from fleetrun.output.base import decode, status_text
from fleetrun.output.outdir import write_atomic

STDERR_TAIL = 4096  # characters of stderr kept per failing host: the end says why, and reports stay small

# Characters XML 1.0 cannot carry at all, even escaped; a host's output may hold any byte.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# Failures are the command's own doing; errors are the fleet's (could not reach or trust the host);
# hosts never started are skipped. CI systems count all three apart.
_KIND: Mapping[Outcome, str] = {
    Outcome.FAILED: "failure",
    Outcome.TIMEOUT: "failure",
    Outcome.UNREACHABLE: "error",
    Outcome.AUTH_FAILED: "error",
    Outcome.HOST_KEY: "error",
    Outcome.CANCELLED: "error",
    Outcome.NOT_STARTED: "skipped",
}


def xml_text(text: str) -> str:
    """`text` with the characters XML cannot represent replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", text)


@dataclass(frozen=True)
class _Case:
    name: str
    time: float
    outcome: Outcome
    message: str
    body: str


def _case(result: HostResult) -> _Case:
    if result.ok:
        return _Case(result.host.name, result.duration, result.outcome, "", "")
    message = status_text(result)
    if result.error:
        message += f": {result.error}"
    lines = [f"status: {status_text(result)}"]
    if result.exit_code is not None:
        lines.append(f"exit code: {result.exit_code}")
    if result.signal:
        lines.append(f"signal: SIG{result.signal}")
    stderr = decode(result.output_tail("stderr", STDERR_TAIL * 4))[-STDERR_TAIL:]  # never decode megabytes
    if stderr:
        lines += ["stderr (last lines):", stderr.rstrip("\n")]
    return _Case(result.host.name, result.duration, result.outcome, message, "\n".join(lines))


def report(cases: Sequence[_Case], summary: RunSummary, *, suite: str, properties: Mapping[str, str],
           timestamp: datetime) -> ET.Element:
    """The <testsuites> tree, in the shape Jenkins, GitLab and GitHub reporters read."""
    kinds = [_KIND.get(case.outcome) for case in cases]
    counts = {kind: str(kinds.count(kind)) for kind in ("failure", "error", "skipped")}
    totals = {"name": suite, "tests": str(len(cases)), "failures": counts["failure"], "errors": counts["error"],
              "skipped": counts["skipped"], "time": f"{summary.elapsed:.3f}"}
    root = ET.Element("testsuites", totals)
    attributes = {**totals, "timestamp": timestamp.isoformat(timespec="seconds"), "hostname": socket.gethostname()}
    suite_element = ET.SubElement(root, "testsuite", attributes)
    if properties:
        element = ET.SubElement(suite_element, "properties")
        for name, value in properties.items():
            ET.SubElement(element, "property", {"name": name, "value": xml_text(value)})
    for case, kind in zip(cases, kinds, strict=True):
        testcase = ET.SubElement(suite_element, "testcase",
                                 {"name": xml_text(case.name), "classname": suite, "time": f"{case.time:.3f}"})
        if kind is not None:
            child = ET.SubElement(testcase, kind, {"message": xml_text(case.message), "type": case.outcome.value})
            child.text = xml_text(case.body)
    return root


class JunitRenderer:
    wants_lines = False
    wants_started = False

    def __init__(self, path: str | Path, err: TextIO, *, suite: str = "fleetrun",
                 properties: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.err = err
        if not self.path.parent.is_dir():
            raise UsageError(f"--junit {path}: directory {self.path.parent} does not exist")
        self.suite = suite
        self.properties = dict(properties or {})
        self.order: dict[str, int] = {}
        self.cases: list[_Case] = []  # a few small strings per host, not its output
        self.timestamp = datetime.now()

    def on_start(self, hosts: Sequence[Host]) -> None:
        self.order = {host.name: index for index, host in enumerate(hosts)}
        self.timestamp = datetime.now()

    def on_started(self, host: Host) -> None:
        pass

    def on_line(self, line: OutputLine) -> None:
        pass

    def on_result(self, result: HostResult) -> None:
        self.cases.append(_case(result))

    def on_finish(self, summary: RunSummary) -> None:
        cases = sorted(self.cases, key=lambda case: self.order.get(case.name, len(self.order)))
        root = report(cases, summary, suite=self.suite, properties=self.properties, timestamp=self.timestamp)
        ET.indent(root)
        try:
            write_atomic(self.path, ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")
        except OSError as error:  # the run itself is over and reported; its exit status stays the hosts' own
            self.err.write(f"fleetrun: warning: --junit: cannot write {self.path}: {error.strerror or error}\n")
            self.err.flush()
