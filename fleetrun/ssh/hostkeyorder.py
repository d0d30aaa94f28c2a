"""The host key algorithms fleetrun asks a server for, as ssh asks: HostKeyAlgorithms, then known_hosts' order."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import cache

from fleetrun.errors import HostFailure
from fleetrun.models import Outcome
from fleetrun.sshconfig.patterns import match_pattern, match_pattern_list

CERT = "-cert-v01@openssh.com"

# ssh's default HostKeyAlgorithms, best first (OpenSSH 9.2: `ssh -G host | grep hostkeyalgorithms`), each with
# the key type a known_hosts line must hold to vouch for it.
OPENSSH_HOST_KEY_ALGORITHMS: dict[str, str] = {
    "ssh-ed25519-cert-v01@openssh.com": "ssh-ed25519",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com": "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com": "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com": "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519-cert-v01@openssh.com": "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com": "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com": "ssh-rsa",
    "rsa-sha2-256-cert-v01@openssh.com": "ssh-rsa",
    "ssh-ed25519": "ssh-ed25519",
    "ecdsa-sha2-nistp256": "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384": "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521": "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com": "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com": "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512": "ssh-rsa",
    "rsa-sha2-256": "ssh-rsa",
}
DEFAULT = tuple(OPENSSH_HOST_KEY_ALGORITHMS)


def plain_type(algorithm: str) -> str:
    """The key type of a known_hosts line that vouches for `algorithm` (sshkey_type_plain of its type)."""
    base = algorithm.removesuffix(CERT)
    if base.startswith("rsa-sha2-"):
        return "ssh-rsa"
    if base.startswith("webauthn-"):  # a signature scheme of the sk-ecdsa key type
        return base.removeprefix("webauthn-")
    return base if base.endswith("@openssh.com") or not base.startswith("sk-") else base + "@openssh.com"


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
def assemble(spec: str, everything: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """HostKeyAlgorithms as ssh expands it (kex.c kex_assemble_names(), what `ssh -G` prints): `+` appends to
    ssh's default list, `-` removes from it, `^` puts first, anything else replaces it; each name a pattern
    matched against every algorithm this machine's ssh knows (`everything`: `ssh -Q key-sig`), in that
    order. The text was checked when the files were read (ssh refuses the same), so it is not checked again.
    """
    if everything is None:
        from fleetrun.sshconfig.localssh import known

        everything = known("key-sig")
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
    assembled: list[str] = []
    for pattern in names:
        assembled = _cat(assembled, [name for name in everything if match_pattern(name, pattern)])
    return tuple(assembled)


def uses_known_hosts_order(spec: str | None) -> bool:
    """Whether ssh moves the algorithms of known key types first (sshconnect2.c ssh_kex2): unless the user
    set a whole list of their own (or one put first with `^`)."""
    return not spec or spec[0] in "+-"


def preferred_key_types(known: Collection[str], supported: Sequence[str], authority: bool = False,
                        spec: str | None = None, where: str = "") -> list[str]:
    """Host key algorithms in the order ssh asks for them (OpenSSH's order_hostkeyalgs), among `supported`.

    `spec` is the host's HostKeyAlgorithms as written (None: ssh's default). Unless it is a list of the user's
    own, ssh keeps its order when a key of its best algorithm's type is known for the host, and otherwise
    moves the algorithms of the known key types first, each group in its own order. So a host with a stale
    line of one type and a right one of the type ssh prefers is asked for the right one, as ssh asks.
    A @cert-authority line for the host moves every certificate algorithm first too.
    Raises HostFailure when HostKeyAlgorithms (set at `where`, a file:line) leaves nothing fleetrun can check.
    """
    order = list(assemble(spec) if spec else DEFAULT)
    if uses_known_hosts_order(spec) and order and plain_type(order[0]) not in known:
        first = [alg for alg in order if plain_type(alg) in known or (authority and alg.endswith(CERT))]
        order = first + [alg for alg in order if alg not in first]
    # Only what ssh would ask for: an algorithm paramiko has but ssh dropped (ssh-rsa, ssh-dss) stays out.
    wanted = [alg for alg in order if alg in supported]
    if wanted or not spec:
        return wanted or list(supported)
    raise HostFailure(Outcome.UNREACHABLE, f"HostKeyAlgorithms {spec}{f' ({where})' if where else ''} leaves no "
                      "host key algorithm fleetrun can check (Ed25519, ECDSA, RSA-SHA2 and their certificates): "
                      "add one there for this host")
