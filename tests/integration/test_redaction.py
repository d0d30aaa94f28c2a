"""Secrets in use never reach the operator: a real host prints them, every surface shows *** instead."""

from __future__ import annotations

import json
import subprocess

import pytest
from fleet import fleetrun, write_inventory

pytestmark = pytest.mark.integration

PASSWORD = "Zq9-db-Secret-Value"  # held from password_env (the key logs in first, but it is a secret in use)
PASSPHRASE = "horse battery staple"  # in use: it unlocks the encrypted key


@pytest.fixture
def leaky(make_lab, tmp_path):
    """A 2-host lab logged into with an encrypted key, and a command that prints both secrets on both streams,
    the password cut in two by a pause so that it arrives in two chunks."""
    lab = make_lab(2)
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-f", str(key)], check=True)
    with (lab.directory / "authorized_keys").open("a") as keys:
        keys.write(key.with_name(key.name + ".pub").read_text())
    inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, key=str(key), password_env="FLEET_PW")
    conf = tmp_path / "app.conf"  # the lab's hosts run on this machine: they all see this file
    conf.write_text(f"db_password={PASSWORD}\nkey_passphrase={PASSPHRASE}\n")
    cut = len("db_password=") + 6
    command = f"head -c {cut} {conf}; sleep 0.5; tail -c +{cut + 1} {conf}; cat {conf} >&2; exit 3"
    env = {"FLEET_PW": PASSWORD, "KEY_PASS": PASSPHRASE}

    def run(*args: str):
        result = fleetrun("exec", "-i", str(inventory), command, "-H", "all", "--key-passphrase-env", "KEY_PASS",
                          *args, home=tmp_path, **env)
        assert result.code == 1, result.out + result.err  # both hosts failed (exit 3): the command ran
        return result

    return run


def assert_masked(text: str) -> None:
    assert PASSWORD not in text
    assert PASSPHRASE not in text
    assert PASSWORD[:6] not in text and PASSWORD[6:] not in text  # not even the halves of the split one
    assert "db_password=***" in text and "key_passphrase=***" in text


def test_secrets_are_masked_on_every_surface(leaky, tmp_path):
    out_dir, junit = tmp_path / "out", tmp_path / "junit.xml"
    table = leaky("--out-dir", str(out_dir), "--junit", str(junit))
    assert_masked(table.out)
    assert PASSWORD not in table.err and PASSPHRASE not in table.err
    for path in sorted(out_dir.iterdir()):
        text = path.read_text()
        assert PASSWORD not in text and PASSPHRASE not in text, path
    assert_masked((out_dir / "lab01.out").read_text())
    assert_masked((out_dir / "lab02.err").read_text())
    assert_masked(junit.read_text())

    verbose = leaky("-v")
    assert_masked(verbose.out)

    hosts, _ = leaky("--format", "json").json()
    assert [record["status"] for record in hosts.values()] == ["failed", "failed"]
    for record in hosts.values():
        assert record["stdout"] == record["stderr"] == "db_password=***\nkey_passphrase=***\n"
        assert_masked(json.dumps(record))

    stream = leaky("--format", "stream")
    assert_masked(stream.out)
    assert_masked(stream.err)
    assert "lab01 | db_password=***" in stream.out.splitlines()

    gather = leaky("-g")
    assert_masked(gather.out)
    assert "==== lab[01-02] (2 hosts): failed (exit 3)" in gather.out
