"""Exit statuses: the precedence, the outcome mapping, and the README's table."""

from __future__ import annotations

import re
from pathlib import Path

from fleetrun.models import Outcome
from fleetrun.status import ExitStatus, worst


def test_precedence():
    assert worst([]) is ExitStatus.OK
    assert worst([ExitStatus.COMMAND_FAILED, ExitStatus.TIMEOUT]) is ExitStatus.TIMEOUT
    assert worst([ExitStatus.TIMEOUT, ExitStatus.UNREACHABLE]) is ExitStatus.UNREACHABLE
    assert worst([ExitStatus.UNREACHABLE, ExitStatus.HOST_KEY, ExitStatus.OK]) is ExitStatus.HOST_KEY
    assert worst([ExitStatus.HOST_KEY, ExitStatus.INTERRUPTED]) is ExitStatus.INTERRUPTED
    assert worst([ExitStatus.INTERRUPTED, ExitStatus.TERMINATED]) is ExitStatus.TERMINATED
    assert worst([ExitStatus.HOST_KEY, ExitStatus.HANGUP, ExitStatus.OK]) is ExitStatus.HANGUP
    assert worst([ExitStatus.HANGUP, ExitStatus.INTERRUPTED]) is ExitStatus.INTERRUPTED
    assert int(ExitStatus.HANGUP) == 129  # 128 + SIGHUP, as a shell reports a process the hangup killed


def test_outcomes_map_to_statuses():
    assert Outcome.FAILED.exit_status is ExitStatus.COMMAND_FAILED
    assert Outcome.AUTH_FAILED.exit_status is ExitStatus.UNREACHABLE
    assert Outcome.HOST_KEY.exit_status is ExitStatus.HOST_KEY
    assert Outcome.TIMEOUT.exit_status is ExitStatus.TIMEOUT


def test_readme_documents_every_exit_status():
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = dict(re.findall(r"^\|\s*`(\d+)`\s*\|\s*([^|]+?)\s*\|", readme, re.MULTILINE))
    assert {int(code) for code in table} == {int(status) for status in ExitStatus}
