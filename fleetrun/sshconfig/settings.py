"""Turn one Lookup into final connection settings: defaults filled in and tokens expanded, as ssh(1) does."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleetrun.sshconfig.checks import assembled_error, forward_paths
from fleetrun.sshconfig.evaluate import Applied, Listed, Lookup
from fleetrun.sshconfig.keywords import MEANINGFUL, environment_agent, format_hop, parse_hop
from fleetrun.sshconfig.model import ConfigError, Origin
from fleetrun.sshconfig.patterns import ascii_lower, match_pattern
from fleetrun.sshconfig.tokens import TokenError, connection_hash, local_info, percent_expand, tilde_expand

DEFAULT_IDENTITIES = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ecdsa_sk", "~/.ssh/id_ed25519",
                      "~/.ssh/id_ed25519_sk", "~/.ssh/id_xmss", "~/.ssh/id_dsa")  # ssh -G order, OpenSSH 9.2
DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
DEFAULT = Origin("default")


@dataclass(frozen=True)
class Identity:
    """One identity (or certificate) file: as written, the path it expands to, and where it came from."""

    written: str
    path: str
    user_provided: bool  # ssh reports these when missing; defaults and /etc/ssh/ssh_config ones it skips quietly
    origin: Origin


@dataclass(frozen=True)
class Settings:
    """What `ssh -G` would print for one destination (the options fleetrun uses), plus each value's origin."""

    host_arg: str
    hostname: str
    port: int
    user: str  # the local user when nothing set one
    identity_files: tuple[Identity, ...]  # in the order ssh lists them; `IdentityFile none` entries dropped
    identity_files_default: bool  # nothing named a file: these are ssh's defaults
    certificate_files: tuple[Identity, ...]
    identities_only: bool
    identity_agent: str | None  # None: $SSH_AUTH_SOCK; "none": no agent; else the socket path
    proxy_jump: tuple[str, ...]  # hops "[user@]host[:port]", first to last, %h %n %p %r expanded; () = direct
    proxy_command: str | None  # with %h %n %p %r expanded; None = direct
    connect_timeout: float | None  # seconds; None = not set (0 too: ssh then waits for the system TCP timeout)
    server_alive_interval: int  # 0 = off
    server_alive_count_max: int
    strict_host_key_checking: str  # OpenSSH's meaning: "yes", "accept-new", "off" or "ask"
    user_known_hosts: tuple[str, ...]
    global_known_hosts: tuple[str, ...]
    hash_known_hosts: bool
    host_key_alias: str | None
    forward_agent: bool | str  # False, True (the agent in use) or a socket path
    control_path: str | None  # expanded, or None (unset or none); not used: fleetrun shares no connections
    send_env: tuple[str, ...] = ()  # SendEnv patterns left after the `-NAME` removals, in ssh -G's order
    set_env: tuple[str, ...] = ()  # SetEnv NAME=value, the first line in effect, a name's first value
    host_key_algorithms: str | None = None  # HostKeyAlgorithms as written (its +, - or ^ too); None: ssh's default
    origins: dict[str, Origin] = field(default_factory=dict)
    # Options fleetrun does not apply although they matter here: (keyword, why, where), in file order.
    ignored: tuple[tuple[str, str, Origin], ...] = ()
    proxy_jump_written: tuple[str, ...] = ()  # ProxyJump as written, for comparison with `ssh -G`
    proxy_command_written: str | None = None


class _Tokens(dict[str, Any]):
    """A host's %-tokens; %C (a SHA-1 of %l%h%p%r) is computed only when a text uses it."""

    def __getitem__(self, key: str) -> str:
        value = super().__getitem__(key)
        if value is None:  # only "C" is None
            value = self["C"] = connection_hash(self["l"], self["h"], self["p"], self["r"])
        return value  # type: ignore[no-any-return]


def _fail(origin: Origin, error: Exception) -> ConfigError:
    return ConfigError(origin.path, origin.line, f"{origin.label}: {error}")


