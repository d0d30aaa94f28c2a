"""Authentication against real sshd: key formats and passphrases, a real ssh-agent, and the no-credential case."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet import fleetrun, write_inventory

pytestmark = pytest.mark.integration


@pytest.fixture
def lab1(make_lab):
    return make_lab(1)


def authorize(lab, private_key: Path) -> None:
    with (lab.directory / "authorized_keys").open("a") as keys:
        keys.write(private_key.with_name(private_key.name + ".pub").read_text())


@pytest.mark.parametrize(
    ("keytype", "extra"),
    [("rsa", ["-b", "2048", "-m", "PEM"]), ("ecdsa", ["-b", "256"]), ("ed25519", [])],
    ids=["rsa-pem", "ecdsa-openssh", "ed25519-openssh"],
)
def test_encrypted_keys_need_their_passphrase(lab1, tmp_path, keytype, extra):
    key = tmp_path / f"id_{keytype}"
    subprocess.run(["ssh-keygen", "-q", "-t", keytype, *extra, "-N", "s3cret pass", "-f", str(key)], check=True)
    authorize(lab1, key)
    base = ("exec", "-i", str(lab1.inventory), "echo in", "-H", "all", "--key", str(key))
    ok = fleetrun(*base, "--key-passphrase-env", "KEY_PASS", home=tmp_path, KEY_PASS="s3cret pass")
    assert ok.code == 0, ok.err
    assert "in" in ok.out
    missing = fleetrun(*base, home=tmp_path)
    assert missing.code == 2 and "encrypted" in missing.err and "--key-passphrase-env" in missing.err
    wrong = fleetrun(*base, "--key-passphrase-env", "KEY_PASS", home=tmp_path, KEY_PASS="nope")
    assert wrong.code == 2 and "s3cret" not in wrong.err and "nope" not in wrong.err


@pytest.fixture
def agent(tmp_path) -> Iterator[dict[str, str]]:
    """A real ssh-agent of our own, killed at the end."""
    socket_path = tmp_path / "agent.sock"
    output = subprocess.run(["ssh-agent", "-s", "-a", str(socket_path)], capture_output=True, text=True,
                            check=True).stdout
    pid = re.search(r"SSH_AGENT_PID=(\d+)", output)
    assert pid is not None
    try:
        yield {"SSH_AUTH_SOCK": str(socket_path)}
    finally:
        os.kill(int(pid.group(1)), 15)


def test_agent_keys_are_used_when_no_key_is_given(lab1, tmp_path, agent):
    subprocess.run(["ssh-add", "-q", str(lab1.client_key)], check=True, env={**os.environ, **agent},
                   capture_output=True)
    inventory = write_inventory(tmp_path / "inv.yaml", lab1.inventory, key=None)
    run = fleetrun("exec", "-i", str(inventory), "echo via-agent", "-H", "all", home=tmp_path, **agent)
    assert run.code == 0, run.out + run.err
    assert "via-agent" in run.out
    refused = fleetrun("exec", "-i", str(inventory), "true", "-H", "all", "--no-agent", "--format", "json",
                       home=tmp_path, **agent)
    assert refused.code == 4
    hosts, _ = refused.json()
    assert [(r["status"], r["error"]) for r in hosts.values()] == [
        ("auth failed", "cannot authenticate as root: no key, agent key or password given")]


def test_missing_key_file_is_exit_2(lab1, tmp_path):
    run = fleetrun("exec", "-i", str(lab1.inventory), "true", "-H", "all", "--key", str(tmp_path / "nope"),
                   home=tmp_path)
    assert run.code == 2 and "does not exist" in run.err


@pytest.fixture
def password_user() -> Iterator[tuple[str, str]]:
    """A throwaway local account with a password, removed afterwards (creating one needs root)."""
    if os.geteuid() != 0:
        # Justified: no account with a password can be made without root. CI runs as root; for everyone else
        # test_edge_servers.py covers password auth against a scripted server.
        pytest.skip("creating a throwaway account with a password needs root (CI runs as root)")
    name, password = f"fleetrun-pw{os.getpid() % 100000}", "Corr3ct-horse-battery"
    subprocess.run(["useradd", "-M", "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
        yield name, password
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_password_from_env_and_file(make_lab, tmp_path, password_user):
    name, password = password_user
    lab = make_lab(1, password_auth=True)
    inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, key=None, user=name,
                                password_env="FLEET_TEST_PW")
    run = fleetrun("exec", "-i", str(inventory), "id -un", "-H", "all", "--no-agent", home=tmp_path,
                   FLEET_TEST_PW=password)
    assert run.code == 0, run.out + run.err
    assert name in run.out and password not in run.out + run.err

    wrong = fleetrun("exec", "-i", str(inventory), "id -un", "-H", "all", "--no-agent", "--format", "json",
                     home=tmp_path, FLEET_TEST_PW="not-it")
    hosts, _ = wrong.json()
    assert wrong.code == 4 and [r["status"] for r in hosts.values()] == ["auth failed"]
    assert "password" in next(iter(hosts.values()))["error"] and "not-it" not in wrong.out

    secret_file = tmp_path / "pw"
    secret_file.write_text(password + "\n")
    secret_file.chmod(0o600)
    from_file = write_inventory(tmp_path / "inv2.yaml", lab.inventory, key=None, user=name,
                                password_file=str(secret_file))
    run = fleetrun("exec", "-i", str(from_file), "id -un", "-H", "all", "--no-agent", home=tmp_path)
    assert run.code == 0 and name in run.out
    secret_file.chmod(0o644)
    loose = fleetrun("exec", "-i", str(from_file), "id -un", "-H", "all", "--no-agent", home=tmp_path)
    assert loose.code == 2 and "chmod 600" in loose.err and password not in loose.err
