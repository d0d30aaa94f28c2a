"""Password sources (an environment variable or a private file) and redaction of secrets from text."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable

from fleetrun.errors import SecretError
from fleetrun.models import Host

MAX_PASSWORD_FILE = 64 * 1024  # a password file holds one line; anything bigger is the wrong file


def read_password(host: Host) -> str | None:
    """The password for `host` from password_env or else password_file; None when neither is set.

    Raises SecretError naming the host and the variable or file (never the value) when the source is unusable.
    One trailing newline is dropped, since `echo secret > file` and editors add one.
    """
    if host.password_env:
        value = os.environ.get(host.password_env)
        where = f"host {host.name}: password_env names the environment variable {host.password_env}, which"
        if value is None:
            raise SecretError(f"{where} is not set; export it before running fleetrun")
        value = _strip_newline(value)
        if not value:
            raise SecretError(f"{where} is empty; set it to the password")
        return value
    if host.password_file:
        return _read_private_file(f"host {host.name}", host.password_file)
    return None


def _read_private_file(name: str, path: str) -> str:
    # Open first, then check the open file: checking the path and opening it after is a race.
    # O_NONBLOCK so a FIFO planted at that path cannot hang a cron run; regular files ignore it.
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise SecretError(f"{name}: password_file {path} does not exist; create it and chmod 600 {path}") \
            from None
    except OSError as error:
        raise SecretError(f"{name}: cannot open password_file {path}: {error.strerror}") from None
    try:
        _check_private(os.fstat(fd), name, path)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(MAX_PASSWORD_FILE + 1)
    if len(raw) > MAX_PASSWORD_FILE:
        raise SecretError(f"{name}: password_file {path} is larger than {MAX_PASSWORD_FILE} bytes; "
                          "it should hold only the password")
    try:
        value = _strip_newline(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SecretError(f"{name}: password_file {path} is not UTF-8 text; save it as UTF-8") from None
    if not value:
        raise SecretError(f"{name}: password_file {path} is empty; write the password into it")
    return value


def _check_private(info: os.stat_result, name: str, path: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise SecretError(f"{name}: password_file {path} is not a regular file; point it at a file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:  # any group or other bit: even write access lets someone swap the password
        raise SecretError(f"{name}: password_file {path} has mode {mode:04o}, readable or writable by "
                          f"others; run chmod 600 {path}")
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise SecretError(f"{name}: password_file {path} is owned by uid {info.st_uid}, not by you "
                          f"(uid {os.geteuid()}); use a file of your own and chmod 600 {path}")


def _strip_newline(value: str) -> str:
    if value.endswith("\r\n"):
        return value[:-2]
    return value[:-1] if value.endswith("\n") else value


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each non-empty secret replaced by ***."""
    # Longest first, in one pass: a secret that contains another must not be left half masked.
    unique = sorted({secret for secret in secrets if secret}, key=len, reverse=True)
    if not unique:
        return text
    return re.sub("|".join(re.escape(secret) for secret in unique), "***", text)
