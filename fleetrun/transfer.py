"""`fleetrun push`: atomic, idempotent uploads (temp file, verify, mode, rename) planned once for all hosts."""

from __future__ import annotations

import os
import posixpath
import shlex
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure, UsageError
from fleetrun.models import Host, HostResult, Outcome
from fleetrun.remotefs import (
    CHUNK,
    TransferError,
    describe,
    is_dir,
    local_sha256,
    make_dirs,
    remote_sha256,
    remote_stat,
    remove_leftovers,
    temp_name,
    transfer_result,
)

if TYPE_CHECKING:
    from fleetrun.runner import HostContext, HostTask
    from fleetrun.ssh import Session

LOCAL_READ = 1 << 20  # local reads are cheap in big pieces; SFTP splits them into 32 KiB requests


@dataclass(frozen=True)
class LocalFile:
    """One file to push: read and hashed once, whatever the number of hosts."""

    path: Path
    relative: str  # posix path inside the pushed tree; "" for a single file
    size: int
    mode: int
    sha256: str


@dataclass(frozen=True)
class PushPlan:
    source_name: str  # basename of the local path
    files: tuple[LocalFile, ...]
    directories: tuple[str, ...]  # relative directories of the tree, parents first ("" is the root)
    remote: str
    recursive: bool
    mode: int | None = None
    mkdir: bool = False
    backup: bool = False
    owner: str | None = None
    verify: bool = False


def _local_file(path: Path, relative: str) -> LocalFile:
    try:
        info = path.stat()
        return LocalFile(path, relative, info.st_size, stat.S_IMODE(info.st_mode), local_sha256(path))
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror}") from None


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
) -> PushPlan:
    """Check the local side and read every file once; every bad input is exit 2 before any connection."""
    if not remote.startswith("/"):
        raise UsageError(f"remote path {remote!r} must be absolute (start with /)")
    if owner is not None and (not owner or any(c in owner for c in " \t\n;'\"$`\\")):
        raise UsageError(f"--owner {owner!r} must look like user or user:group")
    source = Path(local)
    if not source.exists():
        raise UsageError(f"local path {local} does not exist")
    if not os.access(source, os.R_OK):
        raise UsageError(f"local path {local} is not readable")
    name = source.resolve().name
    if source.is_dir():
        if not recursive:
            raise UsageError(f"{local} is a directory: pass -r to push the tree")
        files, directories = _walk(source)
    elif source.is_file():
        files, directories = [_local_file(source, "")], []
    else:
        raise UsageError(f"{local} is not a regular file or directory")
    return PushPlan(name, tuple(files), tuple(directories), remote, recursive, mode, mkdir, backup, owner, verify)


def _walk(root: Path) -> tuple[list[LocalFile], list[str]]:
    files: list[LocalFile] = []
    directories = [""]
    for current, subdirs, names in os.walk(root, onerror=_raise_walk_error):
        subdirs.sort()
        base = Path(current).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        directories += [prefix + d for d in subdirs]
        for name in sorted(names):
            path = Path(current) / name
            if path.is_symlink() or not path.is_file():
                continue  # links and special files are not pushed; documented
            files.append(_local_file(path, prefix + name))
    return files, directories


def _raise_walk_error(error: OSError) -> None:
    raise UsageError(f"cannot read {error.filename}: {error.strerror}")


