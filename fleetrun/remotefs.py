"""Remote file operations shared by push and pull: stat, checksums, error wording, leftover cleanup."""

from __future__ import annotations

import errno
import hashlib
import posixpath
import secrets
import shlex
import stat
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure
from fleetrun.models import Host, HostResult, Outcome

if TYPE_CHECKING:
    from fleetrun.ssh import Session

TEMP_MARK = ".fleetrun-tmp-"
CHUNK = 32768  # SFTP's maximum request size: larger reads are split anyway
HASH_BATCH = 64  # paths per remote sha256sum call (keeps the command line short)


class TransferError(Exception):
    """One file could not be moved; the message is the one line the operator reads."""


def temp_name(path: str) -> str:
    """A hidden sibling of `path`, so the final rename stays within one directory (and filesystem)."""
    directory, name = posixpath.split(path)
    return posixpath.join(directory, f".{name}{TEMP_MARK}{secrets.token_hex(4)}")


def is_leftover_of(entry: str, name: str) -> bool:
    return entry.startswith(f".{name}{TEMP_MARK}")


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
    return f"{text}: {path}"


def remote_stat(sftp: Any, path: str) -> Any | None:
    """The remote attributes, or None when nothing is there."""
    try:
        return sftp.stat(path)
    except OSError as error:
        if getattr(error, "errno", None) == errno.ENOENT:
            return None
        raise TransferError(describe(error, path)) from None


def is_dir(attributes: Any | None) -> bool:
    return attributes is not None and stat.S_ISDIR(attributes.st_mode or 0)


def remote_sha256(session: Session, sftp: Any, paths: Sequence[str], cancel: Cancel) -> dict[str, str]:
    """SHA-256 of remote files: computed on the host by sha256sum, else read back over SFTP."""
    hashes: dict[str, str] = {}
    for start in range(0, len(paths), HASH_BATCH):
        batch = list(paths[start : start + HASH_BATCH])
        command = "sha256sum -- " + " ".join(shlex.quote(p) for p in batch)
        result = session.run(command, cancel=cancel, timeout=600)
        lines = result.stdout.decode("utf-8", "replace").splitlines()
        if result.exit_code == 0 and len(lines) == len(batch):
            # sha256sum prints in argument order; a leading backslash marks an escaped file name.
            hashes.update((path, line.lstrip("\\")[:64]) for path, line in zip(batch, lines, strict=True))
            continue
        for path in batch:  # no sha256sum on the host (or a file it could not read): hash it here
            hashes[path] = _read_back_sha256(sftp, path, cancel)
    return hashes


def _read_back_sha256(sftp: Any, path: str, cancel: Cancel) -> str:
    digest = hashlib.sha256()
    try:
        with sftp.open(path, "rb") as remote:
            remote.prefetch(max_concurrent_requests=64)
            while chunk := remote.read(CHUNK * 8):
                if cancel.is_set():
                    raise HostFailure(Outcome.CANCELLED, "cancelled while reading back")
                digest.update(chunk)
    except OSError as error:
        raise TransferError(describe(error, path)) from None
    return digest.hexdigest()


def remove_leftovers(sftp: Any, directory: str, names: Sequence[str], listing_cache: dict[str, list[str]]) -> int:
    """Remove temp files that an interrupted earlier push of these names left in `directory`."""
    if directory not in listing_cache:
        try:
            listing_cache[directory] = sftp.listdir(directory)
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


class Mover(Protocol):
    """One host's push or pull: does the work, lists what it did, holds an SFTP session to close."""

    details: list[str]

    def move(self) -> bool: ...  # True when anything was written

    def close(self) -> None: ...


def transfer_result(host: Host, session: Session, mover: Mover) -> HostResult:
    """Run a push or pull on one host and turn every way it can end into that host's result."""
    try:
        changed = mover.move()
    except (TransferError, OSError, EOFError) as error:
        return failure_result(host, session, error, mover.details)
    except Exception as error:
        if _still_connected(session, patient=True):
            raise  # a bug of ours: the pool reports it as this host's internal error
        return failure_result(host, session, error, mover.details)  # e.g. paramiko's SSHException
    finally:
        mover.close()
    return HostResult(host, Outcome.OK, changed=changed, details=tuple(mover.details))


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
