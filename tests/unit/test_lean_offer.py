"""The lean client asks for exactly what paramiko would ask for, takes a connection only when the algorithms
paramiko would agree on are its own, and only for hosts that need nothing but key files over TCP."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

import fleetrun.ssh  # noqa: F401  # the package first: fleetrun.ssh.connect is shadowed by the function
from fleetrun.hostkeys import KnownHosts, host_key_files, host_key_names
from fleetrun.models import Host
from fleetrun.ssh import lean
from fleetrun.ssh.hostkeyorder import host_key_types
from fleetrun.ssh.keys import UnsupportedKeyType, load_private_key
from fleetrun.ssh.lean_wire import Reader, name_list

connect_module = sys.modules["fleetrun.ssh.connect"]
ED25519 = "AAAAC3NzaC1lZDI1NTE5AAAAIKrSLf5q6jqX8d5lkKZ8O8m3nPMGPoGaZ8IYpKhR2Bl1"


def _paramiko_kexinit(known: KnownHosts, host: Host) -> bytes:
    """The KEXINIT paramiko's Transport sends for this host, configured as connect._handshake configures it."""
    a, b = socket.socketpair()
    try:
        transport = paramiko.Transport(a)
        names, (files, _) = host_key_names(host), host_key_files(host)
        options = transport.get_security_options()
        options.key_types = host_key_types(host, known, names, files, list(paramiko.Transport._key_info))
        options.ciphers = connect_module.preferred_ciphers(options.ciphers)
        sent: list[bytes] = []
        transport._send_message = lambda message: sent.append(message.asbytes())  # type: ignore[method-assign]
        transport._send_kex_init()
        return sent[0]
    finally:
        a.close()
        b.close()


def _lists(kexinit: bytes) -> list[tuple[str, ...]]:
    read = Reader(kexinit, 17)
    return [read.names() for _ in range(10)]


@pytest.mark.parametrize(("lines", "spec"), [
    ("", None),  # nothing known: ssh's default order
    (f"[10.0.0.1]:2222 ssh-ed25519 {ED25519}\n", None),
    (f"@cert-authority * ssh-ed25519 {ED25519}\n", None),  # certificates first
    (f"[10.0.0.1]:2222 ssh-ed25519 {ED25519}\n", "rsa-sha2-512,ecdsa*"),  # HostKeyAlgorithms of one's own
    ("", "-ssh-ed25519*"),
])
def test_the_lean_kexinit_lists_are_paramikos(tmp_path, lines, spec):
    path = tmp_path / "known_hosts"
    path.write_text(lines)
    known = KnownHosts.load([str(path)])
    host = Host("web1", "10.0.0.1", port=2222, known_hosts=(str(path),), host_key_algorithms=spec)
    names, (files, _) = host_key_names(host), host_key_files(host)
    offer = connect_module._lean_offer(host, type("S", (), {"known_hosts": known})(), names, files)
    ours, theirs = offer.kexinit(b"\0" * 16), _paramiko_kexinit(known, host)
    assert _lists(ours) == _lists(theirs)
    assert ours[17:] == theirs[17:] and len(ours) == len(theirs)  # all but the random cookie, byte for byte


def _server_kexinit(kex="curve25519-sha256,curve25519-sha256@libssh.org,kex-strict-s-v00@openssh.com",
                    host_keys="ssh-ed25519,rsa-sha2-512", ciphers="aes128-gcm@openssh.com,aes128-ctr",
                    macs="hmac-sha2-256", compression="none", follows=False) -> bytes:
    lists = [kex, host_keys, ciphers, ciphers, macs, macs, compression, compression, "", ""]
    return (bytes((20,)) + b"\0" * 16 + b"".join(name_list(value.split(",") if value else []) for value in lists)
            + (b"\1" if follows else b"\0") + b"\0\0\0\0")


OFFER = lean.Offer(kex=tuple(paramiko.Transport._preferred_kex), key_types=("ssh-ed25519", "rsa-sha2-512"),
                   ciphers=("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr"),
                   macs=("hmac-sha2-256",), compression=("none",))


def test_a_server_with_curve25519_and_gcm_is_a_lean_connection():
    agreed = lean._agree(OFFER, _server_kexinit())
    assert agreed is not None and agreed.kex == "curve25519-sha256@libssh.org"  # paramiko's own name for it
    assert (agreed.host_key, agreed.cipher_out) == ("ssh-ed25519", "aes128-gcm@openssh.com")
    # A server without strict kex (OpenSSH before 9.6): still ours. One with curve25519 under its RFC name only:
    # paramiko knows only the libssh.org name, so it would agree on ECDH, and paramiko it is.
    assert lean._agree(OFFER, _server_kexinit(kex="curve25519-sha256@libssh.org")) is not None
    assert lean._agree(OFFER, _server_kexinit(kex="curve25519-sha256,ecdh-sha2-nistp256")) is None


@pytest.mark.skipif(lean.MLKEM_KEX not in OFFER.kex, reason="this cryptography has no ML-KEM")
def test_a_server_with_mlkem_first_is_a_lean_connection_too():
    """OpenSSH 9.9+ and paramiko put mlkem768x25519-sha256 first: the lean client speaks it as well."""
    agreed = lean._agree(OFFER, _server_kexinit(kex="mlkem768x25519-sha256,curve25519-sha256@libssh.org"))
    assert agreed is not None and agreed.kex == lean.MLKEM_KEX


