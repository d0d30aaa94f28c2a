"""ssh_config against the lab: aliases, Include, precedence, identities, agents, Match, ad-hoc hosts, --explain."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fleet import fleetrun, write_inventory

pytestmark = pytest.mark.integration


def inventory_of(path: Path, lab, hosts: dict[str, dict], **defaults) -> Path:
    """An inventory that knows the lab's user, key and known_hosts, with only the hosts given."""
    data = {"defaults": {"user": lab.user, "key": str(lab.client_key), "known_hosts": str(lab.known_hosts),
                         **defaults}, "hosts": hosts}
    data["defaults"] = {k: v for k, v in data["defaults"].items() if v is not None}
    path.write_text(yaml.safe_dump(data))
    return path


def ssh_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", path.name, "-f", str(path)],
                   check=True, capture_output=True)
    return path


def authorize(lab, key: Path) -> None:
    with (lab.directory / "authorized_keys").open("a") as keys:
        keys.write(key.with_name(key.name + ".pub").read_text())


def test_alias_resolved_through_ssh_config(lab, tmp_path):
    one = lab.hosts[0]
    inventory = inventory_of(tmp_path / "inv.yaml", lab, {"web01": {}})
    config = ssh_config(tmp_path / "cfg", f"Host web01\n  HostName {one.address}\n  Port {one.port}\n")
    run = fleetrun("exec", "-i", str(inventory), "--ssh-config", str(config), "echo $FLEETRUN_LAB_HOST",
                   "-H", "web01", home=tmp_path)
    assert run.code == 0, run.out + run.err
    assert one.name in run.out


def test_alias_through_a_relative_include(lab, tmp_path):
    # Include conf.d/*.conf means ~/.ssh/conf.d/*.conf (glob's ~ is $HOME), not ./conf.d.
    one = lab.hosts[1]
    inventory = inventory_of(tmp_path / "inv.yaml", lab, {"web01": {}})
    config = ssh_config(tmp_path / "cfg", "Include conf.d/*.conf\n")
    ssh_config(tmp_path / ".ssh" / "conf.d" / "web.conf", f"Host web01\n  HostName {one.address}\n")
    ssh_config(tmp_path / ".ssh" / "conf.d" / "zz-port.conf", f"Host web01\n  Port {one.port}\n")
    # Next to the including file (where pyinfra would look): never read.
    ssh_config(tmp_path / "conf.d" / "web.conf", "Host web01\n  HostName 127.0.0.254\n")
    run = fleetrun("exec", "-i", str(inventory), "--ssh-config", str(config), "echo $FLEETRUN_LAB_HOST",
                   "-H", "web01", home=tmp_path)
    assert run.code == 0, run.out + run.err
    assert one.name in run.out


def test_port_precedence(lab, tmp_path):
    one = lab.hosts[2]
    wrong = one.port + 1
    config = ssh_config(tmp_path / "cfg", f"Host *\n  Port {wrong}\n")
    base = ("--ssh-config", str(config), "echo $FLEETRUN_LAB_HOST", "-H", "web01", "--connect-timeout", "5")
    host_port = inventory_of(tmp_path / "a.yaml", lab, {"web01": {"address": one.address, "port": one.port}})
    run = fleetrun("exec", "-i", str(host_port), *base, home=tmp_path)
    assert run.code == 0 and one.name in run.out, run.err  # the inventory's port beats ssh_config's
    defaults_port = inventory_of(tmp_path / "b.yaml", lab, {"web01": {"address": one.address}}, port=one.port)
    run = fleetrun("exec", "-i", str(defaults_port), *base, home=tmp_path)
    assert run.code == 0 and one.name in run.out, run.err  # so does defaults.port
    both_wrong = inventory_of(tmp_path / "c.yaml", lab, {"web01": {"address": one.address, "port": wrong}})
    run = fleetrun("exec", "-i", str(both_wrong), *base, "-p", str(one.port), home=tmp_path)
    assert run.code == 0 and one.name in run.out, run.err  # -p beats both
    run = fleetrun("exec", "-i", str(both_wrong), *base, home=tmp_path)
    assert run.code == 4 and "refused" in run.out  # and without -p the wrong port is really used
    unset = inventory_of(tmp_path / "d.yaml", lab, {"web01": {"address": one.address}})
    run = fleetrun("exec", "-i", str(unset), *base, home=tmp_path)
    assert run.code == 4, run.out  # inventory silent: ssh_config's (wrong) port applies


