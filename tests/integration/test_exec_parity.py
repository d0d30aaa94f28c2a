"""`fleetrun exec` against the real OpenSSH client: what the command sees and what fleetrun reports is what
`ssh host 'cmd'` gives, on lab sshds (README, *How commands run*)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fleet import clean_env

pytestmark = pytest.mark.integration

Word = str | bytes


def environment(home: Path, env: dict[str, str]) -> dict[str, str]:
    """clean_env without the caller's locale (LANG, LC_*: as under cron), then `env`."""
    clean = {name: value for name, value in clean_env(home).items() if name != "LANG" and not name.startswith("LC_")}
    return {**clean, **env}


def ssh_argv(lab: Any, host: Any, command: Word, *, config: str = "/dev/null") -> list[Word]:
    """OpenSSH's own client to a lab host with the lab's key and known_hosts; `config` is its -F file."""
    return ["ssh", "-F", config, "-n", "-i", str(lab.client_key), "-o", f"UserKnownHostsFile={lab.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-p", str(host.port), f"{lab.user}@{host.address}", "--", command]


def run_ssh(lab: Any, host: Any, command: Word, home: Path, *, config: str = "/dev/null",
            **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(ssh_argv(lab, host, command, config=config), capture_output=True, timeout=60,
                          stdin=subprocess.DEVNULL, env=environment(home, env))


def run_fleetrun(lab: Any, host: Any, command: Word, home: Path, *options: str, out_dir: Path | None = None,
                 **env: str) -> dict[str, Any]:
    """fleetrun's JSON record for `host`; with `out_dir`, its .out and .err bytes too (as "out", "err")."""
    argv: list[Word] = [sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "-H", host.name,
                        "--format", "json", "--no-journal", *options]
    if out_dir is not None:
        argv += ["--out-dir", str(out_dir)]
    proc = subprocess.run([*argv, "--", command], capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
                          env=environment(home, env))
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert records and records[-1]["type"] == "summary", proc.stderr.decode(errors="replace")[-2000:]
    record: dict[str, Any] = records[0]
    if out_dir is not None:
        record["out"] = (out_dir / f"{host.name}.out").read_bytes()
        record["err"] = (out_dir / f"{host.name}.err").read_bytes()
    return record


ENGINES = [{}, {"FLEETRUN_SSH": "paramiko"}]
RAW = [(), ("--raw",)]


@pytest.mark.parametrize("engine", ENGINES, ids=["lean", "paramiko"])
@pytest.mark.parametrize("raw", RAW, ids=["wrapper", "raw"])
def test_a_command_that_is_not_utf8_goes_as_its_bytes(lab, tmp_path, engine, raw):
    host = lab.hosts[0]
    command = b"printf '%s' '\xff\xfe caf\xe9' | od -An -c"
    ssh = run_ssh(lab, host, command, tmp_path)
    record = run_fleetrun(lab, host, command, tmp_path, *raw, out_dir=tmp_path / "out", **engine)
    assert ssh.returncode == 0 and b"377 376" in ssh.stdout, ssh.stderr
    assert (record["status"], record["exit_code"], record["out"], record["err"]) == ("ok", 0, ssh.stdout, ssh.stderr)


# Each: the command; what matters in it. Bash's own messages start with its $0, which sshd makes `bash`.
CASES = [
    "echo $0; tr '\\0' ' ' </proc/$$/cmdline; echo; no-such-command-here",  # 127, `bash: line 1: …`
    "echo 'unmatched",  # a syntax error: 2
    "-n",  # a command that starts with a dash: bash -c -n
    "/etc/passwd",  # not executable: 126
    "echo trailing\\",
    "   ",
    "exit 256",  # 0
    "exit -1",  # 255
    "exec false",
    "printf 'a\\rb'; printf 'x\\0y' >&2; printf '\\377 no newline'",
    "echo out; echo err >&2; echo out2; printf err2 >&2",
    # no signal left blocked or ignored by the wrapper or its watcher
    "grep -E '^Sig(Blk|Ign)' /proc/self/status; grep -E '^Sig(Blk|Ign)' /proc/$$/status; trap -p",
    "ps -o comm= --ppid $$",  # the command's children: only those it starts (the watcher is none of them)
]


def test_statuses_and_bytes_of_edge_commands_are_what_ssh_gives(lab, tmp_path):
    host = lab.hosts[1]

    def both(index: int) -> tuple[subprocess.CompletedProcess[bytes], dict[str, Any], dict[str, Any]]:
        command = CASES[index]
        ssh = run_ssh(lab, host, command, tmp_path)
        wrapped = run_fleetrun(lab, host, command, tmp_path, out_dir=tmp_path / f"w{index}")
        raw = run_fleetrun(lab, host, command, tmp_path, "--raw", out_dir=tmp_path / f"r{index}")
        return ssh, wrapped, raw

    with ThreadPoolExecutor(4) as pool:  # a second each, mostly waiting: in parallel
        results = list(pool.map(both, range(len(CASES))))
    for command, (ssh, *records) in zip(CASES, results, strict=True):
        assert ssh.returncode != 255 or command == "exit -1", ssh.stderr  # ssh itself worked
        for record in records:
            got = (record["exit_code"], record["signal"], record["out"], record["err"])
            assert got == (ssh.returncode, None, ssh.stdout, ssh.stderr), command


@pytest.mark.parametrize("raw", RAW, ids=["wrapper", "raw"])
def test_a_wait_for_any_child_returns_at_once_as_under_ssh(lab, tmp_path, raw):
    # The watcher was the command's child: os.wait() waited for it, and it for the command, until --timeout.
    host = lab.hosts[2]
    command = 'exec python3 -c "import os; os.wait()"'
    ssh = run_ssh(lab, host, command, tmp_path)
    record = run_fleetrun(lab, host, command, tmp_path, "--timeout", "20", *raw, out_dir=tmp_path / "out")
    assert ssh.returncode == 1 and b"ChildProcessError" in ssh.stderr
    assert (record["status"], record["exit_code"], record["err"]) == ("failed", 1, ssh.stderr)


SEND_ENV_CONFIG = """\
Host *
  SendEnv LANG LC_* FLEETRUN_T_A FLEETRUN_T_B
  SendEnv -FLEETRUN_T_B
  SetEnv FLEETRUN_T_SET="a b" FLEETRUN_T_SET=second LC_SET=from-setenv
"""
LOCAL_ENV = {"LANG": "de_DE.UTF-8", "LC_ALL": "C.UTF-8", "LC_TIME": "x y", "LC_BYTES": "caf\udce9",
             "FLEETRUN_T_A": "a", "FLEETRUN_T_B": "b", "FLEETRUN_T_NOT_SENT": "c"}


@pytest.fixture(scope="module")
def accept_env_lab(tmp_path_factory):
    """One host whose sshd accepts Debian's `LANG LC_*` and the test's own variables."""
    from fleetrun.lab import start_lab, stop_lab

    directory = tmp_path_factory.mktemp("acceptenv")
    try:
        yield start_lab(1, directory, extra_config="AcceptEnv LANG LC_* FLEETRUN_T_*")
    finally:
        stop_lab(directory)


def test_send_env_and_set_env_from_ssh_config_are_sent_as_ssh_sends_them(accept_env_lab, tmp_path):
    lab, host = accept_env_lab, accept_env_lab.hosts[0]
    config = tmp_path / "ssh_config"
    config.write_text(SEND_ENV_CONFIG)
    probe = "env | grep -a -E '^(LANG|LC_|FLEETRUN_T_)' | LC_ALL=C sort"
    ssh = run_ssh(lab, host, probe, tmp_path, config=str(config), **LOCAL_ENV)
    assert ssh.stdout == (b"FLEETRUN_T_A=a\nFLEETRUN_T_SET=a b\nLANG=de_DE.UTF-8\nLC_ALL=C.UTF-8\nLC_BYTES=caf\xe9\n"
                          b"LC_SET=from-setenv\nLC_TIME=x y\n"), ssh.stderr

    def run(case: tuple[int, tuple[str, ...], dict[str, str]]) -> dict[str, Any]:
        index, raw, engine = case
        return run_fleetrun(lab, host, probe, tmp_path, *raw, out_dir=tmp_path / f"out{index}",
                            FLEETRUN_SSH_CONFIG=str(config), **LOCAL_ENV, **engine)

    cases = [(index, raw, engine) for index, (raw, engine) in enumerate((r, e) for r in RAW for e in ENGINES)]
    with ThreadPoolExecutor(4) as pool:
        for (_, raw, engine), record in zip(cases, pool.map(run, cases), strict=True):
            assert (record["status"], record["out"], record["err"]) == ("ok", ssh.stdout, ssh.stderr), (raw, engine)
    # Without a locale (cron): Python's own LC_CTYPE=C.UTF-8 (PEP 538) is not fleetrun's caller's, nor sent.
    unset = {name: value for name, value in LOCAL_ENV.items() if name.startswith("FLEETRUN_T_")}
    ssh = run_ssh(lab, host, probe, tmp_path, config=str(config), **unset)
    assert ssh.stdout == b"FLEETRUN_T_A=a\nFLEETRUN_T_SET=a b\nLC_SET=from-setenv\n", ssh.stderr
    for engine in ENGINES:
        record = run_fleetrun(lab, host, probe, tmp_path, out_dir=tmp_path / f"c{len(engine)}",
                              FLEETRUN_SSH_CONFIG=str(config), **unset, **engine)
        assert record["out"] == ssh.stdout, engine
    # and without an ssh_config (ssh -F /dev/null) nothing is sent, by either
    ssh = run_ssh(lab, host, probe, tmp_path, **LOCAL_ENV)
    record = run_fleetrun(lab, host, probe, tmp_path, out_dir=tmp_path / "none", **LOCAL_ENV)
    assert record["out"] == ssh.stdout == b""
