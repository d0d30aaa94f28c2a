"""TAB completion through click's own completion environment, the installed scripts, and real bash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fleetrun.cli import main
from fleetrun.completion import split_last_atom

INVENTORY = """\
hosts:
  web01:
  web02:
  db01:
  wiki:
groups:
  web: [web01, web02]
  workers: [wiki]
  db: [db01]
"""


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEETRUN_INVENTORY", raising=False)
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    return tmp_path


def complete(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, line: str) -> list[str]:
    """What bash would be offered for the last word of `line` (a trailing space: a new, empty word)."""
    words = line.split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    monkeypatch.setenv("_FLEETRUN_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", line)
    monkeypatch.setenv("COMP_CWORD", str(cword))
    with pytest.raises(SystemExit) as done:
        main([])
    captured = capsys.readouterr()
    assert (done.value.code, captured.err) == (0, "")
    return [item.split(",", 1)[1] for item in captured.out.splitlines() if item]


def test_h_completes_groups_then_hosts(capsys, monkeypatch, here):
    assert complete(capsys, monkeypatch, "fleetrun exec -H w") == ["web", "workers", "web01", "web02", "wiki"]
    assert complete(capsys, monkeypatch, "fleetrun exec -H we") == ["web", "web01", "web02"]
    assert complete(capsys, monkeypatch, "fleetrun exec -H ")[:2] == ["all", "web"]
    assert complete(capsys, monkeypatch, "fleetrun push a b --hosts d") == ["db", "db01"]


@pytest.mark.parametrize(("word", "offered"), [
    ("web,d", ["web,db", "web,db01"]),
    ("web&w", ["web&web", "web&workers", "web&web01", "web&web02", "web&wiki"]),
    ("!d", ["!db", "!db01"]),
    ("all!web0", ["all!web01", "all!web02"]),
    ("web[01-02],d", ["web[01-02],db", "web[01-02],db01"]),
    ("web:&d", ["web:&db", "web:&db01"]),  # Ansible's syntax
    ("web:!wi", ["web:!wiki"]),
    ("~web", []),
])
def test_after_an_operator_the_next_atom_is_completed(capsys, monkeypatch, here, word, offered):
    assert complete(capsys, monkeypatch, f"fleetrun exec -H {word}") == offered


def test_exclude_and_the_hosts_argument_complete_too(capsys, monkeypatch, here):
    assert complete(capsys, monkeypatch, "fleetrun exec true -H all -x db") == ["db", "db01"]
    assert complete(capsys, monkeypatch, "fleetrun hosts wi") == ["wiki"]
    assert complete(capsys, monkeypatch, "fleetrun hosts -H 'web,d") == ["web,db", "web,db01"]


def test_commands_options_and_host_lists(capsys, monkeypatch, here):
    assert complete(capsys, monkeypatch, "fleetrun ex") == ["exec"]
    assert complete(capsys, monkeypatch, "fleetrun exec --fo") == ["--forward-agent", "--forks", "--format"]
    assert "--pick" in complete(capsys, monkeypatch, "fleetrun exec --")
    (here / "canaries.txt").write_text("web01\n")
    assert complete(capsys, monkeypatch, "fleetrun exec -H ^can") == ["^canaries.txt"]
    assert complete(capsys, monkeypatch, "fleetrun exec -H db,@ca") == ["db,@canaries.txt"]


def test_the_inventory_given_on_the_line_or_in_the_defaults_file_is_used(capsys, monkeypatch, here, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("hosts:\n  wonder1:\n")
    assert complete(capsys, monkeypatch, f"fleetrun exec -i {other} -H w") == ["wonder1"]
    (tmp_path / "defaults.yaml").write_text(f"inventory: {other}\n")
    assert complete(capsys, monkeypatch, f"fleetrun --config {tmp_path / 'defaults.yaml'} exec -H w") == ["wonder1"]
    monkeypatch.setenv("FLEETRUN_CONFIG", str(tmp_path / "defaults.yaml"))
    assert complete(capsys, monkeypatch, "fleetrun exec -H w") == ["wonder1"]
    monkeypatch.setenv("FLEETRUN_INVENTORY", str(here / "inventory.yaml"))  # the environment beats the file
    assert complete(capsys, monkeypatch, "fleetrun exec -H wi") == ["wiki"]


def test_no_inventory_or_a_broken_one_completes_nothing_and_prints_nothing(capsys, monkeypatch, here):
    (here / "inventory.yaml").unlink()
    assert complete(capsys, monkeypatch, "fleetrun exec -H w") == []
    (here / "inventory.yaml").write_text("hosts: [\n")
    assert complete(capsys, monkeypatch, "fleetrun exec -H w") == []
    (here / "bad.yaml").write_text("froks: 1\n")
    assert complete(capsys, monkeypatch, "fleetrun --config bad.yaml exec -H w") == []


def test_split_last_atom():
    assert split_last_atom("web&pr") == ("web&", "pr")
    assert split_last_atom("web[01,02]") == ("", "web[01,02]")
    assert split_last_atom("a,b!c") == ("a,b!", "c")
    assert split_last_atom("") == ("", "")


def big_inventory(path: Path, count: int) -> Path:
    path.write_text("hosts:\n" + "".join(f"  web{i:04d}:\n" for i in range(count))
                    + "groups:\n  web: [" + ", ".join(f"web{i:04d}" for i in range(count)) + "]\n")
    return path


def test_completing_imports_no_paramiko(tmp_path):
    """A TAB runs fleetrun: it must not load the SSH stack (and with it cryptography) to offer names."""
    big_inventory(tmp_path / "inventory.yaml", 1000)
    probe = ("import sys, runpy\n"
             "try:\n    runpy.run_module('fleetrun', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "sys.stderr.write('paramiko loaded\\n' if 'paramiko' in sys.modules else 'no paramiko\\n')\n")
    env = {**os.environ, "_FLEETRUN_COMPLETE": "bash_complete", "COMP_WORDS": "fleetrun exec -H web000",
           "COMP_CWORD": "3", "FLEETRUN_CONFIG": "none"}
    env.pop("FLEETRUN_INVENTORY", None)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    elapsed = time.monotonic() - started
    assert done.stderr == "no paramiko\n"
    assert done.stdout.splitlines()[:2] == ["plain,web0000", "plain,web0001"] and len(done.stdout.splitlines()) == 10
    print(f"completion over 1000 hosts took {elapsed:.2f} s")  # measured, not asserted: the machine is shared


# --- the scripts ----------------------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "BASH_COMPLETION_USER_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "home"


@pytest.mark.parametrize(("shell", "where", "marker"), [
    ("bash", ".local/share/bash-completion/completions/fleetrun", "complete -o nosort -F _fleetrun_completion"),
    ("zsh", ".local/share/zsh/site-functions/_fleetrun", "#compdef fleetrun"),
    ("fish", ".config/fish/completions/fleetrun.fish", "complete --no-files --command fleetrun"),
])
def test_install_completion_writes_where_the_shell_loads_it(capsys, home, shell, where, marker):
    with pytest.raises(SystemExit) as done:
        main(["--install-completion", shell])
    captured = capsys.readouterr()
    assert done.value.code == 0 and captured.out == ""
    installed = home / where
    assert captured.err.startswith(f"wrote {installed}\n")
    assert marker in installed.read_text() and "_FLEETRUN_COMPLETE" in installed.read_text()
    assert oct(installed.stat().st_mode & 0o777) == "0o644"
    with pytest.raises(SystemExit):
        main(["--show-completion", shell])
    assert capsys.readouterr().out == installed.read_text()


def test_install_honours_xdg_and_bash_completion_user_dir(capsys, home, monkeypatch, tmp_path):
    monkeypatch.setenv("BASH_COMPLETION_USER_DIR", str(tmp_path / "bc"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    for shell in ("bash", "fish"):
        with pytest.raises(SystemExit):
            main(["--install-completion", shell])
    capsys.readouterr()
    assert (tmp_path / "bc" / "completions" / "fleetrun").is_file()
    assert (tmp_path / "cfg" / "fish" / "completions" / "fleetrun.fish").is_file()


def test_a_bad_shell_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--install-completion", "tcsh"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith("fleetrun: error: invalid value for '--install-completion'")


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_real_bash_gets_the_names_from_the_script(here, tmp_path):
    """The script bash sources, run by bash itself: COMP_WORDS in, COMPREPLY out (values with commas intact)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "FLEETRUN_CONFIG": "none"}
    script = ('source <(fleetrun --show-completion bash)\n'
              'COMP_WORDS=(fleetrun exec -H "web,d"); COMP_CWORD=3; _fleetrun_completion fleetrun\n'
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    done = subprocess.run(["bash", "-c", script], cwd=here, env=env, capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "web,db\nweb,db01\n", "")
