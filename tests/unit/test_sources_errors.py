"""Every mistake in an Ansible inventory: one line naming file and line and what to fix, exit 2, nothing run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fleetrun.errors import InventoryError
from fleetrun.sources import load_sources


def refused(tmp_path: Path, name: str, text: str) -> InventoryError:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    with pytest.raises(InventoryError) as caught:
        load_sources([str(tmp_path / name.split("/")[0])])
    assert "\n" not in str(caught.value)
    return caught.value


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("[web]\nw1\n[p:children]\nweb\nnope\n", 5, "[p:children] names 'nope', which is not a group"),
    ("[web]\nw[01:9]\n", 2, "same number of digits (write [01:09])"),
    ("[web]\nw[1:3:0]\n", 2, "the step must be 1 or more"),
    ("[web]\nw[9:1]\n", 2, "makes no host"),
    ("[web]\nw[f:a]\n", 2, "begin <= end"),
    ("[web]\nw[1:b]\n", 2, "must be numbers"),
    ("[web]\nw[1:3\n", 2, "no closing ']'"),
    ("h1\n[db:vars]\nx=1\n", 2, "[db:vars] is for a group that is never declared"),
    ("[web]\nw1 ansible_password=hunter2\n", 2, "ansible_password: a literal password"),
    ("[web]\nw1\n[web:vars]\nansible_become_pass=s3cret\n", 4, "ansible_become_pass: a literal password"),
    ("[web]\nw1 ansible_ssh_pass=x\n", 2, "a literal password"),
    ("[web]\nw1 ansible_port=abc\n", 2, "ansible_port of host 'w1' must be a port from 1 to 65535, got 'abc'"),
    ("[web]\nw1 ansible_port=70000\n", 2, "must be a port from 1 to 65535"),
    ("[web]\nw1 ansible_become=maybe\n", 2, "ansible_become must be true or false"),
    ("[web:weird]\nw1\n", 1, "unknown type 'weird'"),
    ("[web]\nw1 novalue\n", 2, "expected key=value after the host name, got 'novalue'"),
    ("[web]\nw1 a='unclosed\n", 2, "close the quote"),
    ("[web]\nw1:\n", 2, "ends in ':'"),
    ("[a]\nx\n[a:children]\nb\n[b:children]\na\n[b]\n", 6, "makes a loop"),
    ("[a:vars]\nansible_group_priority=high\n[a]\n", 2, "ansible_group_priority must be a whole number"),
    ("[bad section]\n", 1, "invalid section"),
])
def test_ini_mistakes(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    error = refused(tmp_path, "hosts.ini", text)
    assert error.path.endswith("hosts.ini") and error.line == line
    assert fragment in error.message
    assert "hunter2" not in str(error) and "s3cret" not in str(error)


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("all:\n  hosts:\n    a: {ansible_password: pw}\n", 3, "a literal password"),
    ("all:\n  children:\n    web:\n      hosts: [a, b]\n", 4, "hosts must be a mapping"),
    ("all:\n  hosts:\n    a: 5\n", 3, "must be a mapping of variables"),
    ("all:\n  hosts:\n    123: {}\n", 3, "must be a string"),
    ("all:\n  hosts:\n    w[01:9]: {}\n", 3, "same number of digits"),
    ("plugin: amazon.aws.aws_ec2\nregions: [x]\n", 1, "--ansible-inventory FILE"),
    ("all:\n  hosts: {a: {x: !custom 1}}\n", 2, "cannot read this value"),
    ("all:\n  hosts:\n   - a\n  bad: [\n", 5, "invalid YAML"),
    ("all:\n  children:\n    a:\n      children:\n        b:\n          children:\n            a: {}\n", 5, "loop"),
])
def test_yaml_mistakes(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    error = refused(tmp_path, "inv.yml", text)
    assert error.line == line, error
    assert fragment in error.message


def test_group_vars_mistakes_name_their_file(tmp_path: Path) -> None:
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "hosts").write_text("[web]\nw1\n")
    error = refused(tmp_path, "inv/group_vars/web.yml", "a: 1\nansible_become_password: pw\n")
    assert error.path.endswith("group_vars/web.yml") and error.line == 2
    error = refused(tmp_path, "inv/group_vars/web.yml", "- just\n- a list\n")
    assert "must be a mapping" in error.message and error.line == 1


def test_a_vaulted_or_templated_password_is_not_a_literal_it_is_left_out_with_a_warning(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  hosts:\n    a:\n      ansible_become_password: !vault |\n"
                   "        $ANSIBLE_VAULT;1.1;AES256\n        6162\n"
                   "    b: {ansible_password: '{{ lookup(\"env\", \"PW\") }}'}\n    c:\n")
    inventory = load_sources([str(inv)])
    assert not inventory.unsupported
    assert "ansible_become_password" not in inventory.hosts["a"].vars  # secrets never reach vars
    assert "ansible_password" not in inventory.hosts["b"].vars
    assert [w for w in inventory.warnings if w.startswith("not used: ")] == [
        "not used: ansible_become_password (1 host), ansible_password (1 host): a Jinja template or vault value, "
        "which fleetrun does not evaluate; keys and the agent are still tried (set fleetrun_password_env or "
        "fleetrun_password_file for a password)"]


def test_unsupported_connections_are_listed_not_fatal(tmp_path: Path) -> None:
    inv = tmp_path / "hosts"
    inv.write_text("localhost ansible_connection=local\nwin1 ansible_connection=winrm\nweb1 ansible_connection=ssh\n"
                   "sux ansible_become=yes ansible_become_method=su\n")
    inventory = load_sources([str(inv)])
    assert set(inventory.unsupported) == {"localhost", "win1", "sux"}
    assert f"ansible_connection=local at {inv}:1" in inventory.unsupported["localhost"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleetrun", *args], capture_output=True, text=True, cwd=cwd,
                          stdin=subprocess.DEVNULL, timeout=120, check=False)


def test_cli_exits_2_with_one_line_before_connecting(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("[web]\nw1 ansible_host=127.0.0.1\n[p:children]\nweb\nmissing\n")
    proc = run_cli("exec", "true", "-i", "hosts", "-H", "all", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == ("fleetrun: error: hosts:5: [p:children] names 'missing', which is not a group; declare it "
                           "with [missing] (declaring it later in the file is fine)\n")


def test_cli_refuses_selected_unsupported_hosts_and_lists_them(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("localhost ansible_connection=local\n[web]\nw1 ansible_host=127.0.0.1\n")
    proc = run_cli("exec", "true", "-i", "hosts", "-H", "all", cwd=tmp_path)
    assert proc.returncode == 2
    assert "host 'localhost' cannot be run on: ansible_connection=local at hosts:1" in proc.stderr
    assert "-H 'all!localhost'" in proc.stderr and proc.stderr.count("\n") == 1  # fleetrun syntax, like -H all
    ansible = run_cli("exec", "true", "-i", "hosts", "-H", "all:!w1", cwd=tmp_path)
    assert ansible.returncode == 2 and "-H 'all:!w1:!localhost'" in ansible.stderr
    listed = run_cli("hosts", "-i", "hosts", "--names", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout == "localhost\nw1\n"
    assert "note: localhost cannot be run on" in listed.stderr


def test_cli_ansible_inventory_when_ansible_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fleetrun.sources as sources
    from fleetrun.errors import UsageError

    monkeypatch.setattr(sources.shutil, "which", lambda name: None)
    monkeypatch.setattr(sources.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(UsageError, match=r"not installed \(pip install ansible-core\)"):
        load_sources([], ("inventory.ini",))
