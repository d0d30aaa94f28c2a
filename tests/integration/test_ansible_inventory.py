"""Ansible inventories drive real runs: INI and directory inventories built from the lab reach its sshd hosts."""

from __future__ import annotations

import json
import sys

from fleet import fleetrun


def ini_for(lab, known_hosts: str) -> str:
    """The lab as an Ansible INI inventory: ansible_host/port/user/key per host, known_hosts as Ansible says it."""
    lines = ["[lab]"]
    for host in lab.hosts:
        lines.append(f"{host.name} ansible_host={host.address} ansible_port={host.port}")
    lines += ["[odd]", *(h.name for h in lab.hosts[0::2]), "[all:vars]", f"ansible_user={lab.user}",
              f"ansible_ssh_private_key_file={lab.client_key}", known_hosts, "ansible_ssh_timeout=10"]
    return "\n".join(lines) + "\n"


def test_ini_inventory_drives_exec_with_known_hosts_from_ssh_args(lab, tmp_path):
    inventory = tmp_path / "hosts"
    inventory.write_text(ini_for(lab, f"ansible_ssh_common_args='-o UserKnownHostsFile={lab.known_hosts}'"))
    run = fleetrun("exec", "-i", str(inventory), "echo $FLEETRUN_LAB_HOST", "-H", "lab:&odd:!lab01",
                   "--format", "json", home=tmp_path)
    assert run.code == 0, run.err
    hosts, summary = run.json()
    expected = [h.name for h in lab.hosts[2::2]]
    assert sorted(hosts) == sorted(expected)
    assert all(record["stdout"] == f"{name}\n" for name, record in hosts.items())
    assert summary["counts"] == {"ok": len(expected)}


def test_inventory_directory_with_group_vars_drives_exec(lab, tmp_path):
    directory = tmp_path / "inventory"
    (directory / "group_vars").mkdir(parents=True)
    (directory / "hosts.ini").write_text("\n".join(
        ["[lab]", *(f"{h.name} ansible_host={h.address}" for h in lab.hosts[:3])]) + "\n")
    (directory / "group_vars" / "all.yml").write_text(
        f"ansible_user: {lab.user}\nansible_port: {lab.hosts[0].port}\n"
        f"ansible_ssh_private_key_file: {lab.client_key}\nfleetrun_known_hosts: {lab.known_hosts}\n")
    run = fleetrun("exec", "-i", str(directory), "hostname >/dev/null; echo ok-$FLEETRUN_LAB_HOST", "-H", "lab[0:1]",
                   "--format", "json", home=tmp_path)
    assert run.code == 0, run.err
    hosts, _ = run.json()
    assert sorted(hosts) == ["lab01", "lab02"]


def test_without_known_hosts_the_ansible_inventory_host_key_is_refused(lab, tmp_path):
    inventory = tmp_path / "hosts"
    inventory.write_text(ini_for(lab, "ansible_ssh_common_args='-o StrictHostKeyChecking=no'"))
    run = fleetrun("exec", "-i", str(inventory), "true", "-H", "lab01", home=tmp_path)
    assert run.code == 5, run.err  # Ansible's StrictHostKeyChecking=no is not honoured: host keys stay checked
    assert "stricthostkeychecking=no" in run.err  # and fleetrun says it ignored it


def test_executable_inventory_drives_exec(lab, tmp_path):
    listing = {"lab": {"hosts": [h.name for h in lab.hosts[:2]],
                       "vars": {"ansible_user": lab.user, "ansible_ssh_private_key_file": str(lab.client_key),
                                "fleetrun_known_hosts": str(lab.known_hosts)}},
               "_meta": {"hostvars": {h.name: {"ansible_host": h.address, "ansible_port": h.port}
                                      for h in lab.hosts[:2]}}}
    script = tmp_path / "inventory.py"
    script.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps(listing))})\n")
    script.chmod(0o755)
    run = fleetrun("exec", "-i", str(script), "echo $FLEETRUN_LAB_HOST", "-H", "all", "--format", "json",
                   home=tmp_path)
    assert run.code == 0, run.err
    hosts, _ = run.json()
    assert sorted(hosts) == ["lab01", "lab02"]
