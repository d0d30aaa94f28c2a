"""Private keys (loaded once per run) and the authentication chain: key, agent keys, password."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import paramiko

from fleetrun.errors import HostFailure, UsageError
from fleetrun.models import Host, Outcome

if TYPE_CHECKING:
    from fleetrun.ssh.connect import ConnectSettings

def load_keys(paths: Sequence[str], passphrase: str | None) -> dict[str, paramiko.PKey]:
    """Load each distinct private key file once; a key that cannot be used is a usage error (exit 2)."""
    keys: dict[str, paramiko.PKey] = {}
    secret = passphrase.encode() if passphrase is not None else None  # cryptography wants bytes
    for path in dict.fromkeys(paths):
        try:
            keys[path] = paramiko.PKey.from_path(path, password=secret)  # type: ignore[arg-type]  # stubs say str
        except FileNotFoundError:
            raise UsageError(f"key file {path} does not exist: fix 'key' in the inventory or --key") from None
        except PermissionError:
            raise UsageError(f"key file {path} is not readable by this user") from None
        except (paramiko.PasswordRequiredException, TypeError) as error:
            if "password" not in str(error).lower():
                raise UsageError(f"key file {path} cannot be loaded: {error}") from None
            # cryptography says "password-protected, but password was not provided" with a TypeError.
            raise UsageError(
                f"key file {path} is encrypted: pass --key-passphrase-env NAME with the passphrase in $NAME"
            ) from None
        except (paramiko.SSHException, ValueError) as error:
            hint = "wrong passphrase?" if passphrase else "is it a private key in PEM or OpenSSH format?"
            raise UsageError(f"key file {path} cannot be loaded ({error.__class__.__name__}): {hint}") from None
    return keys



def authenticate(
    host: Host,
    settings: ConnectSettings,
    transport: paramiko.Transport,
    password: str | None,
    remaining: Callable[[], float],
) -> None:
    """Given key, then agent keys, then password: each tried once, stopping at the first success."""
    user = host.user or local_user()
    tried: list[str] = []
    allowed: list[str] | None = None

    def attempt(label: str, method: Callable[[], object], kind: str) -> bool:
        nonlocal allowed
        if allowed is not None and kind not in allowed:
            return False
        tried.append(label)
        transport.auth_timeout = remaining()
        try:
            method()
        except paramiko.BadAuthenticationType as error:
            allowed = list(error.allowed_types)
            return False
        except paramiko.AuthenticationException as error:
            if "timeout" in str(error).lower():
                # The server never answered in time: a slow or overloaded host, not a wrong credential.
                raise HostFailure(Outcome.UNREACHABLE, f"no answer to authentication ({label}) in time") from None
            return False
        return transport.is_authenticated()

    if host.key is not None and settings.keys and host.key in settings.keys:
        key = settings.keys[host.key]
        if attempt(f"key {host.key}", lambda: transport.auth_publickey(user, key), "publickey"):
            return
    if settings.use_agent and os.environ.get("SSH_AUTH_SOCK"):
        agent = paramiko.Agent()
        try:
            for number, agent_key in enumerate(agent.get_keys(), 1):
                label = f"agent key {number}"
                if attempt(label, lambda k=agent_key: transport.auth_publickey(user, k), "publickey"):  # type: ignore[misc]
                    return
        finally:
            agent.close()
    if password is not None and attempt(
        "password", lambda: transport.auth_password(user, password), "password"
    ):
        return
    if not tried:
        what = f"the server allows only {', '.join(allowed)}" if allowed else "no key, agent key or password given"
        raise HostFailure(Outcome.AUTH_FAILED, f"cannot authenticate as {user}: {what}")
    suffix = f"; the server allows {', '.join(allowed)}" if allowed else ""
    raise HostFailure(Outcome.AUTH_FAILED, f"authentication as {user} failed (tried {', '.join(tried)}){suffix}")


def local_user() -> str:
    import getpass

    return getpass.getuser()
