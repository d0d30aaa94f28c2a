"""The host key algorithms fleetrun asks a server for, as ssh asks: HostKeyAlgorithms, then known_hosts' order."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import cache
from typing import TYPE_CHECKING

from fleetrun.errors import HostFailure
from fleetrun.keyblob import plain_key_type
from fleetrun.models import Host, Outcome
from fleetrun.sshconfig.patterns import match_pattern, match_pattern_list

if TYPE_CHECKING:
    from fleetrun.hostkeys import KnownHosts

CERT = "-cert-v01@openssh.com"

# ssh's default HostKeyAlgorithms, best first (OpenSSH 9.2: `ssh -G host | grep hostkeyalgorithms`).
DEFAULT: tuple[str, ...] = (
    "ssh-ed25519-cert-v01@openssh.com", "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com", "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com", "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-256-cert-v01@openssh.com",
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "rsa-sha2-512", "rsa-sha2-256",
)


def _cat(first: list[str], more: Sequence[str]) -> list[str]:
    """kex_names_cat(): `first`, then the names of `more` not in it yet, up to an empty one."""
    joined = list(first)
    for name in more:
        if not name:
            break
        if name not in joined:
            joined.append(name)
    return joined


@cache
def assemble(spec: str) -> tuple[str, ...]:
    """HostKeyAlgorithms as ssh expands it (kex.c kex_assemble_names(), what `ssh -G` prints): `+` appends to
    ssh's default list, `-` removes from it, `^` puts first, anything else replaces it; each name a pattern
    matched against every algorithm this machine's ssh knows (`ssh -Q key-sig`), in that order. The text
    was checked when the files were read (ssh refuses the same), so it is not checked again.
    """
    if not spec:
        return DEFAULT
    if spec.startswith("-"):
        return tuple(name for name in DEFAULT if match_pattern_list(name, spec[1:], False) != 1)
    if spec.startswith("+"):
        names = _cat(list(DEFAULT), spec[1:].split(","))
    elif spec.startswith("^"):
        names = _cat(spec[1:].split(",") if spec[1:] else [], DEFAULT)
    else:
        names = spec.split(",")
    from fleetrun.sshconfig.localssh import known  # only for a host that sets it: it may run `ssh -Q`

    everything = known("key-sig")
    assembled: list[str] = []
    for pattern in names:
        assembled = _cat(assembled, [name for name in everything if match_pattern(name, pattern)])
    return tuple(assembled)


def uses_known_hosts_order(spec: str | None) -> bool:
    """Whether ssh moves the algorithms of known key types first (sshconnect2.c ssh_kex2): unless the user
    set a whole list of their own (or one put first with `^`)."""
    return not spec or spec[0] in "+-"


def host_key_types(host: Host, known_hosts: KnownHosts, names: list[str], files: Sequence[str],
                   supported: Sequence[str]) -> list[str]:
    """What to ask `host` for, among `supported`: its HostKeyAlgorithms, ordered by what known_hosts holds
    for it under `names` in `files`, as ssh orders them."""
    return preferred_key_types(known_hosts.key_types_for(names, files), supported,
                               known_hosts.has_authority_for(names, files), host.host_key_algorithms,
                               host.origins.get("host_key_algorithms", ()))


def preferred_key_types(known: Collection[str], supported: Sequence[str], authority: bool = False,
                        spec: str | None = None, where: Sequence[str] = ()) -> list[str]:
    """Host key algorithms in the order ssh asks for them (OpenSSH's order_hostkeyalgs), among `supported`.

    `spec` is the host's HostKeyAlgorithms as written (None: ssh's default). Unless it is a list of the user's
    own, ssh keeps its order when a key of its best algorithm's type is known for the host, and otherwise
    moves the algorithms of the known key types first, each group in its own order. So a host with a stale
    line of one type and a right one of the type ssh prefers is asked for the right one, as ssh asks.
    A @cert-authority line for the host moves every certificate algorithm first too.
    Raises HostFailure when HostKeyAlgorithms (set at `where`: file:line) leaves nothing fleetrun can check.
    """
    order = list(assemble(spec) if spec else DEFAULT)
    if uses_known_hosts_order(spec) and order and plain_key_type(order[0]) not in known:
        first = [alg for alg in order if plain_key_type(alg) in known or (authority and alg.endswith(CERT))]
        order = first + [alg for alg in order if alg not in first]
    # Only what ssh would ask for: an algorithm paramiko has but ssh dropped (ssh-rsa, ssh-dss) stays out.
    wanted = [alg for alg in order if alg in supported]
    if wanted or not spec:
        return wanted or list(supported)
    set_at = f" ({', '.join(where)})" if where else ""
    raise HostFailure(Outcome.UNREACHABLE, f"HostKeyAlgorithms {spec}{set_at} leaves no host key algorithm "
                      "fleetrun can check (Ed25519, ECDSA, RSA-SHA2 and their certificates): add one there for "
                      "this host")
