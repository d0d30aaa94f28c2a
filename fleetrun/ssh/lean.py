"""The lean SSH client: the common connection (curve25519 or ML-KEM, AES-GCM, a key file) run by the worker thread.

paramiko runs every connection on a thread of its own and hands each packet to the caller's thread through
events; at `true` on 200 hosts that was ~7.7 ms of client CPU per host, nearly all of it paramiko's Python
packet code and thread hand-offs, where the handshake's cryptography is ~0.3 ms (issue 13). This client does
the same protocol in straight-line code on the calling thread: no thread, no events, a message parsed once.

It speaks only what it can do exactly as paramiko would have: it reads the server's banner and KEXINIT
before sending its own (the same lists paramiko sends), and if the algorithms paramiko would pick are not
curve25519 or mlkem768x25519 + AES-GCM + a host key type it verifies, or anything at all is unusual before
that point, it hands the socket to paramiko (`Handover`), which replays what the server already said and
carries on, with its own diagnostics. After the key exchange everything is its own; hosts that need more
than a key file and one exec channel (agent, password, certificates, bastions, sudo, stdin, SFTP) never come
here (`eligible`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from fleetrun import __version__
from fleetrun.errors import HostFailure
from fleetrun.models import Host, Outcome
from fleetrun.ssh.keys import ECDSA_HASHES, RSA_HASHES, AuthRefused, KeyFile
from fleetrun.ssh.lean_wire import Deadline, Reader, ReplaySocket, Wire, WireError, mpint, name_list, string, text

MSG_DISCONNECT, MSG_IGNORE, MSG_UNIMPLEMENTED, MSG_DEBUG = 1, 2, 3, 4
MSG_SERVICE_REQUEST, MSG_SERVICE_ACCEPT, MSG_EXT_INFO = 5, 6, 7
MSG_KEXINIT, MSG_NEWKEYS, MSG_KEX_ECDH_INIT, MSG_KEX_ECDH_REPLY = 20, 21, 30, 31
MSG_USERAUTH_REQUEST, MSG_USERAUTH_FAILURE, MSG_USERAUTH_SUCCESS, MSG_USERAUTH_BANNER = 50, 51, 52, 53
NOISE = (MSG_IGNORE, MSG_DEBUG, MSG_UNIMPLEMENTED)  # messages any side may send at any time: skipped

# Every fleetrun connection says this, paramiko's too (fleetrun.ssh.paramiko_connect sets it): a connection handed
# over to paramiko has sent it already.
BANNER = f"SSH-2.0-fleetrun_{__version__}".encode()
MLKEM_KEX = "mlkem768x25519-sha256"  # OpenSSH 9.9+'s default, and paramiko's first choice
LEAN_KEX = frozenset({"curve25519-sha256@libssh.org", "curve25519-sha256", MLKEM_KEX})
MLKEM768_CIPHERTEXT = 1088  # FIPS 203; the server's reply is the ciphertext, then its X25519 public value
GCM_KEY_SIZES = {"aes128-gcm@openssh.com": 16, "aes256-gcm@openssh.com": 32}
LEAN_HOST_KEYS = frozenset({"ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                            "rsa-sha2-512", "rsa-sha2-256"})  # fmt: skip
RSA_SIGNATURES = ("rsa-sha2-512", "rsa-sha2-256")  # paramiko's RSA pubkey algorithms, in its order
KEXINIT_WAIT = 2.0  # seconds to wait for the server's KEXINIT once its banner came; then paramiko takes over
# Strict kex (the Terrapin fix) is asked for as paramiko asks; it changes nothing here: AES-GCM does not use
# the sequence numbers it resets, and nothing but key-exchange messages is accepted during the exchange anyway.
STRICT_CLIENT = "kex-strict-c-v00@openssh.com"
ENGINE_VARIABLE = "FLEETRUN_SSH"  # "paramiko": every connection goes through paramiko (the lean client is off)

# paramiko 5's own preferences (Transport._preferred_* and _key_info), which the lean client's KEXINIT repeats
# without importing paramiko. tests/unit/test_lean_offer.py holds them equal to the installed paramiko's, so
# an upgrade that changes paramiko's lists fails there first.
PARAMIKO_CIPHERS = ("aes128-ctr", "aes192-ctr", "aes256-ctr", "aes128-cbc", "aes192-cbc", "aes256-cbc", "3des-cbc",
                    "aes128-gcm@openssh.com", "aes256-gcm@openssh.com")  # fmt: skip
PARAMIKO_MACS = ("hmac-sha2-256", "hmac-sha2-512", "hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com",
                 "hmac-sha1", "hmac-md5", "hmac-sha1-96", "hmac-md5-96")  # fmt: skip
PARAMIKO_COMPRESSION = ("none",)
PARAMIKO_KEY_TYPES = ("rsa-sha2-256", "rsa-sha2-256-cert-v01@openssh.com", "rsa-sha2-512",
                      "rsa-sha2-512-cert-v01@openssh.com", "ecdsa-sha2-nistp256",
                      "ecdsa-sha2-nistp256-cert-v01@openssh.com", "ecdsa-sha2-nistp384",
                      "ecdsa-sha2-nistp384-cert-v01@openssh.com", "ecdsa-sha2-nistp521",
                      "ecdsa-sha2-nistp521-cert-v01@openssh.com", "ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com")
_PARAMIKO_OTHER_KEX = ("ecdh-sha2-nistp256", "ecdh-sha2-nistp384", "ecdh-sha2-nistp521",
                       "diffie-hellman-group16-sha512", "diffie-hellman-group-exchange-sha256",
                       "diffie-hellman-group14-sha256")  # fmt: skip


@functools.lru_cache(maxsize=1)
def paramiko_kex() -> tuple[str, ...]:
    """paramiko's Transport._preferred_kex: ML-KEM and curve25519 first where this cryptography has them, as
    paramiko decides (KexMLKEM768X25519.is_available, KexCurve25519.is_available)."""
    first: list[str] = []
    try:
        from cryptography.hazmat.primitives.asymmetric import mlkem

        mlkem.MLKEM768PrivateKey.generate()
        X25519PrivateKey.generate()
        first.append(MLKEM_KEX)
    except (ImportError, UnsupportedAlgorithm, AttributeError):
        pass
    try:
        X25519PrivateKey.generate()
        first.append("curve25519-sha256@libssh.org")
    except UnsupportedAlgorithm:
        pass
    return (*first, *_PARAMIKO_OTHER_KEX)


def warm() -> None:
    """Compute now what every lean connection computes once per process (the kex list, which loads
    cryptography's OpenSSL backend: ~30 ms): before worker processes fork, so they share it, not each pay."""
    if enabled():
        paramiko_kex()


def enabled() -> bool:
    return os.environ.get(ENGINE_VARIABLE, "").strip().lower() != "paramiko"


@dataclass(frozen=True)
class Offer:
    """What the client sends in its KEXINIT: exactly paramiko's lists for this host."""

    kex: tuple[str, ...]
    key_types: tuple[str, ...]
    ciphers: tuple[str, ...]
    macs: tuple[str, ...]
    compression: tuple[str, ...]

    def kexinit(self, cookie: bytes) -> bytes:
        # paramiko's Transport._send_kex_init, field by field: its markers follow its kex list.
        kex = (*self.kex, "ext-info-c", STRICT_CLIENT)
        return (bytes((MSG_KEXINIT,)) + cookie + name_list(kex) + name_list(self.key_types)
                + name_list(self.ciphers) * 2 + name_list(self.macs) * 2 + name_list(self.compression) * 2
                + string(b"") * 2 + b"\0" + b"\0\0\0\0")  # fmt: skip


class Handover(Exception):
    """Not a connection the lean client takes: paramiko carries on over the same socket (`replay_socket`)."""

    def __init__(self, wire: Wire, error: OSError | None = None) -> None:
        super().__init__("handed over to paramiko")
        self.received = bytes(wire.received)
        self.error = error

    def replay_socket(self, sock: object) -> ReplaySocket:
        return ReplaySocket(sock, self.received, BANNER + b"\r\n", self.error)  # type: ignore[arg-type]


def _first(ours: Sequence[str], theirs: Sequence[str]) -> str | None:
    """The algorithm SSH negotiation picks: the client's first that the server also has (RFC 4253 §7.1)."""
    return next((name for name in ours if name in theirs), None)


@dataclass(frozen=True)
class _Agreed:
    kex: str
    host_key: str
    cipher_out: str
    cipher_in: str


def _agree(offer: Offer, server_kexinit: bytes) -> _Agreed | None:
    """What paramiko would agree on with this server, if it is all the lean client's; None otherwise."""
    read = Reader(server_kexinit, 17)  # message number and cookie
    kex, host_keys, c2s, s2c, mac_c2s, mac_s2c, comp_c2s, comp_s2c = (read.names() for _ in range(8))
    read.string(), read.string()  # languages
    if read.boolean():
        return None  # a guessed first kex packet follows: paramiko knows what to do with it
    agreed = _Agreed(_first(offer.kex, kex) or "", _first(offer.key_types, host_keys) or "",
                     _first(offer.ciphers, c2s) or "", _first(offer.ciphers, s2c) or "")  # fmt: skip
    if (agreed.kex not in LEAN_KEX or agreed.host_key not in LEAN_HOST_KEYS or agreed.cipher_out not in GCM_KEY_SIZES
            or agreed.cipher_in not in GCM_KEY_SIZES
            or _first(offer.macs, mac_c2s) is None or _first(offer.macs, mac_s2c) is None
            or _first(offer.compression, comp_c2s) != "none" or _first(offer.compression, comp_s2c) != "none"):
        return None  # fmt: skip
    return agreed


class LeanConnection:
    """One connection after its key exchange: the wire, the session id, and what the server announced."""

    def __init__(self, wire: Wire, where: str, session_id: bytes, host_key: bytes, offer: Offer,
                 versions: tuple[bytes, bytes]) -> None:
        self.wire = wire
        self.where = where
        self.session_id = session_id
        self.host_key = host_key
        self.server_sig_algs: tuple[str, ...] = ()
        self.auth_timeout = 30.0
        self.authenticated = False
        self._offer = offer  # what a rekey offers again, with the banners both sides sent (the exchange hash)
        self._versions = versions

    # -- the part of paramiko.Transport's interface that fleetrun.ssh.auth.authenticate uses for key files --

    def is_authenticated(self) -> bool:
        return self.authenticated

    signs_key_files = True  # fleetrun.ssh.auth hands it KeyFile objects, not paramiko's keys

    def auth_publickey(self, username: str, key: KeyFile) -> list[str]:
        """paramiko's auth_publickey for a key file: [] on success, the methods left after a partial success;
        AuthRefused otherwise ("methods" when the server takes no keys, "refused", "timeout")."""
        algorithm = key.get_name()
        if "rsa" in algorithm:
            # paramiko's choice (AuthHandler._finalize_pubkey_algorithm): its first SHA-2 RSA algorithm the
            # server lists in server-sig-algs; the first of its own when the server sent no list.
            agreed = [name for name in RSA_SIGNATURES if name in self.server_sig_algs] if self.server_sig_algs \
                else list(RSA_SIGNATURES)
            if not agreed:
                raise AuthRefused("refused")  # paramiko's words: no pubkey algorithm to agree on for this key
            algorithm = agreed[0]
        request = (bytes((MSG_USERAUTH_REQUEST,)) + text(username) + text("ssh-connection") + text("publickey")
                   + b"\1" + text(algorithm) + string(key.asbytes()))  # fmt: skip
        signature = key.sign(string(self.session_id) + request, algorithm)
        wire = self.wire
        wire.reading(time.monotonic() + self.auth_timeout)
        wire.send(request + string(signature))
        while True:
            try:
                message = wire.read()
            except Deadline:
                raise AuthRefused("timeout") from None
            kind = message[0]
            if kind == MSG_USERAUTH_SUCCESS:
                self.authenticated = True
                return []
            if kind == MSG_USERAUTH_FAILURE:
                read = Reader(message)
                allowed, partial = list(read.names()), read.boolean()
                if partial:
                    return allowed
                if "publickey" not in allowed:
                    raise AuthRefused("methods", tuple(allowed))
                raise AuthRefused("refused")
            if kind == MSG_DISCONNECT:
                raise EOFError(_disconnect_reason(message))
            if kind not in (*NOISE, MSG_USERAUTH_BANNER):
                raise WireError(f"unexpected message {kind} during authentication")

    # -- key exchange, first and later (a server may rekey mid-command) --

    def rekey(self, server_kexinit: bytes) -> None:
        """Answer the server's KEXINIT in the middle of the session: a new exchange, the same host key."""
        agreed = _agree(self._offer, server_kexinit)
        if agreed is None:
            raise WireError("the server asked to rekey with algorithms the lean client does not do")
        _, blob, _ = _exchange(self.wire, self._offer, agreed, server_kexinit, self.session_id, self._versions)
        if blob != self.host_key:
            raise WireError("the server changed its host key during the session")


def _disconnect_reason(message: bytes) -> str:
    try:
        read = Reader(message)
        read.u32()
        return f"the server disconnected: {read.text() or 'no reason given'}"
    except WireError:
        return "the server disconnected"


def _read_kex_message(wire: Wire) -> bytes:
    """The next key-exchange message; under strict kex (both sides asked for it) nothing else may come."""
    while True:
        message = wire.read()
        if message[0] == MSG_DISCONNECT:
            raise EOFError(_disconnect_reason(message))
        if message[0] not in NOISE:
            return message


def _exchange(wire: Wire, offer: Offer, agreed: _Agreed, server_kexinit: bytes, session_id: bytes | None,
              versions: tuple[bytes, bytes]) -> tuple[str, bytes, bytes]:
    """One curve25519-sha256 (RFC 8731) or mlkem768x25519-sha256 exchange and NEWKEYS (RFC 4253 §7-8); returns
    the host key's type and blob, and the exchange hash H.

    Sends KEXINIT and ECDH_INIT in one write (the server's KEXINIT is in hand, so the method is known), then
    NEWKEYS and, on the first exchange, the userauth service request right behind it under the new keys.
    """
    ours = offer.kexinit(wire.cookie)
    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    hybrid = agreed.kex == MLKEM_KEX
    if hybrid:  # draft-ietf-sshm-mlkem-hybrid-kex: the same messages, ML-KEM's public key before X25519's
        from cryptography.hazmat.primitives.asymmetric import mlkem

        decapsulation = mlkem.MLKEM768PrivateKey.generate()
        public = decapsulation.public_key().public_bytes_raw() + public
    wire.send(ours, bytes((MSG_KEX_ECDH_INIT,)) + string(public))
    reply = _read_kex_message(wire)
    if reply[0] != MSG_KEX_ECDH_REPLY:
        raise WireError(f"expected the key exchange reply, got message {reply[0]}")
    read = Reader(reply)
    host_blob, server_public, signature = read.string(), read.string(), read.string()
    if hybrid:
        if len(server_public) != MLKEM768_CIPHERTEXT + 32:
            raise WireError(f"the server's {MLKEM_KEX} reply is {len(server_public)} bytes, not "
                            f"{MLKEM768_CIPHERTEXT + 32}")
        try:
            encapsulated = decapsulation.decapsulate(server_public[:MLKEM768_CIPHERTEXT])
        except ValueError:
            raise WireError("the server's ML-KEM ciphertext is invalid") from None
        # K is SHA-256 of both shared secrets, and goes into the hash and the keys as a string, not an mpint.
        secret = string(hashlib.sha256(encapsulated + _x25519(private, server_public[MLKEM768_CIPHERTEXT:])).digest())
    else:
        secret = mpint(_x25519(private, server_public))
    exchange_hash = hashlib.sha256(string(versions[0]) + string(versions[1]) + string(ours) + string(server_kexinit)
                                   + string(host_blob) + string(public) + string(server_public) + secret).digest()
    key_type = _verify_host_key(host_blob, signature, agreed.host_key, exchange_hash)
    session = session_id or exchange_hash

    def derive(letter: bytes, size: int) -> bytes:
        return hashlib.sha256(secret + exchange_hash + letter + session).digest()[:size]

    newkeys = wire.packet(bytes((MSG_NEWKEYS,)))
    wire.encrypt(derive(b"C", GCM_KEY_SIZES[agreed.cipher_out]), derive(b"A", 12))
    follow = b"" if session_id else wire.packet(bytes((MSG_SERVICE_REQUEST,)) + text("ssh-userauth"))
    wire.send_raw(newkeys + follow)
    if _read_kex_message(wire)[0] != MSG_NEWKEYS:
        raise WireError("expected NEWKEYS")
    wire.decrypt(derive(b"D", GCM_KEY_SIZES[agreed.cipher_in]), derive(b"B", 12))
    return key_type, host_blob, exchange_hash


def _x25519(private: X25519PrivateKey, server_public: bytes) -> bytes:
    """The X25519 shared secret (RFC 8731: an all-zero one means a small-order public value)."""
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(server_public))
    except ValueError:
        raise WireError("the server's curve25519 public value is invalid") from None
    if shared == b"\0" * 32:
        raise WireError("the server's curve25519 public value has the wrong order")
    return shared


