"""The top-level --help lists every exit status; `fleetrun hosts` takes -H and prints a pinned JSON record."""

from __future__ import annotations

import json
import re

import pytest

from fleetrun.cli import main
from fleetrun.status import PRECEDENCE, ExitStatus

INVENTORY = """\
defaults: {user: deploy}
hosts:
  web01: {address: 10.0.0.1, vars: {role: frontend, weight: 2}}
  web02: {address: 10.0.0.2, port: 2222, user: admin}
  db01: {address: 10.0.0.9, vars: {since: 2024-01-05}}
groups:
  web: [web01, web02]
  db: {hosts: [db01], vars: {tier: 1}}
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


@pytest.fixture
def inventory(tmp_path, monkeypatch):
    monkeypatch.delenv("FLEETRUN_INVENTORY", raising=False)
    path = tmp_path / "inventory.yaml"
    path.write_text(INVENTORY)
    return str(path)


def test_help_lists_every_exit_status_and_their_precedence(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    listed = {int(number) for number in re.findall(r"^\s+(\d+)\s{2,}\S", out, re.MULTILINE)}
    assert listed == {int(status) for status in ExitStatus}
    order = re.search(r"the first in this order wins: ([\d, ]+)\)", out)
    assert order is not None
    assert [int(n) for n in order.group(1).split(", ")] == [int(status) for status in PRECEDENCE]


def test_hosts_takes_h_like_the_other_commands_and_the_positional_still_works(capsys, inventory):
    by_option = run(capsys, "hosts", "-i", inventory, "-H", "web", "--names")
    by_argument = run(capsys, "hosts", "web", "-i", inventory, "--names")
    assert by_option == by_argument == (0, "web01\nweb02\n", "")
    assert run(capsys, "hosts", "-i", inventory, "--names")[1].split() == ["web01", "web02", "db01"]  # default all


def test_hosts_refuses_two_different_patterns_and_names_with_json(capsys, inventory):
    code, out, err = run(capsys, "hosts", "web", "-i", inventory, "-H", "db")
    assert code == 2 and out == "" and "'web'" in err and "'db'" in err and len(err.splitlines()) == 1
    code, _, err = run(capsys, "hosts", "-i", inventory, "--names", "--format", "json")
    assert code == 2 and "--names" in err


def test_hosts_json_contract_is_pinned(capsys, inventory, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "me")
    code, out, _ = run(capsys, "hosts", "-i", inventory, "-H", "all", "--format", "json")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert records == [
        {"schema": "fleetrun/1", "type": "inventory_host", "name": "web01", "address": "10.0.0.1", "port": 22,
         "user": "deploy", "groups": ["web"], "vars": {"role": "frontend", "weight": 2}},
        {"schema": "fleetrun/1", "type": "inventory_host", "name": "web02", "address": "10.0.0.2", "port": 2222,
         "user": "admin", "groups": ["web"], "vars": {}},
        {"schema": "fleetrun/1", "type": "inventory_host", "name": "db01", "address": "10.0.0.9", "port": 22,
         "user": "deploy", "groups": ["db"], "vars": {"tier": 1, "since": "2024-01-05"}},
    ]


def test_hosts_json_user_is_the_local_one_when_the_inventory_sets_none(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "operator")
    path = tmp_path / "inv.yaml"
    path.write_text("hosts:\n  h1: {address: 127.0.0.1}\n")
    _, out, _ = run(capsys, "hosts", "-i", str(path), "--format", "json")
    assert json.loads(out)["user"] == "operator"


def test_hosts_with_a_pattern_that_selects_nothing_is_exit_2(capsys, inventory):
    code, out, err = run(capsys, "hosts", "-i", inventory, "-H", "nosuch")
    assert code == 2 and out == "" and "nosuch" in err
