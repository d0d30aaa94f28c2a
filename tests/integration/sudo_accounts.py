"""Throwaway accounts and sudoers rules for the sudo tests (root only), removed afterwards even on failure."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Accounts:
    password_user: str  # has a password; sudo ALL after it; its sudo events go to `log`
    nopasswd_user: str  # sudo NOPASSWD: ALL
    tty_user: str  # has a password; sudoers requiretty
    other_user: str  # no sudo rights: the one --become-user runs as
    password: str  # every account's password
    log: Path


def available() -> str | None:
    """Why the sudo tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "the sudo tests create throwaway accounts and sudoers rules: they need root (CI is root)"
    for tool in ("sudo", "useradd", "userdel", "chpasswd", "visudo"):
        if shutil.which(tool) is None:
            return f"{tool} is missing: `make sudo` installs sudo (as root)"
    return None


def _run(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True, timeout=60)


def _kill_processes_of(uid: int) -> None:
    """SIGKILL every process still running as `uid` (a throwaway account this module created), by pid."""
    for _ in range(50):
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if entry.stat().st_uid == uid:
                        pids.append(int(entry.name))
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


@contextlib.contextmanager
def sudo_accounts(directory: Path) -> Iterator[Accounts]:
    tag = secrets.token_hex(3)
    names = {role: f"frt{tag}{role}" for role in ("pw", "np", "tty", "ot")}
    password = f"Fr-{secrets.token_hex(8)}-pw"
    log = directory / "sudo.log"
    sudoers = Path(f"/etc/sudoers.d/fleetrun-test-{tag}")
    created: list[str] = []
    try:
        for role, name in names.items():
            _run("useradd", "--create-home", "--shell", "/bin/bash", name)
            created.append(name)
            if role in ("pw", "tty"):
                _run("chpasswd", stdin=f"{name}:{password}\n")
            else:
                _run("usermod", "-p", "*", name)  # no password, but not locked: sshd without PAM allows keys
        rules = (
            f"Defaults:{names['pw']} logfile={log}, passwd_tries=3, !lecture\n"
            f"{names['pw']} ALL=(ALL:ALL) ALL\n"
            f"{names['np']} ALL=(ALL:ALL) NOPASSWD: ALL\n"
            f"Defaults:{names['tty']} requiretty\n"
            f"{names['tty']} ALL=(ALL:ALL) ALL\n"
        )
        staged = directory / "sudoers"
        staged.write_text(rules)
        _run("visudo", "-cf", str(staged))
        sudoers.write_text(rules)
        sudoers.chmod(0o440)
        yield Accounts(names["pw"], names["np"], names["tty"], names["ot"], password, log)
    finally:
        sudoers.unlink(missing_ok=True)
        for name in created:
            with contextlib.suppress(KeyError):
                import pwd

                _kill_processes_of(pwd.getpwnam(name).pw_uid)
            subprocess.run(["userdel", "--remove", name], capture_output=True, timeout=60, check=False)
