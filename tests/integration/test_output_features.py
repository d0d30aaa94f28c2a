"""Output at fleet scale, end to end on real sshd hosts: gather/diff, progress, --out-dir, --junit, stream, table."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet import clean_env, fleetrun, write_inventory

from fleetrun.errors import LabError
from fleetrun.lab import Lab, start_lab, stop_lab

pytestmark = pytest.mark.integration

CLEAR = "\r\x1b[K"  # what the progress line is drawn and erased with
# Generous: the suite shares two cores with 50 or 200 sshd processes, each a login shell.
SLOW = ("--connect-timeout", "120")


@pytest.fixture(scope="module")
def lab50(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    directory = tmp_path_factory.mktemp("lab50")
    try:
        yield start_lab(50, directory)
    finally:
        with contextlib.suppress(LabError):
            stop_lab(directory)


def blocks(text: str) -> dict[str, str]:
    """Gathered output as {header: body}; the summary line is left out."""
    found: dict[str, str] = {}
    for block in text.split("\n\n"):
        header, _, body = block.partition("\n")
        if header.startswith("==== "):
            found[header] = body
    return found


ODD_ONES = 'case $FLEETRUN_LAB_HOST in lab07|lab08|lab31) echo other;; *) echo same;; esac'
MAJORITY = "lab[01-06,09-30,32-50]"


def test_gather_folds_47_same_and_3_other_into_two_groups(lab50, tmp_path):
    run = fleetrun("exec", "-i", str(lab50.inventory), f"seq 1 20; {ODD_ONES}; seq 21 40", "-H", "all", "-g",
                   *SLOW, home=tmp_path)
    assert run.code == 0, run.err
    found = blocks(run.out)
    assert list(found) == [f"==== {MAJORITY} (47 hosts): ok", "==== lab[07-08,31] (3 hosts): ok"]
    numbers = [str(n) for n in range(1, 41)]
    assert found[f"==== {MAJORITY} (47 hosts): ok"].splitlines() == [*numbers[:20], "same", *numbers[20:]]
    assert found["==== lab[07-08,31] (3 hosts): ok"].splitlines() == [*numbers[:20], "other", *numbers[20:]]
    assert run.out.splitlines()[-1].startswith("50 ok in ")


def test_diff_shows_only_the_differing_lines(lab50, tmp_path):
    run = fleetrun("exec", "-i", str(lab50.inventory), f"seq 1 20; {ODD_ONES}; seq 21 40", "-H", "all", "--diff",
                   *SLOW, home=tmp_path)
    assert run.code == 0, run.err
    found = blocks(run.out)
    assert len(found) == 2
    assert found["==== lab[07-08,31] (3 hosts): ok"].splitlines() == [
        f"--- {MAJORITY}", "+++ lab[07-08,31]", "@@ -18,7 +18,7 @@",
        " 18", " 19", " 20", "-same", "+other", " 21", " 22", " 23",
    ]


def test_gather_and_diff_when_the_minority_differs_in_different_ways(lab50, tmp_path):
    command = ('seq 1 10; case $FLEETRUN_LAB_HOST in lab07) echo other-a;; lab08) echo other-b; echo extra;; '
               'lab31) echo same; echo boom >&2; exit 3;; *) echo same;; esac')
    gathered = fleetrun("exec", "-i", str(lab50.inventory), command, "-H", "all", "-g", *SLOW, home=tmp_path)
    assert gathered.code == 1, gathered.err
    # Largest first, then the single hosts in inventory order.
    assert list(blocks(gathered.out)) == [f"==== {MAJORITY} (47 hosts): ok", "==== lab07 (1 host): ok",
                                          "==== lab08 (1 host): ok", "==== lab31 (1 host): failed (exit 3)"]

    run = fleetrun("exec", "-i", str(lab50.inventory), command, "-H", "all", "--diff", *SLOW, home=tmp_path)
    assert run.code == 1, run.err
    found = blocks(run.out)
    context = [" 8", " 9", " 10"]
    assert found["==== lab07 (1 host): ok"].splitlines() == [
        f"--- {MAJORITY}", "+++ lab07", "@@ -8,4 +8,4 @@", *context, "-same", "+other-a"]
    assert found["==== lab08 (1 host): ok"].splitlines() == [
        f"--- {MAJORITY}", "+++ lab08", "@@ -8,4 +8,5 @@", *context, "-same", "+other-b", "+extra"]
    lab31 = found["==== lab31 (1 host): failed (exit 3)"].splitlines()
    assert lab31[:2] == [f"(same output as {MAJORITY})", "! lab31: exit status 3"]
    assert lab31[-1] == "  stderr: boom"  # the tail of its stderr says why


def run_on_pty(args: list[str], home: Path, *, stdout_too: bool = False, columns: int = 100,
               timeout: float = 300, **env: str) -> tuple[int, str, str]:
    """Run fleetrun with stderr (and with `stdout_too` stdout as well) on a pseudo-terminal.

    Returns (exit status, what the terminal received, stdout when it was a pipe).
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    environment = {k: v for k, v in clean_env(home).items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    command = [sys.executable, "-m", "fleetrun", *args]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=slave if stdout_too else subprocess.PIPE,
                            stderr=slave, env={**environment, **env})
    os.close(slave)
    received: list[bytes] = []

    def read_terminal() -> None:  # keep it drained, or the child blocks on a full terminal buffer
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not data:
                return
            received.append(data)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
        reader.join(30)
        os.close(master)
    return proc.returncode, b"".join(received).decode("utf-8", "replace"), (out or b"").decode()