def settle(lookup: Lookup) -> Settings:
    """Fill in OpenSSH's defaults and expand every token; raises ConfigError naming the line at fault."""
    info = local_info()
    values = lookup.values

    def get(keyword: str, default: Any = None) -> Any:
        applied = values.get(keyword)
        return default if applied is None else applied.value

    origins = {keyword: applied.origin for keyword, applied in values.items()}
    host, host_arg = lookup.hostname, lookup.host_arg
    port = get("port", 22)
    user = get("user") or info.user
    alias = get("hostkeyalias")
    alias = ascii_lower(alias) if alias else None  # as ssh.c lowercases it: the name known_hosts is searched for
    tokens = _Tokens({"C": None, "L": info.short_hostname, "i": str(info.uid), "k": alias or host_arg,
                      "l": info.hostname, "n": host_arg, "p": str(port), "d": info.home, "h": host, "r": user,
                      "u": info.user})
    # sshconnect.c expand_proxy_command() also knows %k (ssh_config(5) does not list it), for ProxyJump's
    # implicit ProxyCommand too.
    proxy_tokens = {"h": host, "k": alias or host_arg, "n": host_arg, "p": str(port), "r": user}

    def path(text: str, origin: Origin, *, percent: bool = True) -> str:
        try:
            expanded = tilde_expand(text, info.home)
            return percent_expand(expanded, tokens, dollar=True) if percent else expanded
        except TokenError as error:
            raise _fail(origin, error) from None

    def files(entries: list[Listed]) -> tuple[Identity, ...]:
        return tuple(Identity(e.text, path(e.text, e.origin), e.user_provided, e.origin)
                     for e in entries if e.text.lower() != "none")

    identities_default = not lookup.identity_files
    listed = lookup.identity_files or [Listed(name, False, DEFAULT) for name in DEFAULT_IDENTITIES]
    identity_files = files(listed)

    def socket_path(applied: Applied) -> str | None:
        # IdentityAgent/ForwardAgent: SSH_AUTH_SOCK or $NAME name a variable; else a path with ~ and tokens.
        word = applied.value
        if word == "SSH_AUTH_SOCK":
            return None
        if word.startswith("$") and not word.startswith("${"):
            return environment_agent(word) or "none"
        return path(word, applied.origin)

    agent = None if get("identityagent") is None else ("none" if get("identityagent") == "none"
                                                       else socket_path(values["identityagent"]))
    forward: bool | str = get("forwardagent", False)
    if lookup.forward_agent_path is not None:
        # ssh.c expands a socket path whenever one is set: a bad token is refused after `ForwardAgent no` too
        socket = socket_path(lookup.forward_agent_path)
        if forward:
            forward = socket or True

    jump_written: tuple[str, ...] = get("proxyjump", ())
    jump: list[str] = []
    for index, hop in enumerate(jump_written):
        try:
            if index < len(jump_written) - 1:
                # ssh passes the earlier hops on with -J inside the command it expands: tokens, then syntax
                jump.append(format_hop(*parse_hop(percent_expand(hop, proxy_tokens))))
            else:
                # the last one it parses first, then expands its user and host in that command
                hop_user, hop_host, hop_port = parse_hop(hop)
                jump.append(format_hop(None if hop_user is None else percent_expand(hop_user, proxy_tokens),
                                       percent_expand(hop_host, proxy_tokens), hop_port))
        except (TokenError, ValueError) as error:
            raise _fail(origins["proxyjump"], error) from None
    if jump:
        # ssh.c compares the last hop as written (before its tokens are expanded, not lower-cased) with the
        # final host name: `ProxyJump Bastion` or `ProxyJump %h` for bastion is no loop to ssh.
        last_user, last_host, last_port = parse_hop(jump_written[-1])
        if last_host == host and (last_port or 22) == port and (last_user or user) == user:
            raise ConfigError(origins["proxyjump"].path, origins["proxyjump"].line,
                              f"ProxyJump: jumphost loop via {last_host} (the host would be its own bastion; "
                              "ssh refuses this too): add `ProxyJump none` for it before the line that sets it")
    command_written = get("proxycommand")
    command = None
    if command_written is not None and command_written.lower() != "none":
        try:
            command = percent_expand(command_written, proxy_tokens)
        except TokenError as error:
            raise _fail(origins["proxycommand"], error) from None
    else:
        command_written = None

    # ssh.c's checks once the options are filled in (ssh -G stops there too)
    if get("connectionattempts") == 0:
        raise _fail(origins["connectionattempts"], ValueError("must be at least 1 (ssh: 'Invalid number of "
                                                               "ConnectionAttempts')"))
    if get("proxycommand") == "-" and get("proxyusefdpass") is True:
        raise _fail(origins["proxyusefdpass"], ValueError("ProxyCommand=- and ProxyUseFdpass are incompatible "
                                                          "(ssh refuses them together)"))
    algorithms = values.get("hostkeyalgorithms")
    problem = None if algorithms is None else assembled_error("hostkeyalgorithms", algorithms.value)
    if algorithms is not None and problem is not None:
        raise ConfigError(algorithms.origin.path, algorithms.origin.line, f"{problem}; ssh refuses this too")

    # Expanded by ssh before it prints `ssh -G` (a bad token there stops it), though fleetrun does not use
    # them: ControlPath like a file name, RemoteCommand and forwarded socket paths with %-tokens only.
    control_path = get("controlpath")
    control_path = None if control_path is None or control_path.lower() == "none" else \
        path(control_path, origins["controlpath"])
    remote_command = get("remotecommand")
    expand_only = [(remote_command, origins["remotecommand"])] if _set(remote_command) else []
    for keyword in ("localforward", "remoteforward", "dynamicforward"):
        expand_only += [(name, entry.origin) for entry in lookup.others.get(keyword, [])
                        for name in forward_paths(keyword, entry.value)]
    for text, origin in expand_only:
        try:
            percent_expand(text, tokens)
        except TokenError as error:
            raise _fail(origin, error) from None

    user_known = get("userknownhostsfile")
    user_known_origin = origins.get("userknownhostsfile", DEFAULT)
    global_known = get("globalknownhostsfile")
    timeout = get("connecttimeout")
    ignored = []
    for keyword, applied in values.items():
        rule = MEANINGFUL.get(keyword)
        if rule is not None and rule[0](applied.value):
            ignored.append((keyword, rule[1], applied.origin))
    for keyword, entries in lookup.others.items():
        rule = MEANINGFUL.get(keyword)
        if rule is not None and entries:
            ignored.append((keyword, rule[1], entries[0].origin))
    for line in lookup.unsupported:
        ignored.append((line.keyword, "OpenSSH does not support it either", line.origin))
    for line in lookup.newer:
        ignored.append((line.keyword, "this machine's ssh (newer than OpenSSH 9.2) knows it, fleetrun does "
                        "not", line.origin))

    send_env: list[str] = []
    if lookup.others.get("sendenv"):
        origins["sendenv"] = lookup.others["sendenv"][0].origin  # the first line, for hosts --explain
    for entry in lookup.others.get("sendenv", []):
        for pattern in entry.value:
            if pattern.startswith("-"):  # readconf.c rm_env(): drop the patterns so far that it matches
                send_env = [kept for kept in send_env if not match_pattern(kept, pattern[1:])]
            else:
                send_env.append(pattern)
    set_env: dict[str, str] = {}
    for assignment in get("setenv", ()):
        set_env.setdefault(assignment.split("=", 1)[0], assignment)  # a repeated name: ssh keeps the first

    return Settings(
        host_arg=host_arg,
        hostname=host,
        port=port,
        user=user,
        identity_files=identity_files,
        identity_files_default=identities_default,
        certificate_files=files(lookup.certificate_files),
        identities_only=get("identitiesonly", False),
        identity_agent=agent,
        proxy_jump=tuple(jump),
        proxy_command=command,
        connect_timeout=timeout or None,
        server_alive_interval=get("serveraliveinterval") or 0,
        server_alive_count_max=get("serveralivecountmax", 3),
        strict_host_key_checking=get("stricthostkeychecking", "ask"),
        user_known_hosts=_known_hosts(user_known or DEFAULT_USER_KNOWN_HOSTS,
                                      lambda text: path(text, user_known_origin)),
        global_known_hosts=_known_hosts(global_known or DEFAULT_GLOBAL_KNOWN_HOSTS,
                                        lambda text: tilde_expand(text, info.home)),
        hash_known_hosts=get("hashknownhosts", False),
        host_key_alias=alias,
        forward_agent=forward,
        control_path=control_path,
        send_env=tuple(send_env),
        set_env=tuple(set_env.values()),
        host_key_algorithms=algorithms.value[0] if algorithms is not None and algorithms.value else None,
        origins=origins,
        ignored=tuple(ignored),
        proxy_jump_written=jump_written,
        proxy_command_written=command_written,
    )


def _set(value: Any) -> bool:
    """A string option that is set and not `none` (option_clear_or_none)."""
    return isinstance(value, str) and value.lower() != "none"


def _known_hosts(names: tuple[str, ...], expand: Any) -> tuple[str, ...]:
    if len(names) == 1 and names[0].lower() == "none":
        return ()
    return tuple(expand(name) for name in names)
