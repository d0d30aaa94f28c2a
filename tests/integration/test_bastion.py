"""Bastions against the lab: one shared connection per gateway, chains in order, failures named, clean teardown.

Every target here has a name only the bastion can resolve (tests/integration/bastion.py), so a host that
answers was reached through the bastion.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from bastion import frozen, kill_tree, make_bastions, processes_named, wait_for
from fleet import Run

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
    # --procs 2 asked for explicitly: one process all the same (one login carries every host), and it says so.
    run = fleet.run("exec", "-i", str(inventory), "--procs", "2", "true", "-H", "t*", "--format", "json")
    assert run.code == 0, run.out + run.err
    assert "running in one process, not 2 (--procs): hosts are reached through a bastion" in run.err
    assert fleet.accepted() == 2, fleet.log()  # one more run, one more login


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


def test_a_chain_is_visited_in_the_order_listed(make_lab, tmp_path):
    # b1 may forward only to b2, b2 only to the target: only local -> b1 -> b2 -> target works.
    config = {"b2": lambda started, targets: f"PermitOpen t01.gw.test:{targets.hosts[0].port}\n",
              "b1": lambda started, targets: f"PermitOpen {started['b2'].hosts[0].address}:"
                                             f"{started['b2'].hosts[0].port}\n"}
    probe = make_bastions(make_lab, tmp_path / "probe", 1, bastions=("b2", "b1"), bastion_config=config)
    b1 = probe.bastion("b1")
    inventory = probe.inventory(tmp_path / "inv.yaml", jump=["b1", "b2"])
    run = probe.run("exec", "-i", str(inventory), "echo $FLEETRUN_LAB_HOST", "-H", "t01.gw.test", "--format", "json")
    assert run.code == 0, run.out + run.err
    assert run.json()[0]["t01.gw.test"]["stdout"].strip() == probe.targets.hosts[0].name
    assert probe.accepted("b1") == 1 and probe.accepted("b2") == 1

    backwards = probe.inventory(tmp_path / "back.yaml", jump=["b2", "b1"])
    run = probe.run("exec", "-i", str(backwards), "true", "-H", "t01.gw.test", "--format", "json")
    assert run.code == 4
    error = run.json()[0]["t01.gw.test"]["error"]
    assert error == f"gateway b2 refused forwarding to {b1.address}:{b1.port}: administratively prohibited", error
    # The same with -J on the command line, which beats the inventory.
    run = probe.run("exec", "-i", str(inventory), "true", "-H", "t01.gw.test", "-J", "b2,b1", "--format", "json")
    assert run.code == 4 and "gateway b2 refused forwarding" in run.json()[0]["t01.gw.test"]["error"]


def test_an_unknown_bastion_key_stops_every_host_behind_it_before_any_login(make_lab, tmp_path):
    fleet = make_bastions(make_lab, tmp_path / "work", 5, target_config="LogLevel VERBOSE\n")
    # The targets' keys are known; the bastion's is not (its own known_hosts file is empty).
    empty = tmp_path / "bastion_known_hosts"
    empty.write_text("")
    only_targets = tmp_path / "targets_known_hosts"
    only_targets.write_text("".join(line + "\n" for line in fleet.known_hosts.read_text().splitlines()
                                    if "gw.test" in line))
    inventory = fleet.inventory(tmp_path / "inv.yaml", bastion_known_hosts=empty, known_hosts=str(only_targets))
    before = len(fleet.target_logs())  # the lab's readiness probes are in there already
    run = fleet.run("exec", "-i", str(inventory), "true", "-H", "t*", "--format", "json")
    hosts, _ = run.json()
    assert run.code == 5, run.out + run.err
    bastion = fleet.bastion()
    for record in hosts.values():
        assert record["status"] == "host key"
        assert record["error"].startswith(f"via bastion b1: unknown host key for [{bastion.address}]:{bastion.port}")
    assert "Accepted" not in fleet.log() and "Failed" not in fleet.log()  # no credential went to the bastion
    assert "Connection from" not in fleet.target_logs()[before:]  # nor did anything reach a target

    # accept-new records the bastion's key once and each target's once, in the files each one reads.
    blank = tmp_path / "blank_known_hosts"
    blank.write_text("")
    inventory = fleet.inventory(tmp_path / "new.yaml", known_hosts=str(blank))
    run = fleet.run("exec", "-i", str(inventory), "true", "-H", "t*", "--host-key-checking", "accept-new")
    assert run.code == 0, run.out + run.err
    lines = blank.read_text().splitlines()
    assert len(lines) == 6 and len(set(lines)) == 6
    assert sum(line.startswith(f"[{bastion.address}]:{bastion.port} ") for line in lines) == 1
    assert {line.split()[0] for line in lines if "gw.test" in line} == {f"[{n}]:{fleet.targets.hosts[0].port}"
                                                                         for n in fleet.names}
    assert fleet.run("exec", "-i", str(inventory), "true", "-H", "t*").code == 0  # and they now verify


class CountingListener:
    """A TCP port that accepts, counts and hangs up: a bastion whose sshd is broken."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, name="counting-listener")
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


