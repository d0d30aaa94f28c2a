"""Errors the user can act on; `str(error)` is the sentence they read, and each carries its exit status."""

from __future__ import annotations

from fleetrun.models import Outcome
from fleetrun.status import ExitStatus


def printable(text: str) -> str:
    """`text` as a line of output may carry it: the bytes of a name that are not UTF-8 (kept as surrogates, as
    os.fsdecode and argv keep them) as `\\xe9` escapes, which a terminal, a pipe and JSON all take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


class FleetrunError(Exception):
    """Base class: a problem reported as one line on stderr with a documented exit status."""

    exit_status: ExitStatus = ExitStatus.INTERNAL


class UsageError(FleetrunError):
    """Bad flags, arguments or local input: nothing ran."""

    exit_status = ExitStatus.USAGE


class InventoryError(UsageError):
    """A mistake in the inventory file; the message names the file, line and key."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class SelectionError(UsageError):
    """A host pattern that is malformed or selects no host."""


class SecretError(UsageError):
    """A password or passphrase source that cannot be used; never repeats the secret."""


class LabError(FleetrunError):
    """The local lab fleet could not be started or stopped."""

    exit_status = ExitStatus.USAGE


class LockedError(FleetrunError):
    """Another run holds the lock."""

    exit_status = ExitStatus.LOCKED


class HostFailure(Exception):
    """One host could not be served; becomes that host's result, never the process's exit."""

    def __init__(self, outcome: Outcome, message: str, *, host_key_verified: bool | None = None) -> None:
        self.outcome = outcome
        self.message = message
        # Whether known_hosts vouched for the host's key; None if the connection never got to the key.
        self.host_key_verified = host_key_verified
        super().__init__(message)
