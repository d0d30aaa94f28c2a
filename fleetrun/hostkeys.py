"""Read, match and append OpenSSH known_hosts files, judging keys as ssh(1) does (hostfile.c, sshconnect.c)."""

from __future__ import annotations

import base64
import fcntl
import functools
import hashlib
import hmac
import os
import pwd
import re
import shlex
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from fleetrun.hostfile import ASCII_LOWER, Entry, KeyLine, fold, is_wild, parse_line, show
from fleetrun.keyblob import PublicKey, fingerprint, parse_blob

if TYPE_CHECKING:
    from fleetrun.hostcert import Certificate
    from fleetrun.models import Host

__all__ = ["HostKeyCheck", "KeyLine", "KnownHosts", "Verdict", "fingerprint", "host_key_files", "host_key_names",
           "known_hosts_name"]

# flock() already serialises separate opens, even within one process; this lock also makes the
# "re-check, append, remember" sequence atomic for a KnownHosts shared by worker threads.
_ADD_LOCK = threading.Lock()

_WITH_PORT = re.compile(r"\[(.*)\]:([0-9]+)", re.DOTALL)


class Verdict(Enum):
    """What known_hosts says about the key a server offered."""

    KNOWN = "known"
    UNKNOWN = "unknown"
    CHANGED = "changed"
    REVOKED = "revoked"


def known_hosts_name(address: str, port: int) -> str:
    """The name OpenSSH stores for a host: bare on port 22, `[addr]:port` otherwise."""
    return address if port == 22 else f"[{address}]:{port}"


def host_key_names(host: Host) -> list[str]:
    """The names a host's key is looked up and recorded under: its HostKeyAlias alone if it has one (as ssh,
    without a port), else `[HostName]:port` (bare on port 22) and, if it differs, the same for its name."""
    if host.host_key_alias:
        return [host.host_key_alias]
    names = [known_hosts_name(host.address, host.port)]
    if host.name != host.address:
        names.append(known_hosts_name(host.name, host.port))
    return names


def host_key_files(host: Host) -> tuple[tuple[str, ...], str | None]:
    """(the known_hosts files read for a host, in ssh's order; the file accept-new appends to, if any).

    The inventory's `known_hosts` files come first and take new keys, then ssh_config's UserKnownHostsFile
    (the first takes new keys when the inventory names none), then GlobalKnownHostsFile, read only. A host
    never resolved through ssh_config gets ssh's defaults.
    """
    user = host.user_known_hosts
    if user is None:
        user = (str(default_known_hosts()), str(default_known_hosts().with_name("known_hosts2")))
    system = host.global_known_hosts if host.user_known_hosts is not None else DEFAULT_GLOBAL_KNOWN_HOSTS
    read = tuple(dict.fromkeys((*host.known_hosts, *user, *system)))
    writable = host.known_hosts[0] if host.known_hosts else (user[0] if user else None)
    return read, writable


DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")


def bare_fallback(host: Host) -> bool:
    """Whether a host's key may also be found under its bare name when `[host]:port` has none: not under a
    HostKeyAlias, which ssh looks up as written and never without its port (sshconnect.c check_host_key)."""
    return not host.host_key_alias


def _bare_names(folded: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(b for b in map(_without_port, folded) if b is not None))


def _without_port(name: str) -> str | None:
    """The bare host OpenSSH falls back to for `[host]:port` on another port than 22 ("w/out port")."""
    found = _WITH_PORT.fullmatch(name)
    return found.group(1) if found and int(found.group(2)) != 22 else None


