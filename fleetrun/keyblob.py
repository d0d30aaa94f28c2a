"""Decode SSH public key blobs and judge them the way OpenSSH's `sshkey_read`/`sshkey_from_blob` do."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

# The key type names OpenSSH 9.2 reads in a known_hosts line (its `keyimpls` table), mapped to the type of
# key they stand for. RSA keys are also written under their signature algorithm names, and one security-key
# type under its webauthn signature name; each must still hold a blob of the type it names.
_CERT = "-cert-v01@openssh.com"
_ECDSA_CURVES = ("nistp256", "nistp384", "nistp521")
KEY_TYPES: dict[str, str] = {
    "ssh-ed25519": "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com": "sk-ssh-ed25519@openssh.com",
    **{f"ecdsa-sha2-{curve}": f"ecdsa-sha2-{curve}" for curve in _ECDSA_CURVES},
    "sk-ecdsa-sha2-nistp256@openssh.com": "sk-ecdsa-sha2-nistp256@openssh.com",
    "webauthn-sk-ecdsa-sha2-nistp256@openssh.com": "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss": "ssh-dss",
    "ssh-rsa": "ssh-rsa",
    "rsa-sha2-256": "ssh-rsa",
    "rsa-sha2-512": "ssh-rsa",
}
KEY_TYPES |= {
    "ssh-ed25519" + _CERT: "ssh-ed25519" + _CERT,
    "sk-ssh-ed25519" + _CERT: "sk-ssh-ed25519" + _CERT,
    **{f"ecdsa-sha2-{curve}{_CERT}": f"ecdsa-sha2-{curve}{_CERT}" for curve in _ECDSA_CURVES},
    "sk-ecdsa-sha2-nistp256" + _CERT: "sk-ecdsa-sha2-nistp256" + _CERT,
    "ssh-dss" + _CERT: "ssh-dss" + _CERT,
    "ssh-rsa" + _CERT: "ssh-rsa" + _CERT,
    "rsa-sha2-256" + _CERT: "ssh-rsa" + _CERT,
    "rsa-sha2-512" + _CERT: "ssh-rsa" + _CERT,
}
# A certificate's plain key type: what `@revoked` compares and what a server offers without certificates.
_PLAIN = {
    "ssh-ed25519" + _CERT: "ssh-ed25519",
    "sk-ssh-ed25519" + _CERT: "sk-ssh-ed25519@openssh.com",
    **{f"ecdsa-sha2-{curve}{_CERT}": f"ecdsa-sha2-{curve}" for curve in _ECDSA_CURVES},
    "sk-ecdsa-sha2-nistp256" + _CERT: "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss" + _CERT: "ssh-dss",
    "ssh-rsa" + _CERT: "ssh-rsa",
}



def plain_key_type(name: str) -> str:
    """The key type a known_hosts line must hold to vouch for a key type or signature algorithm `name`
    (sshkey_type_plain): `rsa-sha2-512-cert-v01@openssh.com` -> `ssh-rsa`; unknown names stay as they are."""
    keytype = KEY_TYPES.get(name, name)
    return _PLAIN.get(keytype, keytype)


ED25519_KEY_BYTES = 32
MAX_BIGNUM_BYTES = 16384 // 8  # SSHBUF_MAX_BIGNUM
MAX_ECPOINT_BYTES = (528 * 2 // 8) + 1  # SSHBUF_MAX_ECPOINT
RSA_MIN_BITS = 1024  # SSH_RSA_MINIMUM_MODULUS_SIZE


@dataclass(frozen=True)
class _Curve:
    p: int
    b: int  # a is -3 for all three NIST curves
    n: int  # the group order (cofactor 1)

    @property
    def size(self) -> int:
        return (self.p.bit_length() + 7) // 8


# Checked against `openssl ecparam -name <curve> -param_enc explicit -text`.
_CURVES = {
    "nistp256": _Curve(
        p=2**256 - 2**224 + 2**192 + 2**96 - 1,
        b=0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
        n=0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    ),
    "nistp384": _Curve(
        p=2**384 - 2**128 - 2**96 + 2**32 - 1,
        b=0xB3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875AC656398D8A2ED19D2A85C8EDD3EC2AEF,
        n=0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973,
    ),
    "nistp521": _Curve(
        p=2**521 - 1,
        b=int(
            "51953EB9618E1C9A1F929A21A0B68540EEA2DA725B99B315F3B8B489918EF109E156193951EC7E937B1652C0BD3BB1BF07"
            "3573DF883D2C34F1EF451FD46B503F00",
            16,
        ),
        n=int(
            "1FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D0"
            "3BB5C9B8899C47AEBB6FB71E91386409",
            16,
        ),
    ),
}


@dataclass(frozen=True)
class PublicKey:
    """A decoded public key: its type and canonical blob (what OpenSSH compares and fingerprints)."""

    keytype: str  # the type the blob holds, e.g. "ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"
    blob: bytes  # re-encoded canonically: equal keys have equal blobs whatever the file's encoding
    plain: bytes  # the plain key inside a certificate (the blob itself for a plain key)

    @property
    def is_cert(self) -> bool:
        return self.keytype.endswith(_CERT)

    @property
    def fingerprint(self) -> str:
        """As ssh-keygen -l prints it; a certificate's is its plain key's (sshkey_fingerprint forces plain)."""
        return fingerprint(self.plain)


def fingerprint(blob: bytes) -> str:
    """The SHA256 fingerprint of a public key blob, exactly as `ssh-keygen -l` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def b64decode(text: str) -> bytes:
    """Base64 as OpenSSH's b64_pton reads it: whitespace anywhere is skipped, anything else must be exact.

    Raises ValueError for bad characters, missing or extra padding and non-zero padding bits.
    """
    # ' ' and '\t' end a known_hosts field, so only the other C isspace() characters can be inside one:
    # a CRLF file leaves '\r' at the end of the key when there is no comment, and OpenSSH ignores it.
    raw = text.encode("latin-1", "replace").translate(None, b"\r\n\v\f")
    try:
        data = binascii.a2b_base64(raw)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64 ({exc})") from None
    # a2b_base64 skips junk and tolerates bad padding bits; the round trip rejects them, as b64_pton does.
    if binascii.b2a_base64(data, newline=False) != raw:
        raise ValueError("invalid base64")
    return data