@pytest.mark.parametrize("change", [
    {"ciphers": "aes128-ctr,aes256-ctr"},  # no GCM
    {"kex": "diffie-hellman-group14-sha256"},
    {"host_keys": "ssh-ed25519-cert-v01@openssh.com"},  # paramiko picks a certificate: its path judges those
    {"compression": "zlib@openssh.com"},
    {"macs": "hmac-md5"},
    {"follows": True},
])
def test_anything_else_is_handed_to_paramiko(change):
    offer = OFFER if "host_keys" not in change else lean.Offer(
        OFFER.kex, ("ssh-ed25519-cert-v01@openssh.com", "ssh-ed25519"), OFFER.ciphers, OFFER.macs, OFFER.compression)
    assert lean._agree(offer, _server_kexinit(**change)) is None


def _key(tmp_path: Path):
    path = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return load_private_key(str(path), None)


def test_only_hosts_needing_nothing_but_key_files_over_tcp_are_eligible(tmp_path):
    key = _key(tmp_path)
    path = str(tmp_path / "id")
    keys = {path: key}
    plain = Host("web1", "10.0.0.1", key=path)
    assert lean.eligible(plain, None, keys, False, {})
    refusals = {
        "a bastion": (Host("w", "10.0.0.1", key=path, via=(Host("b1", "10.0.0.9"),)), None, False, {}),
        "a ProxyCommand": (Host("w", "10.0.0.1", key=path, proxy_command="nc %h %p"), None, False, {}),
        "keepalives": (Host("w", "10.0.0.1", key=path, server_alive_interval=15), None, False, {}),
        "agent forwarding": (Host("w", "10.0.0.1", key=path, forward_agent=True), None, False, {}),
        "a password": (plain, "secret", False, {}),
        "an agent": (plain, None, True, {}),
        "a certificate beside the key": (plain, None, False, {path + "-cert.pub": b"cert"}),
        "no key loaded": (Host("w", "10.0.0.1", key=str(tmp_path / "missing")), None, False, {}),
    }
    for why, (host, password, agent, certificates) in refusals.items():
        assert not lean.eligible(host, password, keys, agent, certificates), why


@pytest.mark.parametrize(("keytype", "bits", "algorithms"), [
    ("ed25519", "", ["ssh-ed25519"]),
    ("ecdsa", "256", ["ecdsa-sha2-nistp256"]),
    ("ecdsa", "384", ["ecdsa-sha2-nistp384"]),
    ("ecdsa", "521", ["ecdsa-sha2-nistp521"]),
    ("rsa", "2048", ["rsa-sha2-512", "rsa-sha2-256"]),
])
def test_key_files_sign_as_paramiko_would_and_become_paramikos_keys(tmp_path, keytype, bits, algorithms):
    path = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", keytype, *(["-b", bits] if bits else []), "-N", "", "-f", str(path)],
                   check=True)  # fmt: skip
    key = load_private_key(str(path), None)
    twin = key.paramiko()
    assert twin.asbytes() == key.asbytes() and twin.get_name() == key.get_name()
    assert key.asbytes() == base64.b64decode(path.with_suffix(".pub").read_text().split()[1])
    public = paramiko.PKey.from_type_string(key.get_name(), key.asbytes())
    for algorithm in algorithms:
        blob = key.sign(b"session id and request", algorithm)
        assert Reader(blob, 0).text() == algorithm
        assert public.verify_ssh_sig(b"session id and request", paramiko.Message(blob))  # paramiko checks ours
        assert not public.verify_ssh_sig(b"another request", paramiko.Message(blob))
        theirs = twin.sign_ssh_data(b"session id and request", algorithm).asbytes()  # paramiko's key signs too
        assert public.verify_ssh_sig(b"session id and request", paramiko.Message(theirs))


def test_paramikos_own_lists_are_the_lean_clients(tmp_path):
    transport = paramiko.Transport
    assert lean.paramiko_kex() == tuple(transport._preferred_kex)
    assert tuple(transport._preferred_ciphers) == lean.PARAMIKO_CIPHERS
    assert tuple(transport._preferred_macs) == lean.PARAMIKO_MACS
    assert tuple(transport._preferred_compression) == lean.PARAMIKO_COMPRESSION
    assert tuple(transport._key_info) == lean.PARAMIKO_KEY_TYPES


def test_an_encrypted_or_unusable_key_file_is_refused_as_before(tmp_path):
    locked = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret words", "-f", str(locked)], check=True)
    with pytest.raises(TypeError):
        load_private_key(str(locked), None)
    with pytest.raises(ValueError):
        load_private_key(str(locked), b"wrong")
    assert load_private_key(str(locked), b"secret words").get_name() == "ssh-ed25519"
    dsa = tmp_path / "dsa"
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import dsa as dsa_keys

    dsa.write_bytes(dsa_keys.generate_private_key(1024).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(UnsupportedKeyType):
        load_private_key(str(dsa), None)


def test_a_lean_run_never_imports_paramiko(tmp_path):
    """Importing everything a lean exec needs leaves paramiko unloaded (its import is ~66 ms of start-up)."""
    code = ("import sys; import fleetrun.cli, fleetrun.runner, fleetrun.preflight, fleetrun.exec_task, "
            "fleetrun.ssh, fleetrun.ssh.lean_session; print('paramiko' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_engine_switch_turns_the_lean_client_off(monkeypatch):
    monkeypatch.setenv(lean.ENGINE_VARIABLE, "paramiko")
    assert not lean.enabled()
    monkeypatch.setenv(lean.ENGINE_VARIABLE, "")
    assert lean.enabled()

