"""What `fleetrun push` will send, looked at before any connection; file contents are hashed lazily, once per run."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fleetrun.errors import UsageError
from fleetrun.remotefs import TransferError, special_kind

HASH_READ = 1 << 20
SFTP_TIME_MAX = 1 << 32  # SFTP v3 carries times as unsigned 32-bit seconds


class _Stopped(Exception):
    """The host's check stopped a hash (its timeout, a cancel): `reason` is what it raised."""

    def __init__(self, reason: BaseException) -> None:
        super().__init__(str(reason))
        self.reason = reason


class LocalDigest:
    """The SHA-256 of one local file, computed when a host first needs it and then shared by every host.

    Most re-pushes never need it (size and mtime match on every host), so nothing is hashed at plan time.
    The first host to ask hashes the file under the lock; the others wait for that one result (or error).
    """

    def __init__(self, path: Path, size: int, mtime_ns: int) -> None:
        self.path, self.size, self.mtime_ns = path, size, mtime_ns
        self._lock = threading.Lock()
        self._value: str | None = None
        self._error: str | None = None
        self.computed = 0  # how many times the file was read to hash it (0 or 1)

    def value(self, check: Callable[[], None] = lambda: None) -> str:
        """The hex digest. `check` runs while waiting and between reads (it raises to stop: a timeout, a
        cancel); a stopped hash stores nothing, so the next host to ask starts it again."""
        while not self._lock.acquire(timeout=0.2):
            check()
        try:
            if self._value is None and self._error is None:
                self.computed += 1
                try:
                    digest, now = self._hash(check)
                except _Stopped as stopped:
                    raise stopped.reason from None
                except OSError as error:
                    self._error = f"cannot read {self.path}: {error.strerror}"
                else:
                    if (now.st_size, now.st_mtime_ns) != (self.size, self.mtime_ns):
                        # The digest would not be of the file the plan's size and mtime describe.
                        self._error = f"{self.path} changed on this machine during the push: push it again"
                    else:
                        self._value = digest
            if self._error is not None:
                raise TransferError(self._error)
            assert self._value is not None
            return self._value
        finally:
            self._lock.release()

    def _hash(self, check: Callable[[], None]) -> tuple[str, os.stat_result]:
        def stoppable() -> None:
            try:
                check()
            except BaseException as reason:  # a timeout may be an OSError: keep it apart from read errors
                raise _Stopped(reason) from None

        digest = hashlib.sha256()
        with self.path.open("rb") as source:
            while chunk := source.read(HASH_READ):
                digest.update(chunk)
                stoppable()
            return digest.hexdigest(), os.fstat(source.fileno())

    @property
    def done(self) -> bool:
        return self._value is not None or self._error is not None


@dataclass(frozen=True)
class LocalFile:
    """One file to push, as it was when the plan was made; its content is read only when a host needs it."""

    path: Path
    relative: str  # posix path inside the pushed tree; "" for a single file
    size: int
    mode: int
    mtime: int  # whole seconds, what rsync's quick check compares (its default --modify-window 0)
    atime: int
    digest: LocalDigest = field(compare=False, repr=False)

    @property
    def sha256(self) -> str:
        """Hashed on first use, once per run (thread-safe); TransferError when the file is gone or changed."""
        return self.digest.value()

    @property
    def sftp_times(self) -> tuple[int, int] | None:
        """(atime, mtime) for SFTP's setstat, or None when SFTP v3 cannot carry them (before 1970, after 2106)."""
        if 0 <= self.mtime < SFTP_TIME_MAX and 0 <= self.atime < SFTP_TIME_MAX:
            return self.atime, self.mtime
        return None


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
    checksum: bool = False  # compare by SHA-256 whenever sizes match, whatever the mtimes (rsync -c)


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
    checksum: bool = False,
) -> PushPlan:
    """Check the local side and stat every file once; every bad input is exit 2 before any connection.

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
                    tuple(links), tuple(skipped), copy_links, checksum)


def _local_file(path: Path, relative: str) -> LocalFile:
    try:
        info = path.stat()
        if not os.access(path, os.R_OK):
            raise UsageError(f"cannot read {path}: Permission denied")
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None
    # Whole seconds, floored (as st_mtime's integer part is for times after 1970, and as rsync keeps them).
    mtime, atime = info.st_mtime_ns // 1_000_000_000, info.st_atime_ns // 1_000_000_000
    return LocalFile(path, relative, info.st_size, stat.S_IMODE(info.st_mode), mtime, atime,
                     LocalDigest(path, info.st_size, info.st_mtime_ns))


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
            if is_link and not self.copy_links:  # (a name that is not UTF-8 goes as its bytes, as with scp)
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
