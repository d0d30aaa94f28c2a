"""--out-dir DIR: per host DIR/<host>.out, .err (raw, complete bytes) and .status (JSON), plus summary.json."""

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

    def __init__(self, directory: str | Path, err: TextIO) -> None:
        self.directory = Path(directory)
        self.err = err
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UsageError(f"--out-dir {directory}: cannot create it: {error.strerror or error}") from None
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
            write_atomic(self.directory / "summary.json", text.encode())
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
