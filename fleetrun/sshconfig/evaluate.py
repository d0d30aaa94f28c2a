"""Evaluate parsed ssh_config for one destination: Host/Match activity, first value wins, the final pass."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fleetrun.environ import started_environment
from fleetrun.sshconfig.keywords import ACCUMULATE, IGNORED, UNSUPPORTED
from fleetrun.sshconfig.model import ConfigError, ConfigFile, Line, Origin
from fleetrun.sshconfig.patterns import ascii_lower, match_hostname, match_pattern, match_pattern_list
from fleetrun.sshconfig.tokens import (
    TokenError,
    connection_hash,
    local_info,
    numeric_form,
    percent_expand,
)

MAX_FILES = 100  # SSH_MAX_IDENTITY_FILES and SSH_MAX_CERTIFICATE_FILES
MAX_HOSTS_FILES = 32  # SSH_MAX_HOSTS_FILES
EXEC_TIMEOUT = 10.0  # seconds for one `Match exec` command; ssh waits forever, a fleet run must not


@dataclass(frozen=True)
class Applied:
    """One option's value as it took effect, and where it came from."""

    value: Any
    origin: Origin


@dataclass(frozen=True)
class Listed:
    """One IdentityFile or CertificateFile entry as written (tokens not yet expanded)."""

    text: str
    user_provided: bool  # from a user file, -i or the inventory (ssh reports a missing one); not from /etc/ssh
    origin: Origin


@dataclass
class Lookup:
    """Everything the config files said about one destination, before tokens in values are expanded."""

    host_arg: str  # the name looked up: what `ssh <name>` was given
    hostname: str  # %h: HostName (with %h expanded) or the name, lower-cased unless ssh takes it for an address
    values: dict[str, Applied] = field(default_factory=dict)  # keyword -> first value
    identity_files: list[Listed] = field(default_factory=list)
    certificate_files: list[Listed] = field(default_factory=list)
    others: dict[str, list[Applied]] = field(default_factory=dict)  # other accumulating options (for warnings)
    forward_agent_path: Applied | None = None  # the first ForwardAgent socket path, apart from the flag
    unsupported: list[Line] = field(default_factory=list)  # lines OpenSSH itself calls unsupported
    newer: list[Line] = field(default_factory=list)  # options of the local, newer ssh: not applied
    final_pass: bool = False


ExecRunner = Callable[[str, Line], bool]


