"""`fleetrun pull`: fetch a file or tree from every host into LOCALDIR/<host>/, never leaving a truncated file."""

from __future__ import annotations

import os
import posixpath
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure, UsageError
from fleetrun.models import Host, HostResult, Outcome
from fleetrun.remotefs import CHUNK, TransferError, describe, local_sha256, remote_sha256, remote_stat, transfer_result

if TYPE_CHECKING:
    from fleetrun.runner import HostContext, HostTask
    from fleetrun.ssh import Session

PREFETCH_REQUESTS = 64  # 64 × 32 KiB in flight per host: fast, and memory stays bounded on a 1 GB file
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
    def __init__(self, plan: PullPlan, session: Session, host: Host, cancel: Cancel) -> None:
        self.plan = plan
        self.session = session
        self.cancel = cancel
        self.sftp = session.open_sftp()
        self.root = plan.local_dir / host_dir_name(host)
        self.details: list[str] = []
        self.changed = False

    def close(self) -> None:
        self.sftp.close()

    def move(self) -> bool:
        """Pull the file or tree; True when any local file was written."""
        self._pull()
        return self.changed

    def _pull(self) -> None:
        attributes = remote_stat(self.sftp, self.plan.remote)
        if attributes is None:
            raise TransferError(f"no such file or directory: {self.plan.remote}")
        name = posixpath.basename(self.plan.remote)
        if stat.S_ISDIR(attributes.st_mode or 0):
            if not self.plan.recursive:
                raise TransferError(f"{self.plan.remote} is a directory: pass -r to pull the tree")
            self._pull_tree(self.plan.remote, self.root / name)
        else:
            self._pull_file(self.plan.remote, attributes, self.root / name)

    def _pull_tree(self, remote: str, local: Path) -> None:
        local.mkdir(parents=True, exist_ok=True)
        try:
            entries = sorted(self.sftp.listdir_attr(remote), key=lambda entry: entry.filename)
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
                self.details.append(f"skipped {path} (not a regular file)")

    def _pull_file(self, remote: str, attributes: Any, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        if local.is_file() and local.stat().st_size == attributes.st_size:
            mine = local_sha256(local)
            if remote_sha256(self.session, self.sftp, [remote], self.cancel).get(remote) == mine:
                self.details.append(f"unchanged {local}")
                return
        temp = local.with_name(f".{local.name}.fleetrun-tmp-{secrets.token_hex(4)}")
        try:
            with self.sftp.open(remote, "rb") as source, temp.open("wb") as target:
                source.prefetch(attributes.st_size, max_concurrent_requests=PREFETCH_REQUESTS)
                while chunk := source.read(CHUNK * 32):
                    if self.cancel.is_set():
                        raise HostFailure(Outcome.CANCELLED, f"cancelled during download of {remote}")
                    target.write(chunk)
            os.chmod(temp, stat.S_IMODE(attributes.st_mode or 0o644) & 0o777)
            os.replace(temp, local)
        except OSError as error:
            raise TransferError(describe(error, remote)) from None
        finally:
            temp.unlink(missing_ok=True)
        self.changed = True
        self.details.append(f"changed {local} ({attributes.st_size} bytes)")


def pull_task(plan: PullPlan) -> HostTask:
    """The task behind `fleetrun pull`."""

    def run(session: Session, host: Host, context: HostContext) -> HostResult:
        return transfer_result(host, session, _Puller(plan, session, host, context.cancel))

    return run
