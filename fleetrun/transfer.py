"""`fleetrun push` on one host: atomic, idempotent uploads (temp file, verify, mode, rename), links and directories."""

from __future__ import annotations

import os
import posixpath
import shlex
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fleetrun.models import Host, HostResult
from fleetrun.pushplan import LocalDir, LocalFile, LocalLink, PushPlan, parse_mode, plan_push
from fleetrun.remotefs import (
    CHUNK,
    Link,
    TransferError,
    describe,
    is_dir,
    make_dirs,
    remote_lstat,
    remote_sha256,
    remote_stat,
    remove_leftovers,
    temp_name,
    transfer_result,
)

if TYPE_CHECKING:
    from fleetrun.runner import HostContext, HostTask
    from fleetrun.ssh import Session

__all__ = ["PushPlan", "parse_mode", "plan_push", "push_task"]

LOCAL_READ = 1 << 20  # local reads are cheap in big pieces; SFTP splits them into 32 KiB requests
OWNER_RWX = 0o700
SETID = stat.S_ISUID | stat.S_ISGID
MAX_LINKS = 40  # as Linux's path resolution allows


class _Pusher:
    """Pushes one plan to one host over its link; created per host inside the worker."""

    def __init__(self, plan: PushPlan, link: Link, transfers: threading.Semaphore) -> None:
        self.plan = plan
        self.link = link
        self.transfers = transfers
        self.listings: dict[str, list[str]] = {}
        self.details: list[str] = [f"skipped {entry}" for entry in plan.skipped]
        self.deferred: list[tuple[str, int]] = []  # directory modes set last (they forbid writing inside)
        # Attributes already asked of the host, by path, for paths that are no symlink (their lstat is their
        # stat): a single file's destination, looked at by _through_links, is not asked about again.
        self.known: dict[str, Any | None] = {}

    @property
    def sftp(self) -> Any:
        return self.link.sftp

    def root(self) -> str:
        """Where the file or tree goes, scp-style: into REMOTE when it ends in / or is a directory there."""
        plan = self.plan
        self.link.doing(f"looking at {plan.remote}")
        # One lstat says most of it: what is there, and (not a symlink) whether it is a directory. Each SFTP
        # request is a round trip to the host, so none is asked twice.
        first = None if plan.remote.endswith("/") else remote_lstat(self.sftp, plan.remote)
        if first is not None and stat.S_ISLNK(first.st_mode or 0):
            into = is_dir(remote_stat(self.sftp, plan.remote))  # a symlink: where it leads decides
        else:
            into = plan.remote.endswith("/") or is_dir(first)
        root = posixpath.join(plan.remote, plan.source_name) if into else plan.remote
        attributes = None
        if not plan.recursive:
            if into:
                root, attributes = self._through_links(root)
            elif first is not None:
                root, attributes = self._through_links(root, first)
            # else nothing is at REMOTE: it is where the file goes, and `attributes` says so
            # Still true for the quick check: only a missing parent is created in between, and then root was
            # missing too.
            self.known[root] = attributes
        # Something is at root: so its directory exists. Otherwise (or for a tree) look.
        parent = posixpath.dirname(root.rstrip("/")) or "/"
        if attributes is None and not is_dir(remote_stat(self.sftp, parent)):
            if not plan.mkdir:
                raise TransferError(f"directory {parent} does not exist on the host (pass --mkdir to create it)")
            make_dirs(self.sftp, parent)
        return root

    def _through_links(self, path: str, first: Any | None = None) -> tuple[str, Any | None]:
        """Where a file pushed to `path` lands, and that path's attributes (None: nothing there): a symlink
        there is written through, as scp and cp do, so an /etc/app.conf linked to a shared file updates that
        file instead of becoming a copy of it. `first`: the lstat of `path` already taken, if any."""
        for _ in range(MAX_LINKS):
            current = first if first is not None else remote_lstat(self.sftp, path)
            first = None
            if current is None or not stat.S_ISLNK(current.st_mode or 0):
                return path, current
            # Not normpath: ".." after a symlinked directory is resolved by the host, not by the text.
            path = posixpath.join(posixpath.dirname(path), self._readlink(path) or "")
        raise TransferError(f"{self.plan.remote}: too many levels of symbolic links on the host")

    def move(self) -> bool:
        """Push everything; True when anything on the host changed."""
        root = self.root()
        if not self.plan.recursive:
            return self._files([(self.plan.files[0], root)], follow=True)
        changed = False
        for directory in self.plan.directories:
            changed |= self._directory(directory, posixpath.join(root, directory.relative) if directory.relative
                                       else root)
        changed |= self._files([(f, posixpath.join(root, f.relative)) for f in self.plan.files], follow=False)
        for symlink in self.plan.links:
            changed |= self._symlink(symlink, posixpath.join(root, symlink.relative))
        for path, mode in reversed(self.deferred):  # deepest first: a parent's mode may forbid entering
            self.link.doing(f"setting the mode of {path}")
            self.sftp.chmod(path, mode)
        return changed

    # -- directories --------------------------------------------------------------------------------------

    def _directory(self, local: LocalDir, path: str) -> bool:
        """Create or fix one directory of the tree; its final mode waits until its contents are in."""
        self.link.doing(f"creating {path}")
        # The tree's root may be a symlink the operator named (like a destination of rsync); inside, not.
        current = remote_stat(self.sftp, path) if not local.relative else remote_lstat(self.sftp, path)
        wanted, writable = local.mode, local.mode | OWNER_RWX  # writable: what we need to fill it
        if current is not None and stat.S_ISLNK(current.st_mode or 0):
            self.sftp.remove(path)  # a symlink where the tree has a directory: replaced, as rsync does
            current = None
        if current is not None and not stat.S_ISDIR(current.st_mode or 0):
            raise TransferError(f"{path} is a file on the host; refusing to replace it with a directory")
        if current is None:
            try:
                self.sftp.mkdir(path, writable)
                self.sftp.chmod(path, writable)  # the server's umask may have narrowed it
            except OSError as error:
                raise TransferError(f"cannot create directory: {describe(error, path)}") from None
            if wanted != writable:
                self.deferred.append((path, wanted))
            self.details.append(f"created {path}/ (mode {wanted:04o})")
            return True
        if stat.S_IMODE(current.st_mode) == wanted:
            return False
        if wanted == writable:
            self.sftp.chmod(path, wanted)  # at once: a 0700 directory is closed before its files arrive
        else:
            self.deferred.append((path, wanted))
        self.details.append(f"changed {path}/ (mode {wanted:04o})")
        return True

    # -- files --------------------------------------------------------------------------------------------

    def _files(self, pairs: list[tuple[LocalFile, str]], *, follow: bool) -> bool:
        """Upload the files that differ. rsync's quick check: a regular file of the same size and mtime (whole
        seconds) is unchanged, neither side read; a size match with another mtime, or every size match with
        --checksum, is compared by SHA-256 (remote sha256sum, the local file hashed once per run)."""
        self.link.doing("comparing files")
        look = remote_stat if follow else remote_lstat
        current = {dest: self.known.pop(dest) if dest in self.known else look(self.sftp, dest) for _, dest in pairs}
        for dest, attributes in current.items():
            if is_dir(attributes):
                raise TransferError(f"{dest} is a directory on the host; refusing to replace it with a file")
        same_size = [(local, dest) for local, dest in pairs
                     if _regular(current[dest]) and _size(current[dest]) == local.size]
        quick = {dest for local, dest in same_size if not self.plan.checksum and _same_mtime(local, current[dest])}
        to_hash = [dest for _, dest in same_size if dest not in quick]
        hashes = remote_sha256(self.link, to_hash) if to_hash else {}
        changed = False
        for local, dest in pairs:
            wanted_mode = self.plan.mode if self.plan.mode is not None else local.mode
            if dest in quick:
                changed |= self._fix_attributes(dest, current[dest], wanted_mode, "same size and mtime")
            elif dest in hashes and hashes[dest] == local.digest.value(self.link.check):
                why = "same checksum"
                if not _same_mtime(local, current[dest]):
                    why += self._set_times(dest, local)
                changed |= self._fix_attributes(dest, current[dest], wanted_mode, why)
            else:
                self._upload(local, dest, current[dest] is not None, wanted_mode)
                changed = True
        return changed

    def _set_times(self, dest: str, local: LocalFile) -> str:
        """Give an identical file the local mtime, so that the next push finds it by size and mtime alone."""
        times = local.sftp_times
        if times is None:
            return ""
        self.link.doing(f"setting the mtime of {dest}")
        try:
            self.sftp.utime(dest, times)
        except OSError as error:
            # Not ours to fail on (e.g. a file of another owner we may write but not touch): it is the same file,
            # only the next push will hash it again.
            if getattr(error, "errno", None) is None and str(error) not in ("Failure", ""):
                raise  # not an SFTP status reply: the link died
            return f"; mtime not set: {describe(error, dest)}"
        return "; mtime set"

    def _fix_attributes(self, dest: str, attributes: Any, wanted_mode: int, why: str) -> bool:
        fixed = []
        owner_fixed = bool(self.plan.owner) and self._owner_of(dest) != self._wanted_owner(dest)
        if owner_fixed:
            self._chown(dest)  # before the chmod: chown clears the setuid and setgid bits
        if stat.S_IMODE(attributes.st_mode) != wanted_mode:
            self.sftp.chmod(dest, wanted_mode)
            fixed.append(f"mode {wanted_mode:04o}")
        elif owner_fixed and wanted_mode & SETID:
            self.sftp.chmod(dest, wanted_mode)
        if owner_fixed:
            fixed.append(f"owner {self.plan.owner}")
        self.details.append(f"changed {dest} ({', '.join(fixed)}; content: {why})" if fixed
                            else f"unchanged {dest} ({why})")
        return bool(fixed)

    def _upload(self, local: LocalFile, dest: str, exists: bool, mode: int) -> None:
        directory, name = posixpath.split(dest)
        remove_leftovers(self.sftp, directory, [name], self.listings)
        temp = temp_name(dest)
        try:
            with self._transfer_slot():
                self._write(local, temp, dest, mode)
            written = remote_stat(self.sftp, temp)
            if written is None or written.st_size != local.size:
                # Pipelined SFTP writes can fail silently (a full disk among them): the size tells.
                size = getattr(written, "st_size", 0)
                raise TransferError(f"{self._space_report(temp)}: wrote {size} of {local.size} bytes of {dest}")
            times = local.sftp_times
            if times is not None:
                # On the temp file, after its last write and before the rename: the final name never has
                # another mtime, and the next push recognises the file by size and mtime without reading it.
                self.link.doing(f"setting the mtime of {dest}")
                try:
                    self.sftp.utime(temp, times)
                except OSError as error:
                    if getattr(error, "errno", None) is None and str(error) not in ("Failure", ""):
                        raise  # not an SFTP status reply: transfer_result tells if the link died
                    raise TransferError(f"cannot set the modification time: {describe(error, temp)}") from None
            if self.plan.verify:
                self.link.doing(f"verifying {dest}")
                if remote_sha256(self.link, [temp])[temp] != local.digest.value(self.link.check):
                    raise TransferError(f"checksum mismatch after upload of {dest}")
            if self.plan.owner:
                self._chown(temp)
                if mode & SETID:
                    self.sftp.chmod(temp, mode)  # chown cleared them
            if exists and self.plan.backup:
                self._backup(dest)
            self.link.doing(f"renaming the upload onto {dest}")
            self.sftp.posix_rename(temp, dest)
        except BaseException:
            removed = self.link.remove(temp)
            left = "temp file removed" if removed else f"temp file {temp} left (the next push of it removes it)"
            self.link.notes.append(f"{dest} untouched, {left}")
            raise
        self.details.append(f"changed {dest} ({local.size} bytes)")

    def _write(self, local: LocalFile, temp: str, dest: str, mode: int) -> None:
        total = f"{local.size / (1 << 20):.1f} MiB"
        try:
            with local.path.open("rb") as source, self.sftp.open(temp, "wb") as target:
                # Final mode before any byte lands, so a 0600 secret is never briefly world-readable.
                self.sftp.chmod(temp, mode)
                target.set_pipelined(True)
                done = 0
                while chunk := source.read(LOCAL_READ):
                    self.link.check()
                    self.link.doing(f"uploading {dest} ({done / (1 << 20):.1f} of {total} sent)")
                    for start in range(0, len(chunk), CHUNK):
                        target.write(chunk[start : start + CHUNK])
                    done += len(chunk)
                self.link.doing(f"uploading {dest} (waiting for the host to confirm {total})")
                now = os.fstat(source.fileno())
            if (now.st_size, now.st_mtime_ns) != (local.digest.size, local.digest.mtime_ns):
                # What was sent may not be what the plan's size and mtime describe (and would be stamped so).
                raise TransferError(f"{local.path} changed on this machine during the push: push it again")
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
        probe = self.link.run(f"test -w {quoted} || echo readonly; df -Pk -- {quoted}", timeout=30)
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
        self.link.doing("waiting for a transfer slot (--max-transfers)")
        while not self.transfers.acquire(timeout=0.2):
            self.link.check()
        try:
            yield
        finally:
            self.transfers.release()

    # -- symlinks -----------------------------------------------------------------------------------------

    def _symlink(self, local: LocalLink, dest: str) -> bool:
        """Recreate a symlink with the same target text; an equal one is left alone."""
        self.link.doing(f"linking {dest}")
        current = remote_lstat(self.sftp, dest)
        if is_dir(current):
            raise TransferError(f"{dest} is a directory on the host; refusing to replace it with a symlink")
        if current is not None and stat.S_ISLNK(current.st_mode or 0) and self._readlink(dest) == local.target:
            return self._fix_link_owner(dest)
        directory, name = posixpath.split(dest)
        remove_leftovers(self.sftp, directory, [name], self.listings)
        temp = temp_name(dest)
        try:
            # paramiko's symlink(source, dest) is (target, link path), the order OpenSSH's server reads.
            self.sftp.symlink(local.target, temp)
            if self.plan.owner:
                self._chown(temp)
            self.sftp.posix_rename(temp, dest)  # replaces a file or an older link in one step
        except BaseException:
            self.link.remove(temp)
            raise
        self.details.append(f"changed {dest} -> {local.target} (symlink)")
        return True

    def _readlink(self, path: str) -> str | None:
        try:
            target: str | None = self.sftp.readlink(path)
            return target
        except OSError as error:
            raise TransferError(describe(error, path)) from None

    def _fix_link_owner(self, dest: str) -> bool:
        if self.plan.owner and self._owner_of(dest) != self._wanted_owner(dest):
            self._chown(dest)
            self.details.append(f"changed {dest} (symlink owner {self.plan.owner})")
            return True
        self.details.append(f"unchanged {dest} (symlink)")
        return False

    # -- commands on the host -----------------------------------------------------------------------------

    def _exec(self, command: str) -> None:
        result = self.link.run(command, timeout=60)
        if result.exit_code != 0:
            raise TransferError(f"{command.split()[0]} failed: {result.stderr.decode('utf-8', 'replace').strip()}")

    def _chown(self, path: str) -> None:
        # -h: a symlink's own owner, never its target's (GNU and BSD chown both take it).
        self._exec(f"chown -h {shlex.quote(self.plan.owner or '')} -- {shlex.quote(path)}")

    def _owner_of(self, path: str) -> str:
        result = self.link.run(f"stat -c %U:%G -- {shlex.quote(path)}", timeout=60)  # a link's own, unfollowed
        return result.stdout.decode("utf-8", "replace").strip()

    def _wanted_owner(self, path: str) -> str:
        owner = self.plan.owner or ""
        return owner if ":" in owner else owner + ":" + self._owner_of(path).partition(":")[2]

    def _backup(self, dest: str) -> None:
        # A hard link keeps the old inode under the backup name without a moment with no file at dest.
        quoted, backup = shlex.quote(dest), shlex.quote(dest + ".fleetrun-bak")
        self.link.doing(f"backing up {dest}")
        self._exec(f"ln -f -- {quoted} {backup} 2>/dev/null || cp -p -- {quoted} {backup}")


def _regular(attributes: Any | None) -> bool:
    return attributes is not None and stat.S_ISREG(attributes.st_mode or 0)


def _same_mtime(local: LocalFile, attributes: Any) -> bool:
    """rsync's default --modify-window 0: whole seconds equal (SFTP v3 carries no more than that)."""
    mtime = getattr(attributes, "st_mtime", None)
    return mtime is not None and int(mtime) == local.mtime


def _size(attributes: Any) -> int | None:
    size: int | None = attributes.st_size
    return size


def push_task(plan: PushPlan, max_transfers: int) -> HostTask:
    """The task behind `fleetrun push`; one semaphore bounds concurrent uploads across all hosts."""
    transfers = threading.Semaphore(max_transfers)

    def run(session: Session, host: Host, context: HostContext) -> HostResult:
        return transfer_result(host, session, context.options.timeout, context.cancel,
                               lambda link: _Pusher(plan, link, transfers))

    return run
