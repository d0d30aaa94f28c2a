"""Read, match and append OpenSSH known_hosts files (paramiko's own loader rejects @-marker lines)."""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import os
import re
import threading
from collections.abc import Sequence
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hashlib import _Hash

# flock() already serialises separate opens, even within one process; this lock also makes the
# "re-check, append, remember" sequence atomic for a KnownHosts shared by worker threads.
_ADD_LOCK = threading.Lock()

# RSA keys are offered under their signature algorithm names but stored as the key type `ssh-rsa`.
_RSA_SIGNATURE_TYPES = frozenset({"rsa-sha2-256", "rsa-sha2-512"})
_MARKERS = frozenset({"@cert-authority", "@revoked"})


class Verdict(Enum):
    """What known_hosts says about the key a server offered."""

    KNOWN = "known"
    UNKNOWN = "unknown"
    CHANGED = "changed"
    REVOKED = "revoked"


def known_hosts_name(address: str, port: int) -> str:
    """The name OpenSSH stores for a host: bare on port 22, `[addr]:port` otherwise."""
    return address if port == 22 else f"[{address}]:{port}"


def fingerprint(blob: bytes) -> str:
    """The SHA256 fingerprint of a public key blob, exactly as `ssh-keygen -l` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def _plain_type(keytype: str) -> str:
    return "ssh-rsa" if keytype in _RSA_SIGNATURE_TYPES else keytype


@lru_cache(maxsize=64)
def _blob_prefix(keytype: str) -> bytes:
    """A key blob starts with its type as an SSH string: uint32 length, then the name."""
    name = keytype.encode()
    return len(name).to_bytes(4, "big") + name


def _is_wild(pattern: str) -> bool:
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
    if len(salt) > 64:
        salt = hashlib.sha1(salt).digest()
    salt = salt.ljust(64, b"\0")
    return hashlib.sha1(bytes(b ^ 0x36 for b in salt)), hashlib.sha1(bytes(b ^ 0x5C for b in salt))


class _Entry:
    """One parsed key line; patterns are lowercased because host names are case-insensitive."""

    __slots__ = ("blob", "hashed", "keytype", "marker", "negative", "positive", "wildcard")

    def __init__(self, marker: str | None, hosts: str, keytype: str, blob: bytes) -> None:
        self.marker = marker
        self.keytype = keytype
        self.blob = blob
        self.positive: tuple[str, ...] = ()  # literal patterns: the keys of the name index
        self.wildcard: re.Pattern[str] | None = None  # all positive patterns, if any is a glob
        self.negative: re.Pattern[str] | None = None
        self.hashed: tuple[_Hash, _Hash, bytes] | None = None
        if hosts.startswith("|"):
            parts = hosts.split("|")
            if len(parts) != 4 or parts[1] != "1":
                raise ValueError("unsupported hashed host format")
            digest = _b64(parts[3])
            if len(digest) != 20:
                raise ValueError("hashed host has the wrong length")
            self.hashed = (*_hmac_sha1_states(_b64(parts[2])), digest)
            return
        patterns = hosts.lower().split(",")
        if "!" in hosts or "" in patterns:
            negated = tuple(p[1:] for p in patterns if p.startswith("!"))
            patterns = [p for p in patterns if p and not p.startswith("!")]
            self.negative = _pattern_regex(negated) if negated else None
        self.positive = tuple(patterns)
        if ("*" in hosts or "?" in hosts) and any(_is_wild(p) for p in self.positive):
            self.wildcard = _pattern_regex(self.positive)

    def matches(self, name: str) -> bool:
        """OpenSSH semantics: a matching negated pattern excludes the line whatever else matches."""
        if self.hashed is not None:
            inner, outer, digest = self.hashed
            inner, outer = inner.copy(), outer.copy()
            inner.update(name.encode())
            outer.update(inner.digest())
            return outer.digest() == digest  # no need for constant time: the digest is in the file
        if self.negative is not None and self.negative.fullmatch(name):
            return False
        if self.wildcard is not None:
            return self.wildcard.fullmatch(name) is not None
        return name in self.positive


def _b64(text: str) -> bytes:
    # a2b_base64 skips junk characters; the round trip rejects them (strict_mode needs Python 3.11).
    try:
        data = binascii.a2b_base64(text)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64 ({exc})") from None
    if binascii.b2a_base64(data, newline=False) != text.encode():
        raise ValueError("invalid base64")
    return data


def _parse_line(line: str) -> _Entry | None:
    """Parse one known_hosts line: None for blank/comment lines, ValueError (the reason) if malformed."""
    fields = line.split()
    if not fields or fields[0][0] == "#":
        return None
    marker = None
    if fields[0][0] == "@":
        marker = fields.pop(0)
        if marker not in _MARKERS:
            raise ValueError(f"unknown marker {marker}")
    if len(fields) < 3:
        raise ValueError("expected HOSTS KEYTYPE BASE64-KEY [COMMENT]")
    keytype = _plain_type(fields[1])
    blob = _b64(fields[2])
    # The blob names its own type; a mismatch means a corrupt or hand-edited line, and trusting
    # the label would let `ssh-rsa` text stand for a different key.
    if not blob.startswith(_blob_prefix(keytype)):
        raise ValueError(f"key data is not a {keytype} key")
    return _Entry(marker, fields[0], keytype, blob)


class KnownHosts:
    """The merged contents of known_hosts files, indexed for fast lookup by host name.

    `check` may run in many threads while another thread calls `add`: entries are only ever appended.
    """

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self._plain: list[_Entry] = []  # plain key lines in file order; @cert-authority lines are dropped
        self._index: dict[str, list[int]] = {}  # literal name -> positions in _plain
        self._scan: list[int] = []  # hashed and wildcard lines: no key to index them by
        self._revoked: list[_Entry] = []
        self._scan_memo: dict[str, tuple[int, tuple[int, ...]]] = {}  # name -> (len(_scan) covered, hits)

    @classmethod
    def load(cls, paths: Sequence[str | Path]) -> KnownHosts:
        """Load files in order; a missing file is empty, a bad line or unreadable file is a warning."""
        known = cls()
        for path in paths:
            try:
                data = Path(path).read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                known.warnings.append(f"{path}: cannot read: {exc.strerror or exc}")
                continue
            known._load_bytes(str(path), data)
        return known

    def _load_bytes(self, label: str, data: bytes) -> None:
        # Split on "\n" only (not str.splitlines) so line numbers agree with OpenSSH and editors.
        for lineno, line in enumerate(data.decode("utf-8", "replace").split("\n"), 1):
            try:
                entry = _parse_line(line)
            except ValueError as exc:
                self.warnings.append(f"{label}:{lineno}: {exc}")
                continue
            if entry is not None:
                self._remember(entry)

    def _remember(self, entry: _Entry) -> None:
        if entry.marker == "@revoked":
            self._revoked.append(entry)
            return
        if entry.marker is not None:
            return  # @cert-authority: host certificates are not supported, so CA keys vouch for nothing
        position = len(self._plain)
        self._plain.append(entry)  # before indexing, so a concurrent reader never sees a dangling index
        if entry.hashed is None and entry.wildcard is None:
            for pattern in entry.positive:
                self._index.setdefault(pattern, []).append(position)
        else:
            self._scan.append(position)

    def _matching(self, names: Sequence[str]) -> list[_Entry]:
        """Plain entries whose host field matches any of the names, in file order."""
        found: set[int] = set()
        for name in (n.lower() for n in names):
            found.update(p for p in self._index.get(name, ()) if self._plain[p].matches(name))
            found.update(self._scan_hits(name))
        return [self._plain[position] for position in sorted(found)]

    def _scan_hits(self, name: str) -> tuple[int, ...]:
        # Unindexable lines cost a regex or an HMAC each, and a host is looked up more than once
        # (key_types_for, then check), so remember the hits per name. Entries are only appended,
        # so a memo stays right for the prefix it covered; a racing thread at worst redoes work.
        covered, hits = self._scan_memo.get(name, (0, ()))
        end = len(self._scan)
        if covered < end:
            hits += tuple(p for p in self._scan[covered:end] if self._plain[p].matches(name))
            self._scan_memo[name] = (end, hits)
        return hits

    def check(self, names: Sequence[str], keytype: str, blob: bytes) -> Verdict:
        """Judge the key a server offered under any of its lookup names (see `known_hosts_name`)."""
        lowered = [n.lower() for n in names]
        for entry in self._revoked:
            if entry.blob == blob and any(entry.matches(n) for n in lowered):
                return Verdict.REVOKED
        entries = self._matching(lowered)
        if not entries:
            return Verdict.UNKNOWN
        keytype = _plain_type(keytype)
        if any(e.blob == blob and e.keytype == keytype for e in entries):
            return Verdict.KNOWN
        # Any other key on record, whatever its type, means the server's identity changed.
        return Verdict.CHANGED

    def key_types_for(self, names: Sequence[str]) -> list[str]:
        """Key types on record for these names, in file order, without repeats.

        RSA is reported as `ssh-rsa`: callers choosing host key algorithms should offer rsa-sha2-512/256.
        """
        return list(dict.fromkeys(e.keytype for e in self._matching(names)))

    def add(self, path: str | Path, name: str, keytype: str, blob: bytes) -> bool:
        """Append `name keytype key` to `path` unless the name already has a key (then False, no write).

        Raises ValueError for a name that is not a single literal host (whitespace, commas, wildcards).
        """
        path = Path(path)
        # OpenSSH lowercases host names before storing or hashing them; do the same so the line
        # still matches after `ssh-keygen -H`.
        name = name.lower()
        text = f"{name} {_plain_type(keytype)} {base64.b64encode(blob).decode('ascii')}"
        entry = _parse_line(text)  # validates the blob against the key type, too
        if entry is None or entry.marker or entry.hashed or entry.negative or entry.positive != (name,):
            raise ValueError(f"cannot add {name!r} to known_hosts: not a single literal host name")
        if _is_wild(name):
            raise ValueError(f"cannot add {name!r} to known_hosts: wildcards are not host names")
        line = (text + "\n").encode("utf-8")
        with _ADD_LOCK:
            if self._matching([name]):
                return False
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # O_APPEND, never a rewrite: a crash mid-write cannot lose the lines already there.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # other fleetrun processes appending to the same file
                # Re-read under the lock: another process may have added this host since we loaded.
                data = path.read_bytes()
                on_disk = KnownHosts()
                on_disk._load_bytes(str(path), data)
                already = on_disk._matching([name])
                if already:
                    for found in already:
                        self._remember(found)  # so a re-check in this run sees what is on disk
                    return False
                if data and not data.endswith(b"\n"):
                    line = b"\n" + line  # or our line would be glued onto the last one
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)  # also releases the flock
            self._remember(entry)
        return True
