"""The defaults file: found where XDG says, lowest precedence, shown by --help; every mistake is file:line, exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fleetrun.cli import main
from fleetrun.defaults import SETTINGS, config_path, load_defaults
from fleetrun.errors import InventoryError
from fleetrun.models import RunSummary
from fleetrun.status import ExitStatus

INVENTORY = "hosts:\n  web01: {user: own, connect_timeout: 30}\n  web02:\n"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


@pytest.fixture
def xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$XDG_CONFIG_HOME with an empty fleetrun/ in it, and an inventory in the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEETRUN_INVENTORY", raising=False)
    monkeypatch.setenv("FLEETRUN_SSH_CONFIG", "none")
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    (tmp_path / "xdg" / "fleetrun").mkdir(parents=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "fleetrun"


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[Any], Any]]:
    """The seam at the runner: what each run would have been given (hosts, RunOptions), without connecting."""
    seen: list[tuple[list[Any], Any]] = []

    def execute(hosts: Any, task: Any, options: Any, renderer: Any, err: Any, **_: Any) -> RunSummary:
        seen.append((list(hosts), options))
        return RunSummary(total=len(hosts), counts={}, elapsed=0.0, exit_status=ExitStatus.OK)

    monkeypatch.setattr("fleetrun.runner.execute", execute)
    return seen


def test_where_the_file_is_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert config_path(None) == (tmp_path / "home" / ".config" / "fleetrun" / "config.yaml", False)
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")  # the XDG spec: a relative path is ignored
    assert config_path(None) == (tmp_path / "home" / ".config" / "fleetrun" / "config.yaml", False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path(None) == (tmp_path / "xdg" / "fleetrun" / "config.yaml", False)
    monkeypatch.setenv("FLEETRUN_CONFIG", str(tmp_path / "mine.yaml"))
    assert config_path(None) == (tmp_path / "mine.yaml", True)
    assert config_path(str(tmp_path / "flag.yaml")) == (tmp_path / "flag.yaml", True)  # --config beats the env
    assert config_path("none") == (None, False)
    monkeypatch.setenv("FLEETRUN_CONFIG", "none")
    assert config_path(None) == (None, False)


def test_no_file_means_no_defaults(xdg: Path) -> None:
    assert load_defaults().values == {}


def test_values_are_applied_and_a_flag_beats_the_file(capsys, xdg, runs) -> None:
    (xdg / "config.yaml").write_text("forks: 7\ntimeout: 30\ndeadline: 300\nmax-output: 1M\nno_agent: true\n")
    assert run(capsys, "exec", "true", "-H", "all")[0] == 0
    options = runs[-1][1]
    assert (options.forks, options.timeout, options.deadline, options.max_output, options.use_agent) == \
        (7, 30.0, 300.0, 1 << 20, False)
    flags = ("-f", "3", "--timeout", "5", "--max-output", "2K", "--agent")
    assert run(capsys, "exec", "true", "-H", "all", *flags)[0] == 0
    options = runs[-1][1]
    assert (options.forks, options.timeout, options.max_output, options.use_agent) == (3, 5.0, 2048, True)


def test_format_and_progress_defaults(capsys, xdg, runs, monkeypatch) -> None:
    (xdg / "config.yaml").write_text("format: json\nno_progress: yes\n")
    made: list[dict[str, Any]] = []
    import fleetrun.cli_shared as cli

    real = cli._make_outputs
    monkeypatch.setattr(cli, "_make_outputs",
                        lambda params, *rest, **named: made.append(params) or real(params, *rest, **named))
    run(capsys, "exec", "true", "-H", "all")
    run(capsys, "push", "inventory.yaml", "/tmp/x", "-H", "all", "--format", "table", "--progress")
    assert [(p["output_format"], p["no_progress"]) for p in made] == [("json", True), ("table", False)]
    # `fleetrun hosts --format` is another option (table or json): the run format does not reach it
    assert run(capsys, "hosts")[1].startswith("HOST")


def test_per_host_settings_rank_below_the_inventory(capsys, xdg, runs) -> None:
    (xdg / "config.yaml").write_text("user: fromfile\nconnect_timeout: 4\nhost_key_checking: accept-new\n")
    run(capsys, "exec", "true", "-H", "all")
    hosts, options = runs[-1]
    assert [(h.name, h.user, h.connect_timeout) for h in hosts] == [("web01", "own", 30.0), ("web02", "fromfile", None)]
    assert (options.connect_timeout, options.host_key_checking) == (4.0, "accept-new")  # for hosts with none
    run(capsys, "exec", "true", "-H", "all", "-u", "flag", "--connect-timeout", "2", "--host-key-checking", "yes")
    hosts, options = runs[-1]
    assert [(h.user, h.connect_timeout) for h in hosts] == [("flag", 2.0), ("flag", 2.0)]  # flags beat everything
    assert options.host_key_checking == "yes"
    code, out, _ = run(capsys, "hosts", "--explain", "web02")
    assert code == 0 and any(line.split()[:2] == ["user", "fromfile"] and line.endswith(f"{xdg / 'config.yaml'}:1")
               for line in out.splitlines())


def test_environment_variables_beat_the_file(capsys, xdg, tmp_path, monkeypatch) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("hosts:\n  db1:\n")
    (xdg / "config.yaml").write_text(f"inventory: {other}\n")
    assert run(capsys, "hosts", "--names") == (0, "db1\n", "")
    monkeypatch.setenv("FLEETRUN_INVENTORY", str(tmp_path / "inventory.yaml"))
    assert run(capsys, "hosts", "--names") == (0, "web01\nweb02\n", "")
    assert run(capsys, "hosts", "--names", "-i", str(other)) == (0, "db1\n", "")


def test_paths_are_relative_to_the_file_and_lists_work(capsys, xdg) -> None:
    (xdg / "one.yaml").write_text("hosts:\n  a1:\n")
    (xdg / "two.yaml").write_text("hosts:\n  a2:\n")
    (xdg / "config.yaml").write_text("inventory: [one.yaml, two.yaml]\nssh_config: none\n")
    assert load_defaults().values == {"inventory": (str(xdg / "one.yaml"), str(xdg / "two.yaml")), "ssh_config": "none"}
    assert run(capsys, "hosts", "--names") == (0, "a1\na2\n", "")


def test_help_shows_the_defaults_in_effect(capsys, xdg, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert "[default: 64;" in run(capsys, "exec", "--help")[1]
    (xdg / "config.yaml").write_text("forks: 9\nconnect_timeout: 2.5\n")
    out = run(capsys, "exec", "--help")[1]
    assert "[default: 9;" in out and "[default: 2.5;" in out


def test_config_option_and_none(capsys, xdg, tmp_path, monkeypatch) -> None:
    (xdg / "config.yaml").write_text("froks: 1\n")  # broken: only read when nothing says otherwise
    mine = tmp_path / "mine.yaml"
    mine.write_text("inventory: other.yaml\n")
    (tmp_path / "other.yaml").write_text("hosts:\n  z9:\n")
    assert run(capsys, "--config", str(mine), "hosts", "--names") == (0, "z9\n", "")
    assert run(capsys, "--config", "none", "hosts", "--names") == (0, "web01\nweb02\n", "")
    monkeypatch.setenv("FLEETRUN_CONFIG", "none")
    assert run(capsys, "hosts", "--names") == (0, "web01\nweb02\n", "")
    code, _, err = run(capsys, "--config", str(tmp_path / "absent.yaml"), "hosts")
    assert code == 2 and err == (f"fleetrun: error: {tmp_path / 'absent.yaml'}: cannot read the defaults file "
                                 "(--config): No such file or directory\n")


@pytest.mark.parametrize(("text", "message"), [
    ("forks: 8\nfroks: 3\n", ":2: unknown key 'froks' (did you mean forks?); the keys are inventory,"),
    ("forks: many\n", ":1: forks must be a whole number, got 'many'"),
    ("forks: '8'\n", ":1: forks must be a whole number, got '8'"),
    ("forks: 0\n", ":1: forks must be a whole number from 1 to 4096, got '0'"),
    ("forks: 2.5\n", ":1: forks must be a whole number, got '2.5'"),
    ("timeout: -1\n", ":1: timeout must be a number of at least 0.1, got '-1'"),
    ("timeout: .inf\n", ":1: timeout must be a number of at least 0.1, got '.inf'"),
    ("no_progress: sometimes\n", ":1: no_progress must be true or false, got 'sometimes'"),
    ("format: xml\n", ":1: format must be one of table, gather, stream, json, got 'xml'"),
    ("host_key_checking: maybe\n", ":1: host_key_checking must be one of yes, accept-new, no, got 'maybe'"),
    ("max_output: lots\n", ":1: max_output must be a size like 4M, 512K or 1048576, got 'lots'"),
    ("user: [a, b]\n", ":1: user must be a single value, not a list or mapping"),
    ("inventory: [a, [b]]\n", ":1: inventory must be a list of single values"),
    ("\n\nforks: 3\nforks: 4\n", ":4: forks is set twice (first at line 3); keep one"),
    ("forks: 3\nconnect-timeout: 1\nconnect_timeout: 2\n", ":3: connect_timeout is set twice (first at line 2)"),
    ("- forks\n", ":1: the defaults file must be a mapping of option: value"),
    ("forks: 3\n  bad: [\n", ":2: invalid YAML"),
    ("password: hunter2\n", ":1: 'password' cannot be set here: the defaults file holds no secrets"),
    ("key_passphrase_env: KEYPASS\n", ":1: 'key_passphrase_env' cannot be set here"),
    ("ask-pass: true\n", ":1: 'ask_pass' cannot be set here"),
    ("become_password_file: /x\n", ":1: 'become_password_file' cannot be set here"),
    ("1: 2\n", ":1: a key must be an option name"),
])
def test_a_bad_file_is_exit_2_with_file_and_line(capsys, xdg, text, message) -> None:
    (xdg / "config.yaml").write_text(text)
    with pytest.raises(InventoryError) as caught:
        load_defaults()
    assert str(caught.value).startswith(f"{xdg / 'config.yaml'}{message}")
    code, out, err = run(capsys, "exec", "true", "-H", "all")
    assert (code, out) == (2, "") and err.startswith(f"fleetrun: error: {xdg / 'config.yaml'}{message}")
    assert err.count("\n") == 1 and "hunter2" not in err


def test_yaml_yes_and_no_and_nulls(xdg) -> None:
    (xdg / "config.yaml").write_text("host_key_checking: no\nno_agent: yes\nforks:\nuser: 'yes'\n")
    assert load_defaults().values == {"host_key_checking": "no", "no_agent": True, "user": "yes"}
    (xdg / "config.yaml").write_text("# only comments\n")
    assert load_defaults().values == {}


def test_every_setting_is_an_option_of_some_command() -> None:
    from fleetrun.cli import cli

    params = {param.name for command in [*cli.commands.values(), *cli.commands["inventory"].commands.values()]
              for param in command.params}  # type: ignore[attr-defined]
    assert {setting.param for setting in SETTINGS.values()} <= params


def test_the_lab_commands_do_not_read_the_file(capsys, xdg, tmp_path) -> None:
    (xdg / "config.yaml").write_text("froks: 1\n")  # broken, but `lab down` must still work
    code, _, err = run(capsys, "lab", "down", "--dir", str(tmp_path / "nolab"))
    assert code == 2 and "no lab in" in err and "froks" not in err