@dataclass(frozen=True)
class HostKeyCheck:
    """What known_hosts says about one offered key, and the line that decided it."""

    verdict: Verdict
    name: str  # the lookup name the deciding line matched (the first lookup name when none did)
    keytype: str  # of the offered key
    fingerprint: str  # of the offered key
    line: KeyLine | None = None  # matching (known), conflicting (changed), revoking (revoked), or the CA line
    without_port: bool = False  # known through the bare host name, as ssh falls back to for [host]:port
    bad_lines: tuple[str, ...] = ()  # lines for this host whose key cannot be read, each reported once per run
    # The server offered a certificate: why it was not accepted (then the verdict is its plain key's), or None.
    certificate_refused: str | None = None
    by_certificate: bool = False  # known because a @cert-authority line signed the host's certificate

    @property
    def offered(self) -> str:
        return f"{self.keytype} {self.fingerprint}"

    def explain(self, user_file: Path | None = None) -> str:
        """The one line a refused host shows: what was offered, what is recorded where, what to do.

        `user_file` is the known_hosts that `ssh-keygen -R` edits without `-f` (see `default_known_hosts`).
        """
        name, line = show(self.name), self.line
        certificate = f"; its host certificate was refused: {self.certificate_refused}" \
            if self.certificate_refused else ""
        if self.verdict is Verdict.REVOKED and line is not None:
            what = "signed by a CA that" if line.marker == "@revoked" and self.by_certificate else "which"
            return (f"REVOKED host key for {name}: it offered {self.offered}, {what} {line.where} marks @revoked; "
                    "refusing (a revoked key may be in an attacker's hands)")
        if self.verdict is Verdict.CHANGED and line is not None:
            recorded = line.fingerprint if line.keytype == self.keytype else f"{line.keytype} {line.fingerprint}"
            return (f"HOST KEY CHANGED for {name}: it offered {self.offered}, but {line.where} records {recorded} "
                    f"(possible man-in-the-middle attack){certificate}. If the host was rebuilt, verify its new "
                    "key, then " + _removal_hint(self.name, line, user_file))
        if self.certificate_refused:
            return (f"unknown host key for {name} ({self.offered}){certificate}: fix the host's certificate or "
                    "the @cert-authority line, or verify the key's fingerprint and add it to known_hosts")
        return (f"unknown host key for {name} ({self.offered}): verify the fingerprint, then add it "
                "to known_hosts or run once with --host-key-checking accept-new")


def default_known_hosts() -> Path:
    """The file `ssh-keygen -R` edits without `-f`: ~/.ssh/known_hosts of the passwd home, not of $HOME."""
    return _default_known_hosts(os.getuid(), os.environ.get("HOME"))


@functools.lru_cache(maxsize=4)
def _default_known_hosts(uid: int, home_variable: str | None) -> Path:
    # Asked for every host of a run (twice): the passwd lookup once per user is enough. $HOME is part of the
    # key only because it is the fallback for a user without a passwd entry.
    try:
        home = pwd.getpwuid(uid).pw_dir
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
    command = ["ssh-keygen", "-R", show(name)]
    if not _same_file(line.path, user_file or default_known_hosts()):
        command += ["-f", line.path]
    return "run: " + shlex.join(command)


