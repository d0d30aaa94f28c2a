"""The lab: real sshd hosts the real OpenSSH client reaches as themselves, isolated, stopped cleanly."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from fleetrun import lab as lab_module
from fleetrun.errors import LabError
from fleetrun.lab import Lab, load_lab, stop_lab

pytestmark = pytest.mark.integration


def ssh(lab: Lab, address: str, port: int, command: str) -> subprocess.CompletedProcess[str]:
    """The real OpenSSH client, trusting nothing but the lab's own key and known_hosts."""
    argv = [
        "ssh", "-F", "/dev/null", "-i", str(lab.client_key),
        "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
        "-o", "ConnectTimeout=10", "-p", str(port), f"{lab.user}@{address}", command,
    ]  # fmt: skip
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_each_host_answers_with_its_own_name_at_its_inventory_address(make_lab, ssh_env):
    lab = make_lab(3)
    inventory = yaml.safe_load(lab.inventory.read_text())
    with ThreadPoolExecutor() as pool:
        runs = {
            name: pool.submit(ssh, lab, entry["address"], entry["port"], "echo $FLEETRUN_LAB_HOST")
            for name, entry in inventory["hosts"].items()
        }
    assert sorted(runs) == ["lab01", "lab02", "lab03"]
    for name, run in runs.items():
        done = run.result()
        assert (done.returncode, done.stdout) == (0, f"{name}\n"), done.stderr


def test_inventory_known_hosts_and_state_describe_every_host(lab):
    inventory = yaml.safe_load(lab.inventory.read_text())
    names = [f"lab{i:02d}" for i in range(1, 21)]
    assert lab.inventory.read_text().startswith("# fleetrun lab: 20 hosts on loopback, started ")
    assert inventory["defaults"] == {
        "user": lab.user,
        "key": str(lab.client_key),
        "known_hosts": str(lab.known_hosts),
        "connect_timeout": 10,
    }
    assert list(inventory["hosts"]) == names == [host.name for host in lab.hosts]
    assert inventory["hosts"] == {h.name: {"address": h.address, "port": h.port} for h in lab.hosts}
    assert inventory["groups"] == {"lab": names, "odd": names[0::2], "even": names[1::2]}
    assert len({host.address for host in lab.hosts}) == 20
    assert all(host.address.startswith("127.") for host in lab.hosts)
    known = lab.known_hosts.read_text().splitlines()
    for host, line in zip(lab.hosts, known, strict=True):
        public = host.host_key.with_suffix(".pub").read_text().split()
        assert line == f"[{host.address}]:{host.port} {public[0]} {public[1]}"
    assert load_lab(lab.directory) == lab
    assert lab.directory.stat().st_mode & 0o777 == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="a private /srv per host needs root")
def test_each_host_has_a_private_srv(lab, ssh_env):
    first, second = lab.hosts[0], lab.hosts[1]
    marker = f"/srv/fleetrun-lab-test-{uuid.uuid4().hex}"
    assert lab.private_srv
    written = ssh(lab, first.address, first.port, f"echo hello > {marker} && cat {marker}")
    assert (written.returncode, written.stdout) == (0, "hello\n"), written.stderr
    elsewhere = ssh(lab, second.address, second.port, f"test -e {marker}")
    assert elsewhere.returncode == 1, elsewhere.stderr
    assert not Path(marker).exists()
    assert ssh(lab, first.address, first.port, f"rm {marker}").returncode == 0


def test_stop_lab_stops_exactly_its_own_pids_and_stopping_twice_is_harmless(make_lab, lab):
    small = make_lab(2)
    pids = [host.pid for host in small.hosts]
    assert all(running(pid) for pid in pids)
    # A new session each, so a Ctrl-C in the terminal that started them does not reach them.
    assert all(os.getsid(pid) == pid for pid in pids)
    with pytest.raises(LabError, match="a lab is already running in"):
        lab_module.start_lab(1, small.directory)
    # From the command line, the message names the --dir to stop, as the user would type it.
    parent = small.directory.parent
    again = subprocess.run([sys.executable, "-m", "fleetrun", "lab", "up", "1", "--dir", small.directory.name],
                           cwd=parent, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert again.returncode == 2
    assert again.stderr == (f"fleetrun: error: a lab is already running in {small.directory.name}: stop it with "
                            f"'fleetrun lab down --dir {small.directory.name}', or give this one another --dir\n")
    assert stop_lab(small.directory) == 2
    assert not any(running(pid) for pid in pids)
    assert all(running(host.pid) for host in lab.hosts)
    assert not (small.directory / "lab.json").exists()
    assert stop_lab(small.directory) == 0


def test_stop_lab_leaves_a_reused_pid_alone(tmp_path):
    stranger = subprocess.Popen(["sleep", "30"])
    try:
        config = tmp_path / "lab01.sshd_config"
        state = {"hosts": [{"name": "lab01", "pid": stranger.pid, "config": str(config)}]}
        (tmp_path / "lab.json").write_text(json.dumps(state))
        assert stop_lab(tmp_path) == 0
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_lab_without_a_lab_says_so(tmp_path):
    with pytest.raises(LabError, match=f"no lab in {tmp_path}"):
        stop_lab(tmp_path)


def test_missing_sshd_names_the_package_to_install(monkeypatch, tmp_path):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "sshd" else real_which(name))
    monkeypatch.setattr(lab_module, "SSHD_FALLBACK", str(tmp_path / "no-such-sshd"))
    with pytest.raises(LabError, match=r"sshd not found: install the openssh-server package"):
        lab_module.start_lab(1, tmp_path / "lab")
    assert not (tmp_path / "lab").exists()


def test_a_host_that_cannot_start_is_named_with_its_log_and_nothing_is_left(monkeypatch, tmp_path):
    spawned: list[int] = []
    real_spawn, real_host_key = lab_module.spawn_detached, lab_module._host_key

    def recording_spawn(argv: list[str], log: Path) -> int:
        spawned.append(real_spawn(argv, log))
        return spawned[-1]

    def broken_second_key(path: Path, comment: str, *key_type: str) -> None:
        real_host_key(path, comment, *key_type)
        if comment.endswith("lab02"):
            path.write_text("not a key\n")

    monkeypatch.setattr(lab_module, "spawn_detached", recording_spawn)
    monkeypatch.setattr(lab_module, "_host_key", broken_second_key)
    with pytest.raises(LabError, match=r"lab host lab02 .* did not start: .*no hostkeys available"):
        lab_module.start_lab(3, tmp_path, private_srv=False)
    assert len(spawned) == 3
    assert not any(running(pid) for pid in spawned)
    assert not (tmp_path / "lab.json").exists()


def test_start_moves_to_another_block_when_sshd_finds_its_address_taken(make_lab, monkeypatch):
    # Another lab binds the address between our probe and sshd's bind: sshd fails, the lab retries.
    draw = random.Random(1234)
    taken = (f"127.{draw.choice(lab_module._BLOCKS)}.0.1", draw.randrange(*lab_module._PORTS))
    monkeypatch.setattr(lab_module, "_rng", random.Random(1234))
    monkeypatch.setattr(lab_module, "_free", lambda address, port: True)
    with socket.socket() as squatter:
        squatter.bind(taken)  # bound, not listening: sshd cannot bind, and probes are refused at once
        started = make_lab(1, private_srv=False)
    assert (started.hosts[0].address, started.hosts[0].port) != taken
    assert running(started.hosts[0].pid)
