"""Percent tokens, `${VAR}`, `~` and time values, expanded exactly as ssh(1) and misc.c do."""

from __future__ import annotations

import _socket
import hashlib
import os
import pwd
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

# strtol(3) as misc.c calls it: leading isspace() characters and one sign are accepted before the digits.
_STRTOL = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
_TIME_PART = re.compile(_STRTOL.pattern + r"([sSmMhHdDwW]?)")
_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
INT_MAX = 2**31 - 1
_MAYBE_ADDRESS = frozenset("0123456789abcdefABCDEFxX.:%")  # inet_aton forms, IPv6 and zone ids
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}\Z")  # dotted decimal, no leading zeros


class TokenError(ValueError):
    """A token or variable that cannot be expanded; the message says which."""


@dataclass(frozen=True)
class LocalInfo:
    """Who and where we are: the values behind %u %i %d %l %L and `~`."""

    user: str
    uid: int
    home: str  # from the passwd entry, not $HOME: ssh(1) uses pw_dir for ~/.ssh/config, %d and ~ in paths
    hostname: str  # %l: gethostname(), with any domain
    short_hostname: str  # %L: up to the first dot


@lru_cache(maxsize=1)
def local_info() -> LocalInfo:
    """The running user's passwd entry and this machine's name (looked up once per process)."""
    entry = pwd.getpwuid(os.getuid())
    name = socket.gethostname()
    return LocalInfo(entry.pw_name, entry.pw_uid, entry.pw_dir, name, name.split(".", 1)[0])


def percent_expand(text: str, tokens: Mapping[str, str], *, dollar: bool = False) -> str:
    """Replace %X from `tokens` (and `%%`); with `dollar`, also ${VAR} from the environment."""
    if "%" not in text and not (dollar and "${" in text):
        return text  # the common case, for every identity file of every host
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if dollar and text.startswith("${", index):
            end = text.find("}", index + 2)
            if end == -1:
                raise TokenError(f"${{ without a closing }} in {text!r}")
            name = text[index + 2 : end]
            if not name:
                raise TokenError(f"empty ${{}} in {text!r}")
            value = os.environ.get(name)
            if value is None:
                raise TokenError(f"environment variable ${{{name}}} is not set")
            out.append(value)
            index = end + 1
            continue
        if char != "%":
            out.append(char)
            index += 1
            continue
        if index + 1 >= len(text):
            raise TokenError(f"a lone % at the end of {text!r} (write %% for a literal %)")
        key = text[index + 1]
        if key == "%":
            out.append("%")
        elif key in tokens:
            out.append(tokens[key])
        else:
            allowed = " ".join(f"%{name}" for name in sorted(tokens, key=str.lower)) + " %%"
            raise TokenError(f"unknown token %{key} (allowed here: {allowed})")
        index += 2
    return "".join(out)


def tilde_expand(path: str, home: str) -> str:
    """`~` and `~/x` from `home` (the passwd home), `~user/x` from that user's passwd entry."""
    if not path.startswith("~"):
        return path
    rest = path[1:]
    if not rest or rest.startswith("/"):
        base, tail = home, rest.lstrip("/")
    else:
        user, _, tail = rest.partition("/")
        try:
            base = pwd.getpwnam(user).pw_dir
        except KeyError:
            raise TokenError(f"no such user {user!r} in {path!r}") from None
        tail = tail.lstrip("/")
    return base + ("" if base.endswith("/") else "/") + tail


def strtonum(text: str, maximum: int) -> int | None:
    """OpenBSD strtonum(text, 0, maximum), as a2port() and atoi_err() use it: " 22" and "+22" are 22."""
    match = _STRTOL.fullmatch(text)
    if match is None:
        return None
    number = int(match.group(1))
    return number if 0 <= number <= maximum else None


def convtime(text: str) -> int | None:
    """OpenSSH time values: `90`, `90s`, `1m30s`, `2h`, `1w` -> seconds; None if malformed or too large."""
    if not text:
        return None
    total, position = 0, 0
    while position < len(text):
        match = _TIME_PART.match(text, position)
        if not match:
            return None
        number = int(match.group(1))
        if number < 0:
            return None
        total += number * _TIME_UNITS[match.group(2).lower()]
        position = match.end()
    return total if total <= INT_MAX else None


def connection_hash(local_host: str, host: str, port: str, user: str) -> str:
    """%C: the SHA-1 of %l%h%p%r, in hex (readconf.c ssh_connection_hash)."""
    return hashlib.sha1((local_host + host + port + user).encode()).hexdigest()


def numeric_form(host: str) -> str | None:
    """None for a name; for a numeric address, the form ssh.c resolve_canonicalize() gives it: its
    getnameinfo(NI_NUMERICHOST) form (010.1.1.1 and 127.1 become 8.1.1.1 and 127.0.0.1), unless that
    differs only in case (FE80::A stays)."""
    if _CANONICAL_IPV4.match(host):
        return host  # most of a fleet: already the form getnameinfo() gives, no call needed
    if not _MAYBE_ADDRESS.issuperset(host):
        return None  # a letter beyond hex digits: a name
    try:
        # _socket's own call, as bytes, one socket type: socket.getaddrinfo() would run a str through the
        # 'idna' codec and turn the result tuples into enums, for every host of a fleet.
        infos = _socket.getaddrinfo(host.encode("ascii"), None, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):  # socket.gaierror is an OSError
        return None
    if len(infos) != 1:
        return host  # resolve_addr() gives up on several entries
    try:
        numeric = socket.getnameinfo(infos[0][4], socket.NI_NUMERICHOST)[0]
    except OSError:
        return host
    return host if numeric.lower() == host.lower() else numeric
