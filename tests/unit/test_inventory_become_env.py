"""Inventory keys of issue 10 and 14: become, become_user, become_password_env/file, env; and their sources."""

from __future__ import annotations

import os

import pytest
from test_inventory import fails, load

from fleetrun import secrets
from fleetrun.errors import SecretError
from fleetrun.models import Host

INVENTORY = """\
defaults:
  become_password_env: SUDO_PW
  env: {APP_ENV: prod, REGION: eu, PORT: 8080, DEBUG: false}
hosts:
  web01: {groups: [web]}
  web02: {groups: [web], become: false, env: {REGION: null, ONLY: "it's \\"here\\""}}
  db01: {become_user: postgres, become_password_file: db.pw}
groups:
  web: {become: true, env: {APP_ENV: staging}}
  all_db: {hosts: [db01], become: true}
"""


def test_become_and_env_resolve_host_over_groups_over_defaults(tmp_path):
    hosts = load(tmp_path, INVENTORY).hosts
    web01, web02, db01 = hosts["web01"], hosts["web02"], hosts["db01"]
    assert (web01.become, web01.become_user, web01.become_password_env) == (True, None, "SUDO_PW")
    assert web02.become is False
    assert dict(web01.env) == {"APP_ENV": "staging", "REGION": "eu", "PORT": "8080", "DEBUG": "false"}
    assert dict(web02.env) == {"APP_ENV": "staging", "PORT": "8080", "DEBUG": "false", "ONLY": 'it\'s "here"'}
    # a file of its own replaces the env variable it inherited: the two are one choice
    assert (db01.become, db01.become_user, db01.become_password_env) == (True, "postgres", None)
    assert db01.become_password_file == str(tmp_path / "db.pw")


@pytest.mark.parametrize(("entry", "fragments"), [
    ("{become: yes please}", ("become must be true or false",)),
    ("{become_user: ''}", ("become_user must be a non-empty string",)),
    ("{become_password_env: 'hunter 2'}", ("must be the name of an environment variable",)),
    ("{become_password_env: A, become_password_file: f}", ("set become_password_env or become_password_file",)),
    ("{env: [A]}", ("env must be a mapping",)),
    ("{env: {1A: x}}", ("'1A' is not a variable name",)),
    ("{env: {FLEETRUN_HOST: x}}", ("FLEETRUN_HOST is set by fleetrun itself",)),
    ("{env: {A: [1, 2]}}", ("must be a single value",)),
    ("{become_password: hunter2}", ("unknown key 'become_password'",)),
])
def test_bad_become_and_env_keys(tmp_path, entry, fragments):
    message = fails(tmp_path, f"hosts:\n  web01: {entry}\n", 2, *fragments)
    assert "hunter 2" not in message


def test_become_password_from_env_is_taken_and_remembered(monkeypatch):
    monkeypatch.setenv("SUDO_PW_T1", "s3cret\nnote")
    host = Host("web01", "10.0.0.1", become=True, become_password_env="SUDO_PW_T1")
    assert secrets.read_become_password(host) == "s3cret"
    assert "SUDO_PW_T1" not in os.environ and "s3cret" in secrets.held()
    assert secrets.read_become_password(Host("web02", "10.0.0.2", become=True, become_password_env="SUDO_PW_T1")) \
        == "s3cret"  # several hosts may name the same variable


def test_become_password_sources_that_cannot_be_used(tmp_path, monkeypatch):
    monkeypatch.delenv("SUDO_PW_T2", raising=False)
    with pytest.raises(SecretError, match="web01: become_password_env names the environment variable SUDO_PW_T2"):
        secrets.read_become_password(Host("web01", "a", become_password_env="SUDO_PW_T2"))
    loose = tmp_path / "pw"
    loose.write_text("s3cret\n")
    loose.chmod(0o644)
    with pytest.raises(SecretError, match=r"become_password_file .* has mode 0644.*chmod 600"):
        secrets.read_become_password(Host("web01", "a", become_password_file=str(loose)))
    loose.chmod(0o600)
    assert secrets.read_become_password(Host("web01", "a", become_password_file=str(loose))) == "s3cret"


def test_no_become_source_is_none():
    assert secrets.read_become_password(Host("web01", "a", become=True)) is None


@pytest.fixture(autouse=True)
def _forget():
    yield
    secrets.forget_all()


