"""Remote file operations shared by push and pull: stat, checksums, error wording, leftover cleanup."""

from __future__ import annotations

import errno
import hashlib
import posixpath
import secrets
import shlex
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure, printable
from fleetrun.models import Host, HostResult, Outcome
from fleetrun.watchdog import Watchdog

if TYPE_CHECKING:
    from fleetrun.ssh import ExecResult, Session

TEMP_MARK = ".fleetrun-tmp-"
NAME_MAX = 255  # bytes in one file name, on Linux and the BSDs
CHUNK = 32768  # SFTP's maximum request size: larger reads are split anyway
HASH_BATCH = 64  # paths per remote sha256sum call (keeps the command line short)


class TransferError(Exception):
    """One file could not be moved; the message is the one line the operator reads."""


def temp_name(path: str) -> str:
    """A hidden sibling of `path`, so the final rename stays within one directory (and filesystem)."""
    directory, name = posixpath.split(path)
    return posixpath.join(directory, temp_basename(name))


def temp_basename(name: str) -> str:
    return f"{_temp_prefix(name)}{secrets.token_hex(4)}"


def _temp_prefix(name: str) -> str:
    # A name scp can write (up to NAME_MAX bytes) must fit with our marks too: cut it, on a character boundary
    # (a byte that is not UTF-8, kept as a surrogate, is one character of its own).
    room = NAME_MAX - len(f".{TEMP_MARK}") - 8
    data = name.encode("utf-8", "surrogateescape")
    end = len(data) if len(data) <= room else room
    while end < len(data) and end > 0 and data[end] & 0xC0 == 0x80:  # inside a character: back to its start
        end -= 1
    return f".{data[:end].decode('utf-8', 'surrogateescape')}{TEMP_MARK}"


def is_leftover_of(entry: str, name: str) -> bool:
    return entry.startswith(_temp_prefix(name))


def describe(error: BaseException, path: str) -> str:
    """An SFTP/OS error as a sentence naming the path."""
    code = getattr(error, "errno", None)
    if code == errno.EACCES:
        return f"permission denied: {path}"
    if code == errno.ENOENT:
        return f"no such file or directory: {path}"
    text = str(error.args[-1] if error.args else error) or error.__class__.__name__
    if "read-only" in text.lower():
        return f"read-only file system: {path}"
    longest = max(len(part.encode("utf-8", "surrogateescape")) for part in path.split("/"))
    if text in ("Bad message", "Failure") and longest > NAME_MAX:  # what sftp-server makes of ENAMETOOLONG
        return f"name too long: {path} (a name of {longest} bytes; file systems allow {NAME_MAX})"
    return f"{text}: {path}"


def remote_stat(sftp: Any, path: str) -> Any | None:
    """The remote attributes, or None when nothing is there."""
    try:
        return sftp.stat(path)
    except OSError as error:
        if getattr(error, "errno", None) == errno.ENOENT:
            return None
        raise TransferError(describe(error, path)) from None


def remote_lstat(sftp: Any, path: str) -> Any | None:
    """Like remote_stat, but a symlink's own attributes (not its target's)."""
    try:
        return sftp.lstat(path)
    except OSError as error:
        if getattr(error, "errno", None) == errno.ENOENT:
            return None
        raise TransferError(describe(error, path)) from None


def is_dir(attributes: Any | None) -> bool:
    return attributes is not None and stat.S_ISDIR(attributes.st_mode or 0)


def special_kind(mode: int) -> str:
    """What a non-regular, non-directory file is, in words."""
    kinds = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISBLK, "block device"),
             (stat.S_ISCHR, "character device"), (stat.S_ISLNK, "symlink"))
    return next((word for test, word in kinds if test(mode)), "special file")


