"""Password sources (an environment variable or a private file), and the secrets this process holds."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterable

from fleetrun.errors import SecretError
from fleetrun.models import Host
from fleetrun.redact import Redactor

MAX_PASSWORD_FILE = 64 * 1024  # a password file holds one line; anything bigger is the wrong file

# Every secret read so far (passwords, passphrases, sudo passwords), in the order read. Whatever reads
# a secret calls remember(), and everything fleetrun prints or writes is masked with these: the renderers
# through the runner, and cli.main's error lines, whose exception may come from anywhere.
_lock = threading.Lock()
_held: dict[str, None] = {}
# Variables taken out of os.environ (so child processes never inherit them), with their values: several
# hosts may name the same variable, and each must still find it.
_taken: dict[str, str] = {}


def remember(secret: str | None) -> None:
    """Record a secret in use, so that it is masked wherever fleetrun would show it."""
    if secret:
        with _lock:
            _held[secret] = None


def held() -> tuple[str, ...]:
    """The secrets remembered so far."""
    with _lock:
        return tuple(_held)


def forget_all() -> None:
    """Drop every remembered secret and taken variable (for tests: one process, many runs)."""
    with _lock:
        _held.clear()
        _taken.clear()


def take_env(name: str) -> str | None:
    """The value of environment variable `name`, removed from os.environ so that no child process (a
    ProxyCommand, ssh -G) inherits it; None when it is not set and was never taken. Not remembered."""
    with _lock:
        value = os.environ.pop(name, None)
        if value is None:
            return _taken.get(name)
        _taken[name] = value
        return value


def read_env_secret(name: str | None, what: str) -> str | None:
    """A secret (e.g. --key-passphrase-env's) from environment variable `name`, taken and remembered;
    None when no variable is named. Raises SecretError when it is unset or empty."""
    if name is None:
        return None
    value = take_env(name)
    if not value:
        raise SecretError(f"{what}: environment variable {name} is not set or empty")
    remember(value)
    return value


def read_password(host: Host) -> str | None:
    """The password for `host` from password_env or else password_file; None when neither is set.

    Raises SecretError naming the host and the variable or file (never the value) when the source is unusable.
    The password is the first line: what follows a newline (`echo secret > file` adds one, a note on a second
    line is common) is never sent. The variable is taken out of the environment (see take_env), and the
    password is remembered for masking.
    """
    return _read_source(host, "password", host.password_env, host.password_file)


def read_become_password(host: Host) -> str | None:
    """The sudo password for `host` from become_password_env or else become_password_file (issue 10); None when
    neither is set. The same rules as read_password: first line, private file, variable taken, remembered."""
    return _read_source(host, "become_password", host.become_password_env, host.become_password_file)


def _read_source(host: Host, key: str, env_name: str | None, file: str | None) -> str | None:
    if env_name:
        value = take_env(env_name)
        where = f"host {host.name}: {key}_env names the environment variable {env_name}, which"
        if value is None:
            raise SecretError(f"{where} is not set; export it before running fleetrun")
        password = _first_line(value)
        if not password:
            raise SecretError(f"{where} {_why_empty(value)}; set it to the password")
    elif file:
        password = _read_private_file(f"host {host.name}", file, f"{key}_file")
    else:
        return None
    remember(password)
    return password


def _read_private_file(name: str, path: str, key: str = "password_file") -> str:
    # Open first, then check the open file: checking the path and opening it after is a race.
    # O_NONBLOCK so a FIFO planted at that path cannot hang a cron run; regular files ignore it.
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise SecretError(f"{name}: {key} {path} does not exist; create it and chmod 600 {path}") \
            from None
    except OSError as error:
        raise SecretError(f"{name}: cannot open {key} {path}: {error.strerror}") from None
    try:
        _check_private(os.fstat(fd), name, path, key)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(MAX_PASSWORD_FILE + 1)
    if len(raw) > MAX_PASSWORD_FILE:
        raise SecretError(f"{name}: {key} {path} is larger than {MAX_PASSWORD_FILE} bytes; "
                          "it should hold only the password")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError(f"{name}: {key} {path} is not UTF-8 text; save it as UTF-8") from None
    value = _first_line(text)
    if not value:
        raise SecretError(f"{name}: {key} {path} {_why_empty(text)}; write the password on its first line")
    return value


def _check_private(info: os.stat_result, name: str, path: str, key: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise SecretError(f"{name}: {key} {path} is not a regular file; point it at a file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:  # any group or other bit: even write access lets someone swap the password
        raise SecretError(f"{name}: {key} {path} has mode {mode:04o}, readable or writable by "
                          f"others; run chmod 600 {path}")
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise SecretError(f"{name}: {key} {path} is owned by uid {info.st_uid}, not by you "
                          f"(uid {os.geteuid()}); use a file of your own and chmod 600 {path}")


def _first_line(value: str) -> str:
    """Up to the first newline, without the carriage return of a CRLF file."""
    line = value.split("\n", 1)[0]
    return line[:-1] if line.endswith("\r") else line


def _why_empty(value: str) -> str:
    return "is empty" if not value.strip("\r\n") else "starts with an empty line"


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` with every occurrence of each non-empty secret replaced by ***; by default every secret
    remembered so far."""
    return Redactor(held() if secrets is None else secrets).text(text)
