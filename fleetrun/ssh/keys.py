"""Private key files as a run holds them: loaded once through cryptography, signing for the lean SSH client, and
made into paramiko's key objects only when paramiko's path needs one (so a run of lean connections never
imports paramiko: ~66 ms of every run's start-up, issue 13)."""

from __future__ import annotations

import base64
import io
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from fleetrun.keyblob import encode_mpint, encode_string

if TYPE_CHECKING:
    import paramiko

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
# The hash each ECDSA curve signs with (RFC 5656 §6.2.1), by SSH key type.
ECDSA_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "ecdsa-sha2-nistp256": hashes.SHA256, "ecdsa-sha2-nistp384": hashes.SHA384, "ecdsa-sha2-nistp521": hashes.SHA512,
}  # fmt: skip
RSA_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"rsa-sha2-512": hashes.SHA512, "rsa-sha2-256": hashes.SHA256}


class AuthRefused(Exception):
    """The lean client's refusal of a key (paramiko has its own exceptions): `kind` is "methods" (the server
    takes no keys; `allowed` says what it takes), "refused" or "timeout"."""

    def __init__(self, kind: str, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(f"authentication {kind}")
        self.kind, self.allowed = kind, allowed


class UnsupportedKeyType(ValueError):
    """A private key of a type fleetrun cannot use (DSA, or anything but Ed25519, ECDSA and RSA)."""


class KeyFile:
    """One loaded private key file. Where fleetrun.ssh.auth treats keys alike it looks like a paramiko PKey
    (`get_name`, `asbytes`, `public_blob`); `paramiko()` is the real one, made on first use."""

    public_blob = None  # a plain key: no certificate attached (fleetrun.ssh.auth.with_certificate makes those)

    def __init__(self, path: str, private: PrivateKey) -> None:
        self.path = path
        self.private = private
        line = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        name, encoded = line.split()[:2]
        self._name, self._blob = name.decode("ascii"), base64.b64decode(encoded)
        self._paramiko: paramiko.PKey | None = None
        self._lock = threading.Lock()

    def get_name(self) -> str:
        """The key's SSH type: ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa."""
        return self._name

    def asbytes(self) -> bytes:
        """The public key blob, as in authorized_keys."""
        return self._blob

    def sign(self, data: bytes, algorithm: str) -> bytes:
        """The SSH signature blob of `data` (RFC 8709, RFC 5656, RFC 8332), as paramiko's sign_ssh_data makes it."""
        private = self.private
        if isinstance(private, ed25519.Ed25519PrivateKey):
            return encode_string(b"ssh-ed25519") + encode_string(private.sign(data))
        if isinstance(private, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(private.sign(data, ec.ECDSA(ECDSA_HASHES[self._name]())))
            return encode_string(self._name.encode()) + encode_string(encode_mpint(r) + encode_mpint(s))
        signature = private.sign(data, padding.PKCS1v15(), RSA_HASHES[algorithm]())
        return encode_string(algorithm.encode()) + encode_string(signature)

    def paramiko(self) -> paramiko.PKey:
        """The same key as paramiko's key object, for a connection paramiko makes."""
        with self._lock:
            if self._paramiko is None:
                self._paramiko = _paramiko_key(self.private)
            return self._paramiko

    def __repr__(self) -> str:
        return f"KeyFile({self.path!r}, {self._name})"


def _paramiko_key(private: PrivateKey) -> paramiko.PKey:
    import paramiko

    if isinstance(private, rsa.RSAPrivateKey):
        return paramiko.RSAKey(key=private)
    if isinstance(private, ec.EllipticCurvePrivateKey):
        return paramiko.ECDSAKey(vals=(private, private.public_key()))
    # paramiko reads Ed25519 keys only from the OpenSSH format: hand it the key in memory, never on disk.
    text = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                 serialization.NoEncryption()).decode("ascii")  # fmt: skip
    return paramiko.Ed25519Key(file_obj=io.StringIO(text))


def load_private_key(path: str, password: bytes | None) -> KeyFile:
    """A private key file in the OpenSSH or PEM format, without the `-cert.pub` beside it: ssh offers the plain
    key and its certificate as two identities (and that certificate only without any CertificateFile), and a
    broken certificate file must not make the key itself unusable.

    Raises what cryptography raises (TypeError without the passphrase an encrypted key needs, ValueError for
    a wrong one or a file that is no key), FileNotFoundError and the like, and UnsupportedKeyType."""
    data = Path(path).read_bytes()
    loaded: object
    try:
        loaded = serialization.load_ssh_private_key(data, password=password)
    except ValueError:
        loaded = serialization.load_pem_private_key(data, password=password)
    if not isinstance(loaded, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise UnsupportedKeyType(f"a {type(loaded).__name__.removeprefix('_')} key")
    return KeyFile(path, loaded)
