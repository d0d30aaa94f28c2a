"""Read ssh_config files once per run: split and check every line, follow Include, refuse what ssh refuses."""

from __future__ import annotations

import glob
import grp
import os
import pwd
import stat

from fleetrun.sshconfig.checks import CheckError, check_arguments
from fleetrun.sshconfig.keywords import ALIASES, STRUCTURE, BadValue, is_keyword, parse_value
from fleetrun.sshconfig.lexer import LexError, argv_split, split_line, strdelim
from fleetrun.sshconfig.localssh import accepts_line
from fleetrun.sshconfig.model import ConfigError, ConfigFile, Criterion, Line, display_path

MAX_DEPTH = 16  # readconf.c READCONF_MAX_DEPTH
SYSTEM_DIR = "/etc/ssh"
_ARGUMENT_CRITERIA = ("host", "originalhost", "user", "localuser", "exec")
_UNSUPPORTED_CRITERIA = ("localnetwork", "tagged", "address", "localaddress", "localport", "rdomain", "group")


def read_file(path: str, *, user: bool, check_permissions: bool) -> ConfigFile | None:
    """One top-level file; None if it does not exist or cannot be opened (ssh skips those silently)."""
    return _Reader().read(os.path.abspath(path), user=user, check_permissions=check_permissions, depth=0,
                          missing_ok=True)


def read_required(path: str) -> ConfigFile:
    """The file given with --ssh-config (like `ssh -F`): it must exist and be readable."""
    config = _Reader().read(os.path.abspath(path), user=True, check_permissions=False, depth=0, missing_ok=False)
    assert config is not None
    return config


def _check_permissions(path: str, info: os.stat_result) -> None:
    # readconf.c SSHCONF_CHECKPERM: owned by root or us, and not writable by others.
    if not _secure_permissions(info, os.getuid()):
        raise ConfigError(path, None, "bad owner or permissions: ssh refuses a config file that others can "
                          "write; fix it with chmod go-w (and chown to you)")


def _secure_permissions(info: os.stat_result, uid: int) -> bool:
    """Debian's secure_permissions() (user-group-modes.patch): group write is allowed when the group holds
    only the user, as the per-user groups and umask 002 of a Debian system give."""
    if info.st_uid not in (0, uid) or info.st_mode & 0o002:
        return False
    if not info.st_mode & 0o020:
        return True
    try:
        group = grp.getgrgid(info.st_gid)
        owner = pwd.getpwuid(info.st_uid)
    except KeyError:
        return False
    # The patch's own tests, in its order: every account whose primary group it is must be us (not the
    # file's owner), and a supplementary member list must be exactly the file's owner.
    members = 0
    for entry in pwd.getpwall():
        if entry.pw_gid == group.gr_gid:
            members += 1
            if entry.pw_uid != uid:
                return False
    if group.gr_mem:
        members += 1
        if group.gr_mem != [owner.pw_name]:
            return False
    return members > 0  # a group without members (as setgid programs use) is not the user's own


