"""SendEnv and SetEnv: the `env` requests ssh sends before the command, for a host's ssh_config settings."""

from __future__ import annotations

from collections.abc import Mapping

from fleetrun.environ import started_environment
from fleetrun.models import Host
from fleetrun.sshconfig.patterns import match_pattern

Requests = tuple[tuple[bytes, bytes], ...]

# (send_env, set_env) -> their requests over started_environment(). Hosts of a fleet nearly always share both
# (one ssh_config, `Host *`), so the environment is copied and matched once per process, not once per host.
# The environment is the process's own from the start: secrets are taken out of it (fleetrun.secrets.take_env)
# before any connection, so before the first entry; --procs children fork with the parent's entries, which
# hold for them too (the same environment). Worker threads may fill one key at once: each computes the same
# value and the last dict assignment wins, which is harmless, so no lock.
_cache: dict[tuple[tuple[str, ...], tuple[str, ...]], Requests] = {}


def env_requests(host: Host, environ: Mapping[str, str] | None = None) -> Requests:
    """(name, value) of each `env` request, in ssh's order (clientloop.c client_session2_setup): the local
    variables that match a SendEnv pattern, in the environment's order, then SetEnv's.

    The server keeps what its AcceptEnv allows (Debian's: `LANG LC_*`) and drops the rest without a word, as
    it does for ssh. The wrapper's exports come later, so the inventory's `env` wins over both.
    `environ` (tests) replaces the started environment, and bypasses the cache.
    """
    if environ is not None:
        return _requests(host.send_env, host.set_env, environ)
    key = (host.send_env, host.set_env)
    requests = _cache.get(key)
    if requests is None:
        requests = _cache[key] = _requests(host.send_env, host.set_env, started_environment() if host.send_env else {})
    return requests


def _requests(send_env: tuple[str, ...], set_env: tuple[str, ...], environ: Mapping[str, str]) -> Requests:
    requests: list[tuple[str, str]] = []
    if send_env:
        for name, value in environ.items():
            if any(match_pattern(name, pattern) for pattern in send_env):
                requests.append((name, value))
    for assignment in set_env:
        name, _, value = assignment.partition("=")
        requests.append((name, value))
    # os.environ holds bytes that are not UTF-8 surrogate-escaped: they go as the bytes they were.
    return tuple((name.encode("utf-8", "surrogateescape"), value.encode("utf-8", "surrogateescape"))
                 for name, value in requests)
