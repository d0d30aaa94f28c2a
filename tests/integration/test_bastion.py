"""Bastions against the lab: one shared connection per gateway, chains in order, failures named, clean teardown.

Every target here has a name only the bastion can resolve (tests/integration/bastion.py), so a host that
answers was reached through the bastion.
"""

from __future__ import annotations

import pytest
from bastion import make_bastions

pytestmark = pytest.mark.integration


def test_20_hosts_through_one_bastion_share_one_login(make_lab, tmp_path):
    fleet = make_bastions(make_lab, tmp_path / "work", 20)
    inventory = fleet.inventory(tmp_path / "inv.yaml")
    run = fleet.run("exec", "-i", str(inventory), "echo $FLEETRUN_LAB_HOST", "-H", "t*", "--format", "json")
    assert run.code == 0, run.out + run.err
    hosts, summary = run.json()
    assert sorted(hosts) == sorted(fleet.names) and summary["counts"]["ok"] == 20
    for name, lab_host in fleet.names.items():
        assert hosts[name]["stdout"].strip() == lab_host.name
    assert fleet.accepted() == 1, fleet.log()
    assert "Disconnecting" not in fleet.log() and "nonexistent channel" not in fleet.log()


def test_the_targets_cannot_be_reached_without_the_bastion(make_lab, tmp_path):
    fleet = make_bastions(make_lab, tmp_path / "work", 2)
    inventory = fleet.inventory(tmp_path / "inv.yaml")
    run = fleet.run("exec", "-i", str(inventory), "true", "-H", "t*", "-J", "none", "--format", "json")
    hosts, _ = run.json()
    assert run.code == 4
    assert all("cannot resolve" in record["error"] for record in hosts.values()), hosts


def test_max_sessions_1_on_the_bastion_does_not_limit_forwarded_channels(make_lab, tmp_path):
    # sshd_config(5): MaxSessions counts shell, login and subsystem sessions, not forwarded channels.
    fleet = make_bastions(make_lab, tmp_path / "work", 20, bastion_config={"b1": "MaxSessions 1\n"})
    inventory = fleet.inventory(tmp_path / "inv.yaml")
    run = fleet.run("exec", "-i", str(inventory), "true", "-H", "t*", "--forks", "20")
    assert run.code == 0, run.out + run.err
    assert fleet.accepted() == 1


def test_300_hosts_through_one_bastion_at_64_forks(make_lab, tmp_path):
    # The teardown of research §0.1: closing a tunnelled transport and then its channel the naive way makes
    # sshd drop the whole bastion connection after a dozen hosts ("referred to nonexistent channel").
    fleet = make_bastions(make_lab, tmp_path / "work", 300)
    inventory = fleet.inventory(tmp_path / "inv.yaml")
    run = fleet.run("exec", "-i", str(inventory), "true", "-H", "t*", "--forks", "64", "--format", "json",
                    timeout=600)
    hosts, summary = run.json()
    assert run.code == 0, [r["error"] for r in hosts.values() if r["status"] != "ok"][:5]
    assert summary["counts"]["ok"] == 300
    log = fleet.log()
    assert fleet.accepted() == 1
    assert "Disconnecting" not in log and "nonexistent channel" not in log and "bad id" not in log, log[-2000:]
