"""push and pull next to OpenSSH's scp (and rsync, for what README says is rsync-like) on the same lab host."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from fleet import clean_env, fleetrun

pytestmark = pytest.mark.integration


def srv(host, path: str = "") -> Path:
    """A lab host's private /srv, seen from here through its sshd's mount namespace."""
    return Path(f"/proc/{host.pid}/root/srv") / path


def ssh_options(lab, host) -> list[str]:
    return ["-F", "/dev/null", "-i", str(lab.client_key), "-o", f"UserKnownHostsFile={lab.known_hosts}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]


def scp(lab, host, *args: str | bytes, home: Path) -> subprocess.CompletedProcess[bytes]:
    """OpenSSH's scp, the oracle; the last argument is the remote path (str or bytes)."""
    *words, remote = args
    target = f"{lab.user}@{host.address}:".encode() + (remote if isinstance(remote, bytes) else remote.encode())
    return subprocess.run(["scp", *ssh_options(lab, host), "-P", str(host.port), *words, target],
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL, env=clean_env(home))


def rsync(lab, host, *args: str, home: Path) -> subprocess.CompletedProcess[bytes]:
    *words, remote = args
    shell = " ".join(["ssh", *ssh_options(lab, host), "-p", str(host.port)])
    return subprocess.run(["rsync", "-e", shell, *words, f"{lab.user}@{host.address}:{remote}"],
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL, env=clean_env(home))


def push(lab, host, *args: str, home: Path):
    return fleetrun("push", "-i", str(lab.inventory), *args, "-H", host.name, "--format", "json", home=home)


@pytest.fixture
def host(lab):
    if not lab.private_srv:
        pytest.fail("transfer parity tests need a private /srv per host (run as root)")
    return lab.hosts[17]


@pytest.fixture
def area(host, request):
    """/srv/<test name> on the host, for scp's copy (s/) and fleetrun's (f/) side by side; removed afterwards."""
    name = "parity-" + request.node.name.replace("[", "-").rstrip("]")
    root = srv(host, name)
    for side in ("s", "f"):
        (root / side).mkdir(parents=True)
    yield f"/srv/{name}", root
    subprocess.run(["rm", "-rf", "--", str(root)], check=True)


def test_dest_forms_land_where_scp_puts_them(lab, host, area, tmp_path):
    remote, root = area
    payload = tmp_path / "app.conf"
    payload.write_text("payload\n")
    for side in ("s", "f"):
        (root / side / "dir").mkdir()
        (root / side / "file").write_text("old\n")
        (root / side / "to-dir").symlink_to("dir")
    for dest in ("dir", "dir/", "new", "file", "to-dir"):
        assert scp(lab, host, str(payload), f"{remote}/s/{dest}", home=tmp_path).returncode == 0
        run = push(lab, host, str(payload), f"{remote}/f/{dest}", home=tmp_path)
        assert run.code == 0, run.out + run.err
    for dest in ("~/app.conf", "app.conf"):  # scp writes into the login's home; fleetrun asks for a path
        relative = push(lab, host, str(payload), dest, home=tmp_path)
        assert relative.code == 2 and "must be absolute (start with /)" in relative.err
    listing = {side: sorted((str(p.relative_to(root / side)), p.is_symlink(), p.is_file() and p.read_text())
                            for p in (root / side).rglob("*")) for side in ("s", "f")}
    assert listing["f"] == listing["s"]


