"""The CLI around the sources: several -i merged, the syntax line of `fleetrun hosts`, `inventory export`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fleetrun.sources import load_sources

FLEETRUN_YAML = """\
defaults: {user: deploy}
hosts:
  web01: {address: 10.0.0.1, groups: [web]}
  only-yaml: {groups: [yaml]}
"""
ANSIBLE_INI = """\
[web]
web01 ansible_host=10.9.9.9 ansible_user=ops
web02
"""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetrun", *args], capture_output=True, text=True, cwd=cwd,
                          stdin=subprocess.DEVNULL, timeout=120, check=False)


def test_fleetrun_and_ansible_sources_merge_in_order(tmp_path: Path) -> None:
    (tmp_path / "inventory.yaml").write_text(FLEETRUN_YAML)
    (tmp_path / "hosts").write_text(ANSIBLE_INI)
    merged = load_sources([str(tmp_path / "inventory.yaml"), str(tmp_path / "hosts")])
    assert list(merged.hosts) == ["web01", "only-yaml", "web02"]  # a host keeps its first position
    assert (merged.hosts["web01"].address, merged.hosts["web01"].user) == ("10.9.9.9", "ops")  # the later wins
    assert set(merged.groups["web"]) == {"web01", "web02"} and merged.groups["yaml"] == ("only-yaml",)
    assert merged.sources == (str(tmp_path / "inventory.yaml"), str(tmp_path / "hosts"))
    reverse = load_sources([str(tmp_path / "hosts"), str(tmp_path / "inventory.yaml")])
    assert reverse.hosts["web01"].address == "10.0.0.1"


def test_hosts_says_which_syntax_it_read(tmp_path: Path) -> None:
    """The listing for people says how the pattern was read; the ones for scripts (--names, json) stay quiet."""
    (tmp_path / "hosts").write_text(ANSIBLE_INI + "[db]\ndb1\n")
    ansible = run("hosts", "-i", "hosts", "all:!db", cwd=tmp_path)
    assert ansible.returncode == 0 and "web01" in ansible.stdout and "db1" not in ansible.stdout
    assert ansible.stderr == ("fleetrun: pattern read as Ansible syntax (unions, then &, then !): union of all; "
                              "then ! db\n")
    plain = run("hosts", "-i", "hosts", "!db", cwd=tmp_path)
    assert "web02" in plain.stdout and "db1" not in plain.stdout
    assert plain.stderr == "fleetrun: pattern read as fleetrun syntax (',' '&' '!' '^' strictly left to right)\n"
    for script_output in (("--names",), ("--format", "json")):
        quiet = run("hosts", "-i", "hosts", "all:!db", *script_output, cwd=tmp_path)
        assert quiet.returncode == 0 and quiet.stderr == ""


def test_inventory_export_command(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text(ANSIBLE_INI)
    out = run("inventory", "export", "-i", "hosts", "--format", "fleetrun", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (tmp_path / "back.yaml").write_text(out.stdout)
    again = load_sources([str(tmp_path / "back.yaml")])
    assert again.hosts["web01"].address == "10.9.9.9" and again.groups["web"] == ("web01", "web02")
    bad = run("inventory", "export", "-i", "hosts", "--format", "toml", cwd=tmp_path)
    assert bad.returncode == 2
