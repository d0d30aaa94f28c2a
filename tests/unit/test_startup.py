"""Start-up work kept out of runs that do not need it, and done once before worker processes fork (issue 13).

Each check runs in a fresh interpreter, the only place where "what is imported" means anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_fleetrun_inventory_is_read_without_the_ansible_readers(tmp_path: Path):
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts:\n  web1: {address: 127.0.0.1}\n  web2: {address: 127.0.0.2}\n")
    code = ("import sys; from fleetrun.sources import load_sources; "
            f"inventory = load_sources([{str(inventory)!r}]); "
            "print(sorted(inventory.hosts), sorted(m for m in sys.modules if m.startswith('fleetrun.sources.')))")
    assert _python(code) == "['web1', 'web2'] ['fleetrun.sources.yamlload']"


def test_an_ansible_inventory_still_loads_its_readers(tmp_path: Path):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[web]\nweb1 ansible_host=127.0.0.1\n")
    code = ("from fleetrun.sources import load_sources; "
            f"inventory = load_sources([{str(inventory)!r}]); print(sorted(inventory.hosts), inventory.ansible)")
    assert _python(code) == "['web1'] True"


def test_after_warm_a_lean_connection_computes_its_kex_list_without_importing_anything():
    """What warm() does in the parent, each worker process would otherwise do again (cryptography's OpenSSL
    backend, ~30 ms per process)."""
    code = ("import sys; from fleetrun.ssh import lean; lean.warm(); before = set(sys.modules); "
            "kex = lean.paramiko_kex(); "
            "print('curve25519-sha256@libssh.org' in kex, sorted(set(sys.modules) - before))")
    assert _python(code) == "True []"
