"""Resolution between inventory and runner: precedence, explicit settings, origins, ad-hoc hosts, --explain."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fleetrun.adhoc import adhoc_hosts
from fleetrun.errors import InventoryError, SelectionError, UsageError
from fleetrun.inventory import load_inventory
from fleetrun.models import Host
from fleetrun.resolve import config_source, explain, resolve_hosts
from fleetrun.runner import apply_overrides
from fleetrun.sshconfig import SshConfigSource
from fleetrun.sshconfig.tokens import local_info

INVENTORY = """
    defaults: {user: deploy}
    hosts:
      web01: {groups: [web]}
      web02: {groups: [web], port: 2202}
      db01: {address: db01.internal}
      lone: {}
    groups:
      web: {port: 2200, connect_timeout: 4}
"""
SSH_CONFIG = """
    Host web* db01.internal lone
      Port 9999
      User from_config
      HostName %h.example
      ConnectTimeout 7
      StrictHostKeyChecking no
    Host *
      IdentityFile ~/.ssh/fleet
"""


@pytest.fixture
def fleet(tmp_path: Path) -> tuple[dict[str, Host], Path]:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(textwrap.dedent(INVENTORY))
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(textwrap.dedent(SSH_CONFIG))
    return load_inventory(inventory).hosts, ssh_config


def resolved(hosts: dict[str, Host] | list[Host], ssh_config: Path, warnings: list[str] | None = None,
             **overrides: object) -> dict[str, Host]:
    listed = list(hosts.values()) if isinstance(hosts, dict) else hosts
    listed = apply_overrides(listed, **overrides)  # type: ignore[arg-type]
    sink = warnings if warnings is not None else []
    result = resolve_hosts(listed, SshConfigSource(path=str(ssh_config)), sink.append)
    return {host.name: host for host in result.hosts}


def test_inventory_records_what_it_set_and_where(fleet: tuple[dict[str, Host], Path]) -> None:
    hosts, _ = fleet
    assert hosts["web01"].explicit == {"user", "port", "connect_timeout"}
    assert hosts["web01"].origins == {"user": ("inventory defaults",), "port": ("inventory groups.web",),
                                      "connect_timeout": ("inventory groups.web",)}
    assert hosts["web02"].origins["port"] == ("inventory hosts.web02",)
    assert hosts["db01"].explicit == {"user", "address"}
    assert hosts["lone"].explicit == {"user"}


def test_precedence(fleet: tuple[dict[str, Host], Path]) -> None:
    hosts, ssh_config = fleet
    result = resolved(hosts, ssh_config)
    web01, web02, db01, lone = (result[name] for name in ("web01", "web02", "db01", "lone"))
    assert (web01.port, web02.port) == (2200, 2202)  # inventory group / host beat ssh_config
    assert lone.port == 9999  # nothing in the inventory: ssh_config
    assert all(host.user == "deploy" for host in result.values())  # inventory defaults beat ssh_config
    assert web01.connect_timeout == 4 and lone.connect_timeout == 7
    assert (web01.address, db01.address) == ("web01.example", "db01.internal.example")  # address is looked up
    assert db01.lookup_name == "db01.internal"
    assert lone.host_key_checking == "accept-new"  # StrictHostKeyChecking no, as fleetrun's policy
    assert web01.identity_files == (f"{local_info().home}/.ssh/fleet",)
    assert web01.origins["port"] == ("inventory groups.web",)
    assert lone.origins["port"] == (f"{ssh_config}:3",)
    assert web01.origins["identity_files"] == (f"{ssh_config}:9",)


def test_command_line_beats_everything(fleet: tuple[dict[str, Host], Path]) -> None:
    hosts, ssh_config = fleet
    result = resolved(hosts, ssh_config, port=2999, user="cli", key="/keys/k", connect_timeout=1.5,
                      host_key_checking="yes")
    for host in result.values():
        assert (host.port, host.user, host.connect_timeout, host.host_key_checking) == (2999, "cli", 1.5, "yes")
        assert host.identity_files == ("/keys/k", f"{local_info().home}/.ssh/fleet")  # like ssh -i: first
        assert host.origins["port"] == ("--port",) and host.origins["identity_files"][0] == "--key"


def test_null_in_the_inventory_lets_ssh_config_decide(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("defaults: {port: 2222}\nhosts:\n  h: {port: null}\n")
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Port 3333\n")
    assert resolved(load_inventory(inventory).hosts, ssh_config)["h"].port == 3333


def test_strict_host_key_checking_mapping(tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    expected = {"ask": "yes", "yes": "yes", "no": "accept-new", "off": "accept-new", "accept-new": "accept-new"}
    for value, policy in expected.items():
        ssh_config.write_text(f"StrictHostKeyChecking {value}\n")
        assert resolved([Host("h", "h")], ssh_config)["h"].host_key_checking == policy
    ssh_config.write_text("Port 22\n")
    assert resolved([Host("h", "h")], ssh_config)["h"].host_key_checking is None  # the run's default


def test_inventory_jump_and_proxy_command(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(textwrap.dedent("""
        defaults: {jump: "ops@bastion:2222"}
        hosts:
          a: {}
          b: {jump: none}
          c: {jump: [b1, "u@b2"]}
          d: {proxy_command: "exec nc %h %p"}
          e: {groups: [direct]}
        groups:
          direct: {proxy_command: none}
    """))
    hosts = load_inventory(inventory).hosts
    assert hosts["a"].jump == ("ops@bastion:2222",) and hosts["b"].jump == ()
    assert hosts["c"].jump == ("b1", "u@b2") and hosts["d"].jump is None  # proxy_command replaces the jump
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host *\n  ProxyJump config-bastion\n  ProxyCommand never\n")
    result = resolved(hosts, ssh_config)
    assert result["a"].jump == ("ops@bastion:2222",) and result["a"].proxy_command is None
    assert result["b"].jump == () and result["b"].proxy_command is None  # none: direct, whatever ssh_config says
    assert result["c"].jump == ("b1", "u@b2")
    assert result["d"].proxy_command == "exec nc d 22" and result["d"].jump == ()
    assert result["e"].jump == () and result["e"].proxy_command is None


@pytest.mark.parametrize(("text", "message"), [
    ("hosts:\n  a: {jump: [none, b]}\n", "'none' must be alone"),
    ("hosts:\n  a: {jump: 'b:notaport'}\n", "bad port"),
    ("hosts:\n  a: {jump: b, proxy_command: x}\n", "set jump or proxy_command, not both"),
    ("ssh_config: maybe\nhosts:\n  a: {}\n", "must be true or false"),
    ("hosts:\n  a: {ssh_config: false}\n", "unknown key 'ssh_config'"),
])
def test_inventory_refuses(tmp_path: Path, text: str, message: str) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(text)
    with pytest.raises(InventoryError, match=message):
        load_inventory(inventory)


def test_inventory_can_turn_ssh_config_off(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yaml"
    for text in ("ssh_config: false\nhosts: {a: }\n", "defaults: {ssh_config: false}\nhosts: {a: }\n"):
        inventory.write_text(text)
        assert load_inventory(inventory).ssh_config is False
        assert config_source(None, False).disabled
    inventory.write_text("hosts: {a: }\n")
    assert load_inventory(inventory).ssh_config is True
    assert config_source("/x/cfg", False).path == "/x/cfg"  # --ssh-config FILE beats the inventory
    assert config_source("none", True).disabled


def test_ignored_options_warn_once_per_run(tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host *\n  ControlMaster auto\n  ControlPath ~/.ssh/cm-%C\n  ProxyUseFdpass yes\n")
    warnings: list[str] = []
    resolved([Host(f"h{i}", f"h{i}") for i in range(5)], ssh_config, warnings)
    assert len(warnings) == 3
    assert any("ControlMaster is not applied by fleetrun (5 hosts)" in warning for warning in warnings)
    assert all(f"{ssh_config}:" in warning for warning in warnings)


def test_send_env_and_set_env_are_applied_and_explained(tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host *\n  SendEnv LANG LC_*\n  SetEnv A=1 B=2\n  SendEnv -LANG\n")
    warnings: list[str] = []
    host = resolved([Host("h1", "h1")], ssh_config, warnings)["h1"]
    assert (host.send_env, host.set_env, warnings) == (("LC_*",), ("A=1", "B=2"), [])  # SetEnv: no "not applied"
    rows = {name: (value, where) for name, value, where in explain(host, "me")}
    assert rows["send env"] == ("LC_*", f"{ssh_config}:2")
    assert rows["set env"] == ("A=1 B=2", f"{ssh_config}:3")


def test_explain_rows(fleet: tuple[dict[str, Host], Path]) -> None:
    hosts, ssh_config = fleet
    rows = {name: (value, where) for name, value, where in
            explain(resolved(hosts, ssh_config, port=2999)["db01"], "me")}
    assert rows["address"] == ("db01.internal.example", f"{ssh_config}:5")
    assert rows["lookup name"] == ("db01.internal", "inventory address")
    assert rows["port"] == ("2999", "--port")
    assert rows["user"] == ("deploy", "inventory defaults")
    assert rows["identity file"] == (f"{local_info().home}/.ssh/fleet", f"{ssh_config}:9")
    assert rows["host key checking"] == ("accept-new", f"{ssh_config}:7")
    assert rows["jump"] == ("none", "default")


def test_adhoc_hosts() -> None:
    hosts = adhoc_hosts("web01, deploy@10.0.0.5:2222,web[02-03],[::1]:2200,ops@[fe80::1],::2")
    assert [(h.name, h.user, h.port) for h in hosts] == [
        ("web01", None, 22), ("10.0.0.5", "deploy", 2222), ("web02", None, 22), ("web03", None, 22),
        ("::1", None, 2200), ("fe80::1", "ops", 22), ("::2", None, 22)]
    assert hosts[1].explicit == {"user", "port"} and hosts[1].origins["port"] == ("-H",)
    assert hosts[0].explicit == frozenset()


def test_adhoc_hosts_from_a_file(tmp_path: Path) -> None:
    names = tmp_path / "names"
    names.write_text("web01  # the first\n\nweb02 deploy@web03\n")
    assert [h.name for h in adhoc_hosts(f"^{names},db01")] == ["web01", "web02", "web03", "db01"]
    with pytest.raises(UsageError, match="cannot read"):
        adhoc_hosts(f"^{tmp_path}/absent")


@pytest.mark.parametrize(("pattern", "message"), [
    ("all", "need an inventory"), ("web*", "need an inventory"), ("web&db", "need an inventory"),
    ("web01:99999", "bad port"), ("@web01", "cannot read"), ("a@h:1,b@h:2", "listed twice"),
    ("web[3-1]", "backwards"), (",", "names no host"),
])
def test_adhoc_refuses(pattern: str, message: str) -> None:
    with pytest.raises(SelectionError, match=message):
        adhoc_hosts(pattern)


def test_resolve_hop_like_ssh_does(tmp_path: Path) -> None:
    from fleetrun.resolve import resolve_hop
    from fleetrun.sshconfig import load

    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host b1\n  HostName 10.0.0.1\n  User jumper\n  ProxyJump outer\n"
                          "Host b2\n  Port 2222\n  ProxyJump elsewhere\n")
    config = load(SshConfigSource(path=str(ssh_config)))
    inventory = {"b2": Host("b2", "10.0.0.2", port=22, explicit=frozenset({"address", "port"}),
                            origins={"port": ("inventory hosts.b2",)})}
    first = resolve_hop(["b1", "ops@b2"], 0, config, inventory)
    assert (first.address, first.user, first.port, first.jump) == ("10.0.0.1", "jumper", 22, ("outer",))
    second = resolve_hop(["b1", "ops@b2"], 1, config, inventory)
    # the inventory's port beats ssh_config's; the spec's user beats both; earlier hops replace its ProxyJump
    assert (second.address, second.user, second.port, second.jump) == ("10.0.0.2", "ops", 22, ("b1",))
    assert second.origins["user"] == ("ProxyJump ops@b2",)
