"""SendEnv and SetEnv: the `env` requests ssh sends before the command, for a host's ssh_config settings."""

from __future__ import annotations

import os
from collections.abc import Mapping

from fleetrun.models import Host
from fleetrun.sshconfig.patterns import match_pattern

_PROC_ENVIRON = "/proc/self/environ"


def _environment() -> dict[str, str]:
    """os.environ, with LC_CTYPE as fleetrun was started with it.

    Under the C locale (cron, a bare `env -i`) Python sets LC_CTYPE=C.UTF-8 itself (PEP 538), which ssh,
    started from the same shell, has not got to send. /proc keeps the environment the process started with
    (setenv() leaves it alone); without /proc, os.environ is taken as it is.
    """
    environ = dict(os.environ)
    if "LC_CTYPE" not in environ:
        return environ
    try:
        with open(_PROC_ENVIRON, "rb") as handle:
            started = [entry[len(b"LC_CTYPE="):] for entry in handle.read().split(b"\0")
                       if entry.startswith(b"LC_CTYPE=")]
    except OSError:
        return environ
    if started:
        environ["LC_CTYPE"] = os.fsdecode(started[0])  # getenv()'s: the first
    else:
        del environ["LC_CTYPE"]
    return environ


def env_requests(host: Host, environ: Mapping[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    """(name, value) of each `env` request, in ssh's order (clientloop.c client_session2_setup): the local
    variables that match a SendEnv pattern, in the environment's order, then SetEnv's.

    The server keeps what its AcceptEnv allows (Debian's: `LANG LC_*`) and drops the rest without a word, as
    it does for ssh. The wrapper's exports come later, so the inventory's `env` wins over both.
    """
    requests: list[tuple[str, str]] = []
    if host.send_env:
        for name, value in (_environment() if environ is None else environ).items():
            if any(match_pattern(name, pattern) for pattern in host.send_env):
                requests.append((name, value))
    for assignment in host.set_env:
        name, _, value = assignment.partition("=")
        requests.append((name, value))
    # os.environ holds bytes that are not UTF-8 surrogate-escaped: they go as the bytes they were.
    return [(name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape"))
            for name, value in requests]
