"""What this machine's ssh knows beyond OpenSSH 9.2: algorithm names (`ssh -Q`) and newer option lines.

fleetrun reads ssh_config as Debian's OpenSSH 9.2p1 does, but a controller's own ssh may be newer. A file
written for it (`KexAlgorithms mlkem768x25519-sha256`, `ObscureKeystrokeTiming yes`) must not be refused
where that ssh accepts it, and must still be refused where it refuses it. So the local ssh is asked, only
about what a file actually contains, once per run. Without an ssh client: OpenSSH 9.2's names (and the
newer ones fleetrun itself speaks), and no newer option lines.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache

from fleetrun.sshconfig.patterns import match_pattern_list

# `ssh -Q cipher`, `mac`, `kex` and `key-sig` of Debian's OpenSSH 9.2p1: used only when there is no ssh to ask.
_CIPHERS_9_2 = frozenset({
    "3des-cbc", "aes128-cbc", "aes192-cbc", "aes256-cbc", "aes128-ctr", "aes192-ctr", "aes256-ctr",
    "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
})
_MACS_9_2 = frozenset({
    "hmac-sha1", "hmac-sha1-96", "hmac-sha2-256", "hmac-sha2-512", "hmac-md5", "hmac-md5-96",
    "umac-64@openssh.com", "umac-128@openssh.com", "hmac-sha1-etm@openssh.com", "hmac-sha1-96-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com", "hmac-md5-etm@openssh.com",
    "hmac-md5-96-etm@openssh.com", "umac-64-etm@openssh.com", "umac-128-etm@openssh.com",
})
_KEX_9_2 = frozenset({
    "diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1", "diffie-hellman-group14-sha256",
    "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512", "diffie-hellman-group-exchange-sha1",
    "diffie-hellman-group-exchange-sha256", "ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521",
    "curve25519-sha256", "curve25519-sha256@libssh.org", "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
})
# Debian's GSSAPI key exchange: kex_alg_by_name() accepts these as prefixes (the mechanism OID follows).
GSS_KEX_PREFIXES = ("gss-gex-sha1-", "gss-group1-sha1-", "gss-group14-sha1-", "gss-group14-sha256-",
                    "gss-group16-sha512-", "gss-nistp256-sha256-", "gss-curve25519-sha256-")
# sshkey.c keyimpls[]: every name (`ssh -Q key-sig`), and the short names plain key types also answer to.
_KEY_TYPES_9_2 = (
    "ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com", "sk-ssh-ed25519@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384-cert-v01@openssh.com", "ecdsa-sha2-nistp521",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com", "webauthn-sk-ecdsa-sha2-nistp256@openssh.com", "ssh-dss",
    "ssh-dss-cert-v01@openssh.com", "ssh-rsa", "ssh-rsa-cert-v01@openssh.com", "rsa-sha2-256",
    "rsa-sha2-256-cert-v01@openssh.com", "rsa-sha2-512", "rsa-sha2-512-cert-v01@openssh.com",
)
_NEWER = {"kex": ("mlkem768x25519-sha256",)}  # OpenSSH 9.9+, and fleetrun's lean client
_BUILT_IN = {"cipher": tuple(sorted(_CIPHERS_9_2)), "mac": tuple(sorted(_MACS_9_2)), "kex": tuple(sorted(_KEX_9_2)),
             "key-sig": _KEY_TYPES_9_2}


def _ssh(*args: str) -> subprocess.CompletedProcess[str] | None:
    """The local ssh run with these arguments (never connecting, no stdin), or None if there is none."""
    ssh = shutil.which("ssh")
    if ssh is None:
        return None
    try:
        return subprocess.run([ssh, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None


@cache
def accepts_line(keyword: str, rest: str) -> bool:
    """Whether the local ssh takes `keyword rest` as an option line (`ssh -G -o`, no config files read)."""
    done = _ssh("-F", "/dev/null", "-G", "-o", f"{keyword} {rest}", "fleetrun-probe")
    return done is not None and done.returncode == 0


@cache
def known(query: str) -> tuple[str, ...]:
    """What `ssh -Q QUERY` lists on this machine (cipher, mac, kex, key-sig), in its order; the built-in
    OpenSSH 9.2 names (and newer ones fleetrun speaks) when there is no ssh or it cannot say."""
    done = _ssh("-Q", query)
    names = tuple(done.stdout.split()) if done is not None and done.returncode == 0 else ()
    return names if names else (*_BUILT_IN[query], *_NEWER.get(query, ()))


@cache
def known_set(query: str) -> frozenset[str]:
    """known(query) as a set, for membership."""
    return frozenset(known(query))


KEY_SHORT_NAMES = frozenset({"ed25519", "ed25519-sk", "ecdsa", "ecdsa-sk", "dsa", "rsa"})  # strcasecmp


def kex_valid(name: str) -> bool:
    """kex_names_valid() for one name: known here, or one of Debian's GSSAPI exchanges."""
    return name in known_set("kex") or name.startswith(GSS_KEX_PREFIXES)


def key_type_valid(name: str) -> bool:
    """sshkey_names_valid2(names, 1) for one name: a name, a plain type's short name, or a pattern matching
    some name (positively or negatively)."""
    if name in known_set("key-sig") or name.lower() in KEY_SHORT_NAMES:
        return True
    return any(match_pattern_list(algorithm, name, lower=False) != 0 for algorithm in known("key-sig"))


