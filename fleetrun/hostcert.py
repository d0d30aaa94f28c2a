"""OpenSSH certificates (PROTOCOL.certkeys): read one, verify its CA signature, judge it as ssh(1) judges a host's."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from fleetrun.keyblob import PublicKey, WireReader, parse_blob

CERT_TYPE_USER = 1
CERT_TYPE_HOST = 2
FOREVER = 0xFFFFFFFFFFFFFFFF
# OpenSSH 9.2's CASignatureAlgorithms default (myproposal.h SSH_ALLOWED_CA_SIGALGS): no SHA-1 `ssh-rsa`.
CA_SIGNATURE_ALGORITHMS = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                           "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "rsa-sha2-512",
                           "rsa-sha2-256")


class CertificateError(ValueError):
    """A certificate that cannot be read or whose CA signature does not verify; the message says which."""


@dataclass(frozen=True)
class Certificate:
    """The fields of an OpenSSH certificate that decide whether to trust it."""

    key: PublicKey  # the certificate itself: keytype ends in -cert-v01@openssh.com, .plain is the certified key
    serial: int
    cert_type: int  # CERT_TYPE_USER or CERT_TYPE_HOST
    key_id: str
    principals: tuple[str, ...]
    valid_after: int  # seconds since the epoch
    valid_before: int
    critical_options: bytes  # the packed list; any at all makes a host certificate invalid (sshkey_cert_check_host)
    signature_key: bytes  # the CA's public key blob, canonical
    signature_type: str  # e.g. "ssh-ed25519", "rsa-sha2-512"

    @property
    def signer_fingerprint(self) -> str:
        return parse_blob(self.signature_key).fingerprint

    def check_host(self, name: str, now: float | None = None) -> str | None:
        """None if the certificate is good for host `name` now, else OpenSSH's reason (sshkey_cert_check_host)."""
        at = int(time.time() if now is None else now)
        if self.cert_type != CERT_TYPE_HOST:
            return "Certificate invalid: not a host certificate"
        if at < self.valid_after:
            return "Certificate invalid: not yet valid"
        if at >= self.valid_before:
            return "Certificate invalid: expired"
        # No principals at all: valid for any host, as OpenSSH has it (require_principal is 0 for hosts).
        if self.principals and name not in self.principals:
            return "Certificate invalid: name is not a listed principal"
        if self.critical_options:
            return "Certificate contains unsupported critical options"
        if self.signature_type not in CA_SIGNATURE_ALGORITHMS:
            return "Certificate signed with disallowed algorithm"
        return None

    def describe(self) -> str:
        """What the certificate says, as `ssh-keygen -L` shows the essentials."""
        names = ",".join(self.principals) if self.principals else "any host"
        return f'certificate "{self.key_id}" serial {self.serial} for {names}, valid {self._validity()}'

    def _validity(self) -> str:
        if self.valid_after == 0 and self.valid_before == FOREVER:
            return "forever"

        def when(seconds: int) -> str:
            return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds))

        start = "always" if self.valid_after == 0 else when(self.valid_after)
        end = "forever" if self.valid_before == FOREVER else when(self.valid_before)
        return f"from {start} to {end}"


def _skip_key_fields(keytype: str, fields: WireReader) -> None:
    """Step over the certified key's own fields (their content is checked by parse_blob)."""
    base = keytype.split("-cert-v01@openssh.com", 1)[0]
    count = {"ssh-ed25519": 1, "sk-ssh-ed25519@openssh.com": 2, "ssh-rsa": 2, "ssh-dss": 4,
             "sk-ecdsa-sha2-nistp256@openssh.com": 3}.get(base, 2)  # ecdsa: curve name and point
    for _ in range(count):
        fields.string()


def read_certificate(blob: bytes) -> Certificate:
    """A certificate from its wire blob, its CA signature verified; CertificateError says what is wrong."""
    try:
        key = parse_blob(blob)
    except ValueError as error:
        raise CertificateError(str(error)) from None
    if not key.is_cert:
        raise CertificateError(f"a {key.keytype} key is not a certificate")
    try:  # parse_blob checked the layout already; a short field here is still told as a certificate error
        fields = WireReader(blob)
        fields.string()  # type
        fields.string()  # nonce
        _skip_key_fields(key.keytype, fields)
        serial, cert_type, key_id = fields.uint(8), fields.uint(4), fields.string()
        principals_data = WireReader(fields.string())
        principals = []
        while principals_data.at < len(principals_data.data):
            principals.append(principals_data.string().decode("utf-8", "replace"))
        valid_after, valid_before = fields.uint(8), fields.uint(8)
        critical = fields.string()
        fields.string()  # extensions
        fields.string()  # reserved
        signer = fields.string()
        signature_type = WireReader(fields.string()).string().decode("latin-1")
    except ValueError as error:
        raise CertificateError(f"certificate cannot be read ({error})") from None
    try:
        ca = parse_blob(signer)
    except ValueError as error:
        raise CertificateError(f"certificate's CA key cannot be read: {error}") from None
    if ca.is_cert:
        raise CertificateError("certificate is signed by another certificate, which OpenSSH refuses")
    _verify_signature(key, blob)
    return Certificate(key, serial, cert_type, key_id.decode("utf-8", "replace"), tuple(principals), valid_after,
                       valid_before, critical, ca.blob, signature_type)


def _verify_signature(key: PublicKey, blob: bytes) -> None:
    """The CA's signature over the certificate, checked by `cryptography` (as sshkey_from_blob checks it)."""
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import SSHCertificate, load_ssh_public_identity

    text = key.keytype.encode() + b" " + base64.b64encode(blob)
    try:
        loaded = load_ssh_public_identity(text)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise CertificateError(f"certificate cannot be read ({error})") from None
    if not isinstance(loaded, SSHCertificate):
        raise CertificateError("not a certificate")
    try:
        loaded.verify_cert_signature()
    except (InvalidSignature, ValueError, UnsupportedAlgorithm, TypeError):
        raise CertificateError("certificate's CA signature does not verify") from None


def certificate_type_of(blob: bytes) -> int | None:
    """CERT_TYPE_USER or CERT_TYPE_HOST for a certificate blob, None for anything else (no signature check)."""
    try:
        key = parse_blob(blob)
        if not key.is_cert:
            return None
        fields = WireReader(blob)
        fields.string()
        fields.string()
        _skip_key_fields(key.keytype, fields)
        fields.uint(8)
        return fields.uint(4)
    except (ValueError, CertificateError):
        return None