def visible_lines(terminal: str) -> list[str]:
    """What stays on screen line by line: each line shows what came after its last carriage return."""
    return [line.rstrip("\r").split("\r")[-1].replace("\x1b[K", "") for line in terminal.split("\n")]


def test_progress_on_a_terminal_and_not_in_a_pipe(lab, tmp_path):
    args = ["exec", "-i", str(lab.inventory), "sleep 1", "-H", "all", "--forks", "5", *SLOW]
    code, terminal, out = run_on_pty(args, tmp_path)
    assert code == 0, terminal
    frames = re.findall(r"\[ ?\d+/20\] \d+ ok \| \d+s", terminal)
    assert frames, terminal
    assert terminal.endswith(CLEAR), "the line is erased when the run ends"
    assert out.splitlines()[-1].startswith("20 ok in ")  # the table went to stdout untouched
    assert "\x1b" not in out

    piped = fleetrun(*args, home=tmp_path)
    assert piped.code == 0 and "/20]" not in piped.err and "\x1b" not in piped.err and "\r" not in piped.err

    # -q trims the results, not the progress (issue 14); --no-progress is what hides it
    code, quiet, _ = run_on_pty([*args, "--quiet"], tmp_path)
    assert code == 0 and re.search(r"\[ ?\d+/20\] \d+ ok", quiet), quiet
    code, silent, _ = run_on_pty([*args, "--quiet", "--no-progress"], tmp_path)
    assert code == 0 and "/20]" not in silent and "\x1b" not in silent


def test_progress_never_mixes_with_output_on_the_same_terminal(lab, tmp_path):
    command = 'for i in 1 2 3 4 5 6; do echo "$FLEETRUN_LAB_HOST tick $i"; sleep 0.3; done'
    args = ["exec", "-i", str(lab.inventory), command, "-H", "all", "--format", "stream", "--forks", "10", *SLOW]
    code, terminal, _ = run_on_pty(args, tmp_path, stdout_too=True)
    assert code == 0, terminal
    assert "/20]" in terminal  # progress was drawn between the lines
    lines = visible_lines(terminal)
    ticks = [line for line in lines if " tick " in line]
    assert all(re.fullmatch(r"(lab\d\d) +\| \1 tick [1-6]", line) for line in ticks), ticks
    assert len(ticks) == len(set(ticks)) == 120
    assert not [line for line in lines if "/20]" in line], "a progress frame left on screen"
    assert any(line.startswith("20 ok in ") for line in lines)


