"""`fleetrun exec` command words (joined as ssh joins them), the wrapper's text, and the table's whitespace."""

from __future__ import annotations

import io
import shlex

import click
import pytest

from fleetrun.cli_exec import exec_command
from fleetrun.exec_task import _stopped
from fleetrun.models import Host, HostResult, Outcome, RunSummary
from fleetrun.output.table import TableRenderer
from fleetrun.runner import RunOptions
from fleetrun.ssh.wrapper import wrap_command, wrapper_script
from fleetrun.status import ExitStatus


def parse(*args: str) -> dict[str, object]:
    with exec_command.make_context("exec", list(args)) as context:
        return dict(context.params)


@pytest.mark.parametrize(
    ("args", "command", "pattern"),
    [
        (["-H", "web", "echo", "a", "b"], "echo a b", "web"),  # words joined by single spaces, as ssh does
        (["-H", "all", "ls", "-l"], "ls -l", "all"),  # after the first word, all is the command's
        (["-H", "all", "grep", "-v", "-H", "x"], "grep -v -H x", "all"),
        (["--hosts=web", "--", "ls", "-l"], "ls -l", "web"),
        (["-Hweb", "-f", "3", "df", "-h", "--format", "json"], "df -h --format json", "web"),
        (["df -h", "-H", "web"], "df -h", "web"),  # the quoted form, options after it
        (["-i", "inv.yaml", "echo $HOME", "--hosts", "all", "--format", "json"], "echo $HOME", "all"),
        (["-H", "web", "echo  two   spaces"], "echo  two   spaces", "web"),  # one word is sent as it is
    ],
)
def test_command_words(args, command, pattern):
    params = parse(*args)
    assert (params["command"], params["pattern"]) == (command, pattern)


def test_options_before_a_command_word_still_count():
    params = parse("-H", "web", "-t", "5", "--format", "stream", "uptime")
    assert params["timeout"] == 5 and params["output_format"] == "stream" and params["command"] == "uptime"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ls", "-l", "-H", "web"], "No such option '-l': put the options first"),
        (["echo", "a", "b", "-H", "web"], "must be one quoted word, not 3 (echo a b)"),
        (["-H", "web"], "Missing argument 'COMMAND...'"),
    ],
)
def test_ambiguous_or_missing_command_is_a_usage_error(args, message):
    with pytest.raises(click.UsageError) as error:
        parse(*args)
    assert message in error.value.format_message()


def test_wrapper_is_one_exec_line_and_carries_the_command_untouched():
    command = "echo 'it''s' \"$HOME\" \\n; exit 137"
    words = shlex.split(wrap_command(command))
    assert words[:3] == ["exec", "sh", "-c"] and words[4:] == ["fleetrun", command]
    assert words[3] == wrapper_script()
    assert "\n" not in wrap_command(command.replace("\\n", ""))  # one line: csh-family shells read it too
    assert words[3].startswith("L=$PPID; ") and words[3].endswith('unset IFS; exec "$N" -c "$1"')


def test_wrapper_takes_a_lifeline_and_a_new_process_group_for_later_callers():
    script = wrapper_script(lifeline="$1", new_group=True)
    assert script.startswith("L=$1; ")
    # setsid only where the wrapper does not lead a group (it would fork there); checked on the host
    assert script.endswith('then exec setsid "$N" -c "$1"; fi; exec "$N" -c "$1"')
    assert "setsid" not in wrapper_script()


def test_table_keeps_the_first_lines_leading_whitespace():
    out = io.StringIO()
    table = TableRenderer(out)
    web = Host("web01", "10.0.0.1")
    table.on_start([web])
    table.on_result(HostResult(web, Outcome.OK, exit_code=0, stdout=b"   a\n   b\n"))
    table.on_finish(RunSummary(1, {Outcome.OK: 1}, 1.0, ExitStatus.OK))
    rows = out.getvalue().splitlines()[2:4]
    column = rows[0].index("   a")
    assert rows[1][column:] == "   b"
    assert rows[0].startswith("web01") and rows[0][column - 2:] == "     a"  # two spaces of gap, then "   a"


@pytest.mark.parametrize(
    ("ended", "reason", "raw", "outcome", "error"),
    [
        ("timeout", None, False, Outcome.TIMEOUT,
         "command timed out after 2.5 s; fleetrun disconnected and the host's wrapper kills it"),
        ("cancelled", "interrupted", False, Outcome.CANCELLED,
         "cancelled; fleetrun disconnected and the host's wrapper kills the command"),
        ("cancelled", "deadline", False, Outcome.TIMEOUT,
         "the run's --deadline was reached; fleetrun disconnected and the host's wrapper kills the command"),
        ("timeout", None, True, Outcome.TIMEOUT,
         "command timed out after 2.5 s; fleetrun disconnected, and without the wrapper (--raw) the command may "
         "still be running on the host"),
        ("cancelled", "terminated", True, Outcome.CANCELLED,
         "cancelled; fleetrun disconnected, and without the wrapper (--raw) the command may still be running on "
         "the host"),
        ("cancelled", "deadline", True, Outcome.TIMEOUT,
         "the run's --deadline was reached; fleetrun disconnected, and without the wrapper (--raw) the command "
         "may still be running on the host"),
    ],
)
def test_a_stopped_command_is_reported_as_what_fleetrun_knows(ended, reason, raw, outcome, error):
    assert _stopped(ended, RunOptions(timeout=2.5, raw=raw), reason) == (outcome, error)
