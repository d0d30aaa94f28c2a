"""What `fleetrun push` will send, read once before any connection: files, symlinks, directories and their modes."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from fleetrun.errors import UsageError
from fleetrun.remotefs import local_sha256, special_kind


@dataclass(frozen=True)
class LocalFile:
    """One file to push: read and hashed once, whatever the number of hosts."""

    path: Path
    relative: str  # posix path inside the pushed tree; "" for a single file
    size: int
    mode: int
    sha256: str


@dataclass(frozen=True)
class LocalLink:
    """A symlink inside the tree, recreated on the host with the same target text (like rsync -l)."""

    relative: str
    target: str


@dataclass(frozen=True)
class LocalDir:
    """A directory of the tree ("" is its root) and the mode it gets on the host."""

    relative: str
    mode: int


@dataclass(frozen=True)
class PushPlan:
    source_name: str  # the name LOCAL has on the command line (a symlink's own name, not its target's)
    files: tuple[LocalFile, ...]
    directories: tuple[LocalDir, ...]  # parents first
    remote: str
    recursive: bool
    mode: int | None = None
    mkdir: bool = False
    backup: bool = False
    owner: str | None = None
    verify: bool = False
    links: tuple[LocalLink, ...] = ()
    skipped: tuple[str, ...] = ()  # "relative (why)": special files, and what --copy-links cannot follow
    copy_links: bool = False


def parse_mode(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise UsageError(f"--mode {text!r} is not an octal file mode like 0644")
    return mode


def plan_push(
    local: str,
    remote: str,
    *,
    recursive: bool = False,
    mode: int | None = None,
    mkdir: bool = False,
    backup: bool = False,
    owner: str | None = None,
    verify: bool = False,
    copy_links: bool = False,
) -> PushPlan:
    """Check the local side and read every file once; every bad input is exit 2 before any connection.

    LOCAL itself is followed when it is a symlink (what you name is what you push, as with scp); symlinks
    inside a tree are recreated as symlinks, or followed with `copy_links` (rsync -L).
    """
    if not remote.startswith("/"):
        raise UsageError(f"remote path {remote!r} must be absolute (start with /)")
    if owner is not None and (not owner or any(c in owner for c in " \t\n;'\"$`\\")):
        raise UsageError(f"--owner {owner!r} must look like user or user:group")
    source = Path(local)
    if not source.exists():
        raise UsageError(f"local path {local} does not exist")
    if not os.access(source, os.R_OK):
        raise UsageError(f"local path {local} is not readable")
    name = Path(os.path.abspath(local)).name  # '.' and '..' resolved by name, a symlink keeps its own name
    if source.is_dir():
        if not recursive:
            raise UsageError(f"{local} is a directory: pass -r to push the tree")
        tree = _Walk(copy_links)
        tree.visit(source, "", source.stat())
        files, directories, links, skipped = tree.files, tree.directories, tree.links, tree.skipped
    elif source.is_file():
        files, directories, links, skipped = [_local_file(source, "")], [], [], []
    else:
        raise UsageError(f"{local} is not a regular file or directory")
    return PushPlan(name, tuple(files), tuple(directories), remote, recursive, mode, mkdir, backup, owner, verify,
                    tuple(links), tuple(skipped), copy_links)


def _local_file(path: Path, relative: str) -> LocalFile:
    try:
        info = path.stat()
        return LocalFile(path, relative, info.st_size, stat.S_IMODE(info.st_mode), local_sha256(path))
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None


class _Walk:
    """Depth-first, names sorted, parents before children."""

    def __init__(self, copy_links: bool) -> None:
        self.copy_links = copy_links
        self.files: list[LocalFile] = []
        self.links: list[LocalLink] = []
        self.directories: list[LocalDir] = []
        self.skipped: list[str] = []
        self._ancestors: set[tuple[int, int]] = set()  # (device, inode) of the directories being visited

    def visit(self, directory: Path, relative: str, info: os.stat_result) -> None:
        self.directories.append(LocalDir(relative, stat.S_IMODE(info.st_mode)))
        key = (info.st_dev, info.st_ino)
        self._ancestors.add(key)
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as error:
            raise UsageError(f"cannot read {directory}: {error.strerror}") from None
        for entry in entries:
            self._entry(Path(entry.path), f"{relative}/{entry.name}" if relative else entry.name, entry.is_symlink())
        self._ancestors.discard(key)

    def _entry(self, path: Path, relative: str, is_link: bool) -> None:
        try:
            if is_link and not self.copy_links:
                self.links.append(LocalLink(relative, os.readlink(path)))
                return
            info = path.stat() if self.copy_links else path.lstat()
        except FileNotFoundError:  # a symlink to nothing, with --copy-links
            self.skipped.append(f"{relative} (symlink to a missing file; --copy-links cannot follow it)")
            return
        except OSError as error:
            raise UsageError(f"cannot read {path}: {error.strerror}") from None
        if stat.S_ISDIR(info.st_mode):
            if (info.st_dev, info.st_ino) in self._ancestors:
                self.skipped.append(f"{relative} (symlink loop; --copy-links cannot follow it)")
                return
            self.visit(path, relative, info)
        elif stat.S_ISREG(info.st_mode):
            self.files.append(_local_file(path, relative))
        else:
            self.skipped.append(f"{relative} ({special_kind(info.st_mode)}: special files are not pushed)")
