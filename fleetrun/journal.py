"""The run journal: every exec/push/pull recorded under XDG state; read back by `runs`, `rerun`, --retry-failed.

Layout, format "fleetrun-run/1" (a new field keeps the version; a field that changes meaning or goes bumps it):

    $FLEETRUN_STATE_DIR, else $XDG_STATE_HOME/fleetrun (only if absolute), else ~/.local/state/fleetrun
      runs/                   mode 0700, as every directory here; files are 0600
        .lock                 flock, held only to move `latest` and to prune
        latest -> ID          the run that finished last (a symlink, replaced atomically)
        ID/                   ID = <UTC start yyyymmddTHHMMSS.mmmZ>-<6 hex digits>; name order is start order
          run.json            what ran (RUN_FIELDS below); written at the start, rewritten at the end
          selection.txt       the selected host names, one per line, in inventory order
          hosts.jsonl         the fleetrun/1 host records, one per line, appended and flushed as hosts finish
          summary.json        the fleetrun/1 summary record, written at the end

A run directory is filled under a hidden name and renamed into place, so readers never see half of one;
run.json and summary.json are replaced by rename. While a run is going it holds a shared flock on its
hosts.jsonl: pruning skips such runs, so concurrent runs (cron and a person) never remove each other's.
Output is kept up to OUTPUT_CAP bytes per stream per host (marked truncated); --out-dir has the full bytes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from fleetrun.models import Host, HostResult, OutputLine, RunSummary

SCHEMA = "fleetrun-run/1"
OUTPUT_CAP = 64 * 1024
KEEP_RUNS = 200
MAX_BYTES = 500 << 20
_STALE = 24 * 3600  # a hidden half-made or half-removed run directory this old was left by a crash
# run.json, documented here because `runs merge` (issue 15) and scripts read it:
RUN_FIELDS = {
    "schema": "always fleetrun-run/1",
    "id": "the run's directory name",
    "kind": "exec, push or pull",
    "argv": "the command line after `fleetrun` (fleetrun takes no secret on it; known secret values masked ***)",
    "command": "exec: the command; else null",
    "transfer": "push: {local, remote}; pull: {remote, local_dir}; else null",
    "inventories": "[{path, sha256}] of the inventory files read",
    "selection": "{pattern, count, sha256}: sha256 over the sorted names, each followed by a newline",
    "options": "the command's parameters as parsed (what `rerun` repeats)",
    "cwd": "the working directory (rerun runs from it, so relative paths mean the same)",
    "parent": "the id of the run this one retried, or null",
    "shard": "--shard: {index, total, selection_sha256, selection_count, source} of the WHOLE selection (the "
             "run's own `selection` is its share); null when not sharded",
    "started": "ISO 8601 UTC time", "ended": "ISO 8601 UTC time, null until the run ended",
    "exit_status": "the run's exit status, null until it ended",
    "redacted": "true if a secret value was masked in argv/command/options: rerun then refuses",
    "fleetrun": "the version that wrote it", "pid": "the process id",
}


def state_root(environ: Mapping[str, str] | None = None) -> Path:
    """fleetrun's XDG state directory. A relative XDG_STATE_HOME is ignored, as the XDG spec says."""
    env = os.environ if environ is None else environ
    override = env.get("FLEETRUN_STATE_DIR")
    if override:
        return Path(os.path.abspath(os.path.expanduser(override)))
    xdg = env.get("XDG_STATE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "fleetrun"


def runs_dir(environ: Mapping[str, str] | None = None) -> Path:
    return state_root(environ) / "runs"


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def selection_sha256(names: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(name.encode() + b"\n")
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 16):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _make_dirs(path: Path) -> None:
    """Create `path` and any missing parent with mode 0700 (XDG: the state home should be 0700)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another run made it just now
            directory.mkdir(mode=0o700)


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _write_json_atomic(path: Path, record: Mapping[str, Any]) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(3).hex()}")
    try:
        _write_new(temp, (json.dumps(record, indent=2, ensure_ascii=True) + "\n").encode())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """The journal's lock, for `latest` and pruning only; the kernel drops it if we die."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class RunMeta:
    """What the command line knows about a run before it starts; the journal adds ids, digests and times."""

    kind: str
    argv: tuple[str, ...]
    command: str | None = None
    transfer: Mapping[str, Any] | None = None
    inventories: tuple[str, ...] = ()
    pattern: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    cwd: str = ""
    parent: str | None = None
    shard: Mapping[str, Any] | None = None  # fleetrun.shard.ShardInfo.record(), for `runs merge`


def _redact(value: Any, secrets: Sequence[str]) -> Any:
    from fleetrun.secrets import redact

    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list | tuple):
        return [_redact(item, secrets) for item in value]
    if isinstance(value, dict):
        return {key: _redact(item, secrets) for key, item in value.items()}
    return value


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class JournalWriter:
    """A renderer that records the run: on_start writes run.json, on_result appends, on_finish completes it.

    It never changes the run's result: if the journal cannot be written it says so once on stderr and stops.
    """

    wants_lines = False
    wants_started = False

    def __init__(self, root: Path, meta: RunMeta, err: TextIO, *, secrets: Iterable[str] = (),
                 keep: int = KEEP_RUNS, max_bytes: int = MAX_BYTES, output_cap: int = OUTPUT_CAP) -> None:
        self.root, self.meta, self.err = root, meta, err
        self.secrets = sorted({secret for secret in secrets if secret}, key=len, reverse=True)
        self.keep, self.max_bytes, self.output_cap = keep, max_bytes, output_cap
        self.run_id: str | None = None
        self.directory: Path | None = None
        self.record: dict[str, Any] = {}
        self._hosts: Any = None  # the open hosts.jsonl
        self._broken = False

    # -- the renderer interface ----------------------------------------------------------------------------------

    def on_start(self, hosts: Sequence[Host]) -> None:
        self._guard(lambda: self._start(hosts))

    def on_started(self, host: Host) -> None:
        pass

    def on_line(self, line: OutputLine) -> None:
        pass

    def on_result(self, result: HostResult) -> None:
        if self._hosts is not None:
            self._guard(lambda: self._append(result))

    def on_finish(self, summary: RunSummary) -> None:
        if self._hosts is not None:
            self._guard(lambda: self._finish(summary))

    # -- work ----------------------------------------------------------------------------------------------------

    def _guard(self, step: Any) -> None:
        if self._broken:
            return
        try:
            step()
        except OSError as error:
            self._broken = True
            where = error.filename or self.directory or self.root
            self.err.write(f"fleetrun: warning: run journal off for this run: cannot write {where}: "
                           f"{error.strerror or error} (--no-journal silences this)\n")
            self.err.flush()
            if self._hosts is not None:
                with contextlib.suppress(OSError):
                    self._hosts.close()
                self._hosts = None

    def _start(self, hosts: Sequence[Host]) -> None:
        from fleetrun.secrets import held

        # The run starts once every secret is in: --ask-pass prompts only after the keys are read, so a
        # password typed then is known here even though it was not when this writer was made.
        self.secrets = sorted({*self.secrets, *held()}, key=len, reverse=True)
        _make_dirs(self.root)
        names = [host.name for host in hosts]
        meta = self.meta
        argv = _redact(list(meta.argv), self.secrets)
        command = _redact(meta.command, self.secrets)
        options = _redact(_jsonable(dict(meta.options)), self.secrets)
        redacted = (argv != list(meta.argv) or command != meta.command
                    or options != _jsonable(dict(meta.options)))
        from fleetrun import __version__

        while True:
            # Milliseconds in the id, so that sorting by name is sorting by start, even within one second.
            now = datetime.now(timezone.utc)
            run_id = f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03}Z-{os.urandom(3).hex()}"
            if not (self.root / run_id).exists():
                break
        self.record = {
            "schema": SCHEMA, "id": run_id, "kind": meta.kind, "argv": argv, "command": command,
            "transfer": _jsonable(dict(meta.transfer)) if meta.transfer is not None else None,
            "inventories": [{"path": path, "sha256": file_sha256(path)} for path in meta.inventories],
            "selection": {"pattern": meta.pattern, "count": len(names), "sha256": selection_sha256(names)},
            "options": options, "cwd": meta.cwd, "parent": meta.parent,
            "shard": dict(meta.shard) if meta.shard is not None else None,
            "started": now_text(), "ended": None, "exit_status": None, "redacted": redacted,
            "fleetrun": __version__, "pid": os.getpid(),
        }
        # Filled under a hidden name, then renamed: a reader sees all of a new run or none of it.
        building = self.root / f".new-{run_id}"
        building.mkdir(mode=0o700)
        try:
            _write_new(building / "selection.txt", "".join(f"{name}\n" for name in names).encode())
            _write_json_atomic(building / "run.json", self.record)
            fd = os.open(building / "hosts.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)  # "this run is going": pruning leaves it alone
            self._hosts = os.fdopen(fd, "a", encoding="ascii")
            os.rename(building, self.root / run_id)  # open files stay valid across the rename
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        self.run_id, self.directory = run_id, self.root / run_id

    def _append(self, result: HostResult) -> None:
        from fleetrun.output.json import result_record

        cap = self.output_cap
        kept = result  # most results: under the cap and in memory, so the record is the result's own
        spilled = result.stdout_file is not None or result.stderr_file is not None
        if spilled or len(result.stdout) > cap or len(result.stderr) > cap:
            kept = replace(result, stdout=result.output_head("stdout", cap), stderr=result.output_head("stderr", cap),
                           stdout_file=None, stderr_file=None,
                           stdout_truncated=result.stdout_truncated or result.output_size("stdout") > cap,
                           stderr_truncated=result.stderr_truncated or result.output_size("stderr") > cap)
        record = result_record(kept)
        if self.secrets:
            record = _redact(record, self.secrets)
        self._hosts.write(json.dumps(record, ensure_ascii=True) + "\n")
        self._hosts.flush()  # an interrupted run's journal is complete up to the interrupt

    def _finish(self, summary: RunSummary) -> None:
        from fleetrun.output.json import summary_record

        assert self.directory is not None and self.run_id is not None
        extra = {"shard": dict(self.meta.shard)} if self.meta.shard is not None else None
        _write_json_atomic(self.directory / "summary.json", summary_record(summary, extra))
        with _locked(self.root):
            # The end time is taken under the lock that moves `latest`: `latest` is the run that ended last.
            self.record.update(ended=now_text(), exit_status=int(summary.exit_status))
            _write_json_atomic(self.directory / "run.json", self.record)
            self._hosts.close()  # releases the "going" lock
            self._hosts = None
            link = self.root / f".latest-{os.getpid()}-{os.urandom(3).hex()}"
            os.symlink(self.run_id, link)
            os.replace(link, self.root / "latest")
            _prune_locked(self.root, self.keep, self.max_bytes)


# -- retention -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pruned:
    removed: int
    freed: int  # bytes
    kept: int
    kept_bytes: int


def _size(path: Path) -> int:
    total = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(path):
            with contextlib.suppress(OSError):
                total += entry.stat(follow_symlinks=False).st_size
    return total


def is_going(path: Path) -> bool:
    """True while the run's writer holds its shared lock on hosts.jsonl."""
    try:
        fd = os.open(path / "hosts.jsonl", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def prune(root: Path, keep: int = KEEP_RUNS, max_bytes: int = MAX_BYTES) -> Pruned:
    """Remove the oldest runs beyond `keep` runs or `max_bytes` in all; never a going run or `latest`."""
    if not root.is_dir():
        return Pruned(0, 0, 0, 0)
    with _locked(root):
        return _prune_locked(root, keep, max_bytes)


def _prune_locked(root: Path, keep: int, max_bytes: int) -> Pruned:
    latest: str | None = None
    with contextlib.suppress(OSError):
        latest = os.readlink(root / "latest")
    names: list[str] = []
    now = time.time()
    for entry in os.scandir(root):
        if not entry.is_dir(follow_symlinks=False):
            continue
        if entry.name.startswith((".new-", ".trash-")):  # left by a crash
            with contextlib.suppress(OSError):
                if now - entry.stat(follow_symlinks=False).st_mtime > _STALE:
                    shutil.rmtree(entry.path, ignore_errors=True)
            continue
        if not entry.name.startswith("."):
            names.append(entry.name)
    names.sort()
    sizes = {name: _size(root / name) for name in names}
    count, total = len(names), sum(sizes.values())
    removed = freed = 0
    for name in names:  # oldest first
        if count <= keep and total <= max_bytes:
            break
        if name == latest or is_going(root / name):
            continue
        trash = root / f".trash-{name}"
        try:
            os.rename(root / name, trash)  # gone for readers at once; then deleted at leisure
        except OSError:
            continue
        shutil.rmtree(trash, ignore_errors=True)
        count, total = count - 1, total - sizes[name]
        removed, freed = removed + 1, freed + sizes[name]
    return Pruned(removed, freed, count, total)