def remote_sha256(link: Link, paths: Sequence[str]) -> dict[str, str]:
    """SHA-256 of remote files: computed on the host by sha256sum, else read back over SFTP."""
    hashes: dict[str, str] = {}
    for start in range(0, len(paths), HASH_BATCH):
        batch = list(paths[start : start + HASH_BATCH])
        link.doing(f"comparing checksums of {_files(batch)}")
        result = link.run("sha256sum -- " + " ".join(shlex.quote(p) for p in batch), timeout=600)
        lines = result.stdout.decode("utf-8", "replace").splitlines()
        if result.exit_code == 0 and len(lines) == len(batch):
            # sha256sum prints in argument order; a leading backslash marks an escaped file name.
            hashes.update((path, line.lstrip("\\")[:64]) for path, line in zip(batch, lines, strict=True))
            continue
        for path in batch:  # no sha256sum on the host (or a file it could not read): hash it here
            hashes[path] = _read_back_sha256(link, path)
    return hashes


def _files(paths: Sequence[str]) -> str:
    return paths[0] if len(paths) == 1 else f"{len(paths)} files"


def _read_back_sha256(link: Link, path: str) -> str:
    from fleetrun.ssh.sftpio import download

    digest = hashlib.sha256()
    link.doing(f"reading back {path} to hash it")
    try:
        download(link.sftp, path, digest.update, size_hint=0, check=link.check)
    except OSError as error:
        raise TransferError(describe(error, path)) from None
    return digest.hexdigest()


def remove_leftovers(sftp: Any, directory: str, names: Sequence[str], listing_cache: dict[str, list[str]]) -> int:
    """Remove temp files that an interrupted earlier push of these names left in `directory`."""
    from fleetrun.ssh.sftpio import list_directory

    if directory not in listing_cache:
        try:  # every name as the host has it: one that is not UTF-8 (any directory may hold one) is no error
            listing_cache[directory] = [entry.filename for entry in list_directory(sftp, directory)]
        except OSError:
            listing_cache[directory] = []
    removed = 0
    for entry in listing_cache[directory]:
        if any(is_leftover_of(entry, name) for name in names):
            try:
                sftp.remove(posixpath.join(directory, entry))
                removed += 1
            except OSError:
                pass  # another run's live upload, or already gone: not ours to fail on
    return removed


def make_dirs(sftp: Any, path: str, mode: int = 0o755) -> None:
    """mkdir -p over SFTP."""
    missing: list[str] = []
    current = path
    while current not in ("", "/") and remote_stat(sftp, current) is None:
        missing.append(current)
        current = posixpath.dirname(current)
    for directory in reversed(missing):
        try:
            sftp.mkdir(directory, mode)
        except OSError as error:
            if not is_dir(remote_stat(sftp, directory)):
                raise TransferError(f"cannot create directory: {describe(error, directory)}") from None


def local_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Link:
    """One host's session as a transfer uses it: one SFTP channel and short commands, bounded by its watchdog."""

    def __init__(self, session: Session, watchdog: Watchdog) -> None:
        self.session = session
        self.watchdog = watchdog
        self.notes: list[str] = []  # what a stopped transfer left behind, for its one-line reason
        self._sftp: Any | None = None
        self._guard: int | None = None

    @property
    def sftp(self) -> Any:
        """The SFTP client, opened on first use; the watchdog closes its channel when time is up."""
        if self._sftp is None:
            self.check()
            # No channel to close yet: a server that never answers the open needs the connection closed.
            opening = self.watchdog.guard(self.session.close)
            try:
                self._sftp = self.session.open_sftp()
            finally:
                self.watchdog.release(opening)
            self._guard = self.watchdog.guard(self._sftp.close)
        return self._sftp

    def check(self) -> None:
        self.watchdog.check()

    def doing(self, what: str) -> None:
        self.watchdog.doing = what

    def run(self, command: str, *, timeout: float) -> ExecResult:
        """A short command on the host, within both its own timeout and the transfer's time."""
        self.check()
        remaining = self.watchdog.remaining()
        result = self.session.run(command, cancel=self.watchdog.cancel,
                                  timeout=timeout if remaining is None else min(timeout, remaining))
        if result.ended != "exited":
            self.check()  # the transfer's time ran out (or the run was cancelled): stop here
        return result

    def remove(self, path: str) -> bool:
        """Remove our own temp file, best effort, also once the watchdog has closed the SFTP channel."""
        try:
            if self.watchdog.reason() is None:
                self.sftp.remove(path)
                return True
            # Our channel is closed or about to be: a fresh one, which the watchdog's grace bounds.
            fresh = self.session.open_sftp()
            try:
                fresh.remove(path)
            finally:
                fresh.close()
            return True
        except Exception:  # the host is gone or does not answer: the next push of that file removes it
            return False

    def close(self) -> None:
        if self._guard is not None:
            self.watchdog.release(self._guard)
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:  # already closed by the watchdog, or the connection is gone
                pass


