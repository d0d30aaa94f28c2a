"""`fleetrun pull`: fetch a file or tree from every host into LOCALDIR/<host>/, never leaving a truncated file."""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetrun.errors import UsageError
from fleetrun.models import Host, HostResult
from fleetrun.remotefs import (
    Link,
    TransferError,
    describe,
    local_sha256,
    remote_sha256,
    remote_stat,
    special_kind,
    temp_basename,
    transfer_result,
)
from fleetrun.ssh.sftpio import download, list_directory

if TYPE_CHECKING:
    from fleetrun.runner import HostContext, HostTask
    from fleetrun.ssh import Session

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


@dataclass(frozen=True)
class PullPlan:
    remote: str
    local_dir: Path
    recursive: bool


def plan_pull(remote: str, local_dir: str, *, recursive: bool = False) -> PullPlan:
    """Check the local side before connecting: an absolute remote path and a writable local directory."""
    if not remote.startswith("/"):
        raise UsageError(f"remote path {remote!r} must be absolute (start with /)")
    if posixpath.basename(remote.rstrip("/")) in ("", ".", ".."):
        raise UsageError(f"remote path {remote!r} must name a file or directory")
    target = Path(local_dir)
    if target.exists() and not target.is_dir():
        raise UsageError(f"local path {local_dir} exists and is not a directory")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create local directory {local_dir}: {error.strerror}") from None
    if not os.access(target, os.W_OK):
        raise UsageError(f"local directory {local_dir} is not writable")
    return PullPlan(remote.rstrip("/") or "/", target, recursive)


def host_dir_name(host: Host) -> str:
    """A host's folder under LOCALDIR: its name, made safe as one path component."""
    name = _UNSAFE.sub("_", host.name).lstrip(".")
    return name or "_"


def _safe_component(name: str) -> bool:
    # A hostile server could list "../x" or "a/b": never let a remote name leave the host's folder.
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name


class _Puller:
    def __init__(self, plan: PullPlan, link: Link, host: Host) -> None:
        self.plan = plan
        self.link = link
        self.root = plan.local_dir / host_dir_name(host)
        self.details: list[str] = []
        self.changed = False

    @property
    def sftp(self) -> Any:
        return self.link.sftp

    def move(self) -> bool:
        """Pull the file or tree; True when any local file was written."""
        self.link.doing(f"looking at {self.plan.remote}")
        attributes = remote_stat(self.sftp, self.plan.remote)
        if attributes is None:
            raise TransferError(f"no such file or directory: {self.plan.remote}")
        name = posixpath.basename(self.plan.remote)
        mode = attributes.st_mode or 0
        if stat.S_ISDIR(mode):
            if not self.plan.recursive:
                raise TransferError(f"{self.plan.remote} is a directory: pass -r to pull the tree")
            self._pull_tree(self.plan.remote, self.root / name)
        elif stat.S_ISREG(mode):
            self._pull_file(self.plan.remote, attributes, self.root / name)
        else:  # opening a FIFO would wait for a writer forever; a device would never end
            raise TransferError(f"{self.plan.remote} is a {special_kind(mode)}, not a regular file: not pulled")
        return self.changed

    def _pull_tree(self, remote: str, local: Path) -> None:
        local.mkdir(parents=True, exist_ok=True)
        self.link.doing(f"listing {remote}")
        try:  # a name that is not UTF-8 is pulled byte for byte, as OpenSSH's sftp and scp do
            entries = sorted(list_directory(self.sftp, remote), key=lambda entry: entry.filename)
        except OSError as error:
            raise TransferError(describe(error, remote)) from None
        for entry in entries:
            if not _safe_component(entry.filename):
                self.details.append(f"skipped unsafe name {entry.filename!r} in {remote}")
                continue
            path = posixpath.join(remote, entry.filename)
            mode = entry.st_mode or 0
            if stat.S_ISDIR(mode):
                self._pull_tree(path, local / entry.filename)
            elif stat.S_ISREG(mode):
                self._pull_file(path, entry, local / entry.filename)
            else:
                self.details.append(f"skipped {path} ({special_kind(mode)}, not a regular file)")

    def _pull_file(self, remote: str, attributes: Any, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        if local.is_file() and local.stat().st_size == attributes.st_size:
            mine = local_sha256(local)
            if remote_sha256(self.link, [remote]).get(remote) == mine:
                self.details.append(f"unchanged {local}")
                return
        temp = local.with_name(temp_basename(local.name))
        self.link.doing(f"downloading {remote} ({(attributes.st_size or 0) / (1 << 20):.1f} MiB)")
        try:
            size = self._download(remote, attributes.st_size or 0, temp)
            with _local_errors(local.parent):
                os.chmod(temp, stat.S_IMODE(attributes.st_mode or 0o644) & 0o777)
                if attributes.st_mtime is not None:  # the host's times, as push leaves them (scp -p, rsync -t)
                    os.utime(temp, (attributes.st_atime or attributes.st_mtime, attributes.st_mtime))
                os.replace(temp, local)
        except BaseException:
            if self.link.watchdog.reason() is not None:
                self.link.notes.append(f"no partial file of {remote} kept")
            raise
        finally:
            temp.unlink(missing_ok=True)
        self.changed = True
        self.details.append(f"changed {local} ({size} bytes)")


    def _download(self, remote: str, size_hint: int, temp: Path) -> int:
        with _local_errors(temp.parent):
            target = temp.open("wb")

        def write(data: bytes) -> None:
            with _local_errors(temp.parent):
                target.write(data)

        try:
            return download(self.sftp, remote, write, size_hint=size_hint, check=self.link.check)
        except OSError as error:  # an SFTP error reply (the local ones are TransferErrors by now)
            if self.link.watchdog.reason() is not None:
                raise
            raise TransferError(describe(error, remote)) from None
        finally:
            with _local_errors(temp.parent):
                target.close()


@contextmanager
def _local_errors(directory: Path) -> Iterator[None]:
    """A local write error (a full disk) as the host's one-line reason, naming the local directory."""
    try:
        yield
    except OSError as error:
        raise TransferError(f"cannot write in {directory}: {error.strerror or error}") from None


def pull_task(plan: PullPlan) -> HostTask:
    """The task behind `fleetrun pull`."""

    def run(session: Session, host: Host, context: HostContext) -> HostResult:
        return transfer_result(host, session, context.options.timeout, context.cancel,
                               lambda link: _Puller(plan, link, host))

    return run