def test_colours_and_table_width_on_a_terminal(lab, tmp_path):
    command = "printf '%0300d\\n' 0"  # 300 zeros
    args = ["exec", "-i", str(lab.inventory), command, "-H", "lab0[1-3]", "--no-progress"]
    code, terminal, _ = run_on_pty(args, tmp_path, stdout_too=True, columns=80)
    assert code == 0, terminal
    assert "\x1b[32mok\x1b[0m" in terminal
    rows = [line for line in visible_lines(terminal) if line]
    assert max(len(re.sub(r"\x1b\[[0-9;]*m", "", line)) for line in rows) <= 80
    assert "0" * 30 + "…" in terminal

    code, verbose, _ = run_on_pty([*args, "-v"], tmp_path, stdout_too=True, columns=80, NO_COLOR="1")
    assert code == 0 and "\x1b[" not in verbose
    rows = [line for line in visible_lines(verbose) if line]
    assert max(len(line) for line in rows) <= 80
    zeros = [line for line in rows if line.rstrip().endswith("0")]
    assert sum(line.rstrip().split()[-1].count("0") for line in zeros) == 3 * 300  # wrapped, none lost

    piped = fleetrun(*args, home=tmp_path)  # not a terminal: no colour, lines cut at 120 as before
    assert "\x1b" not in piped.out and max(len(line) for line in piped.out.splitlines()) > 120


def byte_blocks(count: int, *, reverse: bool = False) -> tuple[str, bytes]:
    """A shell loop printing all 256 byte values `count` times (printf octal escapes), and those bytes."""
    values = range(255, -1, -1) if reverse else range(256)
    escapes = "".join(f"\\{value:03o}" for value in values)
    target = " >&2" if reverse else ""
    loop = f"i=0; while [ $i -lt {count} ]; do printf '{escapes}'{target}; i=$((i+1)); done"
    return loop, bytes(values) * count


def test_out_dir_is_byte_exact_beyond_max_output_and_junit_has_a_case_per_host(lab, tmp_path):
    stdout_loop, stdout_bytes = byte_blocks(12_000)  # 3,072,000 bytes
    stderr_loop, stderr_bytes = byte_blocks(3_000, reverse=True)  # 768,000 bytes
    command = f'echo "$FLEETRUN_LAB_HOST"; {stdout_loop}; {stderr_loop}; [ "$FLEETRUN_LAB_HOST" != lab03 ] || exit 3'
    port = free_port()
    inventory = write_inventory(tmp_path / "inv.yaml", lab.inventory,
                                extra_hosts={"closed": {"address": "127.0.0.1", "port": port}})
    out_dir, report = tmp_path / "results", tmp_path / "junit.xml"
    run = fleetrun("exec", "-i", str(inventory), command, "-H", "lab0[1-5],closed", "--max-output", "512K",
                   "--out-dir", str(out_dir), "--junit", str(report), "--format", "json", *SLOW, home=tmp_path)
    assert run.code == 4, run.err  # unreachable beats the failed command
    hosts, _ = run.json()
    assert hosts["lab01"]["stdout_truncated"] and hosts["lab01"]["stderr_truncated"]

    for name in ("lab01", "lab02", "lab03", "lab04", "lab05"):
        assert (out_dir / f"{name}.out").read_bytes() == f"{name}\n".encode() + stdout_bytes
        # The login shell may say something on stderr before the command starts (lab hosts run this
        # machine's shell start-up files); what the command wrote must be there whole, at the end.
        err = (out_dir / f"{name}.err").read_bytes()
        assert err.endswith(stderr_bytes) and b"\0" not in err[: len(err) - len(stderr_bytes)]
        status = json.loads((out_dir / f"{name}.status").read_text())
        expected = {k: v for k, v in hosts[name].items() if k not in ("stdout", "stderr")}
        assert status == expected
    assert json.loads((out_dir / "lab03.status").read_text())["exit_code"] == 3
    assert (out_dir / "closed.out").read_bytes() == b"" and (out_dir / "closed.err").read_bytes() == b""
    assert json.loads((out_dir / "closed.status").read_text())["status"] == "unreachable"
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["counts"] == {"ok": 4, "failed": 1, "unreachable": 1} and summary["exit_status"] == 4
    assert sorted(p.name for p in out_dir.iterdir() if p.name.startswith(".")) == [".fleetrun-out-dir"], "no temp files"

    root = ET.parse(report).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    for element in (root, suite):
        assert {"tests", "failures", "errors", "time"} <= set(element.attrib)
        assert (element.get("tests"), element.get("failures"), element.get("errors")) == ("6", "1", "1")
        assert float(element.get("time")) > 0
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert sorted(cases) == ["closed", "lab01", "lab02", "lab03", "lab04", "lab05"]
    assert all(case.get("classname") and float(case.get("time")) >= 0 for case in cases.values())
    failure = cases["lab03"].find("failure")
    assert failure is not None and failure.get("type") == "failed" and "exit status 3" in failure.get("message")
    assert "exit code: 3" in failure.text
    error = cases["closed"].find("error")
    assert error is not None and error.get("type") == "unreachable" and "refused" in error.get("message")
    assert [list(cases[name]) for name in ("lab01", "lab02", "lab04", "lab05")] == [[], [], [], []]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_quiet_shows_only_problem_hosts_and_the_summary(lab, tmp_path):
    command = 'echo hello; case $FLEETRUN_LAB_HOST in lab04|lab17) exit 2;; esac'
    run = fleetrun("exec", "-i", str(lab.inventory), command, "-H", "all", "--quiet", *SLOW, home=tmp_path)
    assert run.code == 1
    rows = [line.split()[0] for line in run.out.splitlines() if line.startswith("lab")]
    assert rows == ["lab04", "lab17"]
    assert run.out.splitlines()[-1].startswith("18 ok, 2 failed in ")
    gathered = fleetrun("exec", "-i", str(lab.inventory), command, "-H", "all", "-g", "-q", *SLOW, home=tmp_path)
    assert list(blocks(gathered.out)) == ["==== lab[04,17] (2 hosts): failed (exit 2)"]


