"""Read, match and append OpenSSH known_hosts files, judging keys as ssh(1) does (hostfile.c, sshconnect.c)."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import pwd
import re
import shlex
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from fleetrun.keyblob import KEY_TYPES, PublicKey, b64decode, fingerprint, parse_blob

if TYPE_CHECKING:
    from hashlib import _Hash

__all__ = ["HostKeyCheck", "KeyLine", "KnownHosts", "Verdict", "fingerprint", "known_hosts_name"]

# flock() already serialises separate opens, even within one process; this lock also makes the
# "re-check, append, remember" sequence atomic for a KnownHosts shared by worker threads.
_ADD_LOCK = threading.Lock()

_MARKERS = frozenset({"@cert-authority", "@revoked"})
_MARKER_MAX = 31  # check_markers: a marker is shorter than its 32-byte buffer
_SUBPATTERN_MAX = 1022  # match_pattern_list: a longer sub-pattern fails the whole line
_SALT_BYTES = 20  # extract_salt: an HMAC-SHA1 key, nothing else
_FIELD_END = re.compile("[ \t]")  # OpenSSH splits known_hosts fields on spaces and tabs only
_WITH_PORT = re.compile(r"\[(.*)\]:([0-9]+)", re.DOTALL)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class Verdict(Enum):
    """What known_hosts says about the key a server offered."""

    KNOWN = "known"
    UNKNOWN = "unknown"
    CHANGED = "changed"
    REVOKED = "revoked"


def known_hosts_name(address: str, port: int) -> str:
    """The name OpenSSH stores for a host: bare on port 22, `[addr]:port` otherwise."""
    return address if port == 22 else f"[{address}]:{port}"


def _fold(name: str) -> str:
    """A name as OpenSSH compares it: one character per byte, ASCII letters lowercased (C tolower)."""
    return name.encode("utf-8", "surrogateescape").decode("latin-1").translate(_ASCII_LOWER)


def _show(text: str) -> str:
    """Undo `_fold`'s byte-per-character view for messages."""
    return text.encode("latin-1").decode("utf-8", "replace")


def _without_port(name: str) -> str | None:
    """The bare host OpenSSH falls back to for `[host]:port` on another port than 22 ("w/out port")."""
    found = _WITH_PORT.fullmatch(name)
    return found.group(1) if found and int(found.group(2)) != 22 else None


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


class _Entry:
    """One valid key line; host patterns are lowercased because host names are case-insensitive."""

    __slots__ = ("hashed", "key", "location", "negative", "positive", "wildcard")

    def __init__(self, location: KeyLine, hosts: str, key: PublicKey) -> None:
        self.location = location
        self.key = key
        self.positive: tuple[str, ...] = ()  # literal patterns: the keys of the name index
        self.wildcard: re.Pattern[str] | None = None  # all positive patterns, if any is a glob
        self.negative: re.Pattern[str] | None = None
        self.hashed: tuple[_Hash, _Hash, bytes] | None = None
        if hosts.startswith("|"):
            self.hashed = _hashed_host(hosts)
            return
        patterns = [p.translate(_ASCII_LOWER) for p in hosts.split(",")]
        if any(len(p.removeprefix("!")) > _SUBPATTERN_MAX for p in patterns):
            raise ValueError(f"a host pattern is longer than {_SUBPATTERN_MAX} characters: OpenSSH never matches it")
        # An empty pattern matches only an empty name, which no host has.
        negated = tuple(p[1:] for p in patterns if p.startswith("!") and len(p) > 1)
        self.negative = _pattern_regex(negated) if negated else None
        self.positive = tuple(p for p in patterns if p and not p.startswith("!"))
        if any(_is_wild(p) for p in self.positive):
            self.wildcard = _pattern_regex(self.positive)

    @property
    def marker(self) -> str | None:
        return self.location.marker

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
    end = _FIELD_END.search(text)
    if end is None:
        return text, None
    return text[: end.start()], text[end.start() :].lstrip(" \t")