def test_identity_files_accumulate_and_are_tried_in_order(make_lab, tmp_path):
    lab = make_lab(1)
    one = lab.hosts[0]
    wrong1, wrong2 = keygen(tmp_path / "wrong1"), keygen(tmp_path / "wrong2")
    inventory = inventory_of(tmp_path / "inv.yaml", lab, {"web01": {"address": one.address, "port": one.port}},
                             key=None)
    # With an inventory address, that address is what ssh_config's Host lines match (as `ssh ADDRESS` would).
    config = ssh_config(tmp_path / "cfg", f"Host web01 {one.address}\n  IdentityFile {wrong1}\nHost *\n"
                        f"  IdentityFile {lab.client_key}\n")
    run = fleetrun("exec", "-i", str(inventory), "--ssh-config", str(config), "--no-agent", "echo ok",
                   "-H", "web01", home=tmp_path)
    assert run.code == 0, run.out + run.err
    config.write_text(f"Host {one.address}\n  IdentityFile {wrong1}\n  IdentityFile {tmp_path}/absent\n"
                      f"Host *\n  IdentityFile {wrong2}\n")
    run = fleetrun("exec", "-i", str(inventory), "--ssh-config", str(config), "--no-agent", "true",
                   "-H", "web01", "--format", "json", home=tmp_path)
    hosts, _ = run.json()
    assert run.code == 4
    assert f"tried key {wrong1}, key {wrong2})" in hosts["web01"]["error"]
    assert run.err.count("does not exist") == 1 and f"{tmp_path}/absent" in run.err


@pytest.fixture
def agent(tmp_path) -> Iterator[dict[str, str]]:
    """A real ssh-agent of our own on a socket of our own, killed at the end."""
    socket_path = tmp_path / "agent.sock"
    output = subprocess.run(["ssh-agent", "-s", "-a", str(socket_path)], capture_output=True, text=True,
                            check=True).stdout
    pid = re.search(r"SSH_AGENT_PID=(\d+)", output)
    assert pid is not None
    try:
        yield {"SSH_AUTH_SOCK": str(socket_path)}
    finally:
        os.kill(int(pid.group(1)), 15)


def test_identities_only_and_identity_agent(make_lab, tmp_path, agent):
    lab = make_lab(1)
    one = lab.hosts[0]
    subprocess.run(["ssh-add", "-q", str(lab.client_key)], check=True, env={**os.environ, **agent},
                   capture_output=True)
    wrong = keygen(tmp_path / "wrong")
    inventory = inventory_of(tmp_path / "inv.yaml", lab, {"web01": {"address": one.address, "port": one.port}},
                             key=None)
    config = ssh_config(tmp_path / "cfg", f"Host *\n  IdentityFile {wrong}\n")
    base = ("exec", "-i", str(inventory), "--ssh-config", str(config), "true", "-H", "web01")
    assert fleetrun(*base, home=tmp_path, **agent).code == 0  # the named file fails, the agent's key works
    config.write_text(f"Host *\n  IdentityFile {wrong}\n  IdentitiesOnly yes\n")
    only = fleetrun(*base, "--format", "json", home=tmp_path, **agent)
    assert only.code == 4 and "agent key" not in only.json()[0]["web01"]["error"]
    # IdentityAgent: the agent found through ssh_config, with $SSH_AUTH_SOCK unset; `none` turns it off.
    config.write_text(f"Host *\n  IdentityAgent {agent['SSH_AUTH_SOCK']}\n")
    assert fleetrun(*base, home=tmp_path).code == 0
    config.write_text("Host *\n  IdentityAgent none\n")
    assert fleetrun(*base, home=tmp_path, **agent).code == 4