def _verify_host_key(blob: bytes, signature: bytes, algorithm: str, exchange_hash: bytes) -> str:
    """Check the server's signature of the exchange hash with its host key (and the agreed algorithm), through
    cryptography (paramiko's Ed25519 goes through PyNaCl, whose every call releases the GIL); returns the key's
    type."""
    read_blob = Reader(blob, 0)
    key_type = read_blob.text()
    if key_type != ("ssh-rsa" if algorithm.startswith("rsa-sha2-") else algorithm):
        raise WireError(f"the server sent a {key_type} host key for {algorithm}")
    read_signature = Reader(signature, 0)
    if read_signature.text() != algorithm:
        raise WireError(f"the host key signature is not {algorithm}")
    raw = read_signature.string()
    try:
        if key_type == "ssh-ed25519":
            Ed25519PublicKey.from_public_bytes(read_blob.string()).verify(raw, exchange_hash)
            return key_type
        public = serialization.load_ssh_public_key(key_type.encode() + b" " + base64.b64encode(blob))
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(raw, exchange_hash, padding.PKCS1v15(), RSA_HASHES[algorithm]())
        elif isinstance(public, ec.EllipticCurvePublicKey):
            read_rs = Reader(raw, 0)
            r, s = (int.from_bytes(read_rs.string(), "big") for _ in range(2))
            public.verify(encode_dss_signature(r, s), exchange_hash, ec.ECDSA(ECDSA_HASHES[key_type]()))
        else:
            raise WireError(f"a {key_type} host key is not one the lean client checks (a bug)")
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        raise WireError(f"the {algorithm} host key signature does not verify") from None
    return key_type