class _Reader:
    """Reads one file tree; `stack` holds the files being read, to name both ends of an Include loop."""

    def __init__(self) -> None:
        self.stack: list[tuple[str, int]] = []  # (file, line of the Include being followed)

    def read(self, path: str, *, user: bool, check_permissions: bool, depth: int,
             missing_ok: bool) -> ConfigFile | None:
        if depth > MAX_DEPTH:
            raise ConfigError(path, None, f"Include nested more than {MAX_DEPTH} levels deep; ssh refuses this too")
        try:
            with open(path, "rb") as handle:
                info = os.fstat(handle.fileno())
                if check_permissions:
                    _check_permissions(path, info)
                data = b"" if stat.S_ISDIR(info.st_mode) else handle.read()
        except IsADirectoryError:
            data = b""  # fopen() of a directory succeeds and reads nothing, so ssh treats it as empty
        except FileNotFoundError:
            if missing_ok:
                return None
            raise ConfigError(path, None, "cannot open the ssh config file: no such file") from None
        except OSError as error:
            if missing_ok and depth == 0:
                return None  # ssh ignores a ~/.ssh/config or /etc/ssh/ssh_config it cannot open
            raise ConfigError(path, None, f"cannot open the ssh config file: {error.strerror}") from None
        text = data.decode("utf-8", errors="surrogateescape")
        lines: list[Line] = []
        self.stack.append((path, 0))
        try:
            for number, raw in enumerate(text.split("\n"), 1):
                # readconf.c handles each line as a C string: a NUL byte ends it.
                line = self.line(path, number, raw.split("\0", 1)[0], user, depth)
                if line is not None:
                    lines.append(line)
        finally:
            self.stack.pop()
        return ConfigFile(path, user, tuple(lines))

    def line(self, path: str, number: int, raw: str, user: bool, depth: int) -> Line | None:
        split = split_line(raw)
        if split is None:
            return None
        written, rest = split
        word = written.lower()
        if not rest:
            raise ConfigError(path, number, f"no argument after keyword {word!r}")
        try:
            args = argv_split(rest)
        except LexError as error:
            raise ConfigError(path, number, str(error)) from None
        if not is_keyword(word):
            if accepts_line(written, rest):  # an option of a newer OpenSSH, which this machine's ssh is
                return Line(path, number, word, tuple(args), rest, newer=True)
            return Line(path, number, word, tuple(args), rest, known=False)
        keyword = ALIASES.get(word, word)
        if keyword == "host":
            return Line(path, number, keyword, tuple(args), rest)  # an empty pattern is refused when reached
        if keyword == "match":
            return Line(path, number, keyword, tuple(args), rest, criteria=_criteria(path, number, rest))
        if keyword == "include":
            self.stack[-1] = (path, number)
            return Line(path, number, keyword, tuple(args), rest, includes=self.includes(path, number, args, user,
                                                                                        depth))
        assert keyword not in STRUCTURE
        try:
            value = parse_value(keyword, args, rest)
            check_arguments(keyword, args)  # options fleetrun does not apply are still checked, as ssh does
        except (BadValue, CheckError) as error:
            raise ConfigError(path, number, f"{error}; ssh refuses this line too") from None
        return Line(path, number, keyword, tuple(args), rest, value=value)

    def includes(self, path: str, number: int, args: list[str], user: bool, depth: int) -> tuple[ConfigFile, ...]:
        files: list[ConfigFile] = []
        for arg in args:
            if arg == "":
                raise ConfigError(path, number, "Include: empty argument")
            if arg.startswith("~") and not user:
                raise ConfigError(path, number, f"Include: bad include path {arg!r} (~ is only allowed in user "
                                  "configuration files)")
            if not arg.startswith(("/", "~")):
                arg = ("~/.ssh/" if user else SYSTEM_DIR + "/") + arg
            # glob(3) with GLOB_TILDE expands ~ from $HOME (the passwd home only when HOME is unset): unlike
            # ~/.ssh/config itself, which ssh finds through the passwd entry.
            pattern = os.path.expanduser(arg)
            for found in sorted(glob.glob(pattern)):
                found = os.path.abspath(found)
                real = os.path.realpath(found)
                for index, (earlier, _) in enumerate(self.stack):
                    if os.path.realpath(earlier) == real:
                        chain = " -> ".join(f"{display_path(f)}:{n}" for f, n in self.stack[index:])
                        raise ConfigError(path, number, f"Include loop: {chain} -> {display_path(found)} again; "
                                          "remove one of these Include lines")
                included = self.read(found, user=user, check_permissions=True, depth=depth + 1, missing_ok=True)
                if included is not None:
                    files.append(included)
        return tuple(files)


def _criteria(path: str, number: int, rest: str) -> tuple[Criterion, ...]:
    """A Match line's criteria, checked as readconf.c match_cfg_line() does (strdelim, not argv_split)."""
    criteria: list[Criterion] = []
    text: str | None = rest
    attributes = 0
    while True:
        word, text = strdelim(text)
        if word is None or word == "":
            break
        if word.startswith("#"):
            break
        negate = word.startswith("!")
        name = (word[1:] if negate else word).lower()
        if name == "all":
            following, _ = strdelim(text)
            if attributes > 1 or (following is not None and following != "" and not following.startswith("#")):
                raise ConfigError(path, number, f"Match: {word!r} cannot be combined with other Match "
                                  "attributes; ssh refuses this line too")
            criteria.append(Criterion("all", negate))
            return tuple(criteria)
        attributes += 1
        if name in ("canonical", "final"):
            criteria.append(Criterion(name, negate))
            continue
        if name not in _ARGUMENT_CRITERIA:
            if name in _UNSUPPORTED_CRITERIA:
                raise ConfigError(path, number, f"Match: unsupported criterion {name!r} (OpenSSH 9.2 refuses it "
                                  "too: 'Bad Match condition'); remove it or use Match exec")
            raise ConfigError(path, number, f"Match: unknown criterion {name!r} (known: all, canonical, final, "
                              "host, originalhost, user, localuser, exec); ssh refuses this line too")
        arg, text = strdelim(text)
        if arg is None or arg == "" or arg.startswith("#"):
            raise ConfigError(path, number, f"Match: missing argument for {name!r}; ssh refuses this line too")
        criteria.append(Criterion(name, negate, arg))
    if attributes == 0:
        raise ConfigError(path, number, "Match: one or more criteria required; ssh refuses this line too")
    return tuple(criteria)