class WireReader:
    """SSH wire-format fields (RFC 4251 section 5) from a blob, with OpenSSH's sshbuf rules."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int) -> bytes:
        if size > len(self.data) - self.at:
            raise ValueError("key data is truncated")
        chunk = self.data[self.at : self.at + size]
        self.at += size
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def string(self) -> bytes:
        return self.take(self.uint(4))

    def cstring(self) -> bytes:
        value = self.string()
        # sshbuf_get_cstring allows one NUL, at the very end only.
        if b"\0" in value[:-1]:
            raise ValueError("key data has a NUL inside a text field")
        return value.removesuffix(b"\0")

    def mpint(self) -> int:
        value = self.string()
        if value and value[0] & 0x80:
            raise ValueError("key data has a negative number")
        if len(value) > MAX_BIGNUM_BYTES + 1 or (len(value) == MAX_BIGNUM_BYTES + 1 and value[0] != 0):
            raise ValueError("key data has a number that is too large")
        return int.from_bytes(value, "big")

    def done(self) -> None:
        if self.at != len(self.data):
            raise ValueError("key data has trailing bytes")


def encode_string(value: bytes) -> bytes:
    """An SSH string (RFC 4251 §5): its length, then the bytes."""
    return len(value).to_bytes(4, "big") + value


def encode_mpint(value: int) -> bytes:
    """A non-negative integer as an SSH mpint (RFC 4251 §5)."""
    data = value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b""
    return encode_string(data)


def _ec_point(curve_name: str, point: bytes) -> None:
    """OpenSSH's get_ec, EC_POINT_oct2point and sshkey_ec_validate_public on an uncompressed point."""
    curve = _CURVES[curve_name]
    if not point or len(point) > MAX_ECPOINT_BYTES:
        raise ValueError("EC point has a bad length")
    if point[0] != 4:
        raise ValueError("EC point is not in uncompressed form")
    if len(point) != 1 + 2 * curve.size:
        raise ValueError(f"EC point has the wrong length for {curve_name}")
    x = int.from_bytes(point[1 : 1 + curve.size], "big")
    y = int.from_bytes(point[1 + curve.size :], "big")
    if x >= curve.p or y >= curve.p or (y * y - (x * x * x - 3 * x + curve.b)) % curve.p:
        raise ValueError(f"EC point is not on {curve_name}")
    # sshkey_ec_validate_public; n*Q is the identity for every point on these prime-order curves.
    half = curve.n.bit_length() // 2
    if x.bit_length() <= half or y.bit_length() <= half or x >= curve.n - 1 or y >= curve.n - 1:
        raise ValueError("EC point is an invalid public value")