def test_push_onto_a_symlink_to_a_file_writes_through_it_as_scp_does(lab, host, area, tmp_path):
    remote, root = area
    payload = tmp_path / "app.conf"
    payload.write_text("new content\n")
    os.utime(payload, (1_600_000_000, 1_600_000_000))
    for side in ("s", "f"):
        (root / side / "shared.conf").write_text("old\n")
        (root / side / "app.conf").symlink_to("shared.conf")
        (root / side / "dangling").symlink_to("created.conf")
    for dest in ("app.conf", "dangling"):
        assert scp(lab, host, str(payload), f"{remote}/s/{dest}", home=tmp_path).returncode == 0
        run = push(lab, host, str(payload), f"{remote}/f/{dest}", home=tmp_path)
        assert run.code == 0, run.out + run.err
    for side in ("s", "f"):
        assert os.readlink(root / side / "app.conf") == "shared.conf", side
        assert os.readlink(root / side / "dangling") == "created.conf", side
        assert (root / side / "shared.conf").read_text() == "new content\n", side
        assert (root / side / "created.conf").read_text() == "new content\n", side
    hosts, _ = push(lab, host, str(payload), f"{remote}/f/app.conf", home=tmp_path).json()
    assert not hosts[host.name]["changed"], "the re-push finds the file it wrote through the link"

    (root / "f" / "loop").symlink_to("loop")
    looped = push(lab, host, str(payload), f"{remote}/f/loop", home=tmp_path)
    hosts, _ = looped.json()
    assert looped.code == 1 and "too many levels of symbolic links" in hosts[host.name]["error"]


@pytest.mark.parametrize("mode", [0o4755, 0o2750], ids=oct)
def test_owner_keeps_setuid_and_setgid_bits_as_rsync_does(lab, host, area, tmp_path, mode):
    remote, root = area
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(mode)
    assert rsync(lab, host, "-pt", "--chown=root:daemon", str(tool), f"{remote}/s/", home=tmp_path).returncode == 0
    run = push(lab, host, str(tool), f"{remote}/f/", "--owner", "root:daemon", home=tmp_path)
    assert run.code == 0, run.out + run.err
    rsynced, pushed = (root / "s" / "tool").stat(), (root / "f" / "tool").stat()
    assert stat.S_IMODE(pushed.st_mode) == stat.S_IMODE(rsynced.st_mode) == mode
    assert (pushed.st_uid, pushed.st_gid) == (rsynced.st_uid, rsynced.st_gid)

    # Owner (and mode) fixed on a file whose content is the same: the chown must not undo the mode.
    for drifted in (0o755, mode):
        os.chown(root / "f" / "tool", 0, 0)  # clears the setuid and setgid bits
        os.chmod(root / "f" / "tool", drifted)
        again = push(lab, host, str(tool), f"{remote}/f/", "--owner", "root:daemon", home=tmp_path)
        assert again.code == 0, again.out + again.err
        assert stat.S_IMODE((root / "f" / "tool").stat().st_mode) == mode, oct(drifted)
    hosts, _ = push(lab, host, str(tool), f"{remote}/f/", "--owner", "root:daemon", home=tmp_path).json()
    assert not hosts[host.name]["changed"]


def test_setuid_bits_are_kept_where_scp_drops_them(lab, host, area, tmp_path):
    remote, root = area
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o4755)
    assert scp(lab, host, "-p", str(tool), f"{remote}/s/", home=tmp_path).returncode == 0
    assert push(lab, host, str(tool), f"{remote}/f/", home=tmp_path).code == 0
    assert stat.S_IMODE((root / "s" / "tool").stat().st_mode) == 0o755  # README: scp masks with 0777
    assert stat.S_IMODE((root / "f" / "tool").stat().st_mode) == 0o4755


def tree_of(top: Path | bytes) -> list[tuple[bytes, bytes | None]]:
    """Every entry under `top` by its bytes: (relative name, content; a directory's None, a link's b'-> target')."""
    top = os.fsencode(top)
    found: list[tuple[bytes, bytes | None]] = []
    for directory, subdirectories, files in os.walk(top):
        found += [(os.path.relpath(os.path.join(directory, name), top), None) for name in subdirectories
                  if not os.path.islink(os.path.join(directory, name))]
        for name in files + [name for name in subdirectories if os.path.islink(os.path.join(directory, name))]:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                found.append((os.path.relpath(path, top), b"-> " + os.readlink(path)))
            else:
                with open(path, "rb") as handle:
                    found.append((os.path.relpath(path, top), handle.read()))
    return sorted(found, key=lambda item: item[0])


