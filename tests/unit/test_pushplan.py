"""What push -r plans to send: symlinks kept (or followed with --copy-links), directory modes, special files skipped."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from fleetrun.errors import UsageError
from fleetrun.pushplan import LocalDir, LocalLink, plan_push


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
