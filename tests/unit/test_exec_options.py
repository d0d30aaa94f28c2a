"""exec's become, stdin, --script, --env and --template options: every mistake is exit 2 before connecting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleetrun.cli_exec import exec_command

# 192.0.2.x (TEST-NET-1): never contacted, since each case stops before connecting; a connection would be a bug.
INVENTORY = """\
hosts:
  web01: {address: 192.0.2.1, vars: {role: web}}
  web02: {address: 192.0.2.2}
"""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetrun", "exec", "--no-journal", *args], capture_output=True,
                          text=True, cwd=cwd, stdin=subprocess.DEVNULL, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "FLEETRUN_SSH_CONFIG": "none"})


@pytest.mark.parametrize(("args", "message"), [
    (["-H", "all", "--become-user", "x", "--raw", "id"], "needs the wrapper --raw leaves out"),
    (["-H", "all", "-K", "id"], "-K/--ask-become-pass: no selected host runs its command through sudo"),
    (["-H", "all", "-b", "-K", "id"], "-K/--ask-become-pass needs a terminal"),
    (["-H", "all", "--script", "s.sh", "--raw"], "--script needs the wrapper"),
    (["-H", "all", "--script", "s.sh", "--become-pty", "-b"], "--become-pty makes a terminal"),
    (["-H", "all", "--script", "missing.sh"], "--script missing.sh: cannot read it"),
    (["-H", "all", "--env", "A=1", "--raw", "id"], "--env is exported by the wrapper"),
    (["-H", "all", "--env", "A", "id"], "--env 'A': write NAME=VALUE"),
    (["-H", "all", "--env", "FLEETRUN_HOST=x", "id"], "set by fleetrun itself"),
    (["-H", "all", "--template", "echo {vars.role}"], "--template: host web02 has no {vars.role}"),
    (["-H", "all", "--template", "echo {nope}"], "host web01 has no {nope}"),
    (["-H", "all"], "missing argument 'COMMAND...' (or --script FILE); see 'fleetrun exec --help'"),
])
def test_mistakes_are_exit_2_with_one_line(tmp_path, args, message):
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    (tmp_path / "s.sh").write_text("#!/bin/sh\necho hi\n")
    done = run(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and done.stdout == ""
    if "Usage:" not in done.stderr:  # click's own usage errors keep click's layout
        assert done.stderr.startswith("fleetrun: error: ") and len(done.stderr.strip().splitlines()) == 1


def parse(*args: str) -> dict[str, object]:
    with exec_command.make_context("exec", list(args)) as context:
        return dict(context.params)


def test_become_option_names_and_defaults():
    assert parse("-H", "web", "--sudo", "id")["become"] is True
    params = parse("-H", "web", "-b", "-K", "--become-pty", "-n", "--env", "A=1", "--env", "B=2", "id")
    assert params["ask_become_pass"] and params["become_pty"] and params["no_stdin"]
    assert params["env_options"] == ("A=1", "B=2") and params["become_timeout"] == 15.0
    assert parse("-H", "web", "id")["become"] is False


def test_script_words_are_its_arguments():
    params = parse("-H", "web", "--script", "deploy.sh", "a b", "--c")
    assert params["script_path"] == "deploy.sh" and params["command"] == "a b --c"