def test_a_dead_bastion_is_tried_once_not_once_per_host(make_lab, tmp_path):
    fleet = make_bastions(make_lab, tmp_path / "work", 12)
    listener = CountingListener()
    try:
        inventory = fleet.inventory(tmp_path / "inv.yaml")
        data = yaml.safe_load(inventory.read_text())
        data["hosts"]["b1"].update(address="127.0.0.1", port=listener.port)
        inventory.write_text(yaml.safe_dump(data))
        run = fleet.run("exec", "-i", str(inventory), "true", "-H", "t*", "--forks", "12", "--format", "json")
        hosts, _ = run.json()
        assert run.code == 4
        assert {record["status"] for record in hosts.values()} == {"unreachable"}
        assert all(record["error"].startswith("via bastion b1: ") for record in hosts.values()), hosts
        assert 1 <= listener.accepted <= 2, listener.accepted
    finally:
        listener.close()
    # A port nobody listens on: refused, said once per host, tried once.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    data["hosts"]["b1"].update(port=port)
    inventory.write_text(yaml.safe_dump(data))
    run = fleet.run("exec", "-i", str(inventory), "true", "-H", "t*", "--format", "json")
    hosts, _ = run.json()
    assert run.code == 4
    assert {record["error"] for record in hosts.values()} == {f"via bastion b1: connection refused by 127.0.0.1:{port}"}


def test_a_bastion_killed_mid_run_fails_its_hosts_and_the_run_ends(make_lab, tmp_path):
    fleet = make_bastions(make_lab, tmp_path / "work", 12)
    inventory = fleet.inventory(tmp_path / "inv.yaml")
    command = "sleep 20.731"
    proc = fleet.start("exec", "-i", str(inventory), command, "-H", "t*", "--forks", "4", "--format", "json")
    try:
        wait_for(lambda: len(processes_named(r"^sleep 20\.731")) >= 4, 60, "4 hosts running the command")
        killed = time.monotonic()
        kill_tree(fleet.bastion().pid)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert time.monotonic() - killed < 15  # no hang: the in-flight hosts notice, the queued ones fail fast
    assert proc.returncode == 4, out + err
    hosts, _ = Run(proc.returncode, out, err).json()
    errors = [record["error"] for record in hosts.values()]
    assert {record["status"] for record in hosts.values()} == {"unreachable"}
    # In flight: mid-command, or (rarely) just starting it when the bastion died.
    in_flight = [e for e in errors if e.endswith(": lost connection to gateway b1") and not e.startswith("via")]
    # Queued: the one reconnect fails (refused, or reset while the killed sshd's socket is going away).
    queued = [e for e in errors if e.startswith("via bastion b1: ")
              and e.endswith("(reconnecting after: lost connection to gateway b1)")]
    assert len(in_flight) == 4 and len(queued) == 8, "\n".join(errors)


def peak_running(proc, pattern: str) -> int:
    """The most processes matching `pattern` seen at once while `proc` runs."""
    peak = 0
    while proc.poll() is None:
        peak = max(peak, len(processes_named(pattern)))
        time.sleep(0.05)
    return peak


def test_max_per_gateway_caps_the_hosts_through_one_bastion(make_lab, tmp_path):
    fleet = make_bastions(make_lab, tmp_path / "work", 8)
    inventory = fleet.inventory(tmp_path / "inv.yaml")
    capped = fleet.start("exec", "-i", str(inventory), "sleep 1.618", "-H", "t*", "--forks", "8",
                         "--max-per-gateway", "2")
    peak = peak_running(capped, r"^sleep 1\.618")
    out, err = capped.communicate()
    assert capped.returncode == 0, out + err
    assert 1 <= peak <= 2, peak
    free = fleet.start("exec", "-i", str(inventory), "sleep 5.141", "-H", "t*", "--forks", "8")
    peak = peak_running(free, r"^sleep 5\.141")
    out, err = free.communicate()
    assert free.returncode == 0, out + err
    assert peak >= 3, peak  # without the cap, --forks decides
    assert fleet.accepted() == 2  # one bastion login per run