def _parse_line(line: str, path: str, lineno: int) -> _Entry | None:
    """One line, as OpenSSH's hostkeys_foreach_file and sshkey_read take it.

    None for a blank or comment line; ValueError (the reason) for a line OpenSSH skips.
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
            raise ValueError(f"unknown marker {_show(marker)!r}")
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
        raise ValueError(f"unknown key type {_show(label)!r}")
    if not rest:
        raise ValueError("no key after the key type")
    key = parse_blob(b64decode(_field(rest)[0]))
    if key.keytype != keytype:
        # The blob names its own type; trusting the label would let `ssh-rsa` text stand for another key.
        raise ValueError(f"key data is not a {_show(label)} key")
    location = KeyLine(path, lineno, marker, key.keytype, key.fingerprint, _show(hosts))
    return _Entry(location, hosts, key)


@dataclass(frozen=True)
class HostKeyCheck:
    """What known_hosts says about one offered key, and the line that decided it."""

    verdict: Verdict
    name: str  # the lookup name the deciding line matched (the first lookup name when none did)
    keytype: str  # of the offered key
    fingerprint: str  # of the offered key
    line: KeyLine | None = None  # matching (known), conflicting (changed) or revoking (revoked)
    without_port: bool = False  # known through the bare host name, as ssh falls back to for [host]:port
    unused_ca: tuple[KeyLine, ...] = ()  # @cert-authority lines for this host, each reported once per run

    @property
    def offered(self) -> str:
        return f"{self.keytype} {self.fingerprint}"

    def explain(self, user_file: Path | None = None) -> str:
        """The one line a refused host shows: what was offered, what is recorded where, what to do.

        `user_file` is the known_hosts that `ssh-keygen -R` edits without `-f` (see `default_known_hosts`).
        """
        name, line = _show(self.name), self.line
        if self.verdict is Verdict.REVOKED and line is not None:
            return (f"REVOKED host key for {name}: it offered {self.offered}, which {line.where} marks @revoked; "
                    "refusing (a revoked key may be in an attacker's hands)")
        if self.verdict is Verdict.CHANGED and line is not None:
            recorded = line.fingerprint if line.keytype == self.keytype else f"{line.keytype} {line.fingerprint}"
            return (f"HOST KEY CHANGED for {name}: it offered {self.offered}, but {line.where} records {recorded} "
                    "(possible man-in-the-middle attack). If the host was rebuilt, verify its new key, then "
                    + _removal_hint(self.name, line, user_file))
        return (f"unknown host key for {name} ({self.offered}): verify the fingerprint, then add it to "
                "known_hosts or run once with --host-key-checking accept-new")


def default_known_hosts() -> Path:
    """The file `ssh-keygen -R` edits without `-f`: ~/.ssh/known_hosts of the passwd home, not of $HOME."""
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        home = os.path.expanduser("~")
    return Path(home, ".ssh", "known_hosts")


def _same_file(a: str | Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _removal_hint(name: str, line: KeyLine, user_file: Path | None) -> str:
    if line.is_pattern:
        # ssh-keygen -R would delete the pattern line and with it the key of every host it covers.
        return f"fix line {line.line} of {line.path} (its pattern {line.hosts!r} covers other hosts too)"
    command = ["ssh-keygen", "-R", _show(name)]
    if not _same_file(line.path, user_file or default_known_hosts()):
        command += ["-f", line.path]
    return "run: " + shlex.join(command)


class KnownHosts:
    """The merged contents of known_hosts files, indexed for fast lookup by host name.

    `judge` may run in many threads while another thread calls `add`: entries are only ever appended.
    """

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self._entries: list[_Entry] = []  # every usable line in load order, whatever its marker
        self._index: dict[str, list[int]] = {}  # literal name -> positions in _entries
        self._scan: list[int] = []  # hashed and wildcard lines: no key to index them by
        self._scan_memo: dict[str, tuple[int, tuple[int, ...]]] = {}  # name -> (len(_scan) covered, hits)
        self._ca_reported: set[int] = set()
        self._ca_lock = threading.Lock()

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
        # Split on "\n" only (not str.splitlines) so line numbers agree with OpenSSH and editors; latin-1
        # keeps one character per byte, so wildcards and hashes see the bytes OpenSSH sees.
        for lineno, line in enumerate(data.decode("latin-1").split("\n"), 1):
            try:
                entry = _parse_line(line, label, lineno)
            except ValueError as exc:
                self.warnings.append(f"{label}:{lineno}: {exc}; line skipped")
                continue
            if entry is not None:
                self._remember(entry)

    def _remember(self, entry: _Entry) -> None:
        position = len(self._entries)
        self._entries.append(entry)  # before indexing, so a concurrent reader never sees a dangling index
        if entry.hashed is None and entry.wildcard is None:
            for pattern in entry.positive:
                self._index.setdefault(pattern, []).append(position)
        else:
            self._scan.append(position)

    def _matching(self, names: Sequence[str], files: Collection[str] | None) -> list[_Entry]:
        """Entries (any marker) whose host field matches any of the folded names, in load order."""
        found: set[int] = set()
        for name in names:
            found.update(p for p in self._index.get(name, ()) if self._entries[p].matches(name))
            found.update(self._scan_hits(name))
        entries = (self._entries[position] for position in sorted(found))
        return [e for e in entries if files is None or e.location.path in files]

    def _scan_hits(self, name: str) -> tuple[int, ...]:
        # Unindexable lines cost a regex or an HMAC each, and a host is looked up more than once
        # (key_types_for, then judge), so remember the hits per name. Entries are only appended,
        # so a memo stays right for the prefix it covered; a racing thread at worst redoes work.
        covered, hits = self._scan_memo.get(name, (0, ()))
        end = len(self._scan)
        if covered < end:
            hits += tuple(p for p in self._scan[covered:end] if self._entries[p].matches(name))
            self._scan_memo[name] = (end, hits)
        return hits

    def lines_for(self, names: Sequence[str], files: Collection[str] | None = None) -> list[KeyLine]:
        """Every usable line matching any of the names, as `ssh-keygen -l -F NAME` lists them."""
        return [e.location for e in self._matching([_fold(n) for n in names], files)]

    def judge(
        self, names: Sequence[str], keytype: str, blob: bytes, files: Collection[str] | None = None
    ) -> HostKeyCheck:
        """Judge the key a server offered under its lookup names (see `known_hosts_name`), as ssh does.

        Only lines from `files` count, when given (a host's own known_hosts files). OpenSSH's rules: a
        matching plain line makes the key known; any other plain line for the name makes it changed; with
        none at all, `[host]:port` falls back to the bare host, where only a match counts. One deliberate
        difference: a key `@revoked` under the bare name is refused even when `[host]:port` vouches for it.
        """
        try:
            offered = parse_blob(blob)
        except ValueError:
            offered = PublicKey(keytype, blob, blob)  # cannot equal any line's key, which all parsed
        folded = [_fold(n) for n in names]
        bare = list(dict.fromkeys(b for b in map(_without_port, folded) if b is not None))
        entries = self._matching(folded, files)
        fallback = self._matching(bare, files) if bare else []
        unused_ca = self._first_reports([e for e in (*entries, *fallback) if e.marker == "@cert-authority"])

        def result(
            verdict: Verdict, entry: _Entry | None, among: list[str], without_port: bool = False
        ) -> HostKeyCheck:
            name = next((n for n in among if entry is not None and entry.matches(n)), folded[0] if folded else "")
            location = entry.location if entry is not None else None
            return HostKeyCheck(verdict, name, offered.keytype, offered.fingerprint, location, without_port, unused_ca)

        for entry in (*entries, *fallback):
            if entry.marker == "@revoked" and entry.key.plain == offered.plain:
                return result(Verdict.REVOKED, entry, [*folded, *bare])
        plain = [e for e in entries if e.marker is None]
        for entry in plain:
            if entry.key.blob == offered.blob:
                return result(Verdict.KNOWN, entry, folded)
        if plain:
            # OpenSSH names the last other key; the last one of the offered type is the one that changed.
            same_type = [e for e in plain if e.key.keytype == offered.keytype]
            return result(Verdict.CHANGED, (same_type or plain)[-1], folded)
        for entry in fallback:
            if entry.marker is None and entry.key.blob == offered.blob:
                return result(Verdict.KNOWN, entry, bare, without_port=True)
        return result(Verdict.UNKNOWN, None, folded)

    def _first_reports(self, lines: list[_Entry]) -> tuple[KeyLine, ...]:
        if not lines:
            return ()
        with self._ca_lock:
            # A line can match both [host]:port and the bare name: report it once all the same.
            new = {id(e): e for e in lines if id(e) not in self._ca_reported}
            self._ca_reported.update(new)
        return tuple(e.location for e in new.values())

    def check(self, names: Sequence[str], keytype: str, blob: bytes, files: Collection[str] | None = None) -> Verdict:
        """`judge`'s verdict alone."""
        return self.judge(names, keytype, blob, files).verdict

    def key_types_for(self, names: Sequence[str], files: Collection[str] | None = None) -> list[str]:
        """Key types of the plain lines for exactly these names, in file order, without repeats.

        Like OpenSSH's order_hostkeyalgs, no bare-name fallback: that is only for judging a key. RSA is
        `ssh-rsa`; callers choosing host key algorithms offer rsa-sha2-512/256 for it.
        """
        entries = self._matching([_fold(n) for n in names], files)
        return list(dict.fromkeys(e.key.keytype for e in entries if e.marker is None))

    def add(
        self, path: str | Path, name: str, keytype: str, blob: bytes, files: Collection[str] | None = None
    ) -> bool:
        """Append `name keytype key` to `path` unless the name already has a key (then False, no write).

        `files`, when given, are the only files whose keys count for that (the host's own, as in `judge`).

        Raises ValueError for a name that is not a single literal host (whitespace, commas, wildcards),
        or a key OpenSSH could not read back.
        """
        path = Path(path)
        # OpenSSH lowercases host names before storing or hashing them; do the same so the line
        # still matches after `ssh-keygen -H`.
        name = name.translate(_ASCII_LOWER)
        if not name or any(c.isspace() or not c.isprintable() for c in name):
            raise ValueError(f"cannot add {name!r} to known_hosts: not a single literal host name")
        key = parse_blob(blob)
        if key.is_cert:
            raise ValueError(f"cannot add {name!r} to known_hosts: a certificate is not a host key")
        text = f"{name} {key.keytype} {base64.b64encode(key.blob).decode('ascii')}"
        entry = _parse_line(text, str(path), 0)
        folded = _fold(name)
        if entry is None or entry.marker or entry.hashed or entry.negative or entry.positive != (folded,):
            raise ValueError(f"cannot add {name!r} to known_hosts: not a single literal host name")
        if _is_wild(name):
            raise ValueError(f"cannot add {name!r} to known_hosts: wildcards are not host names")
        line = (text + "\n").encode("utf-8")
        with _ADD_LOCK:
            if any(e.marker is None for e in self._matching([folded], files)):
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
                already = [e for e in on_disk._matching([folded], None) if e.marker is None]
                if already:
                    for found in already:
                        self._remember(found)  # so a re-check in this run sees what is on disk
                    return False
                lineno = data.count(b"\n") + 1
                if data and not data.endswith(b"\n"):
                    line = b"\n" + line  # or our line would be glued onto the last one
                    lineno += 1
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)  # also releases the flock
            recorded = _parse_line(text, str(path), lineno)
            assert recorded is not None
            self._remember(recorded)
        return True
