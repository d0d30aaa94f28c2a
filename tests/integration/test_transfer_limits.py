"""push/pull within limits against real sshd: -t/--timeout, --deadline, servers that stop answering, pull memory."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fleet import clean_env, fleetrun

pytestmark = pytest.mark.integration

MIB = 1 << 20
# Runs the command given after it and prints the peak RSS (KiB) of its process tree's largest process.
PEAK_RSS = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


def srv(host, path: str = "") -> Path:
    return Path(f"/proc/{host.pid}/root/srv") / path


def write_big(path: Path, size: int) -> str:
    """Write `size` bytes that do not compress; returns their SHA-256."""
    block, digest = os.urandom(MIB), hashlib.sha256()
    with path.open("wb") as out:
        for index in range(size // MIB):
            piece = block[index % 7 :] + block[: index % 7]  # not one block repeated
            out.write(piece)
            digest.update(piece)
    return digest.hexdigest()


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (a lab host's listener): its connections' sshd processes and their children."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def sftp_servers(host) -> list[int]:
    """The internal-sftp processes serving this host's SFTP channels (sshd forks one per channel)."""
    pids = []
    for pid in descendants(host.pid):
        try:
            if b"internal-sftp" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            pass
    return pids


def start(lab, *args: str, home: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "fleetrun", *args[:1], "-i", str(lab.inventory), *args[1:], "--format", "json"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=clean_env(home))


def wait_for(found, what: str, seconds: float = 60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"never saw {what}")


def temps(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if ".fleetrun-tmp-" in p.name] if directory.is_dir() else []


def big_temp(directory: Path) -> list[Path]:
    return [p for p in temps(directory) if p.stat().st_size > MIB]


def finish(proc: subprocess.Popen[str], stopped: list[int]) -> tuple[str, str]:
    try:
        assert proc.poll() is None, "the transfer ended before the server was stopped"
        return proc.communicate(timeout=90)  # without a limit that holds, a stopped server means forever
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def record(out: str, name: str) -> dict:
    import json

    return next(r for r in map(json.loads, out.splitlines()) if r.get("host") == name)


def test_push_timeout_stops_the_upload_and_leaves_the_target(make_lab, tmp_path):
    lab = make_lab(1, srv_size="300m")
    host = lab.hosts[0]
    srv(host, "big.bin").write_bytes(b"old\n")
    payload = tmp_path / "big.bin"
    write_big(payload, 128 * MIB)
    run = fleetrun("push", "-i", str(lab.inventory), str(payload), "/srv/big.bin", "-H", "all", "-t", "0.5",
                   "--format", "json", home=tmp_path)
    assert run.code == 3, run.out + run.err
    error = record(run.out, host.name)["error"]
    assert record(run.out, host.name)["status"] == "timeout"
    assert error.startswith("timed out after 0.5 s (--timeout) while ") and "\n" not in error
    assert error.endswith("/srv/big.bin untouched, temp file removed"), error
    assert srv(host, "big.bin").read_bytes() == b"old\n" and not temps(srv(host))


def test_push_to_an_sftp_server_that_stops_answering_times_out_and_cleans_up(make_lab, tmp_path):
    lab = make_lab(1, srv_size="600m")
    host = lab.hosts[0]
    srv(host, "big.bin").write_bytes(b"old\n")
    payload = tmp_path / "big.bin"
    write_big(payload, 512 * MIB)
    proc = start(lab, "push", str(payload), "/srv/big.bin", "-H", "all", "-t", "6", home=tmp_path)
    wait_for(lambda: big_temp(srv(host)), "the upload's temp file growing")
    stopped = sftp_servers(host)
    assert len(stopped) == 1
    os.kill(stopped[0], signal.SIGSTOP)  # the SFTP server hangs (a dead NFS mount, say); sshd still answers
    out, err = finish(proc, stopped)
    assert proc.returncode == 3, out + err
    result = record(out, host.name)
    assert result["status"] == "timeout" and "timed out after 6 s (--timeout) while uploading" in result["error"]
    assert result["error"].endswith("untouched, temp file removed"), "removed over a fresh SFTP channel"
    assert srv(host, "big.bin").read_bytes() == b"old\n" and not temps(srv(host))


