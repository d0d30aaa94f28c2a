"""Re-push as rsync's quick check does it: same size and mtime is unchanged with neither file read; -c hashes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet import clean_env, fleetrun

from fleetrun.errors import LabError
from fleetrun.lab import Lab, start_lab, stop_lab

pytestmark = pytest.mark.integration

SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/libexec/sftp-server")


def srv(host, path: str = "") -> Path:
    return Path(f"/proc/{host.pid}/root/srv") / path


def sftp_server() -> str:
    found = next((path for path in SFTP_SERVERS if os.access(path, os.X_OK)), None) or shutil.which("sftp-server")
    assert found, "openssh-sftp-server is part of openssh-server: install it"
    return found


@pytest.fixture
def logged(make_lab, tmp_path):
    """Two lab hosts that log what they are asked: sshd at VERBOSE ("Starting session: command" for every
    command run) and an sftp-server at VERBOSE (every open, setstat and rename) into logs/NAME.sftp.log."""
    logs = tmp_path / "logs"
    logs.mkdir()
    # sshd runs a Subsystem through the login shell, so the redirection works; SetEnv names the host.
    subsystem = f"Subsystem sftp {sftp_server()} -e -l VERBOSE 2>>{logs}/$FLEETRUN_LAB_HOST.sftp.log"
    lab = make_lab(2, extra_config=f"LogLevel VERBOSE\n{subsystem}\n")
    if not lab.private_srv:
        pytest.fail("push tests need a private /srv per host (run as root)")
    return lab, logs


def push(lab, *args: str, home: Path):
    return fleetrun("push", "-i", str(lab.inventory), *args, "-H", "all", "--format", "json", home=home)


def clear_logs(lab, logs: Path) -> None:
    for log in [*logs.iterdir(), *(lab.directory / f"{h.name}.log" for h in lab.hosts)]:
        log.write_text("")


def commands_run(lab) -> int:
    """Commands the hosts' sshd started (sha256sum, stat, chown...) since the logs were cleared."""
    return sum((lab.directory / f"{h.name}.log").read_text().count("Starting session: command") for h in lab.hosts)


def sftp_log(logs: Path, host) -> str:
    path = logs / f"{host.name}.sftp.log"
    return path.read_text() if path.exists() else ""


def remote_times(lab, path: str, home: Path) -> dict[str, tuple[int, int]]:
    """(atime, mtime) of `path` on every host, as `stat` over ssh tells them."""
    run = fleetrun("exec", "-i", str(lab.inventory), f"stat -c '%X %Y' {path}", "-H", "all", "--format", "json",
                   home=home)
    assert run.code == 0, run.err
    hosts, _ = run.json()
    return {name: tuple(map(int, record["stdout"].split())) for name, record in hosts.items()}  # type: ignore[misc]


def details(run) -> dict[str, list[str]]:
    hosts, _ = run.json()
    return {name: record["details"] for name, record in hosts.items()}


