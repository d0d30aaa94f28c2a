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
