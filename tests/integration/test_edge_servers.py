"""Servers that misbehave: scripted listeners and paramiko servers on loopback, and real sshd set up to refuse.

Every failure must come back as one line in the host's result saying what happened, and nothing on stderr
(no paramiko traceback: it logs each failed handshake at ERROR, and Python's last-resort handler prints it).
"""

from __future__ import annotations

import json
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest
from fleet import clean_env, fleetrun

pytestmark = pytest.mark.integration


class Listeners:
    """Scripted TCP servers on 127.0.0.1, one port per behaviour; counts the connections each accepted."""

    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self.accepted: dict[str, threading.Event] = {}
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def add(self, name: str, behave: Callable[[socket.socket], None]) -> int:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        self._sockets.append(listener)
        self.ports[name] = listener.getsockname()[1]
        self.accepted[name] = threading.Event()

        def serve() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with self._lock:
                    self._sockets.append(conn)
                self.accepted[name].set()
                threading.Thread(target=self._run, args=(behave, conn), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        return self.ports[name]

    @staticmethod
    def _run(behave: Callable[[socket.socket], None], conn: socket.socket) -> None:
        try:
            behave(conn)
        except OSError:
            pass

    def inventory(self, path: Path) -> Path:
        hosts = "".join(f"  {name}: {{address: 127.0.0.1, port: {port}}}\n" for name, port in self.ports.items())
        path.write_text(f"hosts:\n{hosts}")
        return path

    def close(self) -> None:
        with self._lock:
            for sock in self._sockets:
                sock.close()


def silent(conn: socket.socket) -> None:
    """Accepts and says nothing (the kernel completed the TCP handshake): a hung service."""


def reset(conn: socket.socket) -> None:
    """Resets at once (SO_LINGER 0), as a firewall or an overloaded sshd may."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def close_after_hello(conn: socket.socket) -> None:
    """Reads the client's banner, then closes cleanly without a word (tcp wrappers refusing the client)."""
    conn.recv(256)
    conn.close()


def http(conn: socket.socket) -> None:
    """An HTTP server given an SSH banner as its request line."""
    conn.recv(256)
    conn.sendall(b"HTTP/1.0 400 Bad request version ('SSH-2.0-paramiko_5.1.0')\r\nServer: test\r\n\r\n")
    conn.close()


def smtp(conn: socket.socket) -> None:
    """A mail server's greeting, then it waits."""
    conn.sendall(b"220 mail.example.com ESMTP ready\r\n")
    time.sleep(30)


def stall(conn: socket.socket) -> None:
    """An SSH banner, then nothing: an sshd that cannot fork or read its keys."""
    conn.sendall(b"SSH-2.0-OpenSSH_9.9 stalled\r\n")
    time.sleep(30)


@pytest.fixture
def listeners() -> Iterator[Listeners]:
    servers = Listeners()
    try:
        yield servers
    finally:
        servers.close()


def assert_quiet(err: str) -> None:
    """Nothing on stderr but fleetrun's own one-line messages."""
    assert "Traceback" not in err and "Exception" not in err and "paramiko" not in err, err
    assert all(line.startswith("fleetrun: ") for line in err.splitlines()), err


def test_each_misbehaving_server_is_one_line_saying_what_happened(listeners, tmp_path):
    for name, behave in [("silent", silent), ("reset", reset), ("closed", close_after_hello), ("http", http),
                         ("smtp", smtp), ("stall", stall)]:
        listeners.add(name, behave)
    inventory = listeners.inventory(tmp_path / "inv.yaml")
    started = time.monotonic()
    run = fleetrun("exec", "-i", str(inventory), "true", "-H", "all", "--connect-timeout", "3", "--format", "json",
                   home=tmp_path)
    assert time.monotonic() - started < 25
    assert run.code == 4
    assert run.err == ""
    errors = {name: record["error"] for name, record in run.json()[0].items()}
    assert {record["status"] for record in run.json()[0].values()} == {"unreachable"}
    where = {name: f"127.0.0.1:{port}" for name, port in listeners.ports.items()}
    assert re.fullmatch(rf"no SSH banner from {where['silent']} within 3\.\d s: .*nothing answers", errors["silent"])
    assert errors["reset"].startswith(f"connection reset by {where['reset']} before any SSH banner"), errors["reset"]
    assert errors["closed"] == f"{where['closed']} accepted the connection and closed it without sending an SSH banner"
    assert errors["http"].startswith(f"the server at {where['http']} speaks HTTP, not SSH")
    assert f"{where['smtp']} is not an SSH server: it sent \"220 mail.example.com ESMTP ready\"" in errors["smtp"]
    assert re.fullmatch(
        rf"SSH handshake with {where['stall']} did not finish within 3\.\d s "
        r'\(banner "SSH-2\.0-OpenSSH_9\.9 stalled", then silence\)',
        errors["stall"],
    )


def test_a_silent_listener_always_gets_the_same_words(listeners, tmp_path):
    # start_client's own timeout and paramiko's banner timeout race; either way the line is the same.
    for number in range(6):
        listeners.add(f"silent{number}", silent)
    inventory = listeners.inventory(tmp_path / "inv.yaml")
    run = fleetrun("exec", "-i", str(inventory), "true", "-H", "all", "--connect-timeout", "1", "--format", "json",
                   home=tmp_path)
    assert run.code == 4 and run.err == ""
    assert all(record["error"].startswith("no SSH banner from 127.0.0.1:") for record in run.json()[0].values())


def test_fleetrun_debug_shows_what_paramiko_logged(listeners, tmp_path):
    listeners.add("closed", close_after_hello)
    run = fleetrun("exec", "-i", str(listeners.inventory(tmp_path / "inv.yaml")), "true", "-H", "all",
                   home=tmp_path, FLEETRUN_DEBUG="1")
    assert run.code == 4
    assert "paramiko: " in run.err and "Error reading SSH protocol banner" in run.err


def test_table_output_for_silent_hosts_has_no_traceback_on_stderr(listeners, tmp_path):
    # The repro: a listener that accepts and sleeps, a host on that port, --connect-timeout 3.
    listeners.add("silent", silent)
    run = fleetrun("exec", "-i", str(listeners.inventory(tmp_path / "inv.yaml")), "true", "-H", "all",
                   "--connect-timeout", "3", home=tmp_path)
    assert run.code == 4 and run.err == "" and "no SSH banner" in run.out


def test_deadline_while_connecting_is_timeout_without_noise(listeners, tmp_path):
    listeners.add("silent", silent)
    started = time.monotonic()
    run = fleetrun("exec", "-i", str(listeners.inventory(tmp_path / "inv.yaml")), "true", "-H", "all",
                   "--connect-timeout", "60", "--deadline", "1.5", "--format", "json", home=tmp_path)
    assert time.monotonic() - started < 20
    assert run.code == 3, run.err
    assert run.json()[0]["silent"]["status"] == "timeout"
    assert run.err == ""


def test_ctrl_c_while_connecting_is_130_with_one_line_on_stderr(listeners, tmp_path):
    for number in range(3):
        listeners.add(f"silent{number}", silent)
    command = [sys.executable, "-m", "fleetrun", "exec", "-i", str(listeners.inventory(tmp_path / "inv.yaml")),
               "true", "-H", "all", "--connect-timeout", "60", "--format", "json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=clean_env(tmp_path))
    try:
        for accepted in listeners.accepted.values():
            assert accepted.wait(20), "fleetrun never connected"
        time.sleep(0.3)  # let paramiko's threads start waiting for the banners
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    records = [json.loads(line) for line in out.splitlines()]
    assert {r["status"] for r in records if r["type"] == "host"} == {"cancelled"}
    assert_quiet(err)
    assert len(err.splitlines()) == 1 and "stopping" in err


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (dict(host_key_type="rsa", extra_config="HostKeyAlgorithms ssh-rsa"),
         "no common host key type with {where}: the server (SSH-2.0-OpenSSH_{version}) offers only ssh-rsa host "
         "keys, which paramiko 5 no longer accepts (SHA-1 signatures)"),
        (dict(extra_config="KexAlgorithms diffie-hellman-group14-sha1"),
         "no common key exchange with {where}: the server (SSH-2.0-OpenSSH_{version}) offers only "
         "diffie-hellman-group14-sha1, which paramiko 5 no longer accepts (SHA-1)"),
    ],
    ids=["ssh-rsa-host-keys-only", "sha1-kex-only"],
)
def test_real_sshd_with_only_legacy_algorithms_is_named_by_family(make_lab, tmp_path, options, words):
    lab = make_lab(1, **options)
    host = lab.hosts[0]
    run = fleetrun("exec", "-i", str(lab.inventory), "true", "-H", "all", "--format", "json", home=tmp_path)
    assert run.code == 4 and run.err == ""
    version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.split(",")[0]
    version = version.removeprefix("OpenSSH_")  # the client's version is the server's here: one package
    record = run.json()[0][host.name]
    assert record["status"] == "unreachable"
    assert record["error"] == words.format(where=f"{host.address}:{host.port}", version=version)