def handshake(sock: object, where: str, offer: Offer, deadline: float, margin: float,
              check_host_key: Callable[[str, bytes], bool]) -> tuple[LeanConnection, bool]:
    """Banner, key exchange, host-key check and the userauth service; (connection, host key verified).

    Raises Handover (paramiko takes it from there) until the server's KEXINIT says this is a lean connection,
    leaving `margin` seconds of the budget for paramiko to tell what went wrong; then HostFailure.
    """
    wire = Wire(sock)  # type: ignore[arg-type]  # a socket.socket from tcp_link
    wire.reading(deadline - margin)
    try:
        wire.send_raw(BANNER + b"\r\n")
        server_banner = wire.line()
        if not server_banner.startswith((b"SSH-2.0-", b"SSH-1.99-")):
            raise Handover(wire)  # text before the banner, or not SSH 2: paramiko's handling and its words
        wire.reading(min(deadline - margin, time.monotonic() + KEXINIT_WAIT))
        server_kexinit = wire.read()
    except (Deadline, EOFError, WireError):
        raise Handover(wire) from None
    except OSError as error:
        raise Handover(wire, error) from None
    if server_kexinit[0] != MSG_KEXINIT:
        raise Handover(wire)
    try:
        agreed = _agree(offer, server_kexinit)
    except WireError:
        raise Handover(wire) from None
    if agreed is None:
        raise Handover(wire)
    wire.forget()
    wire.reading(deadline)
    wire.block()
    versions = (BANNER, server_banner)
    try:
        key_type, host_blob, exchange_hash = _exchange(wire, offer, agreed, server_kexinit, None, versions)
    except Deadline:
        raise HostFailure(Outcome.UNREACHABLE, f"the SSH key exchange with {where} did not finish in time") from None
    except (EOFError, OSError, WireError) as error:
        raise HostFailure(Outcome.UNREACHABLE, f"the SSH key exchange with {where} failed: {error}") from None
    connection = LeanConnection(wire, where, exchange_hash, host_blob, offer, versions)
    verified = check_host_key(key_type, host_blob)
    try:
        _service_accepted(connection)
    except Deadline:
        raise HostFailure(Outcome.UNREACHABLE, f"no answer to authentication from {where} in time",
                          host_key_verified=verified) from None
    except (EOFError, OSError, WireError) as error:
        raise HostFailure(Outcome.UNREACHABLE, _after_handshake(error, where), host_key_verified=verified) from None
    return connection, verified