def run_exec(command: str, line: Line) -> bool:
    """`Match exec`: run through $SHELL -c like ssh (stdin and stdout on /dev/null); True if it exits 0."""
    shell = os.environ.get("SHELL") or "/bin/sh"
    if not os.access(shell, os.X_OK):
        raise ConfigError(line.path, line.number, f"Match exec: the shell {shell!r} ($SHELL) is not executable")
    try:
        process = subprocess.Popen([shell, "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   start_new_session=True, env=started_environment())  # as ssh's, see environ
    except OSError as error:
        raise ConfigError(line.path, line.number, f"Match exec: cannot run {shell}: {error.strerror}") from None
    try:
        status = process.wait(timeout=EXEC_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise ConfigError(line.path, line.number, f"Match exec {command!r} did not finish within "
                          f"{EXEC_TIMEOUT:g} s (killed); make it faster or remove it") from None
    if status < 0:
        raise ConfigError(line.path, line.number, f"Match exec {command!r} was killed by signal {-status}; "
                          "ssh stops here too")
    return status == 0


class Evaluator:
    """The parsed files of one run, evaluated per destination; `Match exec` results are cached per command."""

    def __init__(self, files: Sequence[ConfigFile], exec_runner: ExecRunner = run_exec) -> None:
        self.files = tuple(files)
        self._exec_runner = exec_runner
        self._exec_cache: dict[str, bool] = {}
        self._exec_lock = threading.Lock()

    def lookup(self, host_arg: str, preset: Lookup | None = None) -> Lookup:
        """Evaluate every file for `host_arg`; `preset` holds command-line values, which come first."""
        state = preset if preset is not None else Lookup(host_arg, host_arg)
        state.host_arg = host_arg
        want_final = [False]
        self._pass(state, host_arg, final=False, want_final=want_final)
        host = host_arg
        given = state.values.get("hostname")
        if given is not None:
            host = _expand(given, {"h": host_arg})
        # ssh.c: names are lower-cased (ASCII letters only, as C's tolower); addresses take their numeric form.
        # is_addr() takes any name with ':' or '%' for an address, so such a name keeps its case even where
        # getaddrinfo() then refuses it (`A:B`, `FE80::A%ETH0` with no such interface).
        numeric = numeric_form(host)
        if numeric is not None:
            host = numeric
        elif ":" not in host and "%" not in host:
            host = ascii_lower(host)
        canonicalize = state.values.get("canonicalizehostname")
        if canonicalize is not None and canonicalize.value is not False:
            want_final[0] = True  # ssh re-reads the files once it has canonicalized (here: nothing changes)
        state.hostname = host
        if want_final[0]:
            # The second pass sees the final host name, in `Host` lines too; first-pass values stay.
            state.values["hostname"] = Applied(host, given.origin if given else Origin("the lookup name"))
            state.final_pass = True
            self._pass(state, host, final=True, want_final=None)
        elif given is not None:
            state.values["hostname"] = Applied(host, given.origin)
        return state

    def _pass(self, state: Lookup, host: str, *, final: bool, want_final: list[bool] | None) -> None:
        for config in self.files:
            self._walk(config, state, host, final, want_final, [True], nevermatch=False)

    def _walk(self, config: ConfigFile, state: Lookup, host: str, final: bool, want_final: list[bool] | None,
              active: list[bool], nevermatch: bool) -> None:
        for line in config.lines:
            keyword = line.keyword
            if not line.known:
                ignored = state.values.get("ignoreunknown")
                if ignored is not None and match_pattern_list(keyword, ignored.value, lower=True) == 1:
                    continue
                raise ConfigError(line.path, line.number, f"unknown option {keyword!r} (ssh refuses it too: "
                                  "'Bad configuration option'); fix the name, or list it in IgnoreUnknown")
            if keyword == "host":
                active[0] = False
                for pattern in line.args:
                    # readconf.c checks each pattern as it gets to it: it stops at a negated match, and under
                    # an inactive Include right after the first pattern, so an empty one later is not seen.
                    if pattern == "":
                        raise ConfigError(line.path, line.number, "Host: empty pattern; ssh refuses this too")
                    if nevermatch:
                        break
                    negated = pattern.startswith("!")
                    if match_pattern(host, pattern[1:] if negated else pattern):
                        if negated:
                            active[0] = False
                            break
                        active[0] = True
            elif keyword == "match":
                matched = self._match(line, state, final, want_final)
                active[0] = matched and not nevermatch
            elif keyword == "include":
                before = active[0]
                for included in line.includes:
                    # Files under an inactive block are still read (and their Match lines evaluated), never applied.
                    self._walk(included, state, host, final, want_final, active, nevermatch or not before)
                    active[0] = before  # a Match inside the included file must not change the includer's state
            elif active[0]:
                _apply(state, line, config.user)

    def _match(self, line: Line, state: Lookup, final: bool, want_final: list[bool] | None) -> bool:
        info = local_info()
        port = str(state.values["port"].value) if "port" in state.values else "22"
        user = state.values["user"].value if "user" in state.values else info.user
        if final:
            host = state.values["hostname"].value
        elif "hostname" in state.values:
            host = _expand(state.values["hostname"], {"h": state.host_arg})
        else:
            host = state.host_arg
        result = True
        for criterion in line.criteria:
            name, negate, arg = criterion.name, criterion.negate, criterion.arg or ""
            if name == "all":
                if result:
                    result = not negate
                break
            if name in ("canonical", "final"):
                if name == "final" and want_final is not None:
                    want_final[0] = True
                if final == negate:
                    result = False
                continue
            if name == "host":
                matched = match_hostname(host, arg)
            elif name == "originalhost":
                matched = match_hostname(state.host_arg, arg)
            elif name == "user":
                matched = match_pattern_list(user, arg, lower=False) == 1
            elif name == "localuser":
                matched = match_pattern_list(info.user, arg, lower=False) == 1
            else:  # exec
                # readconf.c expands the command before it looks at the earlier criteria, so a bad token is
                # refused for every host, under an inactive Include too, even where the command is not run.
                alias = state.values["hostkeyalias"].value if "hostkeyalias" in state.values else host
                tokens = {"C": connection_hash(info.hostname, host, port, user), "L": info.short_hostname,
                          "d": info.home, "h": host, "k": alias, "l": info.hostname, "n": state.host_arg,
                          "p": port, "r": user, "u": info.user, "i": str(info.uid)}
                try:
                    command = percent_expand(arg, tokens)
                except TokenError as error:
                    raise ConfigError(line.path, line.number, f"Match exec: {error}") from None
                if not result:
                    continue  # ssh skips the command once an earlier criterion failed
                matched = self._exec(command, line)
            if matched == negate:
                result = False
        return result

    def _exec(self, command: str, line: Line) -> bool:
        # Once per distinct command per run: the same check for 500 hosts is run once, not 500 (or 1000) times.
        with self._exec_lock:
            if command not in self._exec_cache:
                self._exec_cache[command] = self._exec_runner(command, line)
            return self._exec_cache[command]


def _expand(applied: Applied, tokens: dict[str, str]) -> str:
    try:
        return percent_expand(str(applied.value), tokens)
    except TokenError as error:
        origin = applied.origin
        raise ConfigError(origin.path, origin.line, f"{origin.label}: {error}") from None


def _apply(state: Lookup, line: Line, user_file: bool) -> None:
    """One active option line: the first value wins, except for the options that accumulate."""
    keyword, origin, values = line.keyword, line.origin, state.values
    if keyword in IGNORED:
        return
    if line.newer:
        state.newer.append(line)
        return
    if keyword in UNSUPPORTED:
        state.unsupported.append(line)
        return
    if keyword in ("identityfile", "certificatefile"):
        entries = state.identity_files if keyword == "identityfile" else state.certificate_files
        if len(entries) >= MAX_FILES:  # readconf.c counts before it drops a duplicate
            raise ConfigError(line.path, line.number, f"too many {keyword.replace('file', ' files')} (ssh's "
                              f"maximum is {MAX_FILES}); ssh refuses this too")
        entry = Listed(line.value, user_file, origin)
        if not any(e.text == entry.text and e.user_provided == entry.user_provided for e in entries):
            entries.append(entry)
        return
    if keyword in ("userknownhostsfile", "globalknownhostsfile") and keyword not in values and \
            len(line.value) > MAX_HOSTS_FILES:
        raise ConfigError(line.path, line.number, f"too many {keyword} entries (ssh's maximum is "
                          f"{MAX_HOSTS_FILES}); ssh refuses this too")
    if line.value is None:
        # A time value of `none` (ConnectTimeout, ServerAliveInterval): readconf.c stores -1, its "unset", so a
        # later line for the same option still takes effect. No other parsed value is None.
        return
    if keyword in ACCUMULATE:
        state.others.setdefault(keyword, []).append(Applied(line.value, origin))
        return
    if keyword == "forwardagent":
        # readconf.c keeps two first-value-wins settings: the flag (a path counts as yes) and the socket path.
        # So `yes` then a path forwards that socket, and `no` then a path forwards nothing.
        is_path = isinstance(line.value, str)
        values.setdefault(keyword, Applied(True if is_path else line.value, origin))
        if is_path and state.forward_agent_path is None:
            state.forward_agent_path = Applied(line.value, origin)
        return
    if keyword == "proxyjump":
        if line.value == ():  # none: only blocks a later ProxyJump (OpenSSH 10.3 semantics, in Debian's 9.2)
            values.setdefault("proxyjump", Applied((), origin))
        elif "proxyjump" not in values and "proxycommand" not in values:
            values["proxyjump"] = Applied(line.value, origin)
            values["proxycommand"] = Applied("none", origin)  # ProxyJump and ProxyCommand: the first one wins
        return
    values.setdefault(keyword, Applied(line.value, origin))