class Mover(Protocol):
    """One host's push or pull: does the work over its link and lists what it did."""

    details: list[str]

    def move(self) -> bool: ...  # True when anything was written


def transfer_result(host: Host, session: Session, limit: float | None, cancel: Cancel,
                    make: Callable[[Link], Mover]) -> HostResult:
    """Run a push or pull on one host within `limit` seconds and turn every way it can end into its result.

    Names go to the host as the bytes they are (a name that is not UTF-8 too, as with scp and sftp); the
    result's text shows such bytes as escapes (errors.printable), so every renderer can write it."""
    result = _transfer(host, session, limit, cancel, make)
    return replace(result, error=None if result.error is None else printable(result.error),
                   details=tuple(printable(line) for line in result.details))


def _transfer(host: Host, session: Session, limit: float | None, cancel: Cancel,
              make: Callable[[Link], Mover]) -> HostResult:
    watchdog = Watchdog(limit, cancel, session.close, name=host.name)
    link = Link(session, watchdog)
    mover: Mover | None = None
    try:
        mover = make(link)
        changed = mover.move()
    except Exception as error:
        details = mover.details if mover is not None else []
        reason = watchdog.reason()
        if reason is not None:  # whatever the closed channel raised, the time limit or the cancel is why
            return stopped_result(host, link, reason, details)
        if isinstance(error, HostFailure):
            raise  # e.g. the server refused the SFTP subsystem: the runner reports it
        if isinstance(error, (TransferError, OSError, EOFError)) or not _still_connected(session, patient=True):
            return failure_result(host, session, error, details)  # (e.g. paramiko's SSHException)
        raise  # a bug of ours: the pool reports it as this host's internal error
    finally:
        link.close()
        watchdog.stop()
    return HostResult(host, Outcome.OK, changed=changed, details=tuple(mover.details))


def stopped_result(host: Host, link: Link, reason: str, details: Sequence[str]) -> HostResult:
    """A transfer stopped by --timeout (or a cancel): say what it was doing and what it left."""
    watchdog = link.watchdog
    if reason == "timeout":
        outcome, text = Outcome.TIMEOUT, f"timed out after {watchdog.limit:g} s (--timeout) while {watchdog.doing}"
    else:
        outcome, text = Outcome.CANCELLED, f"cancelled while {watchdog.doing}"
    return HostResult(host, outcome, error="; ".join([text, *link.notes]), details=tuple(details))


def _still_connected(session: Session, *, patient: bool) -> bool:
    """Whether the SSH connection is alive. For errors that are not SFTP status replies, give paramiko's
    reader thread a moment: a write can fail on a closed channel just before it marks the link dead."""
    deadline = time.monotonic() + (0.5 if patient else 0.0)
    while session.transport.is_active():
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.02)
    return False


def failure_result(host: Host, session: Session, error: BaseException, details: Sequence[str]) -> HostResult:
    """One host's failed transfer as a result: a lost connection is 'unreachable', the rest 'failed'."""
    if not _still_connected(session, patient=not isinstance(error, TransferError)):
        lost = "connection lost during the transfer"
        return HostResult(host, Outcome.UNREACHABLE, error=lost, details=tuple(details))
    text = str(error) if isinstance(error, TransferError) else describe(error, "transfer")
    return HostResult(host, Outcome.FAILED, error=text, details=tuple(details))