@pytest.mark.parametrize("limit", [("-t", "4"), ("--deadline", "4")])
def test_pull_from_a_host_that_stops_answering_ends_without_a_partial_file(make_lab, tmp_path, limit):
    lab = make_lab(1, srv_size="600m")
    host = lab.hosts[0]
    write_big(srv(host, "big.bin"), 512 * MIB)
    target = tmp_path / "pulled"
    proc = start(lab, "pull", "/srv/big.bin", str(target), "-H", "all", *limit, home=tmp_path)
    wait_for(lambda: big_temp(target / host.name), "the download's local temp file growing")
    stopped = descendants(host.pid)  # the whole connection: no SSH reply of any kind any more
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    out, err = finish(proc, stopped)
    assert proc.returncode == 3, out + err
    result = record(out, host.name)
    assert result["status"] == "timeout"
    if limit[0] == "-t":
        assert result["error"].startswith("timed out after 4 s (--timeout) while downloading /srv/big.bin")
        assert result["error"].endswith("no partial file of /srv/big.bin kept")
    else:
        assert result["error"] == "the run's --deadline was reached"
    assert list((target / host.name).iterdir()) == []


def test_pull_timeout_on_a_live_host_keeps_no_partial_file(make_lab, tmp_path):
    lab = make_lab(1, srv_size="300m")
    host = lab.hosts[0]
    write_big(srv(host, "big.bin"), 256 * MIB)
    target = tmp_path / "pulled"
    run = fleetrun("pull", "-i", str(lab.inventory), "/srv/big.bin", str(target), "-H", "all", "-t", "0.5",
                   "--format", "json", home=tmp_path)
    assert run.code == 3 and record(run.out, host.name)["status"] == "timeout", run.out + run.err
    assert list((target / host.name).iterdir()) == []


def test_pull_of_a_fifo_is_refused_not_waited_on(make_lab, tmp_path):
    lab = make_lab(1)
    host = lab.hosts[0]
    os.mkfifo(srv(host, "pipe"))
    run = fleetrun("pull", "-i", str(lab.inventory), "/srv/pipe", str(tmp_path / "pulled"), "-H", "all",
                   "--format", "json", home=tmp_path, timeout=60)
    assert run.code == 1
    assert record(run.out, host.name)["error"] == "/srv/pipe is a FIFO, not a regular file: not pulled"


def test_pull_of_1_gib_stays_under_100_mib(make_lab, tmp_path):
    lab = make_lab(1, srv_size="1100m")
    host = lab.hosts[0]
    remote = srv(host, "big.bin")
    expected = write_big(remote, 1024 * MIB)
    target = tmp_path / "pulled"
    # paramiko's prefetch took 207 s and 1 GiB of RSS for this here; the bounded pipeline takes ~25 s.
    run = fleetrun("pull", "-i", str(lab.inventory), "/srv/big.bin", str(target), "-H", "all", "--format", "json",
                   home=tmp_path, timeout=600, prefix=(sys.executable, "-c", PEAK_RSS))
    assert run.code == 0, run.out + run.err
    peak_mib = int(run.err.split()[-1]) / 1024
    pulled = target / host.name / "big.bin"
    try:
        assert peak_mib < 100, f"peak RSS {peak_mib:.0f} MiB"
        assert pulled.stat().st_size == 1024 * MIB and _sha256(pulled) == expected
    finally:
        pulled.unlink(missing_ok=True)
        remote.unlink()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def test_pull_to_a_full_local_disk_fails_that_host_in_one_line(make_lab, tmp_path):
    # Once paramiko's prefetch thread died here with "Exception in thread ... Socket is closed" on stderr.
    lab = make_lab(1)
    host = lab.hosts[0]
    write_big(srv(host, "big.bin"), 8 * MIB)
    target = tmp_path / "small-disk"
    target.mkdir()
    inner = [sys.executable, "-m", "fleetrun", "pull", "-i", str(lab.inventory), "/srv/big.bin", str(target), "-H",
             "all", "--format", "json"]
    script = f"mount -t tmpfs -o size=2m tmpfs {target} && exec \"$@\""
    run = subprocess.run(["unshare", "-m", "--propagation", "private", "/bin/sh", "-c", script, "sh", *inner],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=clean_env(tmp_path))
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr == ""
    result = record(run.stdout, host.name)
    assert result["status"] == "failed"
    assert result["error"] == f"cannot write in {target / host.name}: No space left on device"
    assert list(target.iterdir()) == []  # the private tmpfs is gone with its namespace; nothing leaked here


def test_help_says_what_timeout_bounds(tmp_path):
    for command in ("push", "pull"):
        text = " ".join(fleetrun(command, "--help", home=tmp_path).out.split())
        assert "Seconds per host for the whole transfer once connected" in text and "temp file removed" in text
    assert "Seconds per host for the command" in " ".join(fleetrun("exec", "--help", home=tmp_path).out.split())
