"""Which files to read (like `ssh` or `ssh -F`), and resolving one destination with command-line values."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from fleetrun.errors import UsageError
from fleetrun.sshconfig.evaluate import Applied, Evaluator, ExecRunner, Listed, Lookup, run_exec
from fleetrun.sshconfig.files import read_file, read_required
from fleetrun.sshconfig.model import ConfigFile, Origin
from fleetrun.sshconfig.settings import Settings, settle
from fleetrun.sshconfig.tokens import local_info

SYSTEM_CONFIG = "/etc/ssh/ssh_config"


@dataclass(frozen=True)
class SshConfigSource:
    """Where the configuration comes from: ssh's two default files, one file (`ssh -F FILE`), or none."""

    path: str | None = None  # None: ~/.ssh/config (of the passwd home) then /etc/ssh/ssh_config
    disabled: bool = False

    @classmethod
    def from_option(cls, value: str | None) -> SshConfigSource:
        """--ssh-config: unset means the defaults, `none` turns it off, anything else is the one file."""
        if not value:  # unset, or FLEETRUN_SSH_CONFIG= (empty)
            return cls()
        if value.lower() == "none":
            return cls(disabled=True)
        return cls(path=os.path.expanduser(value))

    def describe(self) -> str:
        if self.disabled:
            return "none"
        return self.path or f"~/.ssh/config, {SYSTEM_CONFIG}"


@dataclass(frozen=True)
class Preset:
    """Values given before the config files are read, like ssh's -l, -p, -i and -o: they win over the files.

    `proxy_jump` () and `proxy_command` "none" mean direct, whatever the files say; either one set blocks
    both ProxyJump and ProxyCommand from the files.
    """

    user: str | None = None
    port: int | None = None
    identity_files: tuple[str, ...] = ()
    connect_timeout: float | None = None
    strict_host_key_checking: str | None = None  # OpenSSH's values: yes, accept-new, off, ask
    proxy_jump: tuple[str, ...] | None = None
    proxy_command: str | None = None
    origins: Mapping[str, Origin] = field(default_factory=dict)  # keyword -> where the value came from

    def lookup(self, host_arg: str) -> Lookup:
        state = Lookup(host_arg, host_arg)

        def origin(keyword: str) -> Origin:
            return self.origins.get(keyword, _COMMAND_LINE)

        simple = {"user": self.user, "port": self.port, "connecttimeout": self.connect_timeout,
                  "stricthostkeychecking": self.strict_host_key_checking}
        for keyword, value in simple.items():
            if value is not None:
                state.values[keyword] = Applied(value, origin(keyword))
        if self.proxy_jump is not None or self.proxy_command is not None:
            where = origin("proxyjump" if self.proxy_jump is not None else "proxycommand")
            state.values["proxyjump"] = Applied(self.proxy_jump or (), where)
            state.values["proxycommand"] = Applied(self.proxy_command or "none", where)
        state.identity_files.extend(Listed(path, True, origin("identityfile")) for path in self.identity_files)
        return state


class SshConfig:
    """The files of one run, read and checked once; `resolve` is cheap enough for every host of a fleet."""

    def __init__(self, files: tuple[ConfigFile, ...], source: SshConfigSource,
                 exec_runner: ExecRunner = run_exec) -> None:
        self.files = files
        self.source = source
        self._evaluator = Evaluator(files, exec_runner)

    def resolve(self, host_arg: str, preset: Preset | None = None) -> Settings:
        """What `ssh host_arg` (with the preset's options) would use; raises ConfigError (exit 2)."""
        preset = preset or Preset()
        _check_command_line(host_arg, preset)
        return settle(self._evaluator.lookup(host_arg, preset.lookup(host_arg)))


_COMMAND_LINE = Origin("the command line")
_HOST_BANNED = "'`\"$\\;&<>|(){},"
_USER_BANNED = "'`\";&<>|(){}"
# iscntrl() and isspace() in the C locale: \x00-\x1f and \x7f; space, \t \n \v \f \r (all but space are controls)
_BAD_HOST = re.compile("[\x00-\x20\x7f" + re.escape(_HOST_BANNED) + "]")
_BAD_USER = re.compile("[\x00-\x1f\x7f" + re.escape(_USER_BANNED) + "]|[ \t\n\v\f\r]-")


def _check_command_line(host_arg: str, preset: Preset) -> None:
    """ssh_valid_hostname() and ssh_valid_ruser() as Debian's 9.2p1 has them (security backports from OpenSSH
    9.6 and 10.x): a destination or a -l user with shell metacharacters or control characters is refused,
    since %h and %r reach ProxyCommand's shell unquoted. fleetrun's inventory user counts as -l."""
    if host_arg.startswith("-") or _BAD_HOST.search(host_arg):
        raise UsageError(f"host {host_arg!r}: ssh refuses this destination ('hostname contains invalid "
                         f"characters': a leading '-', spaces, control characters or one of {_HOST_BANNED})")
    user = preset.user
    if user is None:
        return
    if user.startswith("-") or user.endswith("\\") or _BAD_USER.search(user):
        raise UsageError(f"user {user!r} for {host_arg}: ssh refuses this remote user name ('remote username "
                         "contains invalid characters': a leading '-', ' -', a trailing '\\', control characters "
                         f"or one of {_USER_BANNED})")


def load(source: SshConfigSource, exec_runner: ExecRunner = run_exec) -> SshConfig:
    """Read the files `source` names; raises ConfigError for anything ssh would refuse at load time."""
    if source.disabled:
        files: tuple[ConfigFile, ...] = ()
    elif source.path is not None:
        files = (read_required(source.path),)
    else:
        # ssh finds ~/.ssh/config through the passwd entry, not $HOME (verified with `HOME=/tmp ssh -G`).
        user = read_file(os.path.join(local_info().home, ".ssh", "config"), user=True, check_permissions=True)
        system = read_file(SYSTEM_CONFIG, user=False, check_permissions=False)
        files = tuple(config for config in (user, system) if config is not None)
    return SshConfig(files, source, exec_runner)
