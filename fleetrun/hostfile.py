"""One known_hosts line as OpenSSH's hostfile.c reads it: marker, host patterns or hashed name, and the key."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from fleetrun.keyblob import KEY_TYPES, PublicKey, b64decode, parse_blob

if TYPE_CHECKING:
    from hashlib import _Hash

_MARKERS = frozenset({"@cert-authority", "@revoked"})
_MARKER_MAX = 31  # check_markers: a marker is shorter than its 32-byte buffer
_SUBPATTERN_MAX = 1022  # match_pattern_list: a longer sub-pattern fails the whole line
_SALT_BYTES = 20  # extract_salt: an HMAC-SHA1 key, nothing else
_FIELD_END = re.compile("[ \t]")  # OpenSSH splits known_hosts fields on spaces and tabs only
ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _lower(text: str) -> str:
    """ASCII letters lowercased, as C's tolower does; nothing else."""
    return text.lower() if text.isascii() else text.translate(ASCII_LOWER)


def fold(name: str) -> str:
    """A name as OpenSSH compares it: one character per byte, ASCII letters lowercased (C tolower)."""
    return _lower(name if name.isascii() else name.encode("utf-8", "surrogateescape").decode("latin-1"))


def show(text: str) -> str:
    """Undo `fold`'s byte-per-character view for messages."""
    return text.encode("latin-1").decode("utf-8", "replace")


