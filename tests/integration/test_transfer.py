"""`fleetrun push` and `pull` against real sshd hosts, each with its own /srv."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fleet import clean_env, fleetrun

pytestmark = pytest.mark.integration


def srv(host, path: str = "") -> Path:
    """A lab host's private /srv, seen from here through its sshd's mount namespace."""
    return Path(f"/proc/{host.pid}/root/srv") / path


def push(lab, *args: str, home: Path, fmt: str = "json"):
    return fleetrun("push", "-i", str(lab.inventory), *args, "--format", fmt, home=home)


@pytest.fixture
def lab10(make_lab):
    lab = make_lab(10)
    if not lab.private_srv:
        pytest.fail("push tests need a private /srv per host (run as root)")
    return lab


def test_push_file_is_idempotent_and_reports_changes(lab10, tmp_path):
    payload = tmp_path / "app.conf"
    payload.write_bytes(os.urandom(300_000))
    payload.chmod(0o640)
    run = push(lab10, str(payload), "/srv/etc/", "-H", "all", "--mkdir", home=tmp_path)
    assert run.code == 0, run.err
    hosts, _ = run.json()
    assert {r["status"] for r in hosts.values()} == {"ok"} and all(r["changed"] for r in hosts.values())
    inodes = {}
    for host in lab10.hosts:
        copy = srv(host, "etc/app.conf")
        assert copy.read_bytes() == payload.read_bytes()
        assert copy.stat().st_mode & 0o7777 == 0o640
        inodes[host.name] = copy.stat().st_ino
        assert [p.name for p in srv(host, "etc").iterdir()] == ["app.conf"], "no temp file left behind"

    again = push(lab10, str(payload), "/srv/etc/app.conf", "-H", "all", home=tmp_path)
    hosts, _ = again.json()
    assert again.code == 0 and not any(r["changed"] for r in hosts.values())
    assert {h.name: srv(h, "etc/app.conf").stat().st_ino for h in lab10.hosts} == inodes, "nothing re-uploaded"

    srv(lab10.hosts[3], "etc/app.conf").write_bytes(b"drifted")
    third = push(lab10, str(payload), "/srv/etc/", "-H", "all", home=tmp_path)
    hosts, summary = third.json()
    assert [name for name, r in hosts.items() if r["changed"]] == [lab10.hosts[3].name]
    assert (summary["changed"], summary["unchanged"]) == (1, 9)
    assert srv(lab10.hosts[3], "etc/app.conf").read_bytes() == payload.read_bytes()


def test_push_mode_backup_and_table_words(lab10, tmp_path):
    payload = tmp_path / "run.sh"
    payload.write_text("#!/bin/sh\necho v1\n")
    host = lab10.hosts[0]
    srv(host).joinpath("run.sh").write_text("old\n")
    run = push(lab10, str(payload), "/srv/run.sh", "-H", host.name, "--mode", "0755", "--backup", home=tmp_path,
               fmt="table")
    assert run.code == 0, run.err
    assert "changed" in run.out and run.out.rstrip().splitlines()[-1].startswith("1 ok (1 changed) in ")
    assert srv(host, "run.sh").stat().st_mode & 0o7777 == 0o755
    assert srv(host, "run.sh.fleetrun-bak").read_text() == "old\n"
    chmod_only = push(lab10, str(payload), "/srv/run.sh", "-H", host.name, "--mode", "0700", "-v",
                      home=tmp_path, fmt="table")
    assert "mode 0700" in chmod_only.out and srv(host, "run.sh").stat().st_mode & 0o7777 == 0o700


def test_push_tree_recursively(lab10, tmp_path):
    tree = tmp_path / "site"
    (tree / "css").mkdir(parents=True)
    (tree / "index.html").write_text("<h1>hi</h1>\n")
    (tree / "css" / "main.css").write_text("body{}\n")
    (tree / "bin").mkdir()
    (tree / "bin" / "tool").write_bytes(b"\x7fELF...")
    (tree / "bin" / "tool").chmod(0o751)
    run = push(lab10, str(tree), "/srv/www/", "-r", "-H", "all", "--mkdir", home=tmp_path)
    assert run.code == 0, run.err
    for host in lab10.hosts:
        root = srv(host, "www/site")
        assert (root / "index.html").read_text() == "<h1>hi</h1>\n"
        assert (root / "css" / "main.css").read_text() == "body{}\n"
        assert (root / "bin" / "tool").stat().st_mode & 0o777 == 0o751
    again = push(lab10, str(tree), "/srv/www/", "-r", "-H", "all", home=tmp_path)
    hosts, _ = again.json()
    assert not any(r["changed"] for r in hosts.values())


def test_interrupted_upload_leaves_old_file_intact(make_lab, tmp_path):
    lab = make_lab(1)
    host = lab.hosts[0]
    old = os.urandom(1_000_000)
    srv(host, "big.bin").write_bytes(old)
    payload = tmp_path / "big.bin"
    with payload.open("wb") as out:
        for _ in range(200):
            out.write(os.urandom(1 << 20))
    command = [sys.executable, "-m", "fleetrun", "push", "-i", str(lab.inventory), str(payload), "/srv/big.bin",
               "-H", "all", "--format", "json"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=clean_env(tmp_path))
    deadline = time.monotonic() + 60
    temps: list[Path] = []
    while time.monotonic() < deadline:
        temps = [p for p in srv(host).iterdir() if ".fleetrun-tmp-" in p.name]
        if temps and temps[0].stat().st_size > 5_000_000:
            break
        time.sleep(0.05)
    assert temps, "the upload never started"
    # Cut the connection from the server side: kill the per-connection sshd processes.
    children = subprocess.run(["pgrep", "-P", str(host.pid)], capture_output=True, text=True).stdout.split()
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, err
    assert '"connection lost during the transfer"' in out
    assert srv(host, "big.bin").read_bytes() == old

    small = tmp_path / "big.bin"
    small.write_bytes(b"new content")
    run = push(lab, str(small), "/srv/big.bin", "-H", "all", home=tmp_path)
    assert run.code == 0, run.err
    assert srv(host, "big.bin").read_bytes() == b"new content"
    assert [p.name for p in srv(host).iterdir()] == ["big.bin"], "the leftover temp file was removed"


def test_per_host_failures_are_results(make_lab, tmp_path):
    lab = make_lab(4, srv_size="4m")
    full, readonly, locked, fine = lab.hosts
    srv(full, "filler").write_bytes(b"\0" * 3_500_000)
    srv(readonly, "ro").mkdir()
    subprocess.run(["nsenter", "-t", str(readonly.pid), "-m", "mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                    str(Path("/srv/ro"))], check=True)
    payload = tmp_path / "data.bin"
    payload.write_bytes(os.urandom(1_000_000))
    for host in (full, readonly, fine):
        srv(host).joinpath("data.bin").write_bytes(b"previous")

    run = push(lab, str(payload), "/srv/data.bin", "-H", f"{full.name},{fine.name}", home=tmp_path)
    assert run.code == 1, run.err
    hosts, _ = run.json()
    assert hosts[full.name]["status"] == "failed" and "disk full" in hosts[full.name]["error"]
    assert hosts[fine.name]["status"] == "ok"
    assert srv(full, "data.bin").read_bytes() == b"previous"
    assert not [p for p in srv(full).iterdir() if ".fleetrun-tmp-" in p.name]

    run = push(lab, str(payload), "/srv/ro/data.bin", "-H", readonly.name, home=tmp_path)
    hosts, _ = run.json()
    assert run.code == 1 and "read-only" in hosts[readonly.name]["error"].lower()

    run = push(lab, str(payload), "/srv/missing/data.bin", "-H", fine.name, home=tmp_path)
    hosts, _ = run.json()
    assert run.code == 1 and "--mkdir" in hosts[fine.name]["error"]

    # An unprivileged login (SFTP works for nobody; it has no shell) cannot write to root's /srv.
    # sshd reads authorized_keys as that user: let nobody traverse the test's private temp directories.
    for directory in [lab.directory, *lab.directory.parents]:
        if directory == Path("/tmp"):
            break
        directory.chmod(directory.stat().st_mode | 0o711)
    (lab.directory / "authorized_keys").chmod(0o644)
    run = fleetrun("push", "-i", str(lab.inventory), str(payload), "/srv/data.bin", "-H", locked.name,
                   "-u", "nobody", "--format", "json", home=tmp_path)
    hosts, _ = run.json()
    assert run.code == 1 and "permission denied" in hosts[locked.name]["error"]


def test_pull_from_10_hosts(lab10, tmp_path):
    for host in lab10.hosts:
        srv(host, "logs").mkdir()
        srv(host, "logs/app.log").write_bytes(f"log of {host.name}\n".encode() + os.urandom(200_000))
    target = tmp_path / "collected"
    run = fleetrun("pull", "-i", str(lab10.inventory), "/srv/logs/app.log", str(target), "-H", "all",
                   "--format", "json", home=tmp_path)
    assert run.code == 0, run.err
    for host in lab10.hosts:
        pulled = target / host.name / "app.log"
        assert hashlib.sha256(pulled.read_bytes()).digest() == hashlib.sha256(
            srv(host, "logs/app.log").read_bytes()).digest()
    tree = fleetrun("pull", "-i", str(lab10.inventory), "/srv/logs", str(tmp_path / "trees"), "-r", "-H", "lab01",
                    home=tmp_path)
    assert tree.code == 0 and (tmp_path / "trees" / "lab01" / "logs" / "app.log").is_file()
    missing = fleetrun("pull", "-i", str(lab10.inventory), "/srv/nope.log", str(target), "-H", "lab01,lab02",
                       "--format", "json", home=tmp_path)
    hosts, _ = missing.json()
    assert missing.code == 1 and "no such file" in hosts["lab01"]["error"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/no/such/file", "/srv/x"], "does not exist"),
        (["{dir}", "/srv/x"], "pass -r"),
        (["{file}", "srv/relative"], "must be absolute"),
        (["{file}", "/srv/x", "--mode", "999"], "octal"),
    ],
)
def test_bad_local_input_is_exit_2_before_connecting(tmp_path, args, message):
    (tmp_path / "file").write_text("x")
    # The inventory points at a closed port: any connection attempt would show as 'unreachable', not exit 2.
    inventory = tmp_path / "inv.yaml"
    inventory.write_text("hosts:\n  h1: {address: 127.0.0.1, port: 9}\n")
    filled = [a.format(dir=tmp_path, file=tmp_path / "file") for a in args]
    run = fleetrun("push", "-i", str(inventory), *filled, "-H", "all", home=tmp_path)
    assert run.code == 2 and message in run.err and run.out == ""


def test_pull_bad_input(tmp_path):
    inventory = tmp_path / "inv.yaml"
    inventory.write_text("hosts:\n  h1: {address: 127.0.0.1, port: 9}\n")
    (tmp_path / "afile").write_text("")
    run = fleetrun("pull", "-i", str(inventory), "/etc/hosts", str(tmp_path / "afile"), "-H", "all", home=tmp_path)
    assert run.code == 2 and "not a directory" in run.err
    run = fleetrun("pull", "-i", str(inventory), "relative", str(tmp_path), "-H", "all", home=tmp_path)
    assert run.code == 2 and "absolute" in run.err


def test_push_verify_owner_and_max_transfers(lab10, tmp_path):
    payload = tmp_path / "owned.txt"
    payload.write_text("owned by nobody\n")
    run = push(lab10, str(payload), "/srv/owned.txt", "-H", "all", "--verify", "--owner", "nobody:nogroup",
               "--max-transfers", "2", home=tmp_path)
    assert run.code == 0, run.err
    for host in lab10.hosts:
        info = srv(host, "owned.txt").stat()
        assert (info.st_uid, srv(host, "owned.txt").read_text()) == (65534, "owned by nobody\n")
    again = push(lab10, str(payload), "/srv/owned.txt", "-H", "all", "--owner", "nobody:nogroup", home=tmp_path)
    _, summary = again.json()
    assert summary["unchanged"] == 10, "same content and owner: nothing to do"
    srv(lab10.hosts[0], "owned.txt").chmod(0o600)
    os.chown(srv(lab10.hosts[0], "owned.txt"), 0, 0)
    fixed = push(lab10, str(payload), "/srv/owned.txt", "-H", "all", "--owner", "nobody:nogroup", home=tmp_path)
    _, summary = fixed.json()
    assert summary["changed"] == 1 and srv(lab10.hosts[0], "owned.txt").stat().st_uid == 65534


def _site(tmp_path: Path) -> Path:
    import socket

    tree = tmp_path / "site"
    (tree / "private").mkdir(parents=True)
    (tree / "private" / "key").write_text("secret\n")
    (tree / "private" / "key").chmod(0o600)
    (tree / "private").chmod(0o700)
    (tree / "ro").mkdir()
    (tree / "ro" / "README").write_text("read me\n")
    (tree / "ro").chmod(0o555)
    (tree / "index.html").write_text("<h1>hi</h1>\n")
    (tree / "current").symlink_to("private/key")
    (tree / "hostname").symlink_to("/etc/hostname")
    (tree / "dangling").symlink_to("no/such/file")
    (tree / "linkdir").symlink_to("private")
    os.mkfifo(tree / "fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tree / "sock"))
    tree.chmod(0o750)
    return tree


def _mode(path: Path) -> int:
    return path.lstat().st_mode & 0o7777


def test_push_tree_keeps_symlinks_and_directory_modes_and_reports_special_files(make_lab, tmp_path):
    lab = make_lab(2)
    tree = _site(tmp_path)
    run = push(lab, str(tree), "/srv/www/", "-r", "--mkdir", "-H", "all", home=tmp_path)
    assert run.code == 0, run.err
    hosts, _ = run.json()
    for host in lab.hosts:
        root = srv(host, "www/site")
        assert (_mode(root), _mode(root / "private"), _mode(root / "ro")) == (0o750, 0o700, 0o555)
        assert (_mode(root / "private" / "key"), (root / "ro" / "README").read_text()) == (0o600, "read me\n")
        links = {name: os.readlink(root / name) for name in ("current", "hostname", "dangling", "linkdir")}
        assert links == {"current": "private/key", "hostname": "/etc/hostname", "dangling": "no/such/file",
                         "linkdir": "private"}
        assert not (root / "fifo").exists() and not (root / "sock").exists()
        assert sorted(p.name for p in root.iterdir()) == ["current", "dangling", "hostname", "index.html",
                                                          "linkdir", "private", "ro"], "no temp file left"
        details = hosts[host.name]["details"]
        assert "skipped fifo (FIFO: special files are not pushed)" in details
        assert "skipped sock (socket: special files are not pushed)" in details

    again = push(lab, str(tree), "/srv/www/", "-r", "-H", "all", "-v", home=tmp_path)
    hosts, summary = again.json()
    assert again.code == 0 and summary["unchanged"] == 2 and summary["changed"] == 0, again.out
    assert "unchanged /srv/www/site/linkdir (symlink)" in hosts[lab.hosts[0].name]["details"]

    drifted = srv(lab.hosts[1], "www/site")
    (drifted / "private").chmod(0o755)
    (drifted / "current").unlink()
    (drifted / "current").write_text("a file where a link was\n")
    (drifted / "linkdir").unlink()
    (drifted / "linkdir").symlink_to("ro")
    (drifted / "ro").chmod(0o755)
    shutil.rmtree(drifted / "ro")
    (drifted / "ro").symlink_to("private")  # a link where the tree has a directory: replaced, like rsync
    fixed = push(lab, str(tree), "/srv/www/", "-r", "-H", "all", home=tmp_path)
    hosts, summary = fixed.json()
    assert (summary["changed"], summary["unchanged"]) == (1, 1), fixed.out
    assert _mode(drifted / "private") == 0o700
    assert not (drifted / "ro").is_symlink() and _mode(drifted / "ro") == 0o555
    assert (drifted / "ro" / "README").read_text() == "read me\n" and (drifted / "private" / "key").exists()
    assert os.readlink(drifted / "current") == "private/key" and os.readlink(drifted / "linkdir") == "private"
    details = hosts[lab.hosts[1].name]["details"]
    assert "changed /srv/www/site/private/ (mode 0700)" in details
    assert "changed /srv/www/site/current -> private/key (symlink)" in details


def test_push_copy_links_follows_symlinks_like_rsync_L(make_lab, tmp_path):
    lab = make_lab(1)
    host = lab.hosts[0]
    tree = _site(tmp_path)
    run = push(lab, str(tree), "/srv/", "-r", "--copy-links", "-H", "all", home=tmp_path)
    assert run.code == 0, run.err
    root = srv(host, "site")
    assert not (root / "current").is_symlink() and (root / "current").read_text() == "secret\n"
    assert _mode(root / "current") == 0o600
    assert (root / "linkdir").is_dir() and not (root / "linkdir").is_symlink()
    assert (_mode(root / "linkdir"), (root / "linkdir" / "key").read_text()) == (0o700, "secret\n")
    assert not os.path.lexists(root / "dangling")
    hosts, _ = run.json()
    assert "skipped dangling (symlink to a missing file; --copy-links cannot follow it)" in hosts[host.name]["details"]
    again = push(lab, str(tree), "/srv/", "-r", "-L", "-H", "all", home=tmp_path)
    assert again.json()[1]["unchanged"] == 1


def test_push_of_a_symlink_operand_sends_its_target_under_its_own_name(make_lab, tmp_path):
    lab = make_lab(1)
    host = lab.hosts[0]
    (tmp_path / "app-v2.conf").write_text("v2\n")
    (tmp_path / "app.conf").symlink_to("app-v2.conf")
    run = push(lab, str(tmp_path / "app.conf"), "/srv/", "-H", "all", home=tmp_path)
    assert run.code == 0, run.err
    assert [p.name for p in srv(host).iterdir()] == ["app.conf"]
    assert srv(host, "app.conf").read_text() == "v2\n" and not srv(host, "app.conf").is_symlink()


def test_push_owner_changes_a_symlink_itself_never_its_target(make_lab, tmp_path):
    lab = make_lab(1)
    host = lab.hosts[0]
    srv(host, "outside.txt").write_text("root's\n")
    tree = tmp_path / "conf"
    tree.mkdir()
    (tree / "app.conf").write_text("x\n")
    (tree / "outside").symlink_to("/srv/outside.txt")
    run = push(lab, str(tree), "/srv/", "-r", "--owner", "nobody:nogroup", "-H", "all", home=tmp_path)
    assert run.code == 0, run.err
    assert os.lstat(srv(host, "conf/outside")).st_uid == 65534 and srv(host, "conf/app.conf").stat().st_uid == 65534
    assert srv(host, "outside.txt").stat().st_uid == 0
    again = push(lab, str(tree), "/srv/", "-r", "--owner", "nobody:nogroup", "-H", "all", home=tmp_path)
    assert again.json()[1]["unchanged"] == 1
