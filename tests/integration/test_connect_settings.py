"""ssh_config's connection settings honoured at connect time, against the lab: known_hosts files, hashing,
HostKeyAlias, ServerAlive on a frozen host, ForwardAgent."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from bastion import frozen, processes_named, wait_for
from fleet import clean_env, fleetrun

pytestmark = pytest.mark.integration


def inventory_of(path: Path, lab, hosts: dict[str, dict], **defaults) -> Path:
    data = {"defaults": {"user": lab.user, "key": str(lab.client_key), **defaults}, "hosts": hosts}
    path.write_text(yaml.safe_dump(data))
    return path


def line_for(lab, host) -> str:
    return next(line for line in lab.known_hosts.read_text().splitlines() if line.startswith(f"[{host.address}]:"))


def test_user_known_hosts_files_several_and_accept_new_writes_the_first(lab, tmp_path):
    one, two = lab.hosts[0], lab.hosts[1]
    first, second = tmp_path / "kh_first", tmp_path / "kh_second"
    first.write_text("")
    second.write_text(line_for(lab, one) + "\n")  # one's key is in the second file only
    inventory = inventory_of(tmp_path / "inv.yaml", lab, {"one": {"address": one.address, "port": one.port},
                                                          "two": {"address": two.address, "port": two.port}})
    config = tmp_path / "cfg"
    config.write_text(f"Host *\n  UserKnownHostsFile {tmp_path}/kh_%k_none {first} {second}\n"
                      "  GlobalKnownHostsFile none\n")
    base = ("exec", "-i", str(inventory), "--ssh-config", str(config), "true", "--format", "json")
    run = fleetrun(*base, "-H", "one", home=tmp_path)
    assert run.code == 0, run.out + run.err  # found in the third file listed
    run = fleetrun(*base, "-H", "two", home=tmp_path)
    assert run.code == 5  # two is in none of them
    # accept-new writes the first file listed (tokens expanded: %k is the host's name here).
    run = fleetrun(*base, "-H", "two", "--host-key-checking", "accept-new", home=tmp_path)
    assert run.code == 0, run.out + run.err
    written = tmp_path / f"kh_{two.address}_none"
    assert written.read_text().split()[0] == f"[{two.address}]:{two.port}"
    assert first.read_text() == "" and second.read_text() == line_for(lab, one) + "\n"


def test_global_known_hosts_file_named_and_by_default(lab, tmp_path):
    one = lab.hosts[2]
    inventory = inventory_of(tmp_path / "inv.yaml", lab, {"one": {"address": one.address, "port": one.port}})
    system = tmp_path / "system_known_hosts"
    system.write_text(line_for(lab, one) + "\n")
    config = tmp_path / "cfg"
    config.write_text(f"Host *\n  UserKnownHostsFile {tmp_path}/empty\n  GlobalKnownHostsFile {system}\n")
    base = ("exec", "-i", str(inventory), "true", "-H", "one")
    assert fleetrun(*base, "--ssh-config", str(config), home=tmp_path).code == 0
    # The default, /etc/ssh/ssh_known_hosts, shown in a mount namespace of this run's own (never the machine's).
    etc_ssh = tmp_path / "etc_ssh"
    etc_ssh.mkdir()
    (etc_ssh / "ssh_known_hosts").write_text(line_for(lab, one) + "\n")
    config.write_text(f"Host *\n  UserKnownHostsFile {tmp_path}/empty\n")
    prefix = ("unshare", "-m", "--propagation", "private", "/bin/sh", "-c",
              'mount --bind "$0" /etc/ssh && exec "$@"', str(etc_ssh))
    run = fleetrun(*base, "--ssh-config", str(config), home=tmp_path, prefix=prefix)
    assert run.code == 0, run.out + run.err
    assert fleetrun(*base, "--ssh-config", str(config), home=tmp_path).code == 5  # ...and without it, unknown
    # accept-new never writes a global file: it goes to UserKnownHostsFile's first.
    run = fleetrun(*base, "--ssh-config", str(config), "--host-key-checking", "accept-new", home=tmp_path)
    assert run.code == 0 and (tmp_path / "empty").read_text().startswith(f"[{one.address}]:{one.port} ")


def test_hash_known_hosts_writes_hashed_lines_ssh_keygen_finds(lab, tmp_path):
    one = lab.hosts[3]
    inventory = inventory_of(tmp_path / "inv.yaml", lab, {"one": {"address": one.address, "port": one.port}})
    known = tmp_path / "known_hosts"
    config = tmp_path / "cfg"
    config.write_text(f"Host *\n  UserKnownHostsFile {known}\n  HashKnownHosts yes\n"
                      "  StrictHostKeyChecking accept-new\n")
    run = fleetrun("exec", "-i", str(inventory), "--ssh-config", str(config), "true", "-H", "one", home=tmp_path)
    assert run.code == 0, run.out + run.err
    text = known.read_text()
    assert text.startswith("|1|") and one.address not in text and len(text.splitlines()) == 1
    name = f"[{one.address}]:{one.port}"
    found = subprocess.run(["ssh-keygen", "-F", name, "-f", str(known)], capture_output=True, text=True, check=False)
    assert found.returncode == 0 and f"Host {name} found: line 1" in found.stdout
    # The next run verifies the host through the hashed line.
    again = fleetrun("exec", "-i", str(inventory), "--ssh-config", str(config), "true", "-H", "one",
                     "--host-key-checking", "yes", "--format", "json", home=tmp_path)
    assert again.code == 0 and again.json()[0]["one"]["host_key_verified"] is True


def test_host_key_alias_is_the_name_keys_are_looked_up_and_recorded_under(lab, tmp_path):
    one = lab.hosts[4]
    key = " ".join(line_for(lab, one).split()[1:])
    known = tmp_path / "known_hosts"
    known.write_text(f"web04.alias {key}\n")  # under the alias only, without a port (as ssh records it)
    inventory = inventory_of(tmp_path / "inv.yaml", lab, {"one": {"address": one.address, "port": one.port}})
    config = tmp_path / "cfg"
    config.write_text(f"Host *\n  UserKnownHostsFile {known}\n  HostKeyAlias WEB04.alias\n")
    base = ("exec", "-i", str(inventory), "--ssh-config", str(config), "true", "-H", "one")
    assert fleetrun(*base, home=tmp_path).code == 0
    # ssh agrees (HostKeyAlias is lowercased, looked up without [..]:port).
    ssh = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                          "-o", "GlobalKnownHostsFile=/dev/null", "-i", str(lab.client_key), "-p", str(one.port),
                          f"{lab.user}@{one.address}", "true"], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL, check=False)
    assert ssh.returncode == 0, ssh.stderr
    # A key recorded under the address alone does not count once an alias is set; accept-new records the alias.
    known.write_text(line_for(lab, one) + "\n")
    assert fleetrun(*base, "--format", "json", home=tmp_path).code == 5
    run = fleetrun(*base, "--host-key-checking", "accept-new", home=tmp_path)
    assert run.code == 0 and known.read_text().splitlines()[1] == f"web04.alias {key}"


def test_a_host_key_alias_with_a_port_is_never_looked_up_without_it_as_ssh_never_does(lab, tmp_path):
    one = lab.hosts[5]
    key = " ".join(line_for(lab, one).split()[1:])
    known = tmp_path / "known_hosts"
    inventory = inventory_of(tmp_path / "inv.yaml", lab, {"one": {"address": one.address, "port": one.port}})
    config = tmp_path / "cfg"
    config.write_text(f"Host *\n  UserKnownHostsFile {known}\n  HostKeyAlias [alias5]:2222\n")
    ssh_argv = ["ssh", "-F", str(config), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", "GlobalKnownHostsFile=/dev/null", "-i", str(lab.client_key), "-p", str(one.port),
                f"{lab.user}@{one.address}", "true"]
    base = ("exec", "-i", str(inventory), "--ssh-config", str(config), "true", "-H", "one", "--format", "json")
    for lines, verdict in ([f"alias5 {key}"], "unknown"), ([f"[alias5]:2222 {key}", f"@revoked alias5 {key}"], "ok"):
        known.write_text("\n".join(lines) + "\n")
        ssh = subprocess.run(ssh_argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                             check=False)
        run = fleetrun(*base, home=tmp_path)
        record = run.json()[0]["one"]
        assert (ssh.returncode, run.code) == ((0, 0) if verdict == "ok" else (255, 5)), (ssh.stderr, run.out)
        assert verdict == "ok" or record["error"].startswith("unknown host key"), record


def test_server_alive_ends_a_frozen_host_as_unreachable(make_lab, tmp_path):
    lab = make_lab(2)
    stopping, fine = lab.hosts
    inventory = inventory_of(tmp_path / "inv.yaml", lab, {h.name: {"address": h.address, "port": h.port}
                                                          for h in lab.hosts}, known_hosts=str(lab.known_hosts))
    config = tmp_path / "cfg"
    config.write_text("Host *\n  ServerAliveInterval 1\n  ServerAliveCountMax 3\n")
    argv = [sys.executable, "-m", "fleetrun", "exec", "-i", str(inventory), "--ssh-config", str(config),
            "sleep 6.417; echo done", "-H", "all", "--format", "json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=clean_env(tmp_path))
    try:
        wait_for(lambda: len(processes_named(r"^sleep 6\.417")) == 2, 60, "both hosts running the command")
        # Freeze one host: its sshd and the session it forked stop answering, the kernel still ACKs.
        with frozen(stopping.pid):
            started = time.monotonic()
            out, err = proc.communicate(timeout=60)
            waited = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    records = {r["host"]: r for r in map(json.loads, out.splitlines()) if r["type"] == "host"}
    assert proc.returncode == 4, out + err
    assert records[fine.name]["status"] == "ok" and records[fine.name]["stdout"] == "done\n"
    assert records[stopping.name]["status"] == "unreachable"
    assert re.search(r"no answer to 3 keepalives in 4 s \(ServerAliveInterval 1, ServerAliveCountMax 3\)",
                     records[stopping.name]["error"]), records[stopping.name]["error"]
    assert waited < 30  # well before the command itself (or anything else) would have ended it


@pytest.fixture
def agent(tmp_path) -> Iterator[dict[str, str]]:
    socket_path = tmp_path / "agent.sock"
    output = subprocess.run(["ssh-agent", "-s", "-a", str(socket_path)], capture_output=True, text=True,
                            check=True).stdout
    pid = re.search(r"SSH_AGENT_PID=(\d+)", output)
    assert pid is not None
    try:
        yield {"SSH_AUTH_SOCK": str(socket_path)}
    finally:
        os.kill(int(pid.group(1)), signal.SIGTERM)


def test_forward_agent_only_when_asked(lab, tmp_path, agent):
    one = lab.hosts[5]
    extra = tmp_path / "forwarded_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "forwarded-key", "-f", str(extra)],
                   check=True)
    subprocess.run(["ssh-add", "-q", str(extra)], check=True, env={**os.environ, **agent}, capture_output=True)
    inventory = inventory_of(tmp_path / "inv.yaml", lab, {"one": {"address": one.address, "port": one.port}},
                             known_hosts=str(lab.known_hosts))
    base = ("exec", "-i", str(inventory), "ssh-add -l", "-H", "one", "--format", "json")
    off = fleetrun(*base, home=tmp_path, **agent)
    assert off.code == 1 and "forwarded-key" not in off.out  # off unless asked: no agent on the host
    on = fleetrun(*base, "--forward-agent", home=tmp_path, **agent)
    assert on.code == 0, on.out + on.err
    assert "forwarded-key" in on.json()[0]["one"]["stdout"]
    assert on.err.count("forwarding your ssh-agent to 1 host (ForwardAgent)") == 1
    # From ssh_config, to the agent IdentityAgent names (ssh exports it as SSH_AUTH_SOCK for forwarding).
    config = tmp_path / "cfg"
    config.write_text(f"Host *\n  ForwardAgent yes\n  IdentityAgent {agent['SSH_AUTH_SOCK']}\n")
    configured = fleetrun(*base, "--ssh-config", str(config), home=tmp_path)
    assert configured.code == 0 and "forwarded-key" in configured.out, configured.out + configured.err
    config.write_text("Host *\n  ForwardAgent yes\n  IdentityAgent none\n")
    nothing = fleetrun(*base, "--ssh-config", str(config), home=tmp_path, **agent)
    assert nothing.code == 1 and "no agent to forward" in nothing.err
