"""stdin to every host, --script and per-host variables, against real sshd with a default AcceptEnv (issue 14)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from fleet import Run, clean_env, fleetrun

pytestmark = pytest.mark.integration

TRICKY = ["two  spaces", "it's \"quoted\"", "$HOME `id` $(id) ${X:-y}", "line1\nline2\n", "back\\slash", "",
          "ünïcödé", "-n", "*"]


def run(*args: str, home: Path, stdin: bytes = b"", timeout: float = 180) -> Run:
    proc = subprocess.run([sys.executable, "-m", "fleetrun", *args], input=stdin, capture_output=True,
                          timeout=timeout, env=clean_env(home))
    return Run(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))


def test_stdin_goes_to_every_host(lab, tmp_path):
    result = run("exec", "-i", str(lab.inventory), "-H", "all", "--format", "json", "wc -l", home=tmp_path,
                 stdin=b"a\nb\n")
    assert result.code == 0, result.err
    hosts, _ = result.json()
    assert len(hosts) == 20 and {record["stdout"].strip() for record in hosts.values()} == {"2"}


def test_forwarded_stdin_runs_in_one_process_and_says_so_when_procs_asked_for_more(lab, tmp_path):
    result = run("exec", "-i", str(lab.inventory), "-H", "lab0[1-4]", "--procs", "2", "--format", "json", "wc -l",
                 home=tmp_path, stdin=b"a\nb\n")
    assert result.code == 0, result.err
    assert {record["stdout"].strip() for record in result.json()[0].values()} == {"2"}
    assert "running in one process, not 2 (--procs): stdin is forwarded to the commands" in result.err


def test_no_stdin_and_n_send_nothing(lab, tmp_path):
    for flag in ("-n", "--no-stdin"):
        result = run("exec", "-i", str(lab.inventory), "-H", "lab01", flag, "--format", "json", "wc -c",
                     home=tmp_path, stdin=b"data\n")
        assert result.code == 0 and result.json()[0]["lab01"]["stdout"].strip() == "0"


def test_later_hosts_get_the_whole_input_with_forks_2(lab, tmp_path):
    data = os.urandom(300_000)
    result = run("exec", "-i", str(lab.inventory), "-H", "lab0[1-6]", "-f", "2", "--format", "json",
                 "sleep 0.3; sha256sum", home=tmp_path, stdin=data)
    assert result.code == 0, result.err
    hosts, _ = result.json()
    assert len(hosts) == 6
    assert {record["stdout"].split()[0] for record in hosts.values()} == {hashlib.sha256(data).hexdigest()}


def test_an_open_stdin_that_is_never_read_does_not_keep_fleetrun(lab, tmp_path):
    # `sleep 600 | fleetrun exec true -H all`: the pipe stays open (we hold its write end), and no command reads it
    read_fd, write_fd = os.pipe()
    try:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "-H", "all",
                               "true"], stdin=read_fd, capture_output=True, timeout=60, env=clean_env(tmp_path))
        elapsed = time.monotonic() - started
    finally:
        os.close(write_fd)
        os.close(read_fd)
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 30 and b"20 ok" in proc.stdout


def test_open_stdin_feeding_a_command_that_ends_first(lab, tmp_path):
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, b"first line\n")
        proc = subprocess.run([sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "-H", "lab0[1-3]",
                               "--format", "json", "head -n 1"], stdin=read_fd, capture_output=True, timeout=60,
                              env=clean_env(tmp_path))
    finally:
        os.close(write_fd)
        os.close(read_fd)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(b'"stdout": "first line\\n"') == 3


def test_timeout_still_kills_a_command_that_reads_stdin(lab, tmp_path):
    read_fd, write_fd = os.pipe()  # never written, never closed while fleetrun runs
    try:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "-H", "lab01",
                               "-t", "2", "cat; sleep 59.5"], stdin=read_fd, capture_output=True, timeout=60,
                              env=clean_env(tmp_path))
    finally:
        os.close(write_fd)
        os.close(read_fd)
    assert proc.returncode == 3 and b"timed out after 2 s" in proc.stdout
    assert time.monotonic() - started < 30
    assert wait_gone(b"sleep\x0059.5\x00")


def wait_gone(argv: bytes, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        running = False
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    running = running or (entry / "cmdline").read_bytes() == argv
                except OSError:
                    pass
        if not running:
            return True
        time.sleep(0.2)
    return False


def peak_rss(lab, home: Path, stdin: object, *flags: str) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    """(fleetrun's peak RSS in KiB, its stdout) for `sha256sum` on 10 hosts.

    Read from /proc (VmHWM, the high-water mark since exec) while it runs: the rusage of a child forked from
    this big pytest process counts the fork's copy of pytest's memory too."""
    proc = subprocess.Popen([sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "-H",
                             "lab0[1-9],lab10", "--format", "json", *flags, "sha256sum"], stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=clean_env(home))
    chunks: list[bytes] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    high = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            break
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if match and "python" in Path(f"/proc/{proc.pid}/comm").read_text(errors="replace"):
            high = max(high, int(match.group(1)))
        time.sleep(0.02)
    reader.join(60)
    assert proc.wait(60) == 0 and high > 0
    return high, b"".join(chunks)


def test_50_mb_on_stdin_to_10_hosts_with_bounded_memory(lab, tmp_path):
    data_file = tmp_path / "data"
    block = os.urandom(1 << 20)
    with data_file.open("wb") as handle:
        for index in range(50):
            handle.write(bytes([index]) + block[1:])
    digest = hashlib.sha256(data_file.read_bytes()).hexdigest()
    # Through a pipe, as `cat data | fleetrun …`
    cat = subprocess.Popen(["cat", str(data_file)], stdout=subprocess.PIPE)
    try:
        piped, out = peak_rss(lab, tmp_path, cat.stdout)
    finally:
        assert cat.stdout is not None
        cat.stdout.close()
        cat.wait()
    baseline, _ = peak_rss(lab, tmp_path, subprocess.DEVNULL, "-n")
    assert out.count(digest.encode()) == 10
    print(f"peak RSS: {piped} KiB with 50 MB on stdin to 10 hosts, {baseline} KiB without")
    assert piped - baseline < 20 * 1024, (piped, baseline)  # 50 MB to 10 hosts; memory grew by less than 20 MiB


BASH_SCRIPT = b"""#!/bin/bash
declare -a args=("$@")
[[ ${#args[@]} -ge 0 ]] && echo "count=${#args[@]}"
for a in "${args[@]}"; do printf '<%s>\\n' "$a"; done
echo "host=$FLEETRUN_HOST tmp=$TMPDIR"
read -r line && echo "stdin=$line"
"""

PYTHON_SCRIPT = b"""#!/usr/bin/env python3
import os, sys
print(repr(sys.argv[1:]))
print(os.environ["FLEETRUN_HOST"], sys.stdin.read().strip())
"""


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A directory the hosts' mktemp uses (--env TMPDIR=…): empty afterwards means no file was left."""
    path = tmp_path / "remote-tmp"
    path.mkdir()
    path.chmod(0o1777)
    return path


def test_script_with_bash_syntax_arguments_and_stdin_leaves_no_file(lab, tmp_path, scratch):
    script = tmp_path / "deploy.sh"
    script.write_bytes(BASH_SCRIPT)
    result = run("exec", "-i", str(lab.inventory), "-H", "lab0[1-3]", "--format", "json", "--env",
                 f"TMPDIR={scratch}", "--script", str(script), "--", "a b", "it's \"q\"", "$HOME", "",
                 home=tmp_path, stdin=b"from the operator\n")
    assert result.code == 0, result.err
    for name, record in result.json()[0].items():
        assert record["stdout"] == (f"count=4\n<a b>\n<it's \"q\">\n<$HOME>\n<>\nhost={name} tmp={scratch}\n"
                                    "stdin=from the operator\n"), record
    assert list(scratch.iterdir()) == []


def test_script_with_env_python3_and_no_stdin(lab, tmp_path, scratch):
    script = tmp_path / "check.py"
    script.write_bytes(PYTHON_SCRIPT)
    result = run("exec", "-i", str(lab.inventory), "-H", "lab01", "-n", "--format", "json", "--env",
                 f"TMPDIR={scratch}", "--script", str(script), "sp ace", "q'uote\"s", home=tmp_path,
                 stdin=b"not sent")
    assert result.code == 0, result.err
    assert result.json()[0]["lab01"]["stdout"] == "['sp ace', 'q\\'uote\"s']\nlab01 \n"
    assert list(scratch.iterdir()) == []


def test_no_script_file_is_left_after_a_timeout(lab, tmp_path, scratch):
    script = tmp_path / "slow.sh"
    script.write_bytes(b"#!/bin/sh\nsleep 58.5\n")
    result = run("exec", "-i", str(lab.inventory), "-H", "lab01", "-t", "2", "--env", f"TMPDIR={scratch}",
                 "--script", str(script), home=tmp_path)
    assert result.code == 3
    assert list(scratch.iterdir()) == []
    assert wait_gone(b"sleep\x0058.5\x00")


def test_a_missing_script_is_exit_2(lab, tmp_path):
    result = fleetrun("exec", "-i", str(lab.inventory), "-H", "all", "--script", str(tmp_path / "nope.sh"),
                      home=tmp_path)
    assert result.code == 2 and "--script" in result.err and "cannot read it" in result.err


def vars_inventory(lab, path: Path) -> Path:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(lab.inventory.read_text())
    for index, name in enumerate(["lab01", "lab02", "lab03"]):
        data["hosts"][name]["vars"] = {"role": ["web", "db", "cache"][index], "tricky": TRICKY[index + 1],
                                       "max-conn": 10 + index, "tags": ["a", index]}
    data["hosts"]["lab03"]["env"] = {"APP_MODE": "from inventory", "MULTI": "x\ny"}
    path.write_text(yaml.safe_dump(data))
    return path


def test_fleetrun_variables_and_templates_per_host_with_default_accept_env(lab, tmp_path):
    config = Path(f"{lab.directory}/lab01.sshd_config").read_text()
    assert "acceptenv" not in config.lower()  # sshd refuses SSH env requests: the wrapper exports them
    inv = vars_inventory(lab, tmp_path / "inv.yaml")
    command = ('printf "%s|%s|%s|%s|%s|%s\\n" "$FLEETRUN_HOST" "$FLEETRUN_ADDRESS" "$FLEETRUN_VAR_ROLE" '
               '"$FLEETRUN_VAR_MAX_CONN" "$FLEETRUN_VAR_TAGS" "${{APP_MODE-unset}}"; echo {vars.role} {host}')
    result = run("exec", "-i", str(inv), "-H", "lab0[1-3]", "--template", "--format", "json", command,
                 home=tmp_path)
    assert result.code == 0, result.err
    hosts, _ = result.json()
    addresses = {host.name: host.address for host in lab.hosts}
    for index, name in enumerate(["lab01", "lab02", "lab03"]):
        role = ["web", "db", "cache"][index]
        mode = "from inventory" if name == "lab03" else "unset"
        assert hosts[name]["stdout"] == (f"{name}|{addresses[name]}|{role}|{10 + index}|[\"a\", {index}]|{mode}\n"
                                         f"{role} {name}\n")


@pytest.mark.parametrize("value", TRICKY)
def test_values_round_trip_exactly_through_env_and_templates(lab, tmp_path, value):
    data = yaml.safe_load(lab.inventory.read_text())
    data["hosts"]["lab01"]["vars"] = {"x": value}
    inv = tmp_path / "inv.yaml"
    inv.write_text(yaml.safe_dump(data))
    command = 'printf "%s" "$V"; printf "|"; printf "%s" "$FLEETRUN_VAR_X"; printf "|"; printf "%s" {vars.x}'
    result = run("exec", "-i", str(inv), "-H", "lab01", "--template", "--env", f"V={value}", "--format", "json",
                 command, home=tmp_path)
    assert result.code == 0, result.err
    assert result.json()[0]["lab01"]["stdout"] == f"{value}|{value}|{value}"


def test_an_unknown_template_key_is_exit_2_before_connecting(lab, tmp_path):
    inv = vars_inventory(lab, tmp_path / "inv.yaml")
    result = fleetrun("exec", "-i", str(inv), "-H", "all", "--template", "echo {vars.role}", home=tmp_path)
    assert result.code == 2 and result.out == ""
    assert "--template: host lab04 has no {vars.role}" in result.err


def test_a_terminal_on_stdin_is_not_sent_and_dev_null_is_eof(lab, tmp_path):
    """On a terminal nothing is sent (ssh's rule for fleetrun's stdin): `cat` sees EOF at once, and so it does
    with </dev/null; neither waits for input typed at the terminal."""
    controller, terminal = os.openpty()
    try:
        os.write(controller, b"typed at the terminal\n")  # would reach the hosts if a terminal were forwarded
        proc = subprocess.run([sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "-H",
                               "lab0[1-3]", "--format", "json", "cat; echo end"], stdin=terminal,
                              capture_output=True, timeout=120, env=clean_env(tmp_path))
    finally:
        os.close(terminal)
        os.close(controller)
    result = Run(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
    assert result.code == 0, result.err
    assert {record["stdout"] for record in result.json()[0].values()} == {"end\n"}
    with open(os.devnull, "rb") as null:
        proc = subprocess.run([sys.executable, "-m", "fleetrun", "exec", "-i", str(lab.inventory), "-H",
                               "lab0[1-3]", "--format", "json", "wc -c"], stdin=null, capture_output=True,
                              timeout=120, env=clean_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    hosts = Run(0, proc.stdout.decode(), "").json()[0]
    assert {record["stdout"].strip() for record in hosts.values()} == {"0"}
