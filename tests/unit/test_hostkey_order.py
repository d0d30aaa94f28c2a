"""The order fleetrun asks a server for host key algorithms: ssh's own (OpenSSH's order_hostkeyalgs).

The same rule is held against the real `ssh -vvv` proposal in tests/integration/test_hostkeys_openssh.py.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from fleetrun.ssh.hostkeyorder import DEFAULT
from fleetrun.ssh.hostkeyorder import preferred_key_types as _preferred_key_types

PARAMIKO = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "rsa-sha2-512",
            "rsa-sha2-256"]
ED, P256, P384, P521, RSA512, RSA256 = PARAMIKO


@pytest.mark.parametrize(("known", "expected"), [
    ([], PARAMIKO),
    # The case: a stale ECDSA line first in the file, the right Ed25519 line after it.
    (["ecdsa-sha2-nistp256", "ssh-ed25519"], PARAMIKO),
    (["ecdsa-sha2-nistp256"], [P256, ED, P384, P521, RSA512, RSA256]),
    (["ecdsa-sha2-nistp384", "ssh-rsa"], [P384, RSA512, RSA256, ED, P256, P521]),
    (["ssh-rsa"], [RSA512, RSA256, ED, P256, P384, P521]),
    # ssh keeps its whole list as it is once its best type is known, so ECDSA stays ahead of a known RSA.
    (["ssh-rsa", "ssh-ed25519"], PARAMIKO),
    # Types paramiko cannot check (security keys, DSA) move nothing it can.
    (["sk-ssh-ed25519@openssh.com", "ssh-dss"], PARAMIKO),
])
def test_known_types_first_in_ssh_order(known: list[str], expected: list[str]) -> None:
    assert _preferred_key_types(known, PARAMIKO) == expected


def test_only_what_ssh_asks_for() -> None:
    # An algorithm ssh no longer asks for by default is not asked for, even if the library has it.
    assert _preferred_key_types(["ssh-rsa"], [*PARAMIKO, "ssh-rsa", "ssh-dss"]) == [RSA512, RSA256, ED, P256, P384,
                                                                                   P521]


CERTS = [f"{alg}-cert-v01@openssh.com" for alg in ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                                                   "ecdsa-sha2-nistp521", "rsa-sha2-512", "rsa-sha2-256")]
ED_C, P256_C, P384_C, P521_C, RSA512_C, RSA256_C = CERTS
ALL = [*CERTS, *PARAMIKO]  # what paramiko can check, in ssh's default order: certificates first


@pytest.mark.parametrize(("known", "authority", "expected"), [
    ([], False, ALL),  # nothing on record: ssh's list as it is, certificates first
    ([], True, ALL),
    (["ssh-ed25519"], True, ALL),
    # A known type pulls its certificate algorithm forward with it.
    (["ecdsa-sha2-nistp256"], False, [P256_C, P256, ED_C, P384_C, P521_C, RSA512_C, RSA256_C, ED, P384, P521,
                                      RSA512, RSA256]),
    # A @cert-authority line for the host pulls every certificate algorithm forward.
    (["ssh-rsa"], True, [ED_C, P256_C, P384_C, P521_C, RSA512_C, RSA256_C, RSA512, RSA256, ED, P256, P384, P521]),
    (["ssh-rsa"], False, [RSA512_C, RSA256_C, RSA512, RSA256, ED_C, P256_C, P384_C, P521_C, ED, P256, P384, P521]),
])
def test_certificate_algorithms_in_ssh_order(known: list[str], authority: bool, expected: list[str]) -> None:
    assert _preferred_key_types(known, ALL, authority) == expected


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client")
def test_the_list_is_ssh_s_default() -> None:
    printed = subprocess.run(["ssh", "-G", "-F", "/dev/null", "example.invalid"], capture_output=True, text=True,
                             check=True, stdin=subprocess.DEVNULL).stdout
    line = next(line for line in printed.splitlines() if line.startswith("hostkeyalgorithms "))
    assert line.split()[1].split(",") == list(DEFAULT)