def test_a_push_sends_names_that_are_not_utf8_byte_for_byte_as_scp_does(lab, host, area, tmp_path):
    remote, root = area
    tree = os.fsencode(tmp_path) + b"/tree"
    os.makedirs(tree + b"/d\xefr")
    for name, data in ((b"/caf\xe9.conf", b"latin-1\n"), (b"/ok.conf", b"ok\n"), (b"/d\xefr/in\xff", b"deep\n")):
        with open(tree + name, "wb") as handle:
            handle.write(data)
    os.symlink(b"caf\xe9.conf", tree + b"/link\xe0")  # a link, and its target, that are not UTF-8
    copied = subprocess.run(["scp", *ssh_options(lab, host), "-P", str(host.port), "-r", tree,
                             f"{lab.user}@{host.address}:{remote}/s/"],
                            capture_output=True, timeout=60, stdin=subprocess.DEVNULL, env=clean_env(tmp_path))
    assert copied.returncode == 0, copied.stderr
    run = push(lab, host, os.fsdecode(tree), f"{remote}/f/", "-r", home=tmp_path)
    assert run.code == 0, run.out + run.err
    hosts, _ = run.json()  # valid JSON: each name shown with its odd bytes escaped, as \xe9
    assert f"changed {remote}/f/tree/caf\\xe9.conf (8 bytes)" in hosts[host.name]["details"], run.out
    ours = tree_of(root / "f" / "tree")
    scps = tree_of(root / "s" / "tree")  # scp -r follows the link: the same bytes, as a file
    assert [entry for entry in ours if not entry[0].startswith(b"link")] == [
        entry for entry in scps if not entry[0].startswith(b"link")]
    assert (b"d\xefr/in\xff", b"deep\n") in ours and (b"link\xe0", b"-> caf\xe9.conf") in ours
    single = os.fsencode(tmp_path) + b"/\xe9t\xe9.txt"
    with open(single, "wb") as handle:
        handle.write(b"one\n")
    one = push(lab, host, os.fsdecode(single), os.fsdecode(os.fsencode(f"{remote}/f/") + b"r\xe9sum\xe9"),
               home=tmp_path)
    assert one.code == 0, one.out + one.err
    assert (b"r\xe9sum\xe9", b"one\n") in tree_of(root / "f")
    again = push(lab, host, os.fsdecode(tree), f"{remote}/f/", "-r", home=tmp_path)  # unchanged; the table
    again_table = fleetrun("push", "-i", str(lab.inventory), os.fsdecode(tree), f"{remote}/f/", "-r", "-v",
                           "-H", host.name, home=tmp_path)
    assert again.code == 0 and again_table.code == 0 and "Traceback" not in again_table.err, again_table.err
    assert "caf\\xe9.conf" in again_table.out, again_table.out


