"""TAB completion in a real interactive bash on a pseudo-terminal: readline, quoting and word breaks included."""

from __future__ import annotations

import os
import pty
import select
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

INVENTORY = "hosts:\n  web01:\n  web02:\n  db01:\ngroups:\n  web: [web01, web02]\n  prod: [web01, db01]\n"


def type_and_tab(typed: str, want: str, cwd: Path, home: Path) -> str:
    """Start bash, load fleetrun's completion, type `typed` and TAB; what the terminal shows once `want`
    appears (or after a generous deadline)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: an interactive bash with no rc files, fleetrun on its PATH
        os.chdir(cwd)
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(home), "TERM": "dumb",
               "PS1": "$ ", "FLEETRUN_CONFIG": "none"}
        os.execve(shutil.which("bash") or "/bin/bash", ["bash", "--norc", "--noprofile", "-i"], env)
    seen = b""

    def read_until(marker: bytes, seconds: float) -> None:
        nonlocal seen
        deadline = time.monotonic() + seconds
        while marker not in seen.replace(b"\a", b"") and time.monotonic() < deadline:  # readline rings on ambiguity
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(fd, 4096)
                except OSError:
                    return

    try:
        os.write(fd, b"source <(fleetrun --show-completion bash); echo READY\n")
        read_until(b"READY\r\n$ ", 60)
        seen = b""
        os.write(fd, typed.encode() + b"\t")
        read_until(want.encode(), 60)
        return seen.replace(b"\a", b"").decode(errors="replace")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize(("typed", "completed"), [
    ("fleetrun exec true -H we", "fleetrun exec true -H web"),  # the common prefix of web, web01, web02
    ("fleetrun exec true -H 'web&pr", "fleetrun exec true -H 'web&prod' "),  # '&' inside quotes
    ("fleetrun exec true -H web,d", "fleetrun exec true -H web,db"),
    ("fleetrun exec true -H 'web:!d", "fleetrun exec true -H 'web:!db"),  # Ansible's ':' is a bash word break
    ("fleetrun exec true -H all -x pr", "fleetrun exec true -H all -x prod "),
    ("fleetrun hos", "fleetrun hosts "),
])
def test_bash_completes_patterns_as_typed(tmp_path, typed, completed):
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    shown = type_and_tab(typed, completed, tmp_path, tmp_path)
    assert completed in shown, shown