def _read_plain(keytype: str, blob_name: str, reader: WireReader) -> bytes:
    """Read one plain key's fields after its type; return them canonically encoded (without the type)."""
    base = keytype.removesuffix(_CERT).removesuffix("@openssh.com")
    if base in ("ssh-ed25519", "sk-ssh-ed25519"):
        key = reader.string()
        if len(key) != ED25519_KEY_BYTES:
            raise ValueError(f"Ed25519 key is {len(key)} bytes, not {ED25519_KEY_BYTES}")
        fields = encode_string(key)
    elif base.startswith(("ecdsa-sha2-", "sk-ecdsa-sha2-")):
        expected = blob_name.removesuffix(_CERT).removesuffix("@openssh.com").rsplit("-", 1)[1]
        curve = reader.cstring()
        if curve.decode("latin-1") != expected:
            raise ValueError(f"ECDSA key names curve {curve.decode('latin-1')!r}, not {expected}")
        point = reader.string()
        _ec_point(expected, point)
        fields = encode_string(curve) + encode_string(point)
    elif base == "ssh-rsa":
        e, n = reader.mpint(), reader.mpint()
        if n.bit_length() < RSA_MIN_BITS:
            raise ValueError(f"RSA key has {n.bit_length()} bits; OpenSSH requires at least {RSA_MIN_BITS}")
        fields = encode_mpint(e) + encode_mpint(n)
    elif base == "ssh-dss":
        fields = b"".join(encode_mpint(reader.mpint()) for _ in range(4))  # p, q, g, y
    else:  # pragma: no cover - KEY_TYPES lists only the branches above
        raise ValueError(f"unsupported key type {keytype}")
    if base.startswith("sk-"):
        fields += encode_string(reader.cstring())  # the security key's application, e.g. "ssh:"
    return fields


def _read_cert_body(reader: WireReader) -> None:
    """The certificate fields after the key (PROTOCOL.certkeys); the CA signature itself is not verified."""
    reader.uint(8)  # serial
    if reader.uint(4) not in (1, 2):  # SSH2_CERT_TYPE_USER, SSH2_CERT_TYPE_HOST
        raise ValueError("certificate has an unknown type")
    reader.cstring()  # key id
    reader.string()  # principals
    reader.uint(8)  # valid after
    reader.uint(8)  # valid before
    for _ in range(5):
        reader.string()  # critical options, extensions, reserved, signature key, signature


def parse_blob(data: bytes) -> PublicKey:
    """Decode a public key blob as OpenSSH does; ValueError says why OpenSSH would reject it."""
    reader = WireReader(data)
    blob_name = reader.cstring().decode("latin-1")
    keytype = KEY_TYPES.get(blob_name)
    if keytype is None:
        raise ValueError(f"key data holds an unknown key type {blob_name!r}")
    nonce = reader.string() if keytype.endswith(_CERT) else None
    fields = _read_plain(keytype, blob_name, reader)
    plain_type = _PLAIN.get(keytype, keytype)
    plain = encode_string(plain_type.encode()) + fields
    if nonce is None:
        reader.done()
        return PublicKey(keytype, plain, plain)
    start = reader.at
    _read_cert_body(reader)
    reader.done()
    blob = encode_string(keytype.encode()) + encode_string(nonce) + fields + data[start:]
    return PublicKey(keytype, blob, plain)