def test_a_pull_copies_names_that_are_not_utf8_byte_for_byte_as_scp_does(lab, host, area, tmp_path):
    remote, root = area
    tree = os.fsencode(root / "s" / "tree")
    os.makedirs(tree + b"/d\xefr")
    for name, data in ((b"/caf\xe9.conf", b"latin-1\n"), (b"/ok.conf", b"ok\n"), (b"/d\xefr/in\xff", b"deep\n")):
        with open(tree + name, "wb") as handle:
            handle.write(data)
    copied = subprocess.run(["scp", *ssh_options(lab, host), "-P", str(host.port), "-r",
                             f"{lab.user}@{host.address}:{remote}/s/tree", str(tmp_path / "scp")],
                            capture_output=True, timeout=60, stdin=subprocess.DEVNULL, env=clean_env(tmp_path))
    assert copied.returncode == 0, copied.stderr
    pulled = fleetrun("pull", "-i", str(lab.inventory), f"{remote}/s/tree", str(tmp_path / "pulled"), "-r",
                      "-H", host.name, "--format", "json", home=tmp_path)
    assert pulled.code == 0, pulled.out + pulled.err
    hosts, _ = pulled.json()  # valid JSON: each name shown with its odd bytes escaped, as \xe9
    assert any(line.startswith("changed ") and line.endswith("/tree/caf\\xe9.conf (8 bytes)")
               for line in hosts[host.name]["details"]), hosts[host.name]["details"]

    ours = tree_of(tmp_path / "pulled" / host.name / "tree")
    assert ours == tree_of(tmp_path / "scp")
    assert (b"d\xefr/in\xff", b"deep\n") in ours
    again = fleetrun("pull", "-i", str(lab.inventory), f"{remote}/s/tree", str(tmp_path / "pulled"), "-r",
                     "-H", host.name, home=tmp_path)  # the table, on a terminal's encoding: no surrogate to choke on
    assert again.code == 0 and "Traceback" not in again.err, again.out + again.err


def test_a_push_into_a_directory_holding_a_name_that_is_not_utf8_works(lab, host, area, tmp_path):
    remote, root = area
    with open(os.fsencode(root / "f") + b"/caf\xe9.conf", "wb") as handle:
        handle.write(b"theirs\n")  # any directory may hold one; the push looks there for its own leftovers
    payload = tmp_path / "app.conf"
    payload.write_text("ours\n")
    run = push(lab, host, str(payload), f"{remote}/f/", home=tmp_path)
    assert run.code == 0, run.out + run.err
    assert sorted(os.listdir(os.fsencode(root / "f"))) == [b"app.conf", b"caf\xe9.conf"]
    assert (root / "f" / "app.conf").read_text() == "ours\n"


def test_pull_keeps_the_remote_times_and_mode_as_scp_p_does(lab, host, area, tmp_path):
    remote, root = area
    source = root / "s" / "app.log"
    source.write_text("log\n")
    source.chmod(0o4751)
    os.utime(source, (1_500_000_000, 1_400_000_000))
    copied = subprocess.run(["scp", *ssh_options(lab, host), "-P", str(host.port), "-p",
                             f"{lab.user}@{host.address}:{remote}/s/app.log", str(tmp_path / "scp.log")],
                            capture_output=True, timeout=60, stdin=subprocess.DEVNULL, env=clean_env(tmp_path))
    assert copied.returncode == 0, copied.stderr
    pulled = fleetrun("pull", "-i", str(lab.inventory), f"{remote}/s/app.log", str(tmp_path / "pulled"),
                      "-H", host.name, "--format", "json", home=tmp_path)
    assert pulled.code == 0, pulled.out + pulled.err
    ours, theirs = (tmp_path / "pulled" / host.name / "app.log").stat(), (tmp_path / "scp.log").stat()
    assert ours.st_mtime == theirs.st_mtime == 1_400_000_000  # (atimes: reading the file on the host moves its own)
    assert stat.S_IMODE(ours.st_mode) == stat.S_IMODE(theirs.st_mode) == 0o751  # no setuid bit from a host


def test_a_name_of_255_bytes_is_pushed_and_pulled_as_scp_does(lab, host, area, tmp_path):
    remote, root = area
    name = "n" + "é" * 120 + "n" * 14  # 255 bytes, the most a name can have; its temp name is cut inside an é
    payload = tmp_path / name
    payload.write_text("long\n")
    assert scp(lab, host, str(payload), f"{remote}/s/", home=tmp_path).returncode == 0
    leftover = root / "f" / ("." + "n" + "é" * 115 + ".fleetrun-tmp-0badf00d")  # what an interrupted push left
    leftover.write_text("partial")
    run = push(lab, host, str(payload), f"{remote}/f/", home=tmp_path)
    assert run.code == 0, run.out + run.err
    assert sorted(os.listdir(root / "f")) == sorted(os.listdir(root / "s")) == [name]
    pulled = fleetrun("pull", "-i", str(lab.inventory), f"{remote}/f/{name}", str(tmp_path / "pulled"),
                      "-H", host.name, "--format", "json", home=tmp_path)
    assert pulled.code == 0, pulled.out + pulled.err
    assert (tmp_path / "pulled" / host.name / name).read_text() == "long\n"