def test_push_and_a_target_the_bastion_cannot_reach(make_lab, tmp_path):
    fleet = make_bastions(make_lab, tmp_path / "work", 3)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    inventory = fleet.inventory(tmp_path / "inv.yaml")
    data = yaml.safe_load(inventory.read_text())
    data["hosts"]["gone"] = {"address": "127.0.0.1", "port": port, "jump": "b1"}
    inventory.write_text(yaml.safe_dump(data))
    run = fleet.run("exec", "-i", str(inventory), "true", "-H", "gone", "--format", "json")
    assert run.code == 4
    assert run.json()[0]["gone"]["error"].startswith(f"gateway b1 cannot reach 127.0.0.1:{port}")
    # SFTP goes through the same tunnel: a push lands in each target's own /srv.
    local = tmp_path / "payload.txt"
    local.write_text("through the bastion\n")
    run = fleet.run("push", "-i", str(inventory), str(local), "/srv/payload.txt", "-H", "t*")
    assert run.code == 0, run.out + run.err
    for host in fleet.names.values():
        assert Path(f"/proc/{host.pid}/root/srv/payload.txt").read_text() == "through the bastion\n"
    assert fleet.accepted() == 2  # one bastion login per run


def test_a_bastion_reached_through_its_own_proxy_command(make_lab, tmp_path):
    from test_proxycommand import PROXY

    fleet = make_bastions(make_lab, tmp_path / "work", 3)
    inventory = fleet.inventory(tmp_path / "inv.yaml")
    data = yaml.safe_load(inventory.read_text())
    marker = f"fleetrun-bastion-proxy-{os.getpid()}"
    del data["hosts"]["b1"]["jump"]
    data["hosts"]["b1"]["proxy_command"] = f"{sys.executable} -c {shlex.quote(PROXY)} %h %p {marker}"
    inventory.write_text(yaml.safe_dump(data))
    run = fleet.run("exec", "-i", str(inventory), "echo $FLEETRUN_LAB_HOST", "-H", "t*", "--format", "json")
    assert run.code == 0, run.out + run.err
    assert {record["stdout"].strip() for record in run.json()[0].values()} == {h.name for h in fleet.targets.hosts}
    assert fleet.accepted() == 1
    assert processes_named(marker) == []  # the bastion's proxy was reaped with the bastion's connection


def test_a_frozen_bastion_is_found_by_its_own_keepalives(make_lab, tmp_path):
    """ServerAliveInterval on the bastion's connection itself: a bastion that stops answering (SIGSTOP: the kernel
    still ACKs) ends its hosts as unreachable within the probes, not when the commands would have."""
    fleet = make_bastions(make_lab, tmp_path / "work", 3)
    inventory = fleet.inventory(tmp_path / "inv.yaml")
    config = tmp_path / "ssh_config"
    # Only the bastion probes: the targets' own connections run inside it and have no keepalive of their own.
    config.write_text(f"Host b1 {fleet.bastion().address}\n  ServerAliveInterval 1\n  ServerAliveCountMax 3\n")
    proc = fleet.start("exec", "-i", str(inventory), "--ssh-config", str(config), "sleep 20.913", "-H", "t*",
                       "--format", "json")
    try:
        wait_for(lambda: len(processes_named(r"^sleep 20\.913")) >= 3, 60, "3 hosts running the command")
        with frozen(fleet.bastion().pid):
            started = time.monotonic()
            out, err = proc.communicate(timeout=60)
            waited = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 4, out + err
    hosts, _ = Run(proc.returncode, out, err).json()
    assert len(hosts) == 3 and {record["status"] for record in hosts.values()} == {"unreachable"}
    assert all("keepalives" in record["error"] for record in hosts.values()), [r["error"] for r in hosts.values()]
    assert waited < 15  # 3 probes a second apart, not the commands' 20 s


def test_a_tunnel_the_bastion_cannot_open_in_time_ends_within_the_hosts_connect_timeout(make_lab, tmp_path):
    """The bastion's own TCP connect to the target hangs (a listener whose accept queue is full drops the SYNs):
    the channel open is bounded by what is left of that host's connect timeout, and the other hosts go on."""
    fleet = make_bastions(make_lab, tmp_path / "work", 2)
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    port = full.getsockname()[1]
    fillers = []
    for _ in range(4):  # Linux queues backlog + 1 connections; later SYNs get no answer
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        time.sleep(0.5)  # let the handshakes that fit complete
        inventory = fleet.inventory(tmp_path / "inv.yaml")
        data = yaml.safe_load(inventory.read_text())
        data["hosts"]["stuck"] = {"address": "127.0.0.1", "port": port, "jump": "b1"}
        inventory.write_text(yaml.safe_dump(data))
        started = time.monotonic()
        run = fleet.run("exec", "-i", str(inventory), "true", "-H", "stuck,t*", "--connect-timeout", "3",
                        "--format", "json")
        elapsed = time.monotonic() - started
    finally:
        for filler in fillers:
            filler.close()
        full.close()
    hosts, _ = run.json()
    assert run.code == 4, run.out + run.err
    assert hosts["stuck"]["status"] == "unreachable"
    assert hosts["stuck"]["error"].startswith(f"gateway b1 did not open a channel to 127.0.0.1:{port} within "), \
        hosts["stuck"]["error"]
    assert {hosts[name]["status"] for name in fleet.names} == {"ok"}
    assert elapsed < 30  # the kernel would retry that SYN for about two minutes
