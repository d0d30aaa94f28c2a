"""The lean SSH client (fleetrun.ssh.lean) against real sshd: the same results as through paramiko, paramiko
taking over on the same connection when a server is not one the lean client speaks to, deadlines kept."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from fleet import Run, clean_env, fleetrun, write_inventory

from fleetrun.ssh import lean

pytestmark = pytest.mark.integration
COMPARED = ("status", "exit_code", "signal", "stdout", "stderr", "stdout_truncated", "stderr_truncated", "error",
            "host_key_verified")  # fmt: skip
COMMANDS = [
    "echo out; echo err >&2; exit 3",
    "kill -TERM $$",
    "kill -KILL $$",
    "printf 'no newline at the end'",
    "exit 255",
    "cat; echo stdin was empty",
    # Past the 2 MiB window (adjusts), past the 64 KiB spill threshold, both streams at once.
    "head -c 3000000 /dev/zero | tr '\\0' x; echo; seq 1 20000 >&2",
]


def _run(engine: str, *args: str, home: Path) -> Run:
    return fleetrun(*args, home=home, **({"FLEETRUN_SSH": "paramiko"} if engine == "paramiko" else {}))


def _records(run: Run) -> dict[str, dict[str, object]]:
    hosts, _ = run.json()
    return {name: {key: record[key] for key in COMPARED} for name, record in hosts.items()}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_ends_the_same_through_either_client(lab, ssh_env, command):
    args = ("exec", "-i", str(lab.inventory), command, "-H", "lab01,lab02,lab03", "--format", "json")
    lean_run, paramiko_run = (_run(engine, *args, home=ssh_env) for engine in ("lean", "paramiko"))
    assert lean_run.code == paramiko_run.code
    assert _records(lean_run) == _records(paramiko_run)
    assert "Traceback" not in lean_run.err


def test_streamed_lines_are_the_same_through_either_client(lab, ssh_env):
    args = ("exec", "-i", str(lab.inventory), "seq 1 3; echo oops >&2; printf tail", "-H", "lab04,lab05",
            "--format", "stream")  # fmt: skip
    lean_run, paramiko_run = (_run(engine, *args, home=ssh_env) for engine in ("lean", "paramiko"))
    assert sorted(lean_run.out.splitlines()) == sorted(paramiko_run.out.splitlines())
    for host in ("lab04", "lab05"):  # each host's lines in its own order, the unfinished last one too
        assert [line for line in lean_run.out.splitlines() if line.startswith(host)] == [
            f"{host} | 1", f"{host} | 2", f"{host} | 3", f"{host} | tail"]
        assert f"{host} | oops" in lean_run.err


def _main(args: list[str], capsys) -> tuple[int, list[dict[str, object]]]:
    from fleetrun.cli import main

    with pytest.raises(SystemExit) as done:
        main([*args, "--format", "json", "--procs", "1", "--no-journal"])  # one process: the spies see it all
    return int(done.value.code or 0), [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_exec_needs_no_paramiko_transport(lab, ssh_env, mocker, capsys):
    handshakes = mocker.spy(lean, "handshake")
    transports = mocker.spy(paramiko.Transport, "__init__")
    code, records = _main(["exec", "-i", str(lab.inventory), "true", "-H", "lab01,lab02,lab03,lab04"], capsys)
    assert code == 0 and [r["status"] for r in records[:-1]] == ["ok"] * 4
    assert handshakes.call_count == 4 and transports.call_count == 0


def test_a_run_of_lean_connections_never_imports_paramiko(lab, ssh_env):
    # paramiko's import is ~60 ms of every run's start-up: a run that needs none of it must not pay for it.
    code = ("import sys\nfrom fleetrun.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('paramiko' in sys.modules, file=sys.stderr)")
    argv = [sys.executable, "-c", code, "exec", "-i", str(lab.inventory), "echo hi", "-H", "lab01,lab02",
            "--format", "json", "--no-journal", "--procs", "1"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=clean_env(ssh_env),
                          stdin=subprocess.DEVNULL)
    assert done.stderr.strip().splitlines()[-1] == "False", done.stderr
    assert [json.loads(line)["status"] for line in done.stdout.splitlines()[:-1]] == ["ok", "ok"]


def test_the_engine_switch_sends_everything_through_paramiko(lab, ssh_env, mocker, monkeypatch, capsys):
    monkeypatch.setenv("FLEETRUN_SSH", "paramiko")
    handshakes = mocker.spy(lean, "handshake")
    code, _ = _main(["exec", "-i", str(lab.inventory), "true", "-H", "lab01,lab02"], capsys)
    assert code == 0 and handshakes.call_count == 0


def _log_from(path: Path, offset: int) -> str:
    return path.read_text()[offset:]


@pytest.mark.parametrize("config", ["Ciphers aes128-ctr", "KexAlgorithms diffie-hellman-group14-sha256",
                                    "MACs hmac-sha2-512\nCiphers aes256-ctr"])
def test_a_server_paramiko_must_talk_to_is_handed_over_on_the_same_connection(make_lab, ssh_env, mocker, capsys,
                                                                               config):
    lab = make_lab(1, extra_config=f"LogLevel VERBOSE\n{config}")
    log = lab.directory / "lab01.log"
    before = len(log.read_text())
    handshakes = mocker.spy(lean, "handshake")
    transports = mocker.spy(paramiko.Transport, "__init__")
    code, records = _main(["exec", "-i", str(lab.inventory), "echo handed over", "-H", "lab01"], capsys)
    assert code == 0 and records[0]["stdout"] == "handed over\n"
    assert handshakes.call_count == 1 and transports.call_count == 1
    seen = _log_from(log, before)
    assert seen.count("Connection from ") == 1, seen  # one TCP connection: nothing was tried twice
    assert seen.count("Accepted publickey") == 1


def test_a_server_with_only_legacy_algorithms_gets_paramikos_words_either_way(make_lab, ssh_env):
    lab = make_lab(1, extra_config="KexAlgorithms diffie-hellman-group1-sha1")
    args = ("exec", "-i", str(lab.inventory), "true", "-H", "lab01", "--format", "json")
    lean_run, paramiko_run = (_run(engine, *args, home=ssh_env) for engine in ("lean", "paramiko"))
    assert lean_run.code == paramiko_run.code == 4  # unreachable
    assert _records(lean_run) == _records(paramiko_run)
    assert "key exchange" in _records(lean_run)["lab01"]["error"]  # type: ignore[operator]


def test_rsa_host_keys_and_rsa_and_ecdsa_key_files(make_lab, ssh_env, tmp_path, mocker, capsys):
    lab = make_lab(1, host_key_type="rsa")
    keys = []
    for keytype, bits in (("rsa", "3072"), ("ecdsa", "256"), ("ed25519", "")):
        path = tmp_path / f"id_{keytype}"
        subprocess.run(["ssh-keygen", "-q", "-t", keytype, *(["-b", bits] if bits else []), "-N", "", "-f",
                        str(path)], check=True)  # fmt: skip
        keys.append(path)
        with (lab.directory / "authorized_keys").open("a") as authorized:
            authorized.write(path.with_suffix(".pub").read_text())
    handshakes = mocker.spy(lean, "handshake")
    offers = mocker.spy(lean.LeanConnection, "auth_publickey")
    for key in keys:
        code, records = _main(["exec", "-i", str(lab.inventory), "echo $FLEETRUN_LAB_HOST", "-H", "lab01",
                               "--key", str(key)], capsys)  # fmt: skip
        assert code == 0 and records[0]["stdout"] == "lab01\n", records
    assert handshakes.call_count == 3 and offers.call_count == 3


@pytest.mark.parametrize("engine", ["lean", "paramiko"])
def test_a_server_that_rekeys_mid_command_loses_nothing(make_lab, ssh_env, engine):
    lab = make_lab(1, extra_config="RekeyLimit 64K\nLogLevel DEBUG1")
    log = lab.directory / "lab01.log"
    before = len(log.read_text())
    run = _run(engine, "exec", "-i", str(lab.inventory), "seq 1 200000; exit 7", "-H", "lab01", "--format", "json",
               home=ssh_env)  # fmt: skip
    record = run.json()[0]["lab01"]
    assert (record["status"], record["exit_code"]) == ("failed", 7)
    # seq's output spills to a file past 64 KiB; JSON carries it all.
    assert record["stdout"] == "".join(f"{n}\n" for n in range(1, 200001))
    assert _log_from(log, before).count("SSH2_MSG_KEXINIT sent") >= 3  # the first exchange, then rekeys


class _Relay:
    """A TCP relay to a real sshd that passes the server's banner and KEXINIT, then nothing more from it."""

    def __init__(self, address: str, port: int) -> None:
        self.target = (address, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        server = socket.create_connection(self.target)
        self.sockets += [client, server]
        threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()
        buffered = b""
        while True:  # the banner line, then one whole packet: the server's KEXINIT
            buffered += server.recv(65536)
            head, _, rest = buffered.partition(b"\n")
            if rest[4:] and len(rest) >= 4 + int.from_bytes(rest[:4], "big"):
                client.sendall(head + b"\n" + rest[: 4 + int.from_bytes(rest[:4], "big")])
                break

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def relay(lab) -> Iterator[_Relay]:
    host = lab.hosts[0]
    relay = _Relay(host.address, host.port)
    yield relay
    relay.close()


def test_a_key_exchange_that_stalls_ends_at_the_connect_timeout(lab, ssh_env, relay, tmp_path):
    inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, connect_timeout=3,
                                extra_hosts={"stalled": {"address": "127.0.0.1", "port": relay.port}})
    started = time.monotonic()
    run = fleetrun("exec", "-i", str(inventory), "true", "-H", "stalled", "--format", "json", home=ssh_env)
    waited = time.monotonic() - started
    record = run.json()[0]["stalled"]
    assert run.code == 4 and record["status"] == "unreachable"
    assert "key exchange" in record["error"] and "in time" in record["error"], record["error"]
    assert 2.5 <= waited < 30


def test_a_silent_server_is_still_named_as_such_when_handing_over_takes_time(lab, ssh_env, tmp_path, mocker, capsys):
    """The lean client hands a silent server to paramiko with a sliver of the budget left for its words; the
    first paramiko import of a process (slow on a busy machine, here 0.3 s) must not turn "no SSH banner" into
    a bare "connect timed out"."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts connections, nobody ever sends a banner
    handshake = lean.handshake

    def slow_handover(*args, **kwargs):
        try:
            return handshake(*args, **kwargs)
        except lean.Handover:
            time.sleep(0.3)  # what importing paramiko may take
            raise

    mocker.patch.object(lean, "handshake", side_effect=slow_handover)
    try:
        inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory, connect_timeout=1,
                                    extra_hosts={"quiet": {"address": "127.0.0.1", "port": silent.getsockname()[1]}})
        code, records = _main(["exec", "-i", str(inventory), "true", "-H", "quiet"], capsys)
    finally:
        silent.close()
    assert code == 4 and records[0]["status"] == "unreachable"
    assert records[0]["error"].startswith("no SSH banner from 127.0.0.1:"), records[0]["error"]