def test_a_name_longer_than_the_file_system_allows_is_named_as_such(lab, host, area, tmp_path):
    remote, root = area
    payload = tmp_path / "app.conf"
    payload.write_text("x\n")
    long = "n" * 300
    theirs = scp(lab, host, str(payload), f"{remote}/s/{long}", home=tmp_path)
    assert theirs.returncode == 1 and b"Bad message" in theirs.stderr, theirs.stderr  # its word for ENAMETOOLONG
    for command in (["push", str(payload), f"{remote}/f/{long}"], ["pull", f"{remote}/f/{long}", str(tmp_path)]):
        run = fleetrun(command[0], "-i", str(lab.inventory), *command[1:], "-H", host.name, "--format", "json",
                       home=tmp_path)
        hosts, _ = run.json()
        assert run.code == 1 and hosts[host.name]["error"] == (
            f"name too long: {remote}/f/{long} (a name of 300 bytes; file systems allow 255)"), run.out + run.err
    assert os.listdir(root / "f") == []


def test_full_and_read_only_destinations_fail_the_host_and_leave_no_partial_file(lab, host, area, tmp_path):
    remote, root = area
    payload = tmp_path / "big.bin"
    payload.write_bytes(os.urandom(200_000))
    os.utime(payload, (1_600_000_000, 1_600_000_000))
    mounts = []
    try:
        for side in ("s", "f"):
            for kind, options in (("full", "size=64k"), ("ro", "size=64k,ro")):
                path = f"{remote}/{side}/{kind}"
                (root / side / kind).mkdir()
                subprocess.run(["nsenter", "-t", str(host.pid), "-m", "mount", "-t", "tmpfs", "-o", options,
                                "tmpfs", path], check=True)
                mounts.append(path)
        for kind, reason in (("full", "disk full?"), ("ro", "read-only file system")):
            copied = scp(lab, host, str(payload), f"{remote}/s/{kind}/", home=tmp_path)
            assert copied.returncode == 1 and b"Failure" in copied.stderr  # scp only says "Failure"
            run = push(lab, host, str(payload), f"{remote}/f/{kind}/", home=tmp_path)
            hosts, _ = run.json()
            assert run.code == 1 and hosts[host.name]["status"] == "failed"
            assert reason in hosts[host.name]["error"], hosts[host.name]["error"]
            assert os.listdir(root / "f" / kind) == [], "no partial file, no temp file"
        assert os.listdir(root / "s" / "full") == ["big.bin"], "where scp leaves a partial file"
    finally:
        for path in reversed(mounts):
            subprocess.run(["nsenter", "-t", str(host.pid), "-m", "umount", path], check=True)


def test_tree_dest_rule_is_scp_r_s(lab, host, area, tmp_path):
    remote, root = area
    tree = tmp_path / "site"
    (tree / "empty").mkdir(parents=True)
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "index.html").write_text("hi\n")
    for side in ("s", "f"):
        (root / side / "exists").mkdir()
    for dest in ("missing", "exists"):  # a missing DEST becomes the copy; an existing one gets it inside
        assert scp(lab, host, "-r", str(tree), f"{remote}/s/{dest}", home=tmp_path).returncode == 0
        run = push(lab, host, str(tree), f"{remote}/f/{dest}", "-r", home=tmp_path)
        assert run.code == 0, run.out + run.err
    listing = {side: sorted((str(p.relative_to(root / side)), p.is_dir()) for p in (root / side).rglob("*"))
               for side in ("s", "f")}
    assert listing["f"] == listing["s"]