def test_second_push_reads_neither_file_and_the_mtime_was_set_before_the_rename(logged, tmp_path):
    lab, logs = logged
    payload = tmp_path / "app.bin"
    payload.write_bytes(os.urandom(2_000_000))
    mtime = payload.stat().st_mtime_ns
    os.utime(payload, ns=(mtime - 100 * 10**9, mtime))  # atime before mtime: relatime records the next read
    planned_atime = payload.stat().st_atime_ns // 10**9

    first = push(lab, str(payload), "/srv/app.bin", home=tmp_path)
    assert first.code == 0, first.err
    assert all(record["changed"] for record in first.json()[0].values())
    assert remote_times(lab, "/srv/app.bin", tmp_path) == {h.name: (planned_atime, mtime // 10**9)
                                                           for h in lab.hosts}
    for host in lab.hosts:
        log = sftp_log(logs, host)
        temp = re.search(r'open "(/srv/\.app\.bin\.fleetrun-tmp-[0-9a-f]+)" flags WRITE', log)
        assert temp, log
        stamped = log.index(f'set "{temp.group(1)}" modtime')  # the temp file got the mtime...
        renamed = log.index(f'posix-rename old "{temp.group(1)}" new "/srv/app.bin"')
        assert stamped < renamed, log  # ...before it took the final name
    assert payload.stat().st_atime_ns // 10**9 != planned_atime, "the upload read the file: atimes are recorded"

    os.utime(payload, ns=(mtime - 100 * 10**9, mtime))
    clear_logs(lab, logs)
    again = push(lab, str(payload), "/srv/app.bin", home=tmp_path)
    assert again.code == 0, again.err
    hosts, summary = again.json()
    assert summary["unchanged"] == 2 and not any(record["changed"] for record in hosts.values())
    assert details(again) == {h.name: ["unchanged /srv/app.bin (same size and mtime)"] for h in lab.hosts}
    assert commands_run(lab) == 0, "no sha256sum (or any other command) ran on the hosts"
    for host in lab.hosts:
        assert "open " not in sftp_log(logs, host), "no remote file was opened (so none was read back)"
    assert payload.stat().st_atime_ns == mtime - 100 * 10**9, "the local file was not read (not hashed)"


def test_same_size_and_mtime_with_other_content_is_unchanged_unless_checksum(logged, tmp_path):
    lab, _ = logged
    payload = tmp_path / "app.conf"
    payload.write_text("version=1\n")
    assert push(lab, str(payload), "/srv/app.conf", home=tmp_path).code == 0
    drifted = srv(lab.hosts[1], "app.conf")
    stamp = drifted.stat()
    drifted.write_text("version=2\n")  # edited on the host, then `touch -r`: rsync's quick check cannot see it
    os.utime(drifted, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))

    quick = push(lab, str(payload), "/srv/app.conf", home=tmp_path)
    assert quick.code == 0 and quick.json()[1]["unchanged"] == 2, quick.out
    assert drifted.read_text() == "version=2\n", "the known trade-off, as with rsync without -c"

    for flag in ("--checksum", "-c"):
        drifted.write_text("version=2\n")
        os.utime(drifted, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        checked = push(lab, str(payload), "/srv/app.conf", flag, home=tmp_path)
        hosts, summary = checked.json()
        assert checked.code == 0 and (summary["changed"], summary["unchanged"]) == (1, 1), checked.out
        assert hosts[lab.hosts[1].name]["changed"] and drifted.read_text() == "version=1\n"
        assert details(checked)[lab.hosts[0].name] == ["unchanged /srv/app.conf (same checksum)"]
        assert int(drifted.stat().st_mtime) == int(payload.stat().st_mtime)


def test_same_content_with_another_mtime_is_hashed_unchanged_and_its_mtime_fixed(logged, tmp_path):
    lab, logs = logged
    payload = tmp_path / "app.conf"
    payload.write_text("same bytes\n")
    assert push(lab, str(payload), "/srv/app.conf", home=tmp_path).code == 0
    inodes = {h.name: srv(h, "app.conf").stat().st_ino for h in lab.hosts}
    info = payload.stat()
    os.utime(payload, ns=(info.st_atime_ns, info.st_mtime_ns + 3600 * 10**9))  # e.g. a fresh git checkout

    clear_logs(lab, logs)
    hashed = push(lab, str(payload), "/srv/app.conf", home=tmp_path)
    assert hashed.code == 0, hashed.err
    assert hashed.json()[1]["unchanged"] == 2, hashed.out
    assert details(hashed) == {h.name: ["unchanged /srv/app.conf (same checksum; mtime set)"] for h in lab.hosts}
    assert commands_run(lab) == 2, "one sha256sum per host"
    assert {h.name: srv(h, "app.conf").stat().st_ino for h in lab.hosts} == inodes, "not uploaded again"
    assert {mtime for _, mtime in remote_times(lab, "/srv/app.conf", tmp_path).values()} == {
        int(payload.stat().st_mtime)}

    clear_logs(lab, logs)
    quick = push(lab, str(payload), "/srv/app.conf", home=tmp_path)
    assert details(quick) == {h.name: ["unchanged /srv/app.conf (same size and mtime)"] for h in lab.hosts}
    assert commands_run(lab) == 0, "fixed: the next push needs no hashing"


def test_tree_is_compared_per_file_and_verify_mode_owner_still_work(logged, tmp_path):
    lab, _ = logged
    tree = tmp_path / "site"
    (tree / "css").mkdir(parents=True)
    (tree / "index.html").write_text("<h1>hi</h1>\n")
    (tree / "css" / "main.css").write_text("body{}\n")
    (tree / "current").symlink_to("index.html")
    first = push(lab, str(tree), "/srv/", "-r", "--verify", "--owner", "nobody:nogroup", home=tmp_path)
    assert first.code == 0, first.err
    for host in lab.hosts:
        for name in ("index.html", "css/main.css"):
            copy = srv(host, f"site/{name}")
            assert int(copy.stat().st_mtime) == int((tree / name).stat().st_mtime) and copy.stat().st_uid == 65534

    info = (tree / "css" / "main.css").stat()
    os.utime(tree / "css" / "main.css", ns=(info.st_atime_ns, info.st_mtime_ns - 7200 * 10**9))
    srv(lab.hosts[0], "site/index.html").chmod(0o600)
    again = push(lab, str(tree), "/srv/", "-r", "-v", home=tmp_path)
    assert again.code == 0, again.err
    hosts, summary = again.json()
    assert (summary["changed"], summary["unchanged"]) == (1, 1), again.out
    first_host, second_host = (hosts[h.name]["details"] for h in lab.hosts)
    assert "changed /srv/site/index.html (mode 0644; content: same size and mtime)" in first_host
    assert "unchanged /srv/site/index.html (same size and mtime)" in second_host
    assert "unchanged /srv/site/css/main.css (same checksum; mtime set)" in second_host
    assert "unchanged /srv/site/current (symlink)" in second_host

    (tree / "index.html").write_text("<h1>hello</h1>\n")
    changed = push(lab, str(tree), "/srv/", "-r", "--verify", "--backup", home=tmp_path)
    assert changed.code == 0 and changed.json()[1]["changed"] == 2, changed.out
    for host in lab.hosts:
        assert srv(host, "site/index.html").read_text() == "<h1>hello</h1>\n"
        assert srv(host, "site/index.html.fleetrun-bak").read_text() == "<h1>hi</h1>\n"
        assert int(srv(host, "site/index.html").stat().st_mtime) == int((tree / "index.html").stat().st_mtime)


@pytest.fixture
def nobody_lab() -> Iterator[Lab]:
    """One lab host that `nobody` can log in to. Its directory is outside pytest's base temp directory, whose
    0700 root any pytest session started meanwhile (on this shared machine) would restore; sshd reads
    authorized_keys as the user logging in."""
    directory = Path(tempfile.mkdtemp(prefix="fleetrun-nobody-lab-"))
    directory.chmod(0o711)
    try:
        lab = start_lab(1, directory)
        (lab.directory / "authorized_keys").chmod(0o644)
        yield lab
    finally:
        with contextlib.suppress(LabError):
            stop_lab(directory)
        shutil.rmtree(directory, ignore_errors=True)


def test_an_identical_file_whose_mtime_we_may_not_set_stays_unchanged_with_a_note(nobody_lab, tmp_path):
    lab = nobody_lab
    host = lab.hosts[0]
    payload = tmp_path / "shared.txt"
    payload.write_text("shared\n")
    there = srv(host, "shared.txt")
    there.write_text("shared\n")
    there.chmod(0o666)  # root's file, writable by all: nobody may write it but not set its times
    os.utime(there, (1_600_000_000, 1_600_000_000))
    run = fleetrun("push", "-i", str(lab.inventory), str(payload), "/srv/shared.txt", "--mode", "0666",
                   "-u", "nobody", "-H", "all", "--format", "json", home=tmp_path)
    assert run.code == 0, run.out + run.err
    hosts, summary = run.json()
    # nobody has no shell, so no sha256sum: the host's copy was read back over SFTP to hash it.
    assert summary["unchanged"] == 1 and hosts[host.name]["details"] == [
        "unchanged /srv/shared.txt (same checksum; mtime not set: permission denied: /srv/shared.txt)"]
    assert int(there.stat().st_mtime) == 1_600_000_000 and there.stat().st_uid == 0


def test_a_local_file_changed_during_its_upload_fails_the_host_and_keeps_the_target(make_lab, tmp_path):
    lab = make_lab(1)
    host = lab.hosts[0]
    srv(host, "big.bin").write_bytes(b"old")
    payload = tmp_path / "big.bin"
    with payload.open("wb") as out:
        for _ in range(200):
            out.write(os.urandom(1 << 20))
    command = [sys.executable, "-m", "fleetrun", "push", "-i", str(lab.inventory), str(payload), "/srv/big.bin",
               "-H", "all", "--format", "json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=clean_env(tmp_path))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(".fleetrun-tmp-" in p.name for p in srv(host).iterdir()):
        time.sleep(0.02)
    info = payload.stat()
    os.utime(payload, ns=(info.st_atime_ns, info.st_mtime_ns + 5 * 10**9))  # what an editor saving it would do
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    record = json.loads(out.splitlines()[0])
    assert record["status"] == "failed" and "changed on this machine during the push: push it again" in (
        record["error"]), record
    assert srv(host, "big.bin").read_bytes() == b"old"
    assert [p.name for p in srv(host).iterdir()] == ["big.bin"], "the temp file was removed"


def stats_asked(logs: Path, host) -> list[str]:
    """The stat and lstat requests the host's sftp-server logged, in order: 'stat /path', 'lstat /path'."""
    return [f"{kind} {path}" for kind, path in re.findall(r'(l?stat) name "([^"]*)"', sftp_log(logs, host))]


def test_a_file_is_looked_at_once_before_its_quick_check_also_through_a_symlink(logged, tmp_path):
    lab, logs = logged
    payload = tmp_path / "app.conf"
    payload.write_text("v=1\n")
    assert push(lab, str(payload), "/srv/app.conf", home=tmp_path).code == 0
    clear_logs(lab, logs)
    again = push(lab, str(payload), "/srv/app.conf", home=tmp_path)
    assert details(again) == {h.name: ["unchanged /srv/app.conf (same size and mtime)"] for h in lab.hosts}
    # One lstat: no directory, no symlink, so the quick check has its stat, and its directory exists.
    assert [stats_asked(logs, h) for h in lab.hosts] == [["lstat /srv/app.conf"]] * 2

    for host in lab.hosts:
        srv(host, "app.conf").rename(srv(host, "shared.conf"))
        srv(host, "app.conf").symlink_to("shared.conf")
    clear_logs(lab, logs)
    through = push(lab, str(payload), "/srv/app.conf", home=tmp_path)
    assert details(through) == {h.name: ["unchanged /srv/shared.conf (same size and mtime)"] for h in lab.hosts}
    # A symlink: where it leads (a directory?), then the link followed to the file the quick check looks at.
    assert [stats_asked(logs, h) for h in lab.hosts] == [["lstat /srv/app.conf", "stat /srv/app.conf",
                                                          "lstat /srv/shared.conf"]] * 2

    clear_logs(lab, logs)
    assert push(lab, str(payload), "/srv/new.conf", home=tmp_path).code == 0
    # Nothing there: its directory is looked at (it must exist, or --mkdir), and nothing is asked twice.
    assert [stats_asked(logs, h)[:2] for h in lab.hosts] == [["lstat /srv/new.conf", "stat /srv"]] * 2
    assert all(asked.count("lstat /srv/new.conf") == 1 for asked in (stats_asked(logs, h) for h in lab.hosts))
