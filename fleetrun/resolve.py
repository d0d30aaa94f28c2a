"""Resolve each selected host through ssh_config, below the command line and the inventory (issue 9).

Precedence, most to least: command line > inventory host > inventory groups > inventory defaults >
ssh_config > built-in defaults. The first four arrive as `Host.explicit` fields and are handed to the
ssh_config resolver the way ssh takes -l/-p/-i/-o options: they win, and `Match user`, %r and %p see them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, TypeVar

from fleetrun.models import Host, Origins
from fleetrun.sshconfig import Origin, Preset, Settings, SshConfig, SshConfigSource, load, parse_hop

# ssh's StrictHostKeyChecking -> fleetrun's policy. `ask` would prompt: fleetrun never does, so it means yes.
# `no`/`off` makes ssh record unknown keys and connect; with a changed key it still connects (without
# passwords or forwarding): fleetrun records new keys like accept-new but always refuses a changed one.
HOST_KEY_POLICY = {"yes": "yes", "ask": "yes", "accept-new": "accept-new", "off": "accept-new"}

# ssh_config keyword -> Host field, for --explain and Host.origins.
_FIELDS = {
    "hostname": "address", "port": "port", "user": "user", "identityfile": "identity_files",
    "certificatefile": "certificate_files", "identitiesonly": "identities_only", "identityagent": "identity_agent",
    "proxyjump": "jump", "proxycommand": "proxy_command", "connecttimeout": "connect_timeout",
    "serveraliveinterval": "server_alive_interval", "serveralivecountmax": "server_alive_count_max",
    "stricthostkeychecking": "host_key_checking", "userknownhostsfile": "user_known_hosts",
    "globalknownhostsfile": "global_known_hosts", "hashknownhosts": "hash_known_hosts",
    "hostkeyalias": "host_key_alias", "forwardagent": "forward_agent", "sendenv": "send_env",
    "setenv": "set_env", "hostkeyalgorithms": "host_key_algorithms",
}
_KEYWORDS = {field: keyword for keyword, field in _FIELDS.items()}
_V = TypeVar("_V")


@dataclass(frozen=True)
class Resolution:
    """The resolved hosts of one run, and the config they were resolved with (for jump hops, issue 9)."""

    hosts: list[Host]
    config: SshConfig


def config_source(option: str | None, inventory_allows: bool) -> SshConfigSource:
    """--ssh-config wins; without it, the inventory's `ssh_config: false` turns ssh_config off."""
    if option is None and not inventory_allows:
        return SshConfigSource(disabled=True)
    return SshConfigSource.from_option(option)


@lru_cache(maxsize=256)
def _label(sources: tuple[str, ...]) -> Origin:
    """One Origin for all the hosts whose setting came from the same place (most of a fleet's)."""
    return Origin(", ".join(sources))


def preset_for(host: Host) -> Preset:
    """What the command line and the inventory set for this host, as ssh options given before the files."""
    explicit = host.explicit

    def label(name: str) -> Origin:
        return _label(host.origins.get(name, ("the inventory",)))

    jump = host.jump if "jump" in explicit else None
    command = host.proxy_command if "proxy_command" in explicit else None
    origins = {keyword: label(name) for name, keyword in _KEYWORDS.items() if name in explicit}
    if "key" in explicit:
        origins["identityfile"] = label("key")
    return Preset(
        user=host.user if "user" in explicit else None,
        port=host.port if "port" in explicit else None,
        identity_files=(host.key,) if "key" in explicit and host.key else (),
        connect_timeout=host.connect_timeout if "connect_timeout" in explicit else None,
        proxy_jump=jump,
        proxy_command=command,
        origins=origins,
    )


