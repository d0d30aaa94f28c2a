"""Jump routes: each host's ProxyJump hops resolved as hosts of their own, in the order ssh visits them.

`ProxyJump b1,b2` means local → b1 → b2 → target (ssh_config(5): "visited sequentially"; Fabric walks it
backwards). Each hop is resolved as `ssh -J` resolves it: through the inventory if it names an inventory
host, then ssh_config, with its own User, Port, IdentityFile and host-key settings, never the target's.
The hops before a hop replace its own ProxyJump; the first hop keeps its own, so a bastion that needs a
bastion of its own is reached through it. A route that comes back to a host already on it is a loop: exit 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from fleetrun.errors import UsageError
from fleetrun.models import Host
from fleetrun.resolve import resolve_hop
from fleetrun.sshconfig import SshConfig

MAX_HOPS = 16  # a longer route is a configuration mistake (or a loop through changing names)


def _identity(host: Host) -> tuple[str, int, str | None]:
    return (host.address.lower(), host.port, host.user)


def _describe(chain: Sequence[str]) -> str:
    return " → ".join(chain)


def plan_routes(
    hosts: Sequence[Host],
    config: SshConfig,
    inventory: Mapping[str, Host],
    *,
    host_key_checking: str | None = None,
    connect_timeout: float | None = None,
) -> list[Host]:
    """Every host with its `via` filled in from its `jump`; raises UsageError (exit 2) for a loop.

    `host_key_checking` and `connect_timeout` are the command line's, which apply to the hops too (a
    bastion's host key is checked with the same policy as the targets').
    """
    routes: dict[tuple[str, ...], tuple[Host, ...]] = {}
    planned = []
    for host in hosts:
        if not host.jump:
            planned.append(host)
            continue
        route = routes.get(host.jump)
        if route is None:
            route = _route(host.jump, config, inventory, host_key_checking, connect_timeout, [host.name])
            routes[host.jump] = route
        for hop in route:
            if _identity(hop) == _identity(host):
                raise UsageError(f"{host.name}: jump loop: {_describe([host.name, *(h.name for h in route)])} "
                                 "reaches the host itself; set `jump: none` for it (or ProxyJump none in ssh_config)")
        planned.append(replace(host, via=route))
    return planned


def _route(
    jump: tuple[str, ...],
    config: SshConfig,
    inventory: Mapping[str, Host],
    host_key_checking: str | None,
    connect_timeout: float | None,
    chain: list[str],
) -> tuple[Host, ...]:
    hops: list[Host] = []
    for index in range(len(jump)):
        hop = resolve_hop(jump, index, config, dict(inventory))
        changes: dict[str, object] = {}
        origins = dict(hop.origins)
        if host_key_checking is not None:
            changes["host_key_checking"] = host_key_checking
            origins["host_key_checking"] = ("--host-key-checking",)
        if connect_timeout is not None:
            changes["connect_timeout"] = connect_timeout
            origins["connect_timeout"] = ("--connect-timeout",)
        hop = replace(hop, **changes, origins=origins)  # type: ignore[arg-type]
        if index == 0 and hop.jump:
            # The first hop's own ProxyJump, as `ssh -J b1` would use b1's.
            if hop.name in chain:
                raise UsageError(f"jump loop: {_describe([*chain, hop.name])}: ssh_config or the inventory sends "
                                 f"{hop.name} through itself; set `ProxyJump none` (or `jump: none`) for it")
            if len(chain) + len(hop.jump) > MAX_HOPS:
                raise UsageError(f"jump route {_describe([*chain, hop.name, '…'])} is longer than {MAX_HOPS} hops: "
                                 "a loop through ssh_config's ProxyJump?")
            hops.extend(_route(hop.jump, config, inventory, host_key_checking, connect_timeout,
                               [*chain, hop.name]))
        hop = replace(hop, jump=(), proxy_command=None if hops else hop.proxy_command)
        here = [*chain, *(h.name for h in hops), hop.name]
        if any(_identity(earlier) == _identity(hop) for earlier in hops):
            raise UsageError(f"jump loop: {_describe(here)} passes {hop.name} twice: fix ProxyJump or `jump:`")
        hops.append(hop)
    if len(hops) > MAX_HOPS:
        raise UsageError(f"jump route {_describe([*chain, *(h.name for h in hops)])} is longer than {MAX_HOPS} hops")
    return tuple(hops)


def hops_of(hosts: Sequence[Host]) -> list[Host]:
    """Every distinct hop of every route, in the order first met (for loading their keys and known_hosts)."""
    seen: dict[int, Host] = {}
    for host in hosts:
        for hop in host.via:
            seen.setdefault(id(hop), hop)
    return list(seen.values())


def parse_jump_option(spec: str) -> tuple[str, ...]:
    """-J/--jump SPEC: `none`, or comma-separated `[user@]host[:port]` hops; UsageError if one is malformed."""
    from fleetrun.sshconfig import parse_hop

    if spec.strip().lower() == "none":
        return ()
    hops = tuple(part.strip() for part in spec.split(","))
    for hop in hops:
        try:
            parse_hop(hop)
        except ValueError as error:
            raise UsageError(f"-J/--jump {spec!r}: {error}") from None
    return hops