def _service_accepted(connection: LeanConnection) -> None:
    """Wait for the userauth service (asked for with NEWKEYS), keeping the server-sig-algs of its EXT_INFO."""
    while True:
        message = connection.wire.read()
        kind = message[0]
        if kind == MSG_SERVICE_ACCEPT:
            return
        if kind == MSG_EXT_INFO:
            read = Reader(message)
            for _ in range(read.u32()):
                name, value = read.text(), read.string()
                if name == "server-sig-algs":
                    connection.server_sig_algs = tuple(value.decode("ascii", "replace").split(","))
        elif kind == MSG_DISCONNECT:
            raise EOFError(_disconnect_reason(message))
        elif kind not in NOISE:
            raise WireError(f"unexpected message {kind} before the userauth service")


def _after_handshake(error: BaseException, where: str) -> str:
    from fleetrun.ssh.diagnose import describe_after_handshake

    return describe_after_handshake(error, where)


def eligible(host: Host, password: str | None, keys: dict[str, KeyFile], has_agent: bool,
             certificates: dict[str, bytes]) -> bool:
    """Whether the lean client can do all this host's connection needs: TCP, key files, nothing else."""
    if host.via or host.proxy_command or host.server_alive_interval or host.forward_agent or password is not None:
        return False
    if has_agent or host.certificate_files:
        return False  # the agent's keys and certificates are offered in an order paramiko's path keeps
    files = host.identity_files or ((host.key,) if host.key else ())
    if not any(path in keys for path in files):
        return False  # no key file to offer: paramiko's path says why (and tries the defaults)
    return not any(path + "-cert.pub" in certificates for path in files)