class _Pusher:
    """Pushes one plan to one host over its session; created per host inside the worker."""

    def __init__(self, plan: PushPlan, session: Session, context: HostContext, transfers: threading.Semaphore):
        self.plan = plan
        self.session = session
        self.cancel: Cancel = context.cancel
        self.transfers = transfers
        self.sftp = session.open_sftp()
        self.listings: dict[str, list[str]] = {}
        self.details: list[str] = []

    def close(self) -> None:
        self.sftp.close()

    def destinations(self) -> list[tuple[LocalFile, str]]:
        """Where each file goes, scp-style: into REMOTE when it ends in / or is a directory there."""
        plan = self.plan
        into = plan.remote.endswith("/") or is_dir(remote_stat(self.sftp, plan.remote))
        root = posixpath.join(plan.remote, plan.source_name) if into else plan.remote
        parent = posixpath.dirname(root.rstrip("/")) or "/"
        if not is_dir(remote_stat(self.sftp, parent)):
            if not plan.mkdir:
                raise TransferError(f"directory {parent} does not exist on the host (pass --mkdir to create it)")
            make_dirs(self.sftp, parent)
        if not plan.recursive:
            return [(plan.files[0], root)]
        for directory in plan.directories:
            make_dirs(self.sftp, posixpath.join(root, directory) if directory else root)
        return [(f, posixpath.join(root, f.relative)) for f in plan.files]

    def move(self) -> bool:
        """Push every file; True when anything on the host changed."""
        pairs = self.destinations()
        current = {dest: remote_stat(self.sftp, dest) for _, dest in pairs}
        for dest, attributes in current.items():
            if is_dir(attributes):
                raise TransferError(f"{dest} is a directory on the host; refusing to replace it with a file")
        same_size = [dest for local, dest in pairs if getattr(current[dest], "st_size", None) == local.size]
        hashes = remote_sha256(self.session, self.sftp, same_size, self.cancel) if same_size else {}
        changed = False
        for local, dest in pairs:
            wanted_mode = self.plan.mode if self.plan.mode is not None else local.mode
            if hashes.get(dest) == local.sha256:
                changed |= self._fix_attributes(dest, current[dest], wanted_mode)
                continue
            self._upload(local, dest, current[dest] is not None, wanted_mode)
            changed = True
        return changed

    def _fix_attributes(self, dest: str, attributes: Any, wanted_mode: int) -> bool:
        fixed = []
        if stat.S_IMODE(attributes.st_mode) != wanted_mode:
            self.sftp.chmod(dest, wanted_mode)
            fixed.append(f"mode {wanted_mode:04o}")
        if self.plan.owner and self._owner_of(dest) != self._wanted_owner(dest):
            self._chown(dest)
            fixed.append(f"owner {self.plan.owner}")
        self.details.append(f"changed {dest} ({', '.join(fixed)})" if fixed else f"unchanged {dest}")
        return bool(fixed)

    def _upload(self, local: LocalFile, dest: str, exists: bool, mode: int) -> None:
        directory, name = posixpath.split(dest)
        remove_leftovers(self.sftp, directory, [name], self.listings)
        temp = temp_name(dest)
        try:
            with self._transfer_slot():
                self._write(local, temp, mode)
            written = remote_stat(self.sftp, temp)
            if written is None or written.st_size != local.size:
                # Pipelined SFTP writes can fail silently (a full disk among them): the size tells.
                size = getattr(written, "st_size", 0)
                raise TransferError(f"{self._space_report(temp)}: wrote {size} of {local.size} bytes of {dest}")
            if self.plan.verify and remote_sha256(self.session, self.sftp, [temp], self.cancel)[temp] != local.sha256:
                raise TransferError(f"checksum mismatch after upload of {dest}")
            if self.plan.owner:
                self._chown(temp)
            if exists and self.plan.backup:
                self._backup(dest)
            self.sftp.posix_rename(temp, dest)
        except BaseException:
            try:
                self.sftp.remove(temp)
            except Exception:  # the connection may be gone; the next push removes the leftover
                pass
            raise
        self.details.append(f"changed {dest} ({local.size} bytes)")

    def _write(self, local: LocalFile, temp: str, mode: int) -> None:
        try:
            with local.path.open("rb") as source, self.sftp.open(temp, "wb") as target:
                # Final mode before any byte lands, so a 0600 secret is never briefly world-readable.
                self.sftp.chmod(temp, mode)
                target.set_pipelined(True)
                while chunk := source.read(LOCAL_READ):
                    if self.cancel.is_set():
                        raise HostFailure(Outcome.CANCELLED, f"cancelled during upload of {local.path}")
                    for start in range(0, len(chunk), CHUNK):
                        target.write(chunk[start : start + CHUNK])
        except OSError as error:
            if getattr(error, "errno", None) is None and str(error) not in ("Failure", ""):
                raise  # not an SFTP status reply ("Socket is closed"...): transfer_result tells if the link died
            raise TransferError(self._explain_write_error(error, temp)) from None

    def _explain_write_error(self, error: OSError, temp: str) -> str:
        if getattr(error, "errno", None) is None and str(error) in ("Failure", ""):
            return self._space_report(temp)  # SFTP reports a full disk as a bare "Failure"
        return describe(error, posixpath.dirname(temp))

    def _space_report(self, temp: str) -> str:
        """Why a write failed when SFTP only says "Failure": ask the host about writability and free space."""
        directory = posixpath.dirname(temp)
        quoted = shlex.quote(directory)
        probe = self.session.run(f"test -w {quoted} || echo readonly; df -Pk -- {quoted}", cancel=self.cancel,
                                 timeout=30)
        lines = probe.stdout.decode("utf-8", "replace").splitlines()
        if probe.exit_code != 0 or not lines:
            return f"write failed in {directory} (disk full, read-only or no permission; the host did not say)"
        if lines[0] == "readonly":
            return f"cannot write in {directory}: read-only file system (or no permission)"
        fields = lines[-1].split()
        available = fields[3] if len(fields) > 3 else "?"
        return f"write failed in {directory} (disk full? {available} KiB available)"

    @contextmanager
    def _transfer_slot(self) -> Iterator[None]:
        while not self.transfers.acquire(timeout=0.5):
            if self.cancel.is_set():
                raise HostFailure(Outcome.CANCELLED, "cancelled while waiting for a transfer slot")
        try:
            yield
        finally:
            self.transfers.release()

    def _exec(self, command: str) -> None:
        result = self.session.run(command, cancel=self.cancel, timeout=60)
        if result.exit_code != 0:
            raise TransferError(f"{command.split()[0]} failed: {result.stderr.decode('utf-8', 'replace').strip()}")

    def _chown(self, path: str) -> None:
        self._exec(f"chown {shlex.quote(self.plan.owner or '')} -- {shlex.quote(path)}")

    def _owner_of(self, path: str) -> str:
        result = self.session.run(f"stat -c %U:%G -- {shlex.quote(path)}", cancel=self.cancel, timeout=60)
        return result.stdout.decode("utf-8", "replace").strip()

    def _wanted_owner(self, path: str) -> str:
        owner = self.plan.owner or ""
        return owner if ":" in owner else owner + ":" + self._owner_of(path).partition(":")[2]

    def _backup(self, dest: str) -> None:
        # A hard link keeps the old inode under the backup name without a moment with no file at dest.
        quoted, backup = shlex.quote(dest), shlex.quote(dest + ".fleetrun-bak")
        self._exec(f"ln -f -- {quoted} {backup} 2>/dev/null || cp -p -- {quoted} {backup}")


def push_task(plan: PushPlan, max_transfers: int) -> HostTask:
    """The task behind `fleetrun push`; one semaphore bounds concurrent uploads across all hosts."""
    transfers = threading.Semaphore(max_transfers)

    def run(session: Session, host: Host, context: HostContext) -> HostResult:
        return transfer_result(host, session, _Pusher(plan, session, context, transfers))

    return run
