"""--out-dir DIR: per host DIR/<host>.out, .err (raw, complete bytes) and .status (JSON), plus summary.json.

A marker file, DIR/.fleetrun-out-dir, lists the files the last run wrote there. Reusing DIR clears exactly those
(so no stale host of an earlier run is left for `grep` to find); a non-empty DIR without the marker is refused,
so fleetrun never deletes or mixes in a file it did not write.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from fleetrun.errors import UsageError
from fleetrun.models import Host, HostResult, OutputLine, RunSummary
from fleetrun.output.base import OutputSink
from fleetrun.output.json import result_record, summary_record

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
MAX_STEM = 120  # file names stay well under NAME_MAX (255) with suffix, temp marker and hash
MARKER = ".fleetrun-out-dir"
MARKER_VERSION = 1
SUMMARY = "summary.json"
SUFFIXES = (".out", ".err", ".status")


def file_stem(name: str) -> str:
    """A host name as a file name: only [A-Za-z0-9._-], no leading dot, bounded length.

    A name that had to change gets a short hash of the original, so 'a/b' and 'a_b' stay two files.
    """
    stem = _UNSAFE.sub("_", name)[:MAX_STEM]
    if stem.startswith("."):
        stem = "_" + stem[1:]
    if stem != name or not stem:
        stem = f"{stem}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return stem


def _temp_name(path: Path) -> Path:
    # Dot-prefixed and marked with our pid: never mistaken for a result, never clashing with another run.
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp name in the same directory, then rename: readers see the old file or the new one."""
    temp = _temp_name(path)
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


class _HostFiles:
    """One host's .out and .err, written chunk by chunk from its worker, renamed into place at close."""

    def __init__(self, base: Path, failures: list[str], lock: threading.Lock) -> None:
        self.paths = {"stdout": base.with_name(base.name + ".out"), "stderr": base.with_name(base.name + ".err")}
        self.files: dict[str, BinaryIO] = {}
        self.failures, self.lock = failures, lock
        self.error: OSError | None = None
        try:
            for stream, path in self.paths.items():
                self.files[stream] = open(_temp_name(path), "wb")  # noqa: SIM115 (closed in close())
        except OSError as error:
            self._fail(error)

    def write(self, stream: str, chunk: bytes) -> None:
        if self.error is None:
            try:
                self.files[stream].write(chunk)
            except OSError as error:
                self._fail(error)

    def close(self) -> None:
        for stream, handle in self.files.items():
            try:
                handle.close()
                if self.error is None:
                    os.replace(handle.name, self.paths[stream])
            except OSError as error:
                self._fail(error)
        if self.error is not None:
            for handle in self.files.values():  # only what we created: the name may be someone else's
                with suppress(OSError):
                    os.unlink(handle.name)

    def _fail(self, error: OSError) -> None:
        # A full disk must not fail the host: its command ran. The collector reports it on the host's result.
        if self.error is None:
            self.error = error
            with self.lock:
                self.failures.append(f"{error.filename or self.paths['stdout']}: {error.strerror or error}")


