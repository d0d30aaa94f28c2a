"""What fleetrun hands on of its environment is what it was started with, as ssh hands on its own (environ.py).

Under the C locale Python sets LC_CTYPE=C.UTF-8 in its own environment (PEP 538); ssh run from the same
shell has no LC_CTYPE, so neither a ProxyCommand nor a `Match exec` command may see one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import os, sys, time
from fleetrun.environ import started_environment
from fleetrun.ssh.proxycommand import ProxyCommandLink
from fleetrun.sshconfig.evaluate import run_exec
from fleetrun.sshconfig.model import Line
out = sys.argv[1]
print("python", os.environ.get("LC_CTYPE"), "started", started_environment().get("LC_CTYPE"))
run_exec(f"env > {out}.exec", Line(out, 1, "match", ("exec",), "exec"))
link = ProxyCommandLink.start(f"env > {out}.proxy")
link.process.wait()
"""


def _run(tmp_path: Path, **extra: str) -> tuple[str, str, str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SHELL": "/bin/sh", **extra}
    out = tmp_path / "env"
    done = subprocess.run([sys.executable, "-c", PROBE, str(out)], env=env, capture_output=True, text=True,
                          check=True)

    def lines(suffix: str) -> str:
        return " ".join(sorted(line for line in (tmp_path / f"env.{suffix}").read_text().splitlines()
                               if line.startswith("LC_")))

    return done.stdout.strip(), lines("exec"), lines("proxy")


def test_python_s_own_lc_ctype_reaches_neither_proxycommand_nor_match_exec(tmp_path):
    said, match_exec, proxy = _run(tmp_path)
    # Where Python coerces the C locale (it does here) os.environ has LC_CTYPE and what fleetrun hands on
    # must not; where it cannot, neither has one, and the same holds.
    assert said in ("python C.UTF-8 started None", "python None started None")
    assert (match_exec, proxy) == ("", "")


def test_an_lc_ctype_of_the_caller_s_is_handed_on(tmp_path):
    said, match_exec, proxy = _run(tmp_path, LC_CTYPE="C.UTF-8", LC_MESSAGES="C")
    assert said == "python C.UTF-8 started C.UTF-8"
    assert match_exec == proxy == "LC_CTYPE=C.UTF-8 LC_MESSAGES=C"