def apply_settings(host: Host, settings: Settings, share: dict[Any, Any] | None = None) -> Host:
    """The host with every connection field taken from the resolved settings, and where each came from.

    `share` (one per run): equal values of different hosts (origin pairs, known_hosts and identity tuples)
    become one object, so that what every host has in common costs memory once (issue 13)."""
    origins: dict[str, tuple[str, ...]] = (dict(host.origins.pairs) if isinstance(host.origins, Origins)
                                           else dict(host.origins))
    if share is not None and isinstance(host.origins, Origins):  # the host's own pairs, kept as they are
        for pair in host.origins.pairs:
            share.setdefault(pair, pair)
    for keyword, origin in settings.origins.items():
        if keyword in _FIELDS:
            origins[_FIELDS[keyword]] = (str(origin),)
    if "hostname" not in settings.origins:
        origins["address"] = host.origins.get("address", ("the host's name",))
    if settings.proxy_jump:
        origins["proxy_command"] = ("not used: ProxyJump came first",)
    origins["identity_files"] = tuple(str(identity.origin) for identity in settings.identity_files)
    origins["certificate_files"] = tuple(str(identity.origin) for identity in settings.certificate_files)
    explicit = host.explicit
    policy = host.host_key_checking if "host_key_checking" in explicit else (
        HOST_KEY_POLICY[settings.strict_host_key_checking] if "stricthostkeychecking" in settings.origins else None)

    def one(value: _V) -> _V:  # keyed by type too: 1 == 1.0 == True
        return value if share is None else share.setdefault((type(value), value), value)

    return replace(
        host,
        address=settings.hostname,
        port=settings.port,
        user=settings.user if "user" in settings.origins else None,
        connect_timeout=one(settings.connect_timeout),
        lookup_name=settings.host_arg,
        identity_files=one(tuple(identity.path for identity in settings.identity_files)),
        identity_files_default=settings.identity_files_default,
        identities_only=settings.identities_only,
        certificate_files=one(tuple(identity.path for identity in settings.certificate_files)),
        identity_agent=settings.identity_agent,
        jump=one(settings.proxy_jump),
        proxy_command=settings.proxy_command,
        host_key_checking=policy,
        user_known_hosts=one(settings.user_known_hosts),
        global_known_hosts=one(settings.global_known_hosts),
        hash_known_hosts=settings.hash_known_hosts,
        host_key_alias=settings.host_key_alias,
        server_alive_interval=one(float(settings.server_alive_interval)),
        server_alive_count_max=settings.server_alive_count_max,
        forward_agent=settings.forward_agent,
        send_env=one(settings.send_env),
        set_env=one(settings.set_env),
        host_key_algorithms=settings.host_key_algorithms,
        origins=Origins.of(origins, share),
    )


def resolve_hosts(hosts: Sequence[Host], source: SshConfigSource, warn: Callable[[str], None]) -> Resolution:
    """Read ssh_config once and resolve every host; options fleetrun does not apply warn once per run."""
    config = load(source)
    resolved: list[Host] = []
    share: dict[Any, Any] = {}
    warned: dict[str, int] = {}
    first: dict[str, tuple[str, Origin]] = {}
    for host in hosts:
        settings = config.resolve(host.address, preset_for(host))
        for keyword, why, origin in settings.ignored:
            warned[keyword] = warned.get(keyword, 0) + 1
            first.setdefault(keyword, (why, origin))
        resolved.append(apply_settings(host, settings, share))
    for keyword, count in warned.items():
        why, origin = first[keyword]
        hosts_text = f"{count} host{'s' if count != 1 else ''}"
        warn(f"ssh_config {origin}: {_spelled(keyword)} is not applied by fleetrun ({hosts_text}): {why}")
    return Resolution(resolved, config)


def resolve_hop(hops: Sequence[str], index: int, config: SshConfig, inventory: dict[str, Host] | None = None) -> Host:
    """Hop `index` of a jump chain, resolved as ssh resolves it: through the inventory (if the hop names an
    inventory host), then ssh_config, as `ssh [-l user] [-p port] [-J earlier,hops] hop` would.

    The spec's user and port act as -l/-p; the hops before it act as -J, so they replace the hop's own
    ProxyJump; the first hop keeps its own (ssh_config may give it a bastion of its own).
    """
    user, name, port = parse_hop(hops[index])
    base = (inventory or {}).get(name) or Host(name=name, address=name)
    explicit, origins = set(base.explicit), dict(base.origins)
    changes: dict[str, object] = {}
    for field_name, value in (("user", user), ("port", port)):
        if value is not None:
            changes[field_name] = value
            explicit.add(field_name)
            origins[field_name] = (f"ProxyJump {hops[index]}",)
    if index > 0:
        changes["jump"] = tuple(hops[:index])
        explicit.add("jump")
        origins["jump"] = ("the hops before it",)
    base = replace(base, **changes, explicit=frozenset(explicit), origins=origins)  # type: ignore[arg-type]
    return apply_settings(base, config.resolve(base.address, preset_for(base)))