def test_encrypted_key_held_by_the_agent_needs_no_passphrase(make_lab, tmp_path, agent):
    lab = make_lab(1)
    one = lab.hosts[0]
    locked = keygen(tmp_path / "locked", passphrase="s3cret words")
    authorize(lab, locked)
    _ssh_add_with_passphrase(locked, agent)
    inventory = inventory_of(tmp_path / "inv.yaml", lab, {"web01": {"address": one.address, "port": one.port}},
                             key=None)
    config = ssh_config(tmp_path / "cfg", f"Host *\n  IdentityFile {locked}\n  IdentitiesOnly yes\n")
    run = fleetrun("exec", "-i", str(inventory), "--ssh-config", str(config), "echo ok", "-H", "web01",
                   home=tmp_path, **agent)
    assert run.code == 0 and "warning" not in run.err, run.out + run.err
    alone = fleetrun("exec", "-i", str(inventory), "--ssh-config", str(config), "echo ok", "-H", "web01",
                     "--format", "json", home=tmp_path)
    assert alone.code == 4 and alone.err.count("is encrypted and no passphrase was given") == 1


def _ssh_add_with_passphrase(key: Path, agent: dict[str, str]) -> None:
    """ssh-add reads a passphrase only from a terminal or SSH_ASKPASS: give it an askpass script."""
    askpass = key.with_name("askpass.sh")
    askpass.write_text("#!/bin/sh\necho 's3cret words'\n")
    askpass.chmod(0o700)
    env = {**os.environ, **agent, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
    subprocess.run(["ssh-add", "-q", str(key)], check=True, env=env, capture_output=True,
                   stdin=subprocess.DEVNULL)


def test_match_exec_and_match_user_in_a_run(lab, tmp_path):
    one = lab.hosts[3]
    inventory = inventory_of(tmp_path / "inv.yaml", lab, {"web01": {"address": one.address}})
    config = ssh_config(tmp_path / "cfg", f"Match exec \"test %n = {one.address} && test %r = {lab.user}\"\n"
                        f"  Port {one.port}\nMatch user {lab.user}\n  Port 1\n")
    run = fleetrun("exec", "-i", str(inventory), "--ssh-config", str(config), "echo $FLEETRUN_LAB_HOST",
                   "-H", "web01", home=tmp_path)
    assert run.code == 0 and one.name in run.out, run.out + run.err


@pytest.mark.parametrize(("text", "message"), [
    ("Host *\n  Port 22\nMatch localnetwork 127.0.0.0/8\n  Port 1\n", "cfg:3: Match: unsupported criterion"),
    ("Host *\n  ProxyJump none # comment\n", "cfg:2: ProxyJump"),
    ("Host *\n  ConnectTimeout x\n", "cfg:2: ConnectTimeout: invalid time value"),
    ("Host *\n  Bogus yes\n", "cfg:2: unknown option 'bogus'"),
])
def test_config_errors_are_exit_2_with_file_and_line(lab, tmp_path, text, message):
    config = ssh_config(tmp_path / "cfg", text)
    for command in (("exec", "-i", str(lab.inventory), "true", "-H", "all"), ("hosts", "-i", str(lab.inventory))):
        run = fleetrun(*command, "--ssh-config", str(config), home=tmp_path)
        assert run.code == 2, run.out + run.err
        assert message in run.err and run.err.startswith("fleetrun: error: ")
        assert "Traceback" not in run.err


def test_include_loop_is_exit_2_naming_both_files(lab, tmp_path):
    config = ssh_config(tmp_path / "cfg", f"Include {tmp_path}/a.conf\n")
    ssh_config(tmp_path / "a.conf", f"Include {tmp_path}/b.conf\n")
    ssh_config(tmp_path / "b.conf", f"Port 22\nInclude {tmp_path}/a.conf\n")
    run = fleetrun("exec", "-i", str(lab.inventory), "--ssh-config", str(config), "true", "-H", "all",
                   home=tmp_path)
    assert run.code == 2
    assert f"{tmp_path}/b.conf:2: Include loop" in run.err and f"{tmp_path}/a.conf:1" in run.err


def test_strict_host_key_checking_from_ssh_config(lab, tmp_path):
    one = lab.hosts[4]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inventory = inventory_of(tmp_path / "inv.yaml", lab, {"web01": {"address": one.address, "port": one.port}},
                             known_hosts=str(empty))
    base = ("exec", "-i", str(inventory), "true", "-H", "web01")
    config = ssh_config(tmp_path / "cfg", "Host *\n  StrictHostKeyChecking ask\n")
    assert fleetrun(*base, "--ssh-config", str(config), home=tmp_path).code == 5  # ask never prompts: yes
    config.write_text("Host *\n  StrictHostKeyChecking accept-new\n")
    refused = fleetrun(*base, "--ssh-config", str(config), "--host-key-checking", "yes", home=tmp_path)
    assert refused.code == 5 and empty.read_text() == ""  # the command line wins
    accepted = fleetrun(*base, "--ssh-config", str(config), home=tmp_path)
    assert accepted.code == 0, accepted.out + accepted.err
    assert f"[{one.address}]:{one.port} ssh-ed25519 " in empty.read_text()


def test_connect_timeout_from_ssh_config(lab, tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts connections, nobody ever sends a banner
    try:
        port = silent.getsockname()[1]
        inventory = inventory_of(tmp_path / "inv.yaml", lab, {"quiet": {"address": "127.0.0.1", "port": port}},
                                 connect_timeout=None)
        config = ssh_config(tmp_path / "cfg", "Host *\n  ConnectTimeout 1 # seconds\n")
        run = fleetrun("exec", "-i", str(inventory), "--ssh-config", str(config), "true", "-H", "quiet",
                       "--format", "json", home=tmp_path)
        hosts, _ = run.json()
        assert run.code == 4 and re.search(r"within 1\.\d s", hosts["quiet"]["error"]), hosts  # as waited
    finally:
        silent.close()


def test_adhoc_hosts_without_an_inventory(lab, tmp_path):
    one, two = lab.hosts[5], lab.hosts[6]
    (tmp_path / ".ssh").mkdir(exist_ok=True)
    # ssh's default ~/.ssh/known_hosts is the passwd home's (HOME does not move it): name this one instead.
    (tmp_path / ".ssh" / "known_hosts").write_text(lab.known_hosts.read_text())
    config = ssh_config(tmp_path / "cfg", f"Host web01\n  HostName {one.address}\n  Port {one.port}\n"
                        f"Host *\n  User {lab.user}\n  IdentityFile {lab.client_key}\n"
                        f"  UserKnownHostsFile {tmp_path}/.ssh/known_hosts\n")
    workdir = tmp_path / "empty"
    workdir.mkdir()
    command = ["exec", "--ssh-config", str(config), "echo $FLEETRUN_LAB_HOST", "--format", "json", "-H",
               f"web01,{lab.user}@{two.address}:{two.port}"]
    proc = subprocess.run(["python", "-m", "fleetrun", *command], cwd=workdir, capture_output=True, text=True,
                          env={**_env(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert one.name in proc.stdout and two.name in proc.stdout
    names = subprocess.run(["python", "-m", "fleetrun", "hosts", "--names", "web[01-03]"], cwd=workdir,
                           capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    assert names.stdout.split() == ["web01", "web02", "web03"]
    groups = subprocess.run(["python", "-m", "fleetrun", "exec", "true", "-H", "web&db"], cwd=workdir,
                            capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    assert groups.returncode == 2 and "need an inventory" in groups.stderr


def _env(home: Path) -> dict[str, str]:
    import sys

    env = {k: v for k, v in os.environ.items() if k not in {"SSH_AUTH_SOCK", "FLEETRUN_INVENTORY"}}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "xdg"), PATH=os.path.dirname(sys.executable) + ":" +
               env.get("PATH", ""), FLEETRUN_SSH_CONFIG="none")
    return env


def test_hosts_explain(lab, tmp_path):
    one = lab.hosts[7]
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(yaml.safe_dump({
        "defaults": {"user": lab.user},
        "hosts": {"web01": {"groups": ["web"]}},
        "groups": {"web": {"connect_timeout": 3}},
    }))
    config = ssh_config(tmp_path / "cfg", f"Host web01\n  HostName {one.address}\n  Port {one.port}\n"
                        "  IdentityFile ~/.ssh/web\n  ControlMaster auto\n")
    run = fleetrun("hosts", "-i", str(inventory), "--ssh-config", str(config), "--explain", "web01", home=tmp_path)
    assert run.code == 0, run.err
    rows = {line.split("  ")[1].strip(): line for line in run.out.splitlines()[1:] if line.strip()}
    assert one.address in rows["address"] and rows["address"].endswith("cfg:2")
    assert rows["port"].endswith("cfg:3")
    assert rows["user"].endswith("inventory defaults")
    assert rows["connect timeout"].endswith("inventory groups.web")
    assert rows["identity file"].endswith("cfg:4")
    assert "ControlMaster is not applied" in run.err  # warned once
    listing = fleetrun("hosts", "-i", str(inventory), "--ssh-config", str(config), home=tmp_path)
    assert f"web01  {one.address}  {one.port}" in listing.out


def test_ssh_config_false_in_the_inventory(lab, tmp_path):
    one = lab.hosts[8]
    inventory = tmp_path / "inv.yaml"
    write_inventory(inventory, lab.inventory)
    data = yaml.safe_load(inventory.read_text())
    data["ssh_config"] = False
    inventory.write_text(yaml.safe_dump(data))
    config = ssh_config(tmp_path / "cfg", "Host *\n  Bogus yes\n")
    run = fleetrun("exec", "-i", str(inventory), "echo $FLEETRUN_LAB_HOST", "-H", one.name, home=tmp_path,
                   FLEETRUN_SSH_CONFIG=str(config))
    assert run.code == 2  # FLEETRUN_SSH_CONFIG (like --ssh-config) beats the inventory
    # Neither --ssh-config nor FLEETRUN_SSH_CONFIG: the defaults would be read, but the inventory says no.
    run = fleetrun("exec", "-i", str(inventory), "echo $FLEETRUN_LAB_HOST", "-H", one.name, home=tmp_path,
                   FLEETRUN_SSH_CONFIG="")
    assert run.code == 0 and one.name in run.out
    explained = fleetrun("hosts", "-i", str(inventory), "--explain", one.name, home=tmp_path,
                         FLEETRUN_SSH_CONFIG="")
    assert explained.code == 0 and "/etc/ssh/ssh_config" not in explained.out
    data["ssh_config"] = True
    inventory.write_text(yaml.safe_dump(data))
    allowed = fleetrun("hosts", "-i", str(inventory), "--explain", one.name, home=tmp_path, FLEETRUN_SSH_CONFIG="")
    assert allowed.code == 0
    system = Path("/etc/ssh/ssh_config")
    if system.is_file() and re.search(r"(?im)^\s*HashKnownHosts\s+yes", system.read_text()):
        assert "/etc/ssh/ssh_config:" in allowed.out  # e.g. Debian's `HashKnownHosts yes` under Host *


def test_proxy_jump_from_ssh_config_with_the_bastion_s_own_proxy_jump_none(lab, tmp_path):
    # The classic pattern (research A5.9): `Host bastion` ProxyJump none, then `Host *` ProxyJump bastion. The
    # bastion itself is reached directly, no recursion; the others through it.
    bastion = lab.hosts[0]
    config = ssh_config(tmp_path / "cfg", f"Host {bastion.address}\n  ProxyJump none\nHost *\n"
                        f"  ProxyJump {lab.user}@{bastion.address}:{bastion.port}\n  IdentityFile {lab.client_key}\n"
                        f"  UserKnownHostsFile {lab.known_hosts}\n  LogLevel ERROR\n")
    run = fleetrun("exec", "-i", str(lab.inventory), "echo $FLEETRUN_LAB_HOST", "-H", "lab01,lab02,lab03",
                   "--ssh-config", str(config), "--format", "json", home=tmp_path)
    assert run.code == 0, run.out + run.err
    hosts, _ = run.json()
    assert [hosts[name]["stdout"].strip() for name in ("lab01", "lab02", "lab03")] == ["lab01", "lab02", "lab03"]
    listing = fleetrun("hosts", "-i", str(lab.inventory), "--explain", "lab02", "--ssh-config", str(config),
                       home=tmp_path)
    assert listing.code == 0 and f"{lab.user}@{bastion.address}:{bastion.port}" in listing.out
    # The inventory's `jump: none` wins over ssh_config: no bastion, and the run still works.
    inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, jump="none")
    direct = fleetrun("exec", "-i", str(inventory), "true", "-H", "lab02", "--ssh-config", str(config),
                      home=tmp_path)
    assert direct.code == 0, direct.err