def test_sshd_past_max_startups_says_so(make_lab, tmp_path):
    lab = make_lab(1, extra_config="MaxStartups 1")
    host = lab.hosts[0]
    with socket.create_connection((host.address, host.port)) as holder:  # not logged in: holds the one startup
        holder.recv(256)  # its banner came: sshd has counted it
        run = fleetrun("exec", "-i", str(lab.inventory), "true", "-H", "all", "--format", "json", home=tmp_path)
    assert run.code == 4 and run.err == ""
    error = run.json()[0][host.name]["error"]
    # sshd writes "Exceeded MaxStartups" and closes; if its reset overtakes the text, the reset is what happened.
    assert "Exceeded MaxStartups" in error or error.startswith("connection reset by"), error
    assert "MaxStartups" in error and "no SSH banner within" not in error


def test_a_pull_abandoned_mid_transfer_prints_no_thread_traceback(make_lab, tmp_path):
    # paramiko's SFTP prefetch thread dies with "Socket is closed" when a download is abandoned (here: the local
    # file may not grow past 1 MB, as on a full disk); the host's result says what happened, stderr nothing.
    lab = make_lab(4)
    big = tmp_path / "big.bin"
    with big.open("wb") as out:
        out.write(b"\0" * (32 << 20))

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write() rather than death by signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    command = [sys.executable, "-m", "fleetrun", "pull", "-i", str(lab.inventory), str(big), str(tmp_path / "got"),
               "-H", "all", "--format", "json"]
    for _ in range(3):  # the thread dies only when it is sending at that moment; three runs of 4 hosts catch it
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                              env=clean_env(tmp_path), preexec_fn=small_files)
        assert done.returncode == 1, done.stderr
        assert done.stderr == ""
        records = [json.loads(line) for line in done.stdout.splitlines()]
        assert {r["status"] for r in records if r["type"] == "host"} == {"failed"}


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