def is_wild(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


@lru_cache(maxsize=4096)
def _pattern_regex(patterns: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for a comma-list of glob patterns (cached: wildcard lines tend to repeat)."""
    # Not fnmatch: it treats `[...]` as a character class, which would break `[host]:port` patterns.
    glob = {"*": ".*", "?": "."}
    alternatives = ("".join(glob.get(c) or re.escape(c) for c in pattern) for pattern in patterns)
    return re.compile("(?:" + "|".join(alternatives) + ")", re.DOTALL)


def _hmac_sha1_states(salt: bytes) -> tuple[_Hash, _Hash]:
    """HMAC-SHA1's inner and outer hash states for this key, computed once per hashed line.

    Hashed lines cannot be indexed, so every lookup hashes the name once per hashed line; resuming
    from precomputed states costs about a third of `hmac.digest` (RFC 2104 allows exactly this).
    """
    salt = salt.ljust(64, b"\0")  # salts are 20 bytes: never longer than the block
    return hashlib.sha1(bytes(b ^ 0x36 for b in salt)), hashlib.sha1(bytes(b ^ 0x5C for b in salt))


@dataclass(frozen=True)
class KeyLine:
    """Where known_hosts records a key, and which key."""

    path: str
    line: int
    marker: str | None  # None, "@cert-authority" or "@revoked"
    keytype: str
    fingerprint: str
    hosts: str  # the line's host field as written ("|1|…" when hashed)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def is_pattern(self) -> bool:
        """A wildcard or negated line: it may vouch for other hosts too."""
        return not self.hosts.startswith("|") and any(c in self.hosts for c in "*?!")


class Entry:
    """One key line; host patterns are lowercased because host names are case-insensitive.

    The key is decoded on first use, as OpenSSH decodes only the lines that match the host it looks up:
    a big known_hosts loads fast, and a bad key is reported when a host it names is connected.
    """

    __slots__ = ("_key", "_key_text", "_keytype", "_location", "error", "hashed", "hosts", "lineno", "marker",
                 "negative", "path", "positive", "wildcard")

    def __init__(self, path: str, lineno: int, marker: str | None, hosts: str, keytype: str, key_text: str) -> None:
        self.path, self.lineno, self.marker, self.hosts = path, lineno, marker, hosts
        self._keytype, self._key_text = keytype, key_text
        self._key: PublicKey | None = None
        self._location: KeyLine | None = None
        self.error: str | None = None  # why the key cannot be read, once that is known
        self.positive: tuple[str, ...] = ()  # literal patterns: the keys of the name index
        self.wildcard: re.Pattern[str] | None = None  # all positive patterns, if any is a glob
        self.negative: re.Pattern[str] | None = None
        self.hashed: tuple[_Hash, _Hash, bytes] | None = None
        if hosts.startswith("|"):
            self.hashed = _hashed_host(hosts)
            return
        # The cheap tests first: a big file's lines are mostly one or two literal names.
        patterns = _lower(hosts).split(",")
        if len(hosts) > _SUBPATTERN_MAX and any(len(p.removeprefix("!")) > _SUBPATTERN_MAX for p in patterns):
            raise ValueError(f"a host pattern is longer than {_SUBPATTERN_MAX} characters: OpenSSH never matches it")
        if "!" in hosts:
            # An empty pattern matches only an empty name, which no host has.
            negated = tuple(p[1:] for p in patterns if p.startswith("!") and len(p) > 1)
            self.negative = _pattern_regex(negated) if negated else None
            patterns = [p for p in patterns if not p.startswith("!")]
        self.positive = tuple(p for p in patterns if p)
        if ("*" in hosts or "?" in hosts) and any(is_wild(p) for p in self.positive):
            self.wildcard = _pattern_regex(self.positive)

    def load_key(self) -> bool:
        """Decode the key if not done yet (sshkey_read's rules); False, with `error` set, if it cannot be read.

        Idempotent, so threads racing on one line at worst decode it twice.
        """
        if self._location is not None:
            return True
        if self.error is not None:
            return False
        try:
            key = parse_blob(b64decode(self._key_text))
            if key.keytype != self._keytype:
                # The blob names its own type; trusting the label would let `ssh-rsa` text stand for another key.
                raise ValueError(f"key data is not a {show(self._keytype)} key")
        except ValueError as exc:
            self.error = f"{self.path}:{self.lineno}: {exc}; line skipped"
            return False
        self._key = key
        self._location = KeyLine(self.path, self.lineno, self.marker, key.keytype, key.fingerprint, show(self.hosts))
        return True

    @property
    def key(self) -> PublicKey:
        assert self._key is not None, "load_key() first"
        return self._key

    @property
    def location(self) -> KeyLine:
        assert self._location is not None, "load_key() first"
        return self._location

    def matches(self, name: str) -> bool:
        """OpenSSH semantics: a matching negated pattern excludes the line whatever else matches."""
        if self.hashed is not None:
            inner, outer, digest = self.hashed
            inner, outer = inner.copy(), outer.copy()
            inner.update(name.encode("latin-1"))
            outer.update(inner.digest())
            return outer.digest() == digest  # no need for constant time: the digest is in the file
        if self.negative is not None and self.negative.fullmatch(name):
            return False
        if self.wildcard is not None:
            return self.wildcard.fullmatch(name) is not None
        return name in self.positive


def _hashed_host(hosts: str) -> tuple[_Hash, _Hash, bytes]:
    """`|1|salt|hash` as OpenSSH's extract_salt and host_hash read it; ValueError for a line it ignores."""
    if not hosts.startswith("|1|") or "|" not in hosts[3:]:
        raise ValueError("unsupported hashed host format (expected |1|salt|hash)")
    salt_text, digest_text = hosts[3:].split("|", 1)
    try:
        salt = b64decode(salt_text)
    except ValueError:
        raise ValueError("hashed host has a salt that is not valid base64: OpenSSH ignores the line") from None
    if len(salt) != _SALT_BYTES:
        raise ValueError(f"hashed host has a {len(salt)}-byte salt, not {_SALT_BYTES}: OpenSSH ignores the line")
    try:
        digest = b64decode(digest_text)
    except ValueError:
        digest = b""
    # OpenSSH re-encodes salt and hash and compares the whole text: anything but the canonical form of a
    # 20-byte hash can never match a name.
    canonical = "|1|" + base64.b64encode(salt).decode() + "|" + base64.b64encode(digest).decode()
    if len(digest) != hashlib.sha1().digest_size or canonical != hosts:
        raise ValueError("hashed host has a malformed hash: it can never match")
    return (*_hmac_sha1_states(salt), digest)


def _field(text: str) -> tuple[str, str | None]:
    """(first field, the rest after its blanks), or (text, None) when no blank ends the field."""
    if "\t" not in text:
        field, blank, rest = text.partition(" ")  # the common case, without a regex
        return (field, rest.lstrip(" \t")) if blank else (text, None)
    end = _FIELD_END.search(text)
    if end is None:
        return text, None
    return text[: end.start()], text[end.start() :].lstrip(" \t")


def parse_line(line: str, path: str, lineno: int) -> Entry | None:
    """One line, as OpenSSH's hostkeys_foreach_file and sshkey_read take it.

    None for a blank or comment line; ValueError (the reason) for a line OpenSSH skips. The key itself is
    checked later, by `Entry.load_key`.
    """
    # OpenSSH reads a line as a C string, so a NUL ends it. A CRLF file's '\r' would end up in the key text,
    # where OpenSSH's base64 decoder skips it.
    cp = line.split("\0", 1)[0].removesuffix("\r").lstrip(" \t")
    if not cp or cp[0] == "#":
        return None
    marker = None
    if cp[0] == "@":
        # check_markers ends a marker at the line's first space (only without one, at its first tab).
        end = cp.find(" ")
        end = cp.find("\t") if end < 0 else end
        marker = cp[:end] if end > 0 else cp
        if not 1 < end <= _MARKER_MAX or marker not in _MARKERS:
            raise ValueError(f"unknown marker {show(marker)!r}")
        cp = cp[end:].lstrip(" \t")
        if cp.startswith("@"):
            raise ValueError("more than one marker")
    hosts, rest = _field(cp)
    if rest is None:
        raise ValueError("expected HOSTS KEYTYPE BASE64-KEY [COMMENT]")
    if not rest or rest[0] == "#":
        raise ValueError("no key type after the host names")
    label, rest = _field(rest)
    keytype = KEY_TYPES.get(label)
    if keytype is None:
        raise ValueError(f"unknown key type {show(label)!r}")
    if not rest:
        raise ValueError("no key after the key type")
    return Entry(path, lineno, marker, hosts, keytype, _field(rest)[0])
