"""Ansible connection variables → Host fields, and `inventory export` round trips in every direction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetrun.inventory import Inventory
from fleetrun.sources import load_sources
from fleetrun.sources.export import export


def load(tmp_path: Path, text: str, name: str = "hosts") -> Inventory:
    path = tmp_path / name
    path.write_text(text)
    return load_sources([str(path)])


@pytest.mark.parametrize(("args", "jump", "proxy"), [
    ("-J bastion", ("bastion",), None),
    ("-Jops@b1:2222,b2", ("ops@b1:2222", "b2"), None),
    ("-o ProxyJump=b1", ("b1",), None),
    ("-oProxyJump=b1", ("b1",), None),
    ("-o 'ProxyJump b1'", ("b1",), None),
    ("-o ProxyJump=none", (), None),
    ("-o 'ProxyCommand=ssh -W %h:%p b1'", None, "ssh -W %h:%p b1"),
    ("-o 'ProxyCommand ssh -o X=Y -W %h:%p b1'", None, "ssh -o X=Y -W %h:%p b1"),
    ("-C -o ServerAliveInterval=5 -J first -o ProxyJump=second", ("first",), None),  # OpenSSH: first wins
    ("-o 'ProxyCommand=nc %h %p' -J later", None, "nc %h %p"),
])
def test_jump_and_proxy_from_ssh_args(tmp_path: Path, args: str, jump: tuple[str, ...] | None,
                                      proxy: str | None) -> None:
    host = load(tmp_path, f'w1 ansible_ssh_common_args="{args}"\n').hosts["w1"]
    assert (host.jump, host.proxy_command) == (jump, proxy)
    assert host.vars["ansible_ssh_common_args"]  # kept: it may carry options fleetrun does not read


def test_common_args_come_before_extra_args(tmp_path: Path) -> None:
    host = load(tmp_path, "w1 ansible_ssh_extra_args='-J extra' ansible_ssh_common_args='-J common'\n").hosts["w1"]
    assert host.jump == ("common",)


def test_known_hosts_and_other_options(tmp_path: Path) -> None:
    inventory = load(tmp_path, "w1 ansible_ssh_common_args='-o UserKnownHostsFile=~/kh -o StrictHostKeyChecking=no "
                     "-p 2200 -l bob -i ~/k'\nw2 ansible_port=22 ansible_ssh_common_args='-p 2200'\n")
    w1, w2 = inventory.hosts["w1"], inventory.hosts["w2"]
    assert w1.known_hosts == (os.path.expanduser("~/kh"),)
    assert (w1.port, w1.user, w1.key) == (2200, "bob", os.path.expanduser("~/k"))
    assert w2.port == 22  # the inventory's own variable comes first on Ansible's command line
    assert "known_hosts" in w1.explicit and "port" in w2.explicit and "address" not in w1.explicit
    assert any("stricthostkeychecking=no (1 host)" in warning for warning in inventory.warnings)


def test_legacy_names_and_become(tmp_path: Path) -> None:
    host = load(tmp_path, "w1 ansible_ssh_host=10.0.0.1 ansible_ssh_port=2022 ansible_ssh_user=ops "
                "ansible_become=yes ansible_become_user=postgres ansible_ssh_timeout=7 "
                "fleetrun_password_env=OPS_PW\n").hosts["w1"]
    assert (host.address, host.port, host.user, host.connect_timeout) == ("10.0.0.1", 2022, "ops", 7.0)
    assert (host.become, host.become_user, host.password_env) == (True, "postgres", "OPS_PW")
    assert "ansible_ssh_host" not in host.vars and host.vars["ansible_become"] == "yes"


def test_templated_connection_values_make_the_host_unsupported(tmp_path: Path) -> None:
    inventory = load(tmp_path, "w1 ansible_host='{{ inventory_hostname }}.lan'\n")
    assert "ansible_host at" in inventory.unsupported["w1"] and "Jinja template" in inventory.unsupported["w1"]


CORPUS = """\
[web]
web[01:03] ansible_user=deploy
web09 ansible_host=10.0.0.9 ansible_port=2222 ansible_ssh_private_key_file=/keys/web ansible_ssh_timeout=4.5
[db]
db1 ansible_become=true ansible_become_user=pg ansible_ssh_common_args='-J ops@bastion'
db2 fleetrun_password_env=DB_PW fleetrun_known_hosts=/etc/kh
[prod:children]
web
db
[web:vars]
tags="['a', 'b']"
site=paris
[all:vars]
n=1
"""


def comparable(inventory: Inventory) -> dict[str, object]:
    return {
        "hosts": {name: (h.address, h.port, h.user, h.key, h.connect_timeout, h.password_env, h.known_hosts,
                         h.become, h.become_user, h.jump, tuple(sorted(set(h.groups) - {"ungrouped"})), dict(h.vars))
                  for name, h in inventory.hosts.items()},
        "groups": {name: set(members) for name, members in inventory.groups.items() if name != "ungrouped"},
    }


@pytest.mark.parametrize("form", ["ansible-json", "ansible-yaml", "fleetrun"])
def test_export_round_trips(tmp_path: Path, form: str) -> None:
    original = load(tmp_path, CORPUS)
    text, warnings = export(original, form)
    again = load(tmp_path, text, {"ansible-json": "out.json", "ansible-yaml": "out.yml", "fleetrun": "out.yaml"}[form])
    if form == "fleetrun":
        assert again.ansible is False  # it really is read back as fleetrun YAML
        assert warnings == []  # jump, become and the rest all have fleetrun keys: nothing is left out
        assert comparable(again) == comparable(original)
    else:
        assert comparable(again) == comparable(original)


def test_fleetrun_yaml_exports_to_ansible_and_back(tmp_path: Path) -> None:
    (tmp_path / "inventory.yaml").write_text("""\
