"""sudo against real sshd and real sudo, logging in as throwaway accounts (issue 10)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet import Run, clean_env, fleetrun, write_inventory
from sudo_accounts import Accounts, available, sudo_accounts

from fleetrun.errors import LabError
from fleetrun.lab import Lab, start_lab, stop_lab

pytestmark = [pytest.mark.integration, pytest.mark.skipif(available() is not None, reason=str(available()))]

PW_VAR = "FLEETRUN_TEST_SUDO_PW"


@pytest.fixture(scope="module")
def accounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Accounts]:
    with sudo_accounts(tmp_path_factory.mktemp("sudo")) as made:
        yield made


@pytest.fixture(scope="module")
def labs(accounts: Accounts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Lab]]:
    """One lab per login account: 50 hosts for the password user, 2 for the others, and 2 with a German sudo."""
    started: dict[str, Lab] = {}
    specs = {"pw": (50, accounts.password_user, ""), "np": (2, accounts.nopasswd_user, ""),
             "tty": (2, accounts.tty_user, ""),
             "de": (2, accounts.password_user, "SetEnv LANG=de_DE.UTF-8 LC_ALL=de_DE.UTF-8 LANGUAGE=de")}
    try:
        for key, (count, user, extra) in specs.items():
            started[key] = start_lab(count, tmp_path_factory.mktemp(f"lab-{key}"), user=user, extra_config=extra)
        yield started
    finally:
        for lab in started.values():
            try:
                stop_lab(lab.directory)
            except LabError:
                pass


def inventory(lab: Lab, tmp_path: Path, name: str = "inv.yaml", **defaults: object) -> str:
    return str(write_inventory(tmp_path / name, lab.inventory, **{"become_password_env": PW_VAR, **defaults}))


def run(*args: str, home: Path, password: str | None, stdin: bytes = b"", timeout: float = 180) -> Run:
    env = {**clean_env(home), **({PW_VAR: password} if password is not None else {})}
    proc = subprocess.run([sys.executable, "-m", "fleetrun", *args], input=stdin, capture_output=True,
                          timeout=timeout, env=env)
    return Run(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))


def every_file_under(*roots: Path) -> str:
    text = ""
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file():
                text += path.read_bytes().decode(errors="replace")
    return text


def test_become_runs_as_root_on_50_hosts_and_the_password_shows_nowhere(labs, accounts, tmp_path, ssh_env):
    inv = inventory(labs["pw"], tmp_path)
    out_dir, junit = tmp_path / "out", tmp_path / "junit.xml"
    result = run("exec", "-i", inv, "-H", "all", "-b", "--format", "json", "--out-dir", str(out_dir), "--junit",
                 str(junit), "id -u; echo $HOME; env", home=ssh_env, password=accounts.password)
    assert result.code == 0, result.err
    hosts, summary = result.json()
    assert len(hosts) == 50 and summary["counts"] == {"ok": 50}
    for record in hosts.values():
        assert record["stdout"].splitlines()[:2] == ["0", "/root"]
        assert record["become"] == {"user": "root", "status": "ok"}
        assert "fleetrun-sudo" not in record["stderr"] and "fleetrun-become-ok" not in record["stderr"]
        assert f"{PW_VAR}=" not in record["stdout"]  # not in the command's environment
    journal = ssh_env / ".local" / "state" / "fleetrun"
    everything = result.out + result.err + every_file_under(out_dir, junit, journal)
    assert journal.exists() and accounts.password not in everything and "***" not in everything


def test_no_password_in_any_process_argv_or_the_commands_environment(labs, accounts, tmp_path, ssh_env):
    inv = inventory(labs["pw"], tmp_path)
    env = {**clean_env(ssh_env), PW_VAR: accounts.password}
    proc = subprocess.Popen([sys.executable, "-m", "fleetrun", "exec", "-i", inv, "-H", "lab01", "-b",
                             "sleep 8.25; echo done"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        deadline, sleeping = time.monotonic() + 60, None
        while sleeping is None and time.monotonic() < deadline:
            sleeping = next((pid for pid, argv in processes() if argv == b"sleep\x008.25\x00"), None)
            time.sleep(0.1)
        assert sleeping is not None, "the command never started"
        secret = accounts.password.encode()
        # `ps -eo args` on the host (all lab hosts are this machine): no process shows it, fleetrun's included
        assert not [pid for pid, argv in processes() if secret in argv]
        chain = [sleeping]
        while chain[-1] > 1 and len(chain) < 10:
            chain.append(int(Path(f"/proc/{chain[-1]}/stat").read_text().rsplit(")", 1)[1].split()[1]))
        for pid in chain[:-1]:  # the command and its parents up to sshd: not in their environment either
            if pid != proc.pid:
                assert secret not in Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        out, err = proc.communicate(timeout=60)
    assert b"done" in out
    assert proc.returncode == 0, err


def processes() -> list[tuple[int, bytes]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((int(entry.name), (entry / "cmdline").read_bytes()))
            except OSError:
                pass
    return found


def test_a_wrong_password_is_auth_failed_after_exactly_one_attempt(labs, accounts, tmp_path, ssh_env):
    inv = inventory(labs["pw"], tmp_path)
    before = attempts(accounts)
    started = time.monotonic()
    result = run("exec", "-i", inv, "-H", "lab01", "-b", "--become-timeout", "30", "--format", "json", "id -u",
                 home=ssh_env, password="not-the-password")
    elapsed = time.monotonic() - started
    assert result.code == 4, result.err
    record = result.json()[0]["lab01"]
    assert record["status"] == "auth failed" and record["become"] == {"user": "root", "status": "rejected"}
    assert record["error"].startswith(f"sudo rejected the password for {accounts.password_user} on lab01")
    assert elapsed < 30  # decided by the prompt coming back, not by the timeout
    assert "not-the-password" not in result.out
    # sudo logs the attempt when it sees its stdin end: one attempt, though passwd_tries allows three
    assert wait_for(lambda: attempts(accounts) > before)
    time.sleep(1)
    assert attempts(accounts) - before == 1


def attempts(accounts: Accounts) -> int:
    """How many password attempts sudo logged as failed for the password user."""
    try:
        text = accounts.log.read_text(errors="replace")
    except FileNotFoundError:
        return 0
    return sum(int(count) for count in re.findall(r"(\d+) incorrect password attempt", text))


def wait_for(predicate, seconds: float = 15) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_a_translated_sudo_is_still_understood(labs, accounts, tmp_path, ssh_env):
    if not re.search(r"^de_DE\.utf-?8$", subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout,
                     re.IGNORECASE | re.MULTILINE):
        pytest.skip("no de_DE.UTF-8 locale: `make sudo` generates it (as root)")
    inv = inventory(labs["de"], tmp_path)
    ok = run("exec", "-i", inv, "-H", "lab01", "-b", "--format", "json", "id -u; echo $LANG", home=ssh_env,
             password=accounts.password)
    assert ok.code == 0 and ok.json()[0]["lab01"]["stdout"] == "0\nde_DE.UTF-8\n", ok.out + ok.err
    wrong = run("exec", "-i", inv, "-H", "lab01", "-b", "--format", "json", "id -u", home=ssh_env, password="nope")
    record = wrong.json()[0]["lab01"]
    assert wrong.code == 4 and record["become"]["status"] == "rejected"
    assert "Sorry" not in record["stderr"] and record["stderr"].strip()  # sudo spoke German, and it made no odds


def test_nopasswd_with_a_password_configured_writes_nothing(labs, accounts, tmp_path, ssh_env):
    inv = inventory(labs["np"], tmp_path)
    result = run("exec", "-i", inv, "-H", "all", "-b", "-n", "--format", "json", "cat; id -u", home=ssh_env,
                 password=accounts.password)
    assert result.code == 0, result.err
    for record in result.json()[0].values():
        assert record["stdout"] == "0\n" and record["stderr"] == ""  # cat read nothing: no password reached it


def test_password_required_and_none_given_is_auth_failed_with_the_hint_at_once(labs, tmp_path, ssh_env):
    inv = str(write_inventory(tmp_path / "inv.yaml", labs["pw"].inventory))
    result = run("exec", "-i", inv, "-H", "lab01,lab02", "-b", "--format", "json", "id -u", home=ssh_env,
                 password=None)
    assert result.code == 4
    for record in result.json()[0].values():
        assert record["become"]["status"] == "password-required"
        assert "-K or become_password_env" in record["error"]
        assert record["duration"] < 2


def test_requiretty_names_become_pty_which_then_works(labs, accounts, tmp_path, ssh_env):
    inv = inventory(labs["tty"], tmp_path)
    refused = run("exec", "-i", inv, "-H", "lab01", "-b", "--format", "json", "id -u", home=ssh_env,
                  password=accounts.password)
    record = refused.json()[0]["lab01"]
    assert refused.code == 4 and record["become"]["status"] == "tty-required" and "--become-pty" in record["error"]
    result = run("exec", "-i", inv, "-H", "all", "-b", "--become-pty", "--format", "json",
                 "id -u; echo to-stderr >&2; cat", home=ssh_env, password=accounts.password, stdin=b"not sent\n")
    assert result.code == 0, result.out + result.err
    for record in result.json()[0].values():
        # one stream on a terminal, CRLF undone, nothing of sudo's, and cat's stdin is empty
        assert record["stdout"] == "0\nto-stderr\n" and record["become"]["status"] == "ok"
    assert accounts.password not in result.out and "***" not in result.out


def test_become_user_runs_as_that_user_with_its_home(labs, accounts, tmp_path, ssh_env):
    inv = inventory(labs["pw"], tmp_path)
    result = run("exec", "-i", inv, "-H", "lab01", "--become-user", accounts.other_user, "--format", "json",
                 "id -un; echo $HOME", home=ssh_env, password=accounts.password)
    assert result.code == 0, result.err
    record = result.json()[0]["lab01"]
    assert record["stdout"] == f"{accounts.other_user}\n/home/{accounts.other_user}\n"
    assert record["become"] == {"user": accounts.other_user, "status": "ok"}


def test_timeout_kills_the_root_owned_command(labs, accounts, tmp_path, ssh_env):
    inv = inventory(labs["pw"], tmp_path)
    result = run("exec", "-i", inv, "-H", "lab01", "-b", "-t", "2", "sleep 60.5 & sleep 60.25",
                 home=ssh_env, password=accounts.password)
    assert result.code == 3, result.out + result.err
    assert "timed out after 2 s" in result.out

    def left() -> list[int]:
        return [pid for pid, argv in processes() if argv in (b"sleep\x0060.5\x00", b"sleep\x0060.25\x00")]

    assert wait_for(lambda: not left(), 15), f"still running: {left()}"


def test_a_prompt_printed_later_by_the_command_gets_nothing_written(labs, accounts, tmp_path, ssh_env):
    inv = inventory(labs["pw"], tmp_path)
    command = "echo '[sudo] password:'; echo '[sudo] password:' >&2; cat; echo cat-ended"
    result = run("exec", "-i", inv, "-H", "lab01", "-b", "-n", "--format", "json", command, home=ssh_env,
                 password=accounts.password)
    assert result.code == 0, result.err
    record = result.json()[0]["lab01"]
    assert record["stdout"] == "[sudo] password:\ncat-ended\n" and record["stderr"] == "[sudo] password:\n"


def test_stdin_reaches_the_command_after_sudo_took_the_password(labs, accounts, tmp_path, ssh_env):
    inv = inventory(labs["pw"], tmp_path)
    result = run("exec", "-i", inv, "-H", "lab01,lab02", "-b", "--format", "json", "cat; id -u", home=ssh_env,
                 password=accounts.password, stdin=b"line one\nline two\n")
    assert result.code == 0, result.err
    for record in result.json()[0].values():
        assert record["stdout"] == "line one\nline two\n0\n"


def test_ask_become_pass_without_a_terminal_is_exit_2_before_connecting(labs, tmp_path, ssh_env):
    inv = str(write_inventory(tmp_path / "inv.yaml", labs["pw"].inventory))
    result = fleetrun("exec", "-i", inv, "-H", "all", "-b", "-K", "id -u", home=ssh_env)
    assert result.code == 2 and "-K/--ask-become-pass needs a terminal" in result.err and result.out == ""


def test_50_hosts_with_ask_become_pass_on_a_terminal_prompt_exactly_once(labs, accounts, tmp_path, ssh_env):
    inv = str(write_inventory(tmp_path / "inv.yaml", labs["pw"].inventory))
    pid, fd = pty.fork()
    if pid == 0:  # the child: fleetrun on the terminal, as an operator runs it
        try:
            env = clean_env(ssh_env)
            os.execve(sys.executable, [sys.executable, "-m", "fleetrun", "exec", "-i", inv, "-H", "all", "-b", "-K",
                                       "--no-progress", "--format", "json", "id -u"], env)
        finally:
            os._exit(127)
    screen, answered = b"", False
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        screen += data
        if not answered and b"sudo password: " in screen:
            os.write(fd, accounts.password.encode() + b"\n")
            answered = True
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, screen.decode(errors="replace")[-2000:]
    text = screen.decode(errors="replace")
    assert text.count("sudo password:") == 1 and accounts.password not in text
    records = [json.loads(line) for line in text.replace("\r\n", "\n").splitlines() if line.startswith("{")]
    assert sum(1 for r in records if r.get("type") == "host" and r["stdout"] == "0\n") == 50


def test_a_become_host_that_never_got_to_sudo_says_whom_with_no_status(labs, accounts, tmp_path, ssh_env):
    inv = str(write_inventory(tmp_path / "inv.yaml", labs["np"].inventory,
                              extra_hosts={"gone": {"address": "127.0.0.1", "port": 1}}))
    result = run("exec", "-i", inv, "-H", "lab01,gone", "--become-user", accounts.other_user, "--format", "json",
                 "id -un", home=ssh_env, password=None)
    hosts, _ = result.json()
    assert result.code == 4 and hosts["gone"]["status"] == "unreachable"
    assert hosts["gone"]["become"] == {"user": accounts.other_user, "status": None}
    assert hosts["lab01"]["become"] == {"user": accounts.other_user, "status": "ok"}
    assert hosts["lab01"]["stdout"] == f"{accounts.other_user}\n"
    plain = run("exec", "-i", inv, "-H", "lab01", "--format", "json", "true", home=ssh_env, password=None)
    assert plain.json()[0]["lab01"]["become"] is None


def test_become_timeout_bounds_the_negotiation_only(labs, tmp_path, ssh_env):
    # A wrong password: sudo then waits about 2 s (pam_unix's fail delay) before it prompts again
    inv = inventory(labs["pw"], tmp_path)
    result = run("exec", "-i", inv, "-H", "lab01", "--become-timeout", "0.5", "-b", "--format", "json", "id -u",
                 home=ssh_env, password="wrong-on-purpose")
    record = result.json()[0]["lab01"]
    assert result.code == 3 and record["status"] == "timeout"
    assert record["become"]["status"] == "timeout" and "--become-timeout 0.5 s" in record["error"]


def test_become_timeout_does_not_bound_the_command(labs, accounts, tmp_path, ssh_env):
    # Once sudo has taken the password and started the command, --become-timeout no longer counts.
    inv = inventory(labs["pw"], tmp_path)
    result = run("exec", "-i", inv, "-H", "lab01", "-b", "--become-timeout", "1", "--format", "json",
                 "sleep 3; id -u", home=ssh_env, password=accounts.password)
    assert result.code == 0, result.out + result.err
    record = result.json()[0]["lab01"]
    assert record["stdout"] == "0\n" and record["become"] == {"user": "root", "status": "ok"}


def test_on_a_pty_timeout_still_kills_the_command(labs, accounts, tmp_path, ssh_env):
    inv = inventory(labs["tty"], tmp_path)
    result = run("exec", "-i", inv, "-H", "lab01", "-b", "--become-pty", "-t", "2", "trap '' HUP; sleep 60.75",
                 home=ssh_env, password=accounts.password)
    assert result.code == 3, result.out + result.err

    def left() -> list[int]:
        return [pid for pid, argv in processes() if argv == b"sleep\x0060.75\x00"]

    assert wait_for(lambda: not left(), 15), f"still running: {left()}"