def test_stream_keeps_200_hosts_x_10000_lines_whole(make_lab, tmp_path):
    started = time.monotonic()
    lab200 = make_lab(200)
    lab_started = time.monotonic() - started
    # Both streams of each host at once, as fast as seq can print: 2,000,000 stdout and 200,000 stderr lines.
    command = ('seq -f "$FLEETRUN_LAB_HOST out %g" 1 10000 & seq -f "$FLEETRUN_LAB_HOST err %g" 1 1000 >&2; wait')
    began = time.monotonic()
    run = fleetrun("exec", "-i", str(lab200.inventory), command, "-H", "all", "--format", "stream",
                   "--forks", "100", *SLOW, home=tmp_path, timeout=900)
    took = time.monotonic() - began
    print(f"lab of 200 started in {lab_started:.1f} s; stream run took {took:.1f} s")
    assert run.code == 0, run.err[-2000:]

    names = {host.name for host in lab200.hosts}
    out_lines: dict[str, list[int]] = defaultdict(list)
    torn = []
    pattern = re.compile(r"(lab\d{3}) \| (lab\d{3}) out (\d+)")
    for line in run.out.split("\n")[:-1]:
        match = pattern.fullmatch(line)
        if match is None or match[1] != match[2]:
            torn.append(line)
        else:
            out_lines[match[1]].append(int(match[3]))
    assert torn == []
    assert set(out_lines) == names
    assert all(numbers == list(range(1, 10_001)) for numbers in out_lines.values()), "lost or reordered lines"

    err_lines: dict[str, list[int]] = defaultdict(list)
    for line in run.err.split("\n")[:-1]:
        if line.startswith("200 ok in "):
            continue
        # Every stderr line is whole and prefixed; besides ours, only what login shells said.
        assert re.match(r"lab\d{3} \| ", line), line
        match = re.fullmatch(r"(lab\d{3}) \| (lab\d{3}) err (\d+)", line)
        if match is not None and match[1] == match[2]:
            err_lines[match[1]].append(int(match[3]))
        else:
            assert " err " not in line, f"torn stderr line: {line!r}"
    assert set(err_lines) == names
    assert all(numbers == list(range(1, 1001)) for numbers in err_lines.values())


def test_output_flag_mistakes_are_usage_errors_before_connecting(lab, tmp_path):
    (tmp_path / "a-file").write_text("")
    for flags, says in [(("-g", "--format", "json"), "--format json"),
                        (("--diff", "--format", "stream"), "--format stream"),
                        (("--out-dir", str(tmp_path / "a-file" / "dir")), "--out-dir"),
                        (("--junit", str(tmp_path / "missing" / "report.xml")), "--junit")]:
        run = fleetrun("exec", "-i", str(lab.inventory), "true", "-H", "lab01", *flags, home=tmp_path)
        assert run.code == 2 and says in run.err and run.out == "", (flags, run.err)
