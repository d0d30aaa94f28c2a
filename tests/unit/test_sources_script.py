"""Executable inventories and `--list` JSON: `--host` only without `_meta`, a timeout, stderr on failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fleetrun.errors import InventoryError
from fleetrun.sources import load_sources

LISTING = {
    "web": {"hosts": ["web1", "web2"], "vars": {"http_port": 80}},
    "db": ["db1"],  # a bare list of hosts
    "prod": {"children": ["web", "db"]},
    "old": {"flag": True},  # old style: a group of that one host, with these vars
}
HOSTVARS = {"web1": {"ansible_host": "127.0.0.5", "ansible_port": 2222}, "db1": {"ansible_user": "pg"}}


def script(tmp_path: Path, *, meta: bool, extra: str = "") -> tuple[Path, Path]:
    """An inventory script that logs each call, so the test can count the --host ones."""
    calls = tmp_path / "calls.log"
    listing = dict(LISTING, **({"_meta": {"hostvars": HOSTVARS}} if meta else {}))
    path = tmp_path / "inventory.py"
    path.write_text(f"""#!{sys.executable}
import json, sys
with open({str(calls)!r}, "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
{extra}
if sys.argv[1] == "--list":
    print(json.dumps({listing!r}))
else:
    print(json.dumps({HOSTVARS!r}.get(sys.argv[2], {{}})))
""")
    path.chmod(0o755)
    return path, calls


@pytest.mark.parametrize("meta", [True, False])
def test_script_with_and_without_meta(tmp_path: Path, meta: bool) -> None:
    path, calls = script(tmp_path, meta=meta)
    inventory = load_sources([str(path)])
    logged = calls.read_text().splitlines()
    if meta:
        assert logged == ["--list"]  # _meta.hostvars says it all: no --host call
    else:
        assert logged[0] == "--list"
        assert sorted(logged[1:]) == ["--host db1", "--host old", "--host web1", "--host web2"]  # once per host
    web1 = inventory.hosts["web1"]
    assert (web1.address, web1.port, web1.vars["http_port"]) == ("127.0.0.5", 2222, 80)
    assert inventory.hosts["db1"].user == "pg"
    assert set(inventory.groups["prod"]) == {"web1", "web2", "db1"}
    assert inventory.hosts["old"].vars == {"flag": True}


def test_script_failure_shows_its_stderr(tmp_path: Path) -> None:
    path, _ = script(tmp_path, meta=True, extra="print('cannot reach the CMDB', file=sys.stderr); sys.exit(3)")
    with pytest.raises(InventoryError) as caught:
        load_sources([str(path)])
    assert str(caught.value).endswith("exited with status 3; its stderr: cannot reach the CMDB")


def test_script_timeout_kills_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = script(tmp_path, meta=True, extra="import time; time.sleep(60)")
    monkeypatch.setenv("FLEETRUN_INVENTORY_TIMEOUT", "0.5")
    with pytest.raises(InventoryError, match=r"did not finish within 0.5 s .* it was killed"):
        load_sources([str(path)])


def test_script_printing_garbage(tmp_path: Path) -> None:
    path, _ = script(tmp_path, meta=True, extra="print('{not json'); sys.exit(0)")
    with pytest.raises(InventoryError, match=r"inventory.py:1: the inventory is not valid JSON"):
        load_sources([str(path)])


def test_list_json_file_and_stdin(tmp_path: Path) -> None:
    listed = dict(LISTING, _meta={"hostvars": HOSTVARS})
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(listed))
    from_file = load_sources([str(path)])
    proc = subprocess.run([sys.executable, "-m", "fleetrun", "hosts", "-i", "-", "--names", "prod"],
                          input=json.dumps(listed), capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [name for name in from_file.groups["prod"]]


def test_ansible_inventory_program_is_the_universal_path(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("[web]\nw1 ansible_host=127.0.0.9 ansible_port=2200\n[web:vars]\nx=1\n")
    inventory = load_sources([], (str(tmp_path / "hosts"),))
    assert inventory.hosts["w1"].address == "127.0.0.9" and inventory.hosts["w1"].port == 2200
    assert inventory.hosts["w1"].vars == {"x": 1}
    with pytest.raises(InventoryError, match=r"ansible-inventory -i .*exited with status"):
        load_sources([], (str(tmp_path / "missing"),))


def test_secrets_in_program_output_are_dropped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps({"web": ["w1"], "_meta": {"hostvars": {"w1": {"ansible_password": "pw", "a": 1}}}}))
    inventory = load_sources([str(path)])
    assert inventory.hosts["w1"].vars == {"a": 1}
    assert any("dropped ansible_password" in warning for warning in inventory.warnings)
