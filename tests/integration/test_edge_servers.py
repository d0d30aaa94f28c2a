"""Servers that misbehave in ways real sshd won't on demand, scripted with paramiko's server side on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from fleet import fleetrun

pytestmark = pytest.mark.integration


class SlowAuthServer(paramiko.ServerInterface):
    """Completes the handshake, then takes far too long to answer the authentication request."""

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        time.sleep(8)
        return paramiko.AUTH_FAILED


@pytest.fixture
def slow_auth_server(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """(port, known_hosts, client key) for a scripted server on 127.0.0.1."""
    host_key = paramiko.ECDSAKey.generate()
    known_hosts = tmp_path / "known_hosts"
    client_key = tmp_path / "id_ecdsa"
    paramiko.ECDSAKey.generate().write_private_key_file(str(client_key))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}\n")
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(host_key)
            transport.start_server(server=SlowAuthServer())
            transports.append(transport)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port, known_hosts, client_key
    finally:
        listener.close()
        for transport in transports:
            transport.close()


def test_auth_that_never_answers_is_unreachable_not_auth_failed(slow_auth_server, tmp_path):
    port, known_hosts, client_key = slow_auth_server
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(
        f"defaults: {{user: me, key: {client_key}, known_hosts: {known_hosts}}}\n"
        f"hosts:\n  slow: {{address: 127.0.0.1, port: {port}}}\n"
    )
    started = time.monotonic()
    run = fleetrun("exec", "-i", str(inventory), "true", "-H", "all", "--connect-timeout", "2", "--format", "json",
                   home=tmp_path)
    assert time.monotonic() - started < 8, "the connect timeout covers authentication"
    hosts, _ = run.json()
    assert run.code == 4
    assert hosts["slow"]["status"] == "unreachable" and "authentication" in hosts["slow"]["error"]


class PasswordServer(paramiko.ServerInterface):
    """Accepts one password and runs any command as `echo hello`; counts password attempts."""

    def __init__(self, password: str, attempts: list[str]) -> None:
        self.password = password
        self.attempts = attempts

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        self.attempts.append(password)
        return paramiko.AUTH_SUCCESSFUL if password == self.password else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        def answer() -> None:
            channel.sendall(b"hello\n")
            channel.send_exit_status(0)
            channel.shutdown_write()  # EOF, not close: the exec reply may not have gone out yet

        threading.Thread(target=answer, daemon=True).start()
        return True


def test_password_auth_from_env_and_file_against_a_scripted_server(tmp_path):
    # Runs for every user; the real-sshd version (test_auth.py) needs root to create an account with a password.
    password, attempts = "Corr3ct-horse", []
    host_key = paramiko.ECDSAKey.generate()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key.get_name()} {host_key.get_base64()}\n")
    transports: list[paramiko.Transport] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(host_key)
            transport.start_server(server=PasswordServer(password, attempts))
            transports.append(transport)

    threading.Thread(target=serve, daemon=True).start()
    try:
        base = (f"defaults: {{user: me, known_hosts: {known_hosts}}}\n"
                f"hosts:\n  pw: {{address: 127.0.0.1, port: {port}}}\n")
        inventory = tmp_path / "inv.yaml"
        inventory.write_text(base.replace("known_hosts:", "password_env: FLEET_PW, known_hosts:"))
        ok = fleetrun("exec", "-i", str(inventory), "true", "-H", "all", "--no-agent", "--format", "json",
                      home=tmp_path, FLEET_PW=password)
        assert ok.code == 0, ok.err
        assert ok.json()[0]["pw"]["stdout"] == "hello\n" and attempts == [password]

        attempts.clear()
        wrong = fleetrun("exec", "-i", str(inventory), "true", "-H", "all", "--no-agent", "--format", "json",
                         home=tmp_path, FLEET_PW="not-it")
        assert wrong.code == 4 and wrong.json()[0]["pw"]["status"] == "auth failed"
        assert attempts == ["not-it"], "one attempt, no retries"
        assert "not-it" not in wrong.out + wrong.err

        secret = tmp_path / "pw"
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        inventory.write_text(base.replace("known_hosts:", f"password_file: {secret}, known_hosts:"))
        from_file = fleetrun("exec", "-i", str(inventory), "true", "-H", "all", "--no-agent", home=tmp_path)
        assert from_file.code == 0 and "hello" in from_file.out
    finally:
        listener.close()
        for transport in transports:
            transport.close()
