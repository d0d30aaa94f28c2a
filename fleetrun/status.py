"""The one exit-status enum and the precedence used when several hosts end differently."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class ExitStatus(IntEnum):
    """Process exit codes; documented in the README and pinned by a test."""

    OK = 0
    COMMAND_FAILED = 1
    USAGE = 2
    TIMEOUT = 3
    UNREACHABLE = 4
    HOST_KEY = 5
    INTERNAL = 70
    LOCKED = 75
    HANGUP = 129
    INTERRUPTED = 130
    TERMINATED = 143


# Highest first: when several apply, the first one found here wins.
PRECEDENCE: tuple[ExitStatus, ...] = (
    ExitStatus.TERMINATED,
    ExitStatus.INTERRUPTED,
    ExitStatus.HANGUP,
    ExitStatus.HOST_KEY,
    ExitStatus.UNREACHABLE,
    ExitStatus.TIMEOUT,
    ExitStatus.COMMAND_FAILED,
    ExitStatus.OK,
)


def worst(statuses: Iterable[ExitStatus]) -> ExitStatus:
    """The status a run exits with, given every status that applies to it."""
    present = set(statuses)
    for status in PRECEDENCE:
        if status in present:
            return status
    return ExitStatus.OK
