"""What push plans to send (symlinks, directory modes, special files skipped) and its lazy, shared local SHA-256."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fleetrun.errors import UsageError
from fleetrun.pushplan import LocalDir, LocalLink, plan_push
from fleetrun.remotefs import TransferError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "private").mkdir(parents=True)
    (root / "private" / "key").write_text("secret\n")
    (root / "private" / "key").chmod(0o600)
    (root / "private").chmod(0o700)
    (root / "index.html").write_text("hi\n")
    (root / "current").symlink_to("private/key")
    (root / "absolute").symlink_to("/etc/hostname")
    (root / "dangling").symlink_to("no/such/file")
    (root / "linkdir").symlink_to("private")
    (root / "loop").symlink_to(".")
    os.mkfifo(root / "fifo")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "sock"))
    root.chmod(0o750)
    return root


def test_links_are_kept_as_links_and_special_files_reported(tree):
    plan = plan_push(str(tree), "/srv/", recursive=True)
    assert plan.source_name == "site"
    assert plan.directories == (LocalDir("", 0o750), LocalDir("private", 0o700))
    assert [f.relative for f in plan.files] == ["index.html", "private/key"]
    assert plan.files[1].mode == 0o600
    assert plan.links == (LocalLink("absolute", "/etc/hostname"), LocalLink("current", "private/key"),
                          LocalLink("dangling", "no/such/file"), LocalLink("linkdir", "private"),
                          LocalLink("loop", "."))
    assert plan.skipped == ("fifo (FIFO: special files are not pushed)",
                            "sock (socket: special files are not pushed)")


def test_copy_links_follows_them_and_skips_what_cannot_be_followed(tree):
    plan = plan_push(str(tree), "/srv/", recursive=True, copy_links=True)
    assert plan.links == ()
    relatives = [f.relative for f in plan.files]
    assert relatives == ["absolute", "current", "index.html", "linkdir/key", "private/key"]
    current = plan.files[1]
    assert current.mode == 0o600 and current.sha256 == plan.files[-1].sha256
    assert [d.relative for d in plan.directories] == ["", "linkdir", "private"]
    assert plan.skipped[0] == "dangling (symlink to a missing file; --copy-links cannot follow it)"
    assert "loop (symlink loop; --copy-links cannot follow it)" in plan.skipped


def test_a_symlink_named_on_the_command_line_is_followed_but_keeps_its_name(tmp_path, monkeypatch):
    (tmp_path / "app-v2.conf").write_text("v2\n")
    (tmp_path / "current.conf").symlink_to("app-v2.conf")
    plan = plan_push(str(tmp_path / "current.conf"), "/etc/app/")
    assert plan.source_name == "current.conf" and plan.files[0].size == 3
    (tmp_path / "release").mkdir()
    (tmp_path / "live").symlink_to("release")
    assert plan_push(str(tmp_path / "live"), "/srv/", recursive=True).source_name == "live"
    monkeypatch.chdir(tmp_path / "release")
    assert plan_push(".", "/srv/", recursive=True).source_name == "release"


def test_special_file_as_local_is_exit_2(tree):
    with pytest.raises(UsageError, match="not a regular file or directory"):
        plan_push(str(tree / "fifo"), "/srv/x")


def test_the_plan_stats_files_but_hashes_none(tmp_path):
    (tmp_path / "big.bin").write_bytes(os.urandom(100_000))
    os.utime(tmp_path / "big.bin", (1_700_000_000, 1_700_000_123))
    plan = plan_push(str(tmp_path / "big.bin"), "/srv/", checksum=True)
    local = plan.files[0]
    assert (local.size, local.mtime, local.atime, plan.checksum) == (100_000, 1_700_000_123, 1_700_000_000, True)
    assert local.sftp_times == (1_700_000_000, 1_700_000_123)
    assert not local.digest.done and local.digest.computed == 0


def test_the_digest_is_computed_once_for_all_hosts_asking_at_once(tmp_path):
    data = os.urandom(3_000_000)
    (tmp_path / "big.bin").write_bytes(data)
    local = plan_push(str(tmp_path / "big.bin"), "/srv/").files[0]
    start = threading.Barrier(16)

    def host() -> str:
        start.wait()
        return local.digest.value()

    with ThreadPoolExecutor(16) as pool:
        digests = list(pool.map(lambda _: host(), range(16)))
    assert set(digests) == {hashlib.sha256(data).hexdigest()} and local.sha256 == digests[0]
    assert local.digest.computed == 1


def test_a_file_changed_after_planning_is_an_error_for_every_host_not_a_wrong_digest(tmp_path):
    path = tmp_path / "app.conf"
    path.write_text("v1\n")
    local = plan_push(str(path), "/srv/").files[0]
    path.write_text("v2\n")  # same size, another mtime (or the same mtime: then the size must differ)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    for _ in range(2):
        with pytest.raises(TransferError, match=r"app.conf changed on this machine during the push: push it again"):
            local.digest.value()
    assert local.digest.computed == 1


def test_a_hash_stopped_by_its_host_leaves_it_to_the_next(tmp_path):
    (tmp_path / "big.bin").write_bytes(os.urandom(3 << 20))
    local = plan_push(str(tmp_path / "big.bin"), "/srv/").files[0]

    def timed_out() -> None:
        raise TimeoutError("this host's --timeout")

    with pytest.raises(TimeoutError):
        local.digest.value(timed_out)
    assert not local.digest.done
    assert local.digest.value() == hashlib.sha256((tmp_path / "big.bin").read_bytes()).hexdigest()


@pytest.mark.parametrize(("mtime", "times"), [(0, (0, 0)), ((1 << 32) - 1, (5, (1 << 32) - 1)), (-1, None),
                                              (1 << 32, None)])
def test_times_sftp_v3_cannot_carry_are_not_set(tmp_path, mtime, times):
    (tmp_path / "f").write_text("x")
    os.utime(tmp_path / "f", (5 if mtime else 0, mtime))
    assert plan_push(str(tmp_path / "f"), "/srv/").files[0].sftp_times == times