defaults: {user: deploy, port: 2200}
hosts:
  web[01:02]: {groups: [web]}
  db01: {address: 10.0.0.5, port: 2222, vars: {role: primary}, known_hosts: [/etc/kh]}
  solo: {}
groups:
  prod: {children: [web], vars: {env: prod}}
""")
    original = load_sources([str(tmp_path / "inventory.yaml")])
    for form, name in (("ansible-yaml", "a.yml"), ("ansible-json", "a.json")):
        text, _ = export(original, form)
        again = load(tmp_path, text, name)
        assert comparable(again) == comparable(original)
        assert again.groups["ungrouped"] == ("db01", "solo")


def test_export_to_fleetrun_refuses_names_it_cannot_hold(tmp_path: Path) -> None:
    from fleetrun.errors import UsageError

    with pytest.raises(UsageError, match=r"host 'all' cannot be written"):
        export(load(tmp_path, "all\n"), "fleetrun")


VAULTED = """\
all:
  hosts:
    w1:
      db_password_hint: !vault |
        $ANSIBLE_VAULT;1.1;AES256
        61626364
      plain: 1
"""


@pytest.mark.parametrize(("form", "name"), [("ansible-yaml", "out.yml"), ("ansible-json", "out.json")])
def test_vault_values_survive_an_ansible_export(tmp_path: Path, form: str, name: str) -> None:
    from fleetrun.sources.ansible_data import Vaulted

    original = load(tmp_path, VAULTED, "inv.yml")
    value = original.hosts["w1"].vars["db_password_hint"]
    assert isinstance(value, Vaulted) and "$ANSIBLE_VAULT;1.1;AES256" in value
    again = load(tmp_path, export(original, form)[0], name)
    assert again.hosts["w1"].vars == original.hosts["w1"].vars
    assert isinstance(again.hosts["w1"].vars["db_password_hint"], Vaulted)


def test_vault_values_are_left_out_of_a_fleetrun_export_with_a_warning(tmp_path: Path) -> None:
    text, warnings = export(load(tmp_path, VAULTED, "inv.yml"), "fleetrun")
    assert load(tmp_path, text, "out.yaml").hosts["w1"].vars == {"plain": 1}
    assert warnings == ["vault-encrypted vars of host w1 are left out: fleetrun YAML cannot hold them"]


def test_fleetrun_export_keeps_sudo_env_and_routes(tmp_path: Path) -> None:
    """become*, env, jump (and `jump: none`) and proxy_command survive `inventory export --format fleetrun`."""
    (tmp_path / "inventory.yaml").write_text("""\
defaults: {jump: ops@bastion:2222}
hosts:
  db01: {become: true, become_user: postgres, become_password_env: DB_SUDO, env: {APP_ENV: prod}}
  bastion: {jump: none}
  edge: {proxy_command: nc %h %p, jump: null, become_password_file: /etc/fleet/sudo}
""")
    original = load_sources([str(tmp_path / "inventory.yaml")])
    text, warnings = export(original, "fleetrun")
    assert warnings == []
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "inventory.yaml").write_text(text)
    again = load_sources([str(tmp_path / "again" / "inventory.yaml")])
    fields = ("become", "become_user", "become_password_env", "become_password_file", "jump", "proxy_command")
    for name in ("db01", "bastion", "edge"):
        before, after = original.hosts[name], again.hosts[name]
        assert [getattr(after, f) for f in fields] == [getattr(before, f) for f in fields], name
        assert dict(after.env) == dict(before.env)
    assert again.hosts["db01"].env == {"APP_ENV": "prod"} and again.hosts["bastion"].jump == ()
