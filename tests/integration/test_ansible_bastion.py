"""An Ansible inventory's `-J` in `ansible_ssh_common_args` reaches its hosts through a real lab bastion."""

from __future__ import annotations

import pytest
from bastion import make_bastions

pytestmark = pytest.mark.integration


def test_jump_in_ansible_ssh_common_args_goes_through_the_bastion(make_lab, tmp_path):
    # The targets' names resolve only on the bastion (tests/integration/bastion.py): a host that answers was
    # reached through it, as the Ansible inventory says, with one login on the bastion for all of them.
    fleet = make_bastions(make_lab, tmp_path / "work", 4)
    bastion, port = fleet.bastion(), fleet.targets.hosts[0].port
    lines = ["[web]", *(f"{name} ansible_port={port}" for name in fleet.names),
             "[web:vars]",
             f"ansible_user={fleet.targets.user}",
             f"ansible_ssh_private_key_file={fleet.targets.client_key}",
             f"ansible_ssh_common_args='-J b1 -o UserKnownHostsFile={fleet.known_hosts}'",
             "[bastions]",
             f"b1 ansible_host={bastion.address} ansible_port={bastion.port} ansible_user={fleet.bastions['b1'].user} "
             f"ansible_ssh_private_key_file={fleet.bastions['b1'].client_key} "
             f"ansible_ssh_common_args='-o UserKnownHostsFile={fleet.known_hosts}'"]
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("\n".join(lines) + "\n")

    run = fleet.run("exec", "-i", str(inventory), "echo $FLEETRUN_LAB_HOST", "-H", "web", "--format", "json")
    assert run.code == 0, run.out + run.err
    hosts, summary = run.json()
    assert summary["counts"] == {"ok": 4}
    for name, lab_host in fleet.names.items():
        assert hosts[name]["stdout"].strip() == lab_host.name
    assert fleet.accepted() == 1, fleet.log()

    explained = fleet.run("hosts", "-i", str(inventory), "--explain", "t01.gw.test")
    assert explained.code == 0 and "b1" in explained.out, explained.out + explained.err
    # Without the jump the same inventory cannot reach them: the path really went through the bastion.
    direct = fleet.run("exec", "-i", str(inventory), "true", "-H", "web", "-J", "none", "--format", "json")
    assert direct.code == 4
    assert all("cannot resolve" in record["error"] for record in direct.json()[0].values())