_SPELLING = {keyword.lower(): keyword for keyword in (
    "CanonicalizeHostname", "KnownHostsCommand", "PKCS11Provider", "SecurityKeyProvider", "ProxyUseFdpass",
    "ControlMaster", "ControlPath", "RemoteCommand", "LocalCommand", "LocalForward", "RemoteForward",
    "DynamicForward", "Tunnel", "SetEnv", "RequestTTY", "SessionType", "ForwardX11", "BindAddress",
    "BindInterface", "RevokedHostKeys", "VerifyHostKeyDNS", "AddressFamily", "ConnectionAttempts",
    "PasswordAuthentication", "PubkeyAuthentication", "PreferredAuthentications", "AFSTokenPassing",
    "KerberosAuthentication", "KerberosTGTPassing", "RSAAuthentication", "RhostsRSAAuthentication",
    "CompressionLevel", "HostKeyAlgorithms")}


def _spelled(keyword: str) -> str:
    return _SPELLING.get(keyword, keyword)


def _hop_rows(host: Host, local_user: str) -> list[tuple[str, str, str]]:
    """One row per resolved jump hop: where it leads, and where its address, port and user came from."""
    rows = []
    for index, hop in enumerate(host.via, 1):
        origins = dict.fromkeys(origin for name in ("address", "port", "user") for origin in hop.origins.get(name, ()))
        rows.append((f"  hop {index}", f"{hop.name}: {hop.user or local_user}@{hop.address}:{hop.port}",
                     ", ".join(origins) or "default"))
    return rows


def explain(host: Host, local_user: str) -> list[tuple[str, str, str]]:
    """(setting, value, where it came from) rows for `fleetrun hosts --explain`."""
    origins = host.origins

    def source(name: str, index: int = 0, fallback: str = "default") -> str:
        values = origins.get(name, ())
        return values[index] if index < len(values) else fallback

    def text(value: object) -> str:
        if value is None or value == ():
            return "none"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, tuple):
            return ",".join(str(item) for item in value)
        return str(value)

    named_by = "inventory address" if "address" in host.explicit else "the host's name"
    rows = [
        ("name", host.name, source("name", fallback="inventory")),
        ("lookup name", host.lookup_name or host.address, named_by),
        ("address", host.address, source("address", fallback="the host's name")),
        ("port", str(host.port), source("port")),
        ("user", host.user or local_user, source("user", fallback="default (the local user)")),
    ]
    if host.identity_files:
        for index, path in enumerate(host.identity_files):
            rows.append(("identity file", path, source("identity_files", index)))
    else:
        rows.append(("identity file", "none", source("identity_files")))
    for index, path in enumerate(host.certificate_files):
        rows.append(("certificate file", path, source("certificate_files", index)))
    agent = {None: "$SSH_AUTH_SOCK", "none": "none"}.get(host.identity_agent, host.identity_agent)
    rows += [
        ("identities only", text(host.identities_only), source("identities_only")),
        ("identity agent", agent or "none", source("identity_agent")),
        ("jump", text(host.jump), source("jump")),
        *_hop_rows(host, local_user),
        ("proxy command", text(host.proxy_command), source("proxy_command")),
        ("connect timeout", f"{host.connect_timeout:g} s" if host.connect_timeout else "the run's (10 s)",
         source("connect_timeout")),
        ("host key checking", host.host_key_checking or "the run's (--host-key-checking, yes)",
         source("host_key_checking")),
        ("user known hosts", text(host.user_known_hosts), source("user_known_hosts")),
        ("global known hosts", text(host.global_known_hosts), source("global_known_hosts")),
        ("extra known hosts", text(host.known_hosts), source("known_hosts")),
        ("hash known hosts", text(host.hash_known_hosts), source("hash_known_hosts")),
        ("host key alias", text(host.host_key_alias), source("host_key_alias")),
        ("server alive interval", f"{host.server_alive_interval:g} s" if host.server_alive_interval else "off",
         source("server_alive_interval")),
        ("server alive count max", str(host.server_alive_count_max), source("server_alive_count_max")),
        ("forward agent", text(host.forward_agent), source("forward_agent")),
        ("send env", " ".join(host.send_env) or "none", source("send_env")),
        ("set env", " ".join(host.set_env) or "none", source("set_env")),
        ("host key algorithms", host.host_key_algorithms or "ssh's default", source("host_key_algorithms")),
    ]
    if host.password_env or host.password_file:
        which = "password_env" if host.password_env else "password_file"
        rows.append(("password from", f"${host.password_env}" if host.password_env else str(host.password_file),
                     source(which)))
    return rows
