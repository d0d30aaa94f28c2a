"""click's usage errors read like fleetrun's own: one `fleetrun: error:` line saying what to do, exit 2."""

from __future__ import annotations

import io

import pytest

from fleetrun.cli import main
from fleetrun.cli_shared import _make_outputs


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


@pytest.mark.parametrize(("args", "line"), [
    (("exec", "--bogus", "true", "-H", "all"),
     "no such option '--bogus' (did you mean --verbose or --user or --become-user?); see 'fleetrun exec --help'"),
    (("hosts", "--frmat", "json"), "no such option '--frmat' (did you mean --format?); see 'fleetrun hosts --help'"),
    (("exec", "-H", "all"), "missing argument 'COMMAND...' (or --script FILE); see 'fleetrun exec --help'"),
    (("push", "a"), "missing argument 'REMOTE'; usage: fleetrun push [OPTIONS] LOCAL REMOTE"),
    (("exec", "true"), "--hosts is required: name the hosts, a group or 'all' (only --retry-failed may go without it)"),
    (("exec", "a", "b", "-H", "all"),
     "-H/--hosts does not come before the command, so the command must be one quoted word, not 2 (a b): put the "
     "options first and the command words last, as with ssh (fleetrun exec -H web ls -l), or quote the command "
     "as one word ('ls -l'); see 'fleetrun exec --help'"),
    (("exec", "ls", "-l", "-H", "all"),
     "no such option '-l': put the options first and the command words last, as with ssh (fleetrun exec -H web "
     "ls -l), or quote the command as one word ('ls -l'); see 'fleetrun exec --help'"),
    (("exec", "true", "-H", "all", "--format", "yaml"),
     "invalid value for '--format': 'yaml' is not one of 'table', 'gather', 'stream', 'json'; "
     "see 'fleetrun exec --help'"),
    (("exec", "true", "-H", "all", "-f", "many"),
     "invalid value for '-f' / '--forks': 'many' is not a whole number; see 'fleetrun exec --help'"),
    (("exec", "true", "-H", "all", "-f", "0"),
     "invalid value for '-f' / '--forks': 0 is not from 1 to 4096; see 'fleetrun exec --help'"),
    (("exec", "true", "-H", "all", "--timeout", "soon"),
     "invalid value for '-t' / '--timeout': 'soon' is not a number; see 'fleetrun exec --help'"),
    (("exec", "true", "-H", "all", "--forks"), "option '--forks' requires an argument; see 'fleetrun exec --help'"),
    (("lab", "up", "-3"), "no such option '-3'; see 'fleetrun lab up --help'"),
    (("exce",), "no such command 'exce' (did you mean 'exec'?); see 'fleetrun --help'"),
    (("exec", "--config", "x.yaml"),
     "no such option '--config': --config goes before the command (fleetrun --config FILE exec …); "
     "see 'fleetrun exec --help'"),
])
def test_usage_errors_are_one_line_and_exit_2(capsys, args, line):
    assert run(capsys, *args) == (2, "", f"fleetrun: error: {line}\n")


def test_help_and_version_still_exit_0(capsys):
    code, out, err = run(capsys, "exec", "--help")
    assert code == 0 and out.startswith("Usage: fleetrun exec") and err == ""
    assert run(capsys, "--version")[0] == 0


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _params(**given: object) -> dict[str, object]:
    return {"quiet": False, "no_progress": False, "output_format": "table", "gather": False, "diff": False,
            "verbose": False, "out_dir": None, "junit": None, **given}


def test_quiet_on_a_terminal_still_shows_progress_and_no_progress_hides_it():
    _, _, progress, _ = _make_outputs(_params(quiet=True), io.StringIO(), FakeTty())
    assert progress is not None
    progress.stop()
    assert _make_outputs(_params(quiet=True, no_progress=True), io.StringIO(), FakeTty())[2] is None
    assert _make_outputs(_params(quiet=True), io.StringIO(), io.StringIO())[2] is None  # no terminal: never
