"""SendEnv and SetEnv: the `env` requests ssh sends before the command, for a host's ssh_config settings."""

from __future__ import annotations

from collections.abc import Mapping

from fleetrun.environ import started_environment
from fleetrun.models import Host
from fleetrun.sshconfig.patterns import match_pattern


def env_requests(host: Host, environ: Mapping[str, str] | None = None) -> list[tuple[bytes, bytes]]:
    """(name, value) of each `env` request, in ssh's order (clientloop.c client_session2_setup): the local
    variables that match a SendEnv pattern, in the environment's order, then SetEnv's.

    The server keeps what its AcceptEnv allows (Debian's: `LANG LC_*`) and drops the rest without a word, as
    it does for ssh. The wrapper's exports come later, so the inventory's `env` wins over both.
    """
    requests: list[tuple[str, str]] = []
    if host.send_env:
        for name, value in (started_environment() if environ is None else environ).items():
            if any(match_pattern(name, pattern) for pattern in host.send_env):
                requests.append((name, value))
    for assignment in host.set_env:
        name, _, value = assignment.partition("=")
        requests.append((name, value))
    # os.environ holds bytes that are not UTF-8 surrogate-escaped: they go as the bytes they were.
    return [(name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape"))
            for name, value in requests]