class KnownHosts:
    """The merged contents of known_hosts files, indexed for fast lookup by host name.

    `judge` may run in many threads while another thread calls `add`: entries are only ever appended.
    """

    def __init__(self) -> None:
        self.warnings: list[str] = []  # bad lines and files: at load, and bad keys once a lookup meets them
        self._entries: list[Entry] = []  # every usable line in load order, whatever its marker
        self._index: dict[str, list[int]] = {}  # literal name -> positions in _entries
        # Hashed and wildcard lines have no key to index them by; plain ones apart from marked ones, because
        # a bare-name lookup often needs only @revoked and @cert-authority lines.
        self._scan: dict[bool, list[int]] = {False: [], True: []}  # marked? -> positions
        self._scan_memo: dict[tuple[bool, str], tuple[int, tuple[int, ...]]] = {}  # -> (covered, hits)
        self._reported: set[int] = set()  # entries whose bad key was reported
        self._report_lock = threading.Lock()

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
                entry = parse_line(line, label, lineno)
            except ValueError as exc:
                self.warnings.append(f"{label}:{lineno}: {exc}; line skipped")
                continue
            if entry is not None:
                self._remember(entry)

    def _remember(self, entry: Entry) -> None:
        position = len(self._entries)
        self._entries.append(entry)  # before indexing, so a concurrent reader never sees a dangling index
        if entry.hashed is None and entry.wildcard is None:
            for pattern in entry.positive:
                self._index.setdefault(pattern, []).append(position)
        else:
            self._scan[entry.marker is not None].append(position)

    def _lookup(
        self, names: Sequence[str], files: Collection[str] | None, *, plain: bool = True
    ) -> list[Entry]:
        """Lines (marked ones always, plain ones if `plain`) matching any of the folded names, in load order,
        whether their key can be read or not."""
        found: set[int] = set()
        for name in names:
            found.update(p for p in self._index.get(name, ())
                         if (plain or self._entries[p].marker is not None) and self._entries[p].matches(name))
            for marked in (True, False) if plain else (True,):
                found.update(self._scan_hits(marked, name))
        entries = (self._entries[position] for position in sorted(found))
        return [e for e in entries if files is None or e.path in files]

    def _scan_hits(self, marked: bool, name: str) -> tuple[int, ...]:
        # Unindexable lines cost a regex or an HMAC each, and a host is looked up more than once
        # (key_types_for, then judge), so remember the hits per name. Entries are only appended,
        # so a memo stays right for the prefix it covered; a racing thread at worst redoes work.
        scan = self._scan[marked]
        covered, hits = self._scan_memo.get((marked, name), (0, ()))
        end = len(scan)
        if covered < end:
            hits += tuple(p for p in scan[covered:end] if self._entries[p].matches(name))
            self._scan_memo[(marked, name)] = (end, hits)
        return hits

    def _matching(self, names: Sequence[str], files: Collection[str] | None, *, plain: bool = True) -> list[Entry]:
        """`_lookup` without the lines whose key cannot be read (OpenSSH skips them)."""
        return [e for e in self._lookup(names, files, plain=plain) if e.load_key()]

    def _first_reports(self, entries: Sequence[Entry]) -> list[Entry]:
        """The entries not reported yet, now marked reported (a line may match several names: once)."""
        with self._report_lock:
            new = {id(e): e for e in entries if id(e) not in self._reported}
            self._reported.update(new)
        return list(new.values())

    def lines_for(self, names: Sequence[str], files: Collection[str] | None = None) -> list[KeyLine]:
        """Every usable line matching any of the names, as `ssh-keygen -l -F NAME` lists them."""
        entries = self._lookup([fold(n) for n in names], files)
        self._report_bad(entries)
        return [e.location for e in entries if e.load_key()]

    def _report_bad(self, entries: Sequence[Entry]) -> tuple[str, ...]:
        bad = self._first_reports([e for e in entries if not e.load_key()])
        errors = tuple(e.error for e in bad if e.error is not None)
        self.warnings.extend(errors)
        return errors

    def judge(
        self, names: Sequence[str], keytype: str, blob: bytes, files: Collection[str] | None = None,
        *, bare_fallback: bool = True,
    ) -> HostKeyCheck:
        """Judge the key a server offered under its lookup names (see `known_hosts_name`), as ssh does.

        Only lines from `files` count, when given (a host's own known_hosts files). OpenSSH's rules: a
        matching plain line makes the key known; any other plain line for the name makes it changed; with
        none at all, `[host]:port` falls back to the bare host, where only a match counts. One deliberate
        difference: a key `@revoked` under the bare name is refused even when `[host]:port` vouches for it.
        Without `bare_fallback` (a HostKeyAlias, which ssh never looks up without its port) the names are
        all there is.
        """
        try:
            offered = parse_blob(blob)
        except ValueError:
            offered = PublicKey(keytype, blob, blob)  # cannot equal any line's key, which all parsed
        folded = [fold(n) for n in names]
        bare = _bare_names(folded) if bare_fallback else []
        looked_up = self._lookup(folded, files)
        entries = [e for e in looked_up if e.load_key()]
        plain = [e for e in entries if e.marker is None]
        # The bare name's plain lines only count without any for [host]:port; its @revoked lines always do.
        looked_up_bare = self._lookup(bare, files, plain=not plain) if bare else []
        fallback = [e for e in looked_up_bare if e.load_key()]
        bad_lines = self._report_bad([*looked_up, *looked_up_bare])

        def result(
            verdict: Verdict, entry: Entry | None, among: list[str], without_port: bool = False
        ) -> HostKeyCheck:
            name = next((n for n in among if entry is not None and entry.matches(n)), folded[0] if folded else "")
            location = entry.location if entry is not None else None
            return HostKeyCheck(verdict, name, offered.keytype, offered.fingerprint, location, without_port,
                                bad_lines)

        for entry in (*entries, *fallback):
            if entry.marker == "@revoked" and entry.key.plain == offered.plain:
                return result(Verdict.REVOKED, entry, [*folded, *bare])
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

    def check(self, names: Sequence[str], keytype: str, blob: bytes, files: Collection[str] | None = None,
              *, bare_fallback: bool = True) -> Verdict:
        """`judge`'s verdict alone."""
        return self.judge(names, keytype, blob, files, bare_fallback=bare_fallback).verdict

    def judge_certificate(
        self, names: Sequence[str], cert: Certificate, principal: str, files: Collection[str] | None = None,
        *, now: float | None = None, bare_fallback: bool = True,
    ) -> HostKeyCheck:
        """Judge a host certificate as ssh's check_host_key does, its CA signature already verified.

        A `@cert-authority` line for the host's name whose key signed the certificate makes it known, if the
        certificate is valid for `principal` (the HostName, or HostKeyAlias) now. With no CA line at all for
        `[host]:port`, the bare host's CA lines are tried, as ssh retries without the port. Otherwise, or when
        the certificate is invalid, the verdict is the plain key's (ssh's "downgrade"), with the reason
        attached. A certificate whose key or CA is `@revoked` under any of the names is refused.
        """
        folded = [fold(n) for n in names]
        bare = _bare_names(folded) if bare_fallback else []
        offered = cert.key
        plain_type = parse_blob(offered.plain).keytype
        looked_up = self._lookup([*folded, *bare], files, plain=False)
        entries = [e for e in looked_up if e.load_key()]
        bad_lines = self._report_bad(looked_up)
        for entry in entries:
            if entry.marker == "@revoked" and entry.key.plain in (offered.plain, cert.signature_key):
                name = next((n for n in (*folded, *bare) if entry.matches(n)), folded[0])
                return HostKeyCheck(Verdict.REVOKED, name, offered.keytype, offered.fingerprint, entry.location,
                                    bad_lines=bad_lines, by_certificate=entry.key.plain == cert.signature_key)
        refused = None
        for among in (folded, bare):
            authorities = [e for e in entries if e.marker == "@cert-authority" and any(e.matches(n) for n in among)]
            if not authorities:
                continue
            signer = next((e for e in authorities if e.key.blob == cert.signature_key), None)
            if signer is None:
                lines = ", ".join(e.location.where for e in authorities)
                refused = (f"its CA ({parse_blob(cert.signature_key).keytype} {cert.signer_fingerprint}) is not "
                           f"the @cert-authority for this host ({lines})")
                break
            problem = cert.check_host(principal, now)
            if problem is None:
                name = next(n for n in among if signer.matches(n))
                return HostKeyCheck(Verdict.KNOWN, name, offered.keytype, offered.fingerprint, signer.location,
                                    without_port=among is bare, bad_lines=bad_lines, by_certificate=True)
            refused = f"{problem} ({cert.describe()}; CA at {signer.location.where}, name {principal!r})"
            break
        plain = self.judge(names, plain_type, offered.plain, files, bare_fallback=bare_fallback)
        return replace(plain, certificate_refused=refused, bad_lines=(*bad_lines, *plain.bad_lines))

    def has_authority_for(self, names: Sequence[str], files: Collection[str] | None = None) -> bool:
        """True if a @cert-authority line names any of these names (ssh then asks for certificates first)."""
        entries = self._matching([fold(n) for n in names], files, plain=False)
        return any(e.marker == "@cert-authority" for e in entries)

    def key_types_for(self, names: Sequence[str], files: Collection[str] | None = None) -> list[str]:
        """Key types of the plain lines for exactly these names, in file order, without repeats, that ssh
        counts as on record: a type whose first plain line holds a key `@revoked` for the names is not.

        As OpenSSH's order_hostkeyalgs (check_hostkeys_by_key_or_type then check_key_not_revoked): only the
        first line of each type counts, and no bare-name fallback (that is only for judging a key). Asking
        first for a type whose key ssh would not ask first for gets another key, and another verdict. RSA
        is `ssh-rsa`; callers choosing host key algorithms offer rsa-sha2-512/256 for it.
        """
        entries = self._matching([fold(n) for n in names], files)
        revoked = {e.key.plain for e in entries if e.marker == "@revoked"}
        first: dict[str, Entry] = {}
        for entry in entries:
            if entry.marker is None:
                first.setdefault(entry.key.keytype, entry)
        return [keytype for keytype, entry in first.items() if entry.key.plain not in revoked]

    def add(
        self, path: str | Path, name: str, keytype: str, blob: bytes, files: Collection[str] | None = None,
        *, hashed: bool = False,
    ) -> bool:
        """Append `name keytype key` to `path` unless the name already has a key (then False, no write).

        `files`, when given, are the only files whose keys count for that (the host's own, as in `judge`).
        `hashed` writes the name as `|1|salt|hash` (HashKnownHosts), as ssh does.

        Raises ValueError for a name that is not a single literal host (whitespace, commas, wildcards),
        or a key OpenSSH could not read back; OSError when the file cannot be written (ssh then warns and
        connects all the same). Like ssh, it creates no directory but a missing ~/.ssh.
        """
        path = Path(path)
        # OpenSSH lowercases host names before storing or hashing them; do the same so the line
        # still matches after `ssh-keygen -H`.
        name = name.translate(ASCII_LOWER)
        if not name or any(c.isspace() or not c.isprintable() for c in name):
            raise ValueError(f"cannot add {name!r} to known_hosts: not a single literal host name")
        key = parse_blob(blob)
        if key.is_cert:
            raise ValueError(f"cannot add {name!r} to known_hosts: a certificate is not a host key")
        text = f"{name} {key.keytype} {base64.b64encode(key.blob).decode('ascii')}"
        entry = parse_line(text, str(path), 0)
        folded = fold(name)
        if entry is None or entry.marker or entry.hashed or entry.negative or entry.positive != (folded,):
            raise ValueError(f"cannot add {name!r} to known_hosts: not a single literal host name")
        if is_wild(name):
            raise ValueError(f"cannot add {name!r} to known_hosts: wildcards are not host names")
        if hashed:
            text = f"{_hash_name(name)} {key.keytype} {base64.b64encode(key.blob).decode('ascii')}"
        line = (text + "\n").encode("utf-8")
        with _ADD_LOCK:
            if any(e.marker is None for e in self._matching([folded], files)):
                return False
            _create_user_ssh_dir(path)
            # O_APPEND, never a rewrite: a crash mid-write cannot lose the lines already there. Mode 0666 less
            # the umask, as ssh's fopen(…, "a") creates it (0644 usually): known_hosts holds no secret.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
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
            recorded = parse_line(text, str(path), lineno)
            assert recorded is not None and recorded.load_key()
            self._remember(recorded)
        return True


def _create_user_ssh_dir(path: Path) -> None:
    """Create ~/.ssh (0700) for a file under it, and no other directory: ssh's hostfile_create_user_ssh_dir.

    A UserKnownHostsFile in a directory that does not exist is not written by ssh, so not by us either.
    """
    ssh_dir = str(default_known_hosts().parent)
    # ssh compares the strings (a prefix), and makes ~/.ssh alone, never its parents.
    if str(path).startswith(ssh_dir) and not os.path.lexists(ssh_dir):
        try:
            os.mkdir(ssh_dir, 0o700)
        except OSError:
            pass  # as ssh: the open that follows fails and says why


def _hash_name(name: str) -> str:
    """`|1|salt|hash` for a host name, as ssh-keygen -H and HashKnownHosts write it (HMAC-SHA1, 20-byte salt)."""
    salt = os.urandom(20)
    digest = hmac.digest(salt, name.encode("utf-8"), hashlib.sha1)
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
