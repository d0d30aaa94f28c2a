"""The environment fleetrun was started with, for what it passes on as ssh would (SendEnv, ProxyCommand, Match exec).

Under the C locale (cron, a bare `env -i`) Python sets LC_CTYPE=C.UTF-8 in its own environment (PEP 538), which
ssh, started from the same shell, has not got: it would neither send it (`SendEnv LC_*`) nor hand it to the
commands it runs. /proc keeps the environment the process started with (setenv() leaves it alone); without
/proc, os.environ is taken as it is.
"""

from __future__ import annotations

import os

_PROC_ENVIRON = "/proc/self/environ"


def started_environment() -> dict[str, str]:
    """os.environ, with LC_CTYPE as fleetrun was started with it (absent if it was)."""
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
