"""ssh's defaults as a real account sees them: ~/.ssh/config and ~/.ssh/id_* of the passwd home, not $HOME.

A throwaway account is created for this (never the real user's ~/.ssh): fleetrun runs as that account with
HOME pointing somewhere else that holds a decoy config and key, so the test fails if $HOME were used.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Account:
    name: str
    home: Path  # the passwd home
    python: str  # an interpreter this account can run fleetrun with


def _as(account: str, argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", account, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()),
                           *argv], capture_output=True, text=True, cwd=cwd, timeout=120, stdin=subprocess.DEVNULL)


def _interpreter(name: str, home: Path) -> str | None:
    """This interpreter if the account may run it (a pyenv under /root is private), else a system one."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in dict.fromkeys([sys.executable, f"/usr/bin/python{version}", "/usr/bin/python3"]):
        probe = _as(name, [candidate, "-c", "import sys, fleetrun.cli, paramiko; print(sys.version[:4])"],
                    _base_env(home), home)
        if probe.returncode == 0 and probe.stdout.strip() == version:
            return candidate
    return None


def _base_env(home: Path) -> dict[str, str]:
    # The worktree and this venv's packages, for an interpreter outside the venv (same version: same ABI).
    return {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(home),
            "PYTHONPATH": f"{ROOT}:{sysconfig.get_paths()['purelib']}", "LANG": "C.UTF-8"}


@pytest.fixture
def account() -> Iterator[Account]:
    if os.geteuid() != 0:
        # Justified: only root can create an account; CI runs as root. Faking HOME would not test anything,
        # because ssh (and fleetrun) find ~/.ssh through the passwd entry.
        pytest.skip("creating a throwaway account needs root (CI runs as root)")
    name = f"fleetrun-sc{os.getpid() % 100000}"
    home = Path(tempfile.mkdtemp(prefix="fleetrun-account-", dir="/tmp"))
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/bin/sh", name], check=True, capture_output=True)
    try:
        # sshd without PAM refuses a locked ('!') password even for keys; '*' stays unusable for passwords.
        subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
        entry = pwd.getpwnam(name)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        python = _interpreter(name, home)
        if python is None:
            pytest.fail("no Python interpreter the throwaway account can run fleetrun with "
                        f"(tried {sys.executable} and /usr/bin/python3)")
        yield Account(name, home, python)
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _keygen(account: Account, path: Path, keytype: str = "ed25519", passphrase: str = "") -> Path:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", keytype, "-N", passphrase, "-f", str(path)], check=True,
                   capture_output=True)
    entry = pwd.getpwnam(account.name)
    for item in (path.parent, path, path.with_name(path.name + ".pub")):
        os.chown(item, entry.pw_uid, entry.pw_gid)
    return path


def _write(account: Account, path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    entry = pwd.getpwnam(account.name)
    os.chown(path.parent, entry.pw_uid, entry.pw_gid)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def test_default_config_and_identity_come_from_the_passwd_home(make_lab, account):
    lab = make_lab(1)
    one = lab.hosts[0]
    real_ssh = account.home / ".ssh"
    key = _keygen(account, real_ssh / "id_ed25519")
    _keygen(account, real_ssh / "id_ecdsa", "ecdsa", passphrase="unused secret")  # tried first, encrypted
    with (lab.directory / "authorized_keys").open("a") as keys:
        keys.write(key.with_name("id_ed25519.pub").read_text())
    # No user, port, key or address in the inventory: web01 is whatever ~/.ssh/config says.
    _write(account, real_ssh / "config", f"Host web01\n  HostName {one.address}\n  Port {one.port}\n"
           f"  User {lab.user}\n")
    known = _write(account, account.home / "known_hosts", lab.known_hosts.read_text())
    inventory = _write(account, account.home / "inventory.yaml",
                       yaml.safe_dump({"defaults": {"known_hosts": str(known)}, "hosts": {"web01": {}}}))
    # A decoy HOME, readable by the account: if anything used $HOME it would get the wrong port and key.
    decoy = account.home / "decoy"
    _keygen(account, decoy / ".ssh" / "id_ed25519")
    _write(account, decoy / ".ssh" / "config", "Host web01\n  Port 1\n")
    env = {**_base_env(account.home), "HOME": str(decoy)}

    run = _as(account.name, [account.python, "-m", "fleetrun", "exec", "-i", str(inventory),
                             "echo $FLEETRUN_LAB_HOST", "-H", "web01"], env, account.home)
    assert run.returncode == 0, run.stdout + run.stderr
    assert one.name in run.stdout
    assert run.stderr.count(f"{real_ssh}/id_ecdsa is encrypted") == 1  # skipped with one warning, no prompt

    explained = _as(account.name, [account.python, "-m", "fleetrun", "hosts", "-i", str(inventory), "--explain",
                                   "web01"], env, account.home)
    assert explained.returncode == 0, explained.stderr
    assert f"{real_ssh}/id_ed25519" in explained.stdout and "~/.ssh/config:2" in explained.stdout  # ~: passwd home

    # The oracle agrees: ssh, as this account with the same decoy HOME, reads the same file and keys.
    printed = _as(account.name, ["ssh", "-G", "web01"], env, account.home)
    assert printed.returncode == 0, printed.stderr
    assert f"hostname {one.address}" in printed.stdout and f"port {one.port}" in printed.stdout
    assert "identityfile ~/.ssh/id_ed25519" in printed.stdout
