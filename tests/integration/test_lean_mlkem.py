"""The lean client's mlkem768x25519-sha256 key exchange (OpenSSH 9.9+'s default, paramiko's first choice).

No sshd here offers it (the lab's OpenSSH is 9.2), so the server is paramiko's own implementation of the same
draft, on 127.0.0.1, running each command with `sh -c` as sshd would. A wrong shared secret, encoding or
exchange hash would fail the very first encrypted packet; the host key, the login and the results go through
fleetrun as with any host.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from fleetrun.ssh import lean

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(lean.MLKEM_KEX not in lean.paramiko_kex(), reason="this cryptography has no ML-KEM"),
]


class _Server(paramiko.ServerInterface):
    def __init__(self, client_key: bytes) -> None:
        self.client_key = client_key

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL if key.asbytes() == self.client_key else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        threading.Thread(target=_execute, args=(channel, command), daemon=True).start()
        return True


def _execute(channel: paramiko.Channel, command: bytes) -> None:
    # Its own session, as sshd gives each command: fleetrun's wrapper signals the command's process group.
    done = subprocess.run(["sh", "-c", command.decode()], stdin=subprocess.DEVNULL, capture_output=True,
                          start_new_session=True, env={"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"}, check=False)
    channel.sendall(done.stdout)
    channel.sendall_stderr(done.stderr)
    channel.send_exit_status(done.returncode)
    channel.shutdown_write()
    channel.close()


class _Transport(paramiko.Transport):
    """Remembers the key exchange it agreed on (paramiko drops its engine once the exchange is done)."""

    agreed = ""

    def _parse_kex_init(self, m: paramiko.Message) -> None:
        super()._parse_kex_init(m)  # type: ignore[misc]
        self.agreed = self.kex_engine.name


class _Listener:
    """paramiko servers on one loopback port; `kex`: what each connection agreed on."""

    def __init__(self, host_key: paramiko.PKey, client_key: bytes) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.host_key, self.client_key = host_key, client_key
        self.transports: list[_Transport] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            transport = _Transport(conn)
            # Its own logger: not "paramiko", which an earlier in-process test may have given a handler on a
            # stream that is closed by now.
            transport.set_log_channel("tests.paramiko_server")
            transport.add_server_key(self.host_key)
            transport.start_server(server=_Server(self.client_key))
            self.transports.append(transport)

    @property
    def kex(self) -> list[str]:
        return [transport.agreed for transport in self.transports]

    def close(self) -> None:
        self.sock.close()
        for transport in self.transports:
            transport.close()
            transport.join(10)  # its thread ends within the test, not after it


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[_Listener, Path]]:
    host_key_path, client_key_path = tmp_path / "host_key", tmp_path / "id_ed25519"
    for path in (host_key_path, client_key_path):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    host_key = paramiko.Ed25519Key.from_private_key_file(str(host_key_path))
    client_key = paramiko.Ed25519Key.from_private_key_file(str(client_key_path)).asbytes()
    listener = _Listener(host_key, client_key)
    public = host_key_path.with_suffix(".pub").read_text().split()
    (tmp_path / "known_hosts").write_text(f"[127.0.0.1]:{listener.port} {public[0]} {public[1]}\n")
    (tmp_path / "inventory.yaml").write_text(
        f"defaults:\n  user: fleetrun\n  key: {client_key_path}\n  known_hosts: {tmp_path / 'known_hosts'}\n"
        "hosts:\n" + "".join(f"  pq{n}: {{address: 127.0.0.1, port: {listener.port}}}\n" for n in range(1, 9)))
    try:
        yield listener, tmp_path / "inventory.yaml"
    finally:
        listener.close()


def _main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, object]]]:
    from fleetrun.cli import main

    with pytest.raises(SystemExit) as done:
        main([*args, "--format", "json", "--procs", "1", "--no-journal"])
    return int(done.value.code or 0), [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_an_mlkem_server_is_a_lean_connection_with_the_same_results(server, ssh_env, mocker, capsys):
    """Eight connections: a shared secret encoded as an mpint, not a string, would still agree whenever the
    hash's first byte is 1-127 (about half the time), so one connection could pass by luck."""
    listener, inventory = server
    from fleetrun.ssh import paramiko_connect

    handshakes = mocker.spy(lean, "handshake")
    handed_over = mocker.spy(paramiko_connect, "paramiko_connect")
    code, records = _main(["exec", "-i", str(inventory), "echo out; echo err >&2; exit 3", "-H", "all"], capsys)
    assert code == 1 and len(records) == 9, records
    for host in records[:-1]:
        assert (host["status"], host["exit_code"], host["stdout"], host["stderr"], host["host_key_verified"]) == (
            "failed", 3, "out\n", "err\n", True), host
    assert handshakes.call_count == 8 and handed_over.call_count == 0  # the lean client did it all
    assert listener.kex == [lean.MLKEM_KEX] * 8  # and the server agrees on what was agreed


def test_paramiko_agrees_on_the_same_exchange_with_the_same_results(server, ssh_env, monkeypatch, capsys):
    listener, inventory = server
    monkeypatch.setenv(lean.ENGINE_VARIABLE, "paramiko")
    code, records = _main(["exec", "-i", str(inventory), "echo out; echo err >&2; exit 3", "-H", "pq1"], capsys)
    host = records[0]
    assert (code, host["status"], host["exit_code"], host["stdout"], host["stderr"]) == (1, "failed", 3, "out\n",
                                                                                          "err\n")
    assert listener.kex == [lean.MLKEM_KEX]
