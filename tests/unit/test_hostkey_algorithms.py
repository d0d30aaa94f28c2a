"""HostKeyAlgorithms as ssh applies it: the list `ssh -G` prints (the oracle), and whether known_hosts reorders it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fleetrun.errors import HostFailure
from fleetrun.keyblob import plain_key_type as plain_type
from fleetrun.models import Host, Outcome
from fleetrun.resolve import explain, resolve_hosts
from fleetrun.ssh.hostkeyorder import DEFAULT, assemble, preferred_key_types, uses_known_hosts_order
from fleetrun.sshconfig import SshConfigSource

PARAMIKO = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "rsa-sha2-512",
            "rsa-sha2-256"]
ED, P256, P384, P521, RSA512, RSA256 = PARAMIKO

SPECS = [
    "ssh-ed25519", "ssh-ed*,rsa*", "*", "ecdsa*", "rsa-sha2-512,ssh-ed25519,rsa-sha2-512", "ssh-ed25519,,",
    "ssh-dss", "+ssh-rsa", "+ssh-*", "+,ssh-rsa", "+ssh-ed25519", "-*cert*", "-ssh-ed25519,rsa-sha2-256", "-",
    "-*", "^ssh-rsa", "^rsa-sha2-256,ssh-ed25519", "^ssh-ed25519",
]


def _ssh_g(spec: str) -> list[str]:
    printed = subprocess.run(["ssh", "-G", "-F", "/dev/null", "-o", f"HostKeyAlgorithms={spec}", "example.invalid"],
                             capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL).stdout
    line = next(line for line in printed.splitlines() if line.startswith("hostkeyalgorithms"))
    return [name for name in line.partition(" ")[2].split(",") if name]


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client")
@pytest.mark.parametrize("spec", SPECS)
def test_the_list_is_what_ssh_g_prints(spec: str) -> None:
    assert list(assemble(spec)) == _ssh_g(spec)


def test_plain_types_are_the_known_hosts_line_types() -> None:
    assert plain_type("rsa-sha2-512-cert-v01@openssh.com") == "ssh-rsa"
    assert plain_type("rsa-sha2-256") == "ssh-rsa"
    assert plain_type("ssh-rsa") == "ssh-rsa"
    assert plain_type("ssh-dss-cert-v01@openssh.com") == "ssh-dss"
    assert plain_type("ecdsa-sha2-nistp384-cert-v01@openssh.com") == "ecdsa-sha2-nistp384"
    assert plain_type("sk-ssh-ed25519-cert-v01@openssh.com") == "sk-ssh-ed25519@openssh.com"
    assert plain_type("sk-ecdsa-sha2-nistp256@openssh.com") == "sk-ecdsa-sha2-nistp256@openssh.com"
    assert plain_type("webauthn-sk-ecdsa-sha2-nistp256@openssh.com") == "sk-ecdsa-sha2-nistp256@openssh.com"


@pytest.mark.parametrize(("spec", "reordered"), [(None, True), ("", True), ("+ssh-rsa", True), ("-ssh-dss", True),
                                                 ("^ssh-ed25519", False), ("ssh-ed25519,rsa-sha2-512", False)])
def test_known_hosts_reorder_only_a_default_based_list(spec: str | None, reordered: bool) -> None:
    # sshconnect2.c ssh_kex2(): unset, or only appended to or removed from ssh's list.
    assert uses_known_hosts_order(spec) is reordered


def test_a_list_of_ones_own_is_asked_as_written_whatever_known_hosts_holds() -> None:
    # Only an RSA key on record: with ssh's default list RSA moves first; with the user's list ssh asks for
    # Ed25519 first all the same (and then refuses the Ed25519 key it gets under strict checking).
    assert preferred_key_types(["ssh-rsa"], PARAMIKO)[:2] == [RSA512, RSA256]
    assert preferred_key_types(["ssh-rsa"], PARAMIKO, spec="ssh-ed25519,rsa-sha2-512") == [ED, RSA512]
    assert preferred_key_types(["ssh-rsa"], PARAMIKO, spec="^ssh-ed25519") == [ED, P256, P384, P521, RSA512,
                                                                                RSA256]


def test_a_default_based_list_is_still_ordered_by_known_hosts() -> None:
    assert preferred_key_types(["ssh-rsa"], PARAMIKO, spec="-ecdsa*") == [RSA512, RSA256, ED]
    assert preferred_key_types([], PARAMIKO, spec="-ssh-ed25519") == [P256, P384, P521, RSA512, RSA256]


def test_nothing_fleetrun_can_check_fails_the_host_with_what_to_do() -> None:
    with pytest.raises(HostFailure) as caught:
        preferred_key_types(["ssh-rsa"], PARAMIKO, spec="ssh-rsa,ssh-dss", where=("/etc/ssh/ssh_config:3",))
    assert caught.value.outcome is Outcome.UNREACHABLE
    assert str(caught.value) == ("HostKeyAlgorithms ssh-rsa,ssh-dss (/etc/ssh/ssh_config:3) leaves no host key "
                                 "algorithm fleetrun can check (Ed25519, ECDSA, RSA-SHA2 and their certificates): "
                                 "add one there for this host")
    # Without a HostKeyAlgorithms of its own, the library's list (as before): the server decides.
    assert preferred_key_types([], ["ssh-rsa"]) == ["ssh-rsa"]


def test_the_default_is_ssh_s_list() -> None:
    assert assemble("") == DEFAULT


def test_the_value_in_effect_reaches_the_host_and_is_explained(tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host h1\n  HostKeyAlgorithms ecdsa-sha2-nistp256,ssh-ed25519\n"
                          "Host *\n  HostKeyAlgorithms +ssh-rsa\n")
    warnings: list[str] = []
    result = resolve_hosts([Host("h1", "h1"), Host("h2", "h2")], SshConfigSource(path=str(ssh_config)), warnings.append)
    hosts = {host.name: host for host in result.hosts}
    assert hosts["h1"].host_key_algorithms == "ecdsa-sha2-nistp256,ssh-ed25519"  # the first obtained, as ssh
    assert hosts["h2"].host_key_algorithms == "+ssh-rsa"
    assert not [w for w in warnings if "HostKeyAlgorithms" in w]
    row = next(row for row in explain(hosts["h1"], "me") if row[0] == "host key algorithms")
    assert row[1] == "ecdsa-sha2-nistp256,ssh-ed25519" and f"{ssh_config}:2" in row[2]