class OutDirRenderer:
    """Writes the status files from the collector; `open_sink` gives the workers their raw output files."""

    wants_lines = False
    wants_started = True

    def __init__(self, directory: str | Path, err: TextIO) -> None:
        self.directory = Path(directory)
        self.err = err
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"--out-dir {directory}: cannot create it: {error.strerror or error}") from None
        self.previous = _claim(self.directory)  # what an earlier run wrote here: cleared once this one starts
        self.stems: dict[str, str] = {}
        self.opened: set[str] = set()
        self.failures: list[str] = []  # appended by workers, reported by the collector
        self.lock = threading.Lock()

    def open_sink(self, host: Host) -> OutputSink:
        """Called on the host's worker before it connects, so every started host gets both files. A worker
        process calls it on its own copy of this renderer: `on_started` is what tells the collector."""
        with self.lock:
            self.opened.add(host.name)
        return _HostFiles(self.directory / self._stem(host.name), self.failures, self.lock)

    def on_start(self, hosts: Sequence[Host]) -> None:
        # Computed up front (before any worker runs) so names that sanitise alike are told apart the same way.
        self.stems = {host.name: file_stem(host.name) for host in hosts}
        # Cleared here, not when the directory was checked: a run refused later (a bad key, exit 2) loses nothing.
        ours = [stem + suffix for stem in self.stems.values() for suffix in SUFFIXES] + [SUMMARY]
        try:
            _write_marker(self.directory, [*ours, *self.previous])  # a run killed while clearing still knows
            kept = _clear(self.directory, self.previous, ours)
            _write_marker(self.directory, [*ours, *kept])
        except OSError as error:
            with self.lock:
                self.failures.append(f"{error.filename or self.directory}: {error.strerror or error}")
        self._report()

    def on_started(self, host: Host) -> None:
        with self.lock:
            self.opened.add(host.name)  # its worker opened the files (perhaps in a worker process)

    def on_line(self, line: OutputLine) -> None:
        pass

    def on_result(self, result: HostResult) -> None:
        record: dict[str, Any] = result_record(result, outputs=False)
        base = self.directory / self._stem(result.host.name)
        try:
            with self.lock:
                started = result.host.name in self.opened
            if not started:  # never connected: empty files, so every host has all three
                for suffix in (".out", ".err"):
                    write_atomic(base.with_name(base.name + suffix), b"")
            write_atomic(base.with_name(base.name + ".status"), (json.dumps(record, indent=2) + "\n").encode())
        except OSError as error:
            with self.lock:
                self.failures.append(f"{error.filename or base}: {error.strerror or error}")
        self._report()

    def on_finish(self, summary: RunSummary) -> None:
        try:
            text = json.dumps(summary_record(summary), indent=2) + "\n"
            write_atomic(self.directory / SUMMARY, text.encode())
        except OSError as error:
            with self.lock:
                self.failures.append(f"{error.filename}: {error.strerror or error}")
        self._report()

    def _stem(self, name: str) -> str:
        return self.stems.get(name) or file_stem(name)

    def _report(self) -> None:
        with self.lock:
            failures, self.failures[:] = list(self.failures), []
        for failure in failures:
            self.err.write(f"fleetrun: warning: --out-dir: cannot write {failure}\n")
        if failures:
            self.err.flush()


def _ours(name: object) -> bool:
    """A name this module could have written: one plain file name with one of our endings."""
    return (isinstance(name, str) and "/" not in name and "\0" not in name and not name.startswith(".")
            and (name == SUMMARY or name.endswith(SUFFIXES)))


def _claim(directory: Path) -> list[str]:
    """Check DIR may be written (new, empty or a previous out-dir) and return what the previous run wrote."""
    marker = directory / MARKER
    if not os.path.lexists(marker):
        try:
            entries = sorted(os.listdir(directory))
        except OSError as error:
            raise UsageError(f"--out-dir {directory}: cannot read it: {error.strerror or error}") from None
        if entries:
            raise UsageError(
                f"--out-dir {directory} is not empty and was not written by fleetrun (no {MARKER} in it, but "
                f"{entries[0]!r}{' and more' if len(entries) > 1 else ''}): give a new or empty directory"
            )
        _write_marker(directory, [])
        return []
    try:
        if not marker.is_file() or marker.is_symlink():
            raise ValueError("not a regular file")
        data = json.loads(marker.read_text())
        if not isinstance(data, dict) or data.get("fleetrun_out_dir") != MARKER_VERSION:
            raise ValueError(f"not a version {MARKER_VERSION} marker")
        files = data.get("files")
        if not isinstance(files, list):
            raise ValueError("no list of files")
    except (OSError, ValueError) as error:
        raise UsageError(f"--out-dir {directory}: cannot use {marker} ({error}): remove it, or give a new or empty "
                         "directory") from None
    return [name for name in files if _ours(name)]  # anything else in it is not ours to delete


def _write_marker(directory: Path, files: Sequence[str]) -> None:
    record = {"fleetrun_out_dir": MARKER_VERSION, "files": sorted(set(files))}
    write_atomic(directory / MARKER, (json.dumps(record, indent=1) + "\n").encode())


def _clear(directory: Path, previous: Sequence[str], ours: Sequence[str]) -> list[str]:
    """Remove what the previous run wrote, and temp files a killed run left; returns what could not go."""
    kept = []
    for name in previous:
        try:
            os.unlink(directory / name)
        except FileNotFoundError:
            pass
        except OSError:
            kept.append(name)  # still ours: the next run tries again
    names = {*previous, *ours, MARKER}
    for entry in os.listdir(directory):
        match = _TEMP.fullmatch(entry)
        if match and match.group(1) in names:
            with suppress(OSError):
                os.unlink(directory / entry)
    return kept


_TEMP = re.compile(r"\.(.+)\.[0-9]+\.tmp")  # what _temp_name makes of one of our names
