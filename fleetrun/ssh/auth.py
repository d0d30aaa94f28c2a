"""Private keys (loaded once per run) and the authentication chain: named keys, agent keys, defaults, password."""

from __future__ import annotations

import base64
import copy
import os
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetrun.errors import HostFailure, UsageError
from fleetrun.keyblob import parse_blob
from fleetrun.models import Host, Outcome
from fleetrun.ssh.keys import AuthRefused, KeyFile, UnsupportedKeyType, load_private_key

if TYPE_CHECKING:
    import paramiko

    from fleetrun.ssh.agent import SocketAgent
    from fleetrun.ssh.connect import ConnectSettings
    from fleetrun.ssh.lean import LeanConnection

# paramiko is imported only where a connection needs it (an agent, a certificate, paramiko's own transport):
# a run of lean connections (fleetrun.ssh.lean) never imports it.
Key = Any  # a KeyFile, or one of paramiko's keys (an agent's, or one carrying a certificate)

CERT_SUFFIX = "-cert.pub"


def load_certificates(paths: Sequence[str], configured: set[str], warn: Callable[[str], None]) -> dict[str, bytes]:
    """User certificate files (CertificateFile, or `<key>-cert.pub` next to a key), each read once.

    One that is missing is skipped (with a warning when configured), as is one that is not a user certificate.
    """
    found: dict[str, bytes] = {}
    for path in dict.fromkeys(paths):
        try:
            fields = Path(path).read_text().split()
            blob = base64.b64decode(fields[1], validate=True)
        except FileNotFoundError:
            if path in configured:
                warn(f"certificate file {path} does not exist: skipped (as ssh does)")
            continue
        except (OSError, IndexError, ValueError, UnicodeDecodeError) as error:
            warn(f"certificate file {path} cannot be read ({error.__class__.__name__}): skipped")
            continue
        from fleetrun.hostcert import CERT_TYPE_USER, certificate_type_of  # only where certificates are

        kind = certificate_type_of(blob)
        if kind != CERT_TYPE_USER:
            what = "a host certificate" if kind is not None else "not a certificate"
            warn(f"certificate file {path} is {what}, not a user certificate: skipped (as ssh does)")
            continue
        found[path] = blob
    return found


def with_certificate(key: Key, blob: bytes) -> paramiko.PKey | None:
    """A copy of `key` (as paramiko's key object) that authenticates with the certificate `blob`, or None if the
    certificate is not for that key."""
    try:
        cert = parse_blob(blob)
    except ValueError:
        return None
    if cert.plain != key.asbytes():
        return None
    from paramiko.pkey import PublicBlob

    twin = copy.copy(key.paramiko() if isinstance(key, KeyFile) else key)
    twin.public_blob = PublicBlob(cert.keytype, blob)
    return twin


def load_keys(paths: Sequence[str], passphrase: str | None) -> dict[str, KeyFile]:
    """Load each distinct private key file once; a key that cannot be used is a usage error (exit 2)."""
    keys: dict[str, KeyFile] = {}
    secret = passphrase.encode() if passphrase is not None else None  # cryptography wants bytes
    for path in dict.fromkeys(paths):
        try:
            keys[path] = load_private_key(path, secret)
        except FileNotFoundError:
            raise UsageError(f"key file {path} does not exist: fix 'key' in the inventory or --key") from None
        except PermissionError:
            raise UsageError(f"key file {path} is not readable by this user") from None
        except TypeError as error:
            if "password" not in str(error).lower():
                raise UsageError(f"key file {path} cannot be loaded: {error}") from None
            # cryptography says "password-protected, but password was not provided" with a TypeError.
            raise UsageError(
                f"key file {path} is encrypted: pass --key-passphrase-env NAME with the passphrase in $NAME"
            ) from None
        except UnsupportedKeyType as error:
            raise UsageError(f"key file {path} is {error}, which fleetrun cannot use: use an Ed25519, ECDSA or "
                             "RSA key") from None
        except ValueError as error:
            hint = "wrong passphrase?" if passphrase else "is it a private key in PEM or OpenSSH format?"
            raise UsageError(f"key file {path} cannot be loaded ({error.__class__.__name__}): {hint}") from None
    return keys



def _public_blob(path: str) -> bytes | None:
    """The public half of a key file without its passphrase: `PATH.pub`, or the OpenSSH format's own header."""
    try:
        fields = Path(path + ".pub").read_text().split()
        if len(fields) >= 2:
            return base64.b64decode(fields[1], validate=True)
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    try:
        text = Path(path).read_text()
        body = "".join(text.split("-----BEGIN OPENSSH PRIVATE KEY-----", 1)[1].split("-----END", 1)[0].split())
        data = base64.b64decode(body)
        # "openssh-key-v1\0", then cipher, kdf name, kdf options (strings), key count, first public key.
        offset = len(b"openssh-key-v1\0")
        for _ in range(3):
            offset += 4 + struct.unpack(">I", data[offset : offset + 4])[0]
        offset += 4
        length = struct.unpack(">I", data[offset : offset + 4])[0]
        return data[offset + 4 : offset + 4 + length] or None
    except (OSError, ValueError, IndexError, UnicodeDecodeError, struct.error):
        return None


def agent_blobs(socket_path: str | None) -> set[bytes]:
    """The public keys an agent holds (empty if there is none); $SSH_AUTH_SOCK unless a socket is given."""
    agent = _open_agent(socket_path, 5.0)
    if agent is None:
        return set()
    try:
        return {key.asbytes() for key in agent.get_keys()}
    finally:
        agent.close()


def load_identities(
    paths: Sequence[str],
    configured: set[str],
    passphrase: str | None,
    agent_has: Callable[[bytes], bool],
    warn: Callable[[str], None],
) -> tuple[dict[str, KeyFile], dict[str, bytes]]:
    """Identity files from ssh_config or ssh's defaults: each distinct file loaded once, never a prompt.

    A file that cannot be used is skipped, as ssh skips it: quietly for a default that does not exist, with
    one warning otherwise. Returns (loaded keys, public blobs of encrypted keys ssh-agent may sign for).
    """
    keys: dict[str, KeyFile] = {}
    encrypted: dict[str, bytes] = {}
    secret = passphrase.encode() if passphrase is not None else None
    for path in dict.fromkeys(paths):
        named = path in configured
        try:
            keys[path] = load_private_key(path, secret)
        except FileNotFoundError:
            if named:
                warn(f"identity file {path} does not exist: skipped (as ssh does)")
        except (IsADirectoryError, PermissionError) as error:
            warn(f"identity file {path} cannot be read ({error.strerror}): skipped")
        except TypeError as error:
            if "password" not in str(error).lower():
                warn(f"identity file {path} cannot be loaded ({error}): skipped")
                continue
            blob = _public_blob(path)
            if blob is not None:
                encrypted[path] = blob
            if blob is None or not agent_has(blob):
                warn(f"identity file {path} is encrypted and no passphrase was given (--key-passphrase-env "
                     "NAME): skipped, fleetrun never prompts")
        except UnsupportedKeyType:
            warn(f"identity file {path} is of a key type fleetrun cannot use (DSA, XMSS or a security key): skipped")
        except ValueError as error:
            hint = "wrong passphrase?" if passphrase else "not a private key in PEM or OpenSSH format?"
            warn(f"identity file {path} cannot be loaded ({error.__class__.__name__}, {hint}): skipped")
    return keys, encrypted


def _open_agent(socket_path: str | None, timeout: float) -> SocketAgent | None:
    """The agent at `socket_path` (None: $SSH_AUTH_SOCK), or None if there is none to talk to."""
    path = socket_path or os.environ.get("SSH_AUTH_SOCK")
    if not path or path == "none":
        return None
    import paramiko

    from fleetrun.ssh.agent import SocketAgent

    try:
        return SocketAgent(path, timeout)
    except (OSError, paramiko.SSHException, EOFError):
        return None  # no agent listening there: like ssh, carry on without it


def authenticate(
    host: Host,
    settings: ConnectSettings,
    transport: paramiko.Transport | LeanConnection,
    password: str | None,
    remaining: Callable[[], float],
) -> None:
    """Keys, then password, each tried once, stopping at the first success. The order (README):

    1. ssh_config's CertificateFile certificates, each with the key file or agent key it certifies;
    2. the key files named for this host (--key or the inventory's key, then ssh_config's IdentityFile lines),
       each through ssh-agent instead when the file is encrypted and the agent holds it, and each followed by
       its `<file>-cert.pub` certificate when there is one and no CertificateFile is set (as ssh does);
    3. the agent's other keys, unless IdentitiesOnly (or --no-agent, or IdentityAgent none);
    4. ssh's default key files (~/.ssh/id_rsa, id_ecdsa, id_ed25519 …), only when no file was named;
    5. the password, if the host has one.
    """
    user = host.user or local_user()
    tried: list[str] = []
    allowed: list[str] | None = None
    offered: set[bytes] = set()
    keys = settings.keys or {}
    encrypted = settings.encrypted_identities or {}
    certificates = settings.certificates or {}
    files = host.identity_files or ((host.key,) if host.key else ())
    named, defaults = ((), files) if host.identity_files_default else (files, ())
    agent: SocketAgent | None = None
    agent_keys: list[paramiko.AgentKey] = []
    # fleetrun.ssh.lean signs with the key files themselves; paramiko's transport wants its own key objects.
    own_keys = bool(getattr(transport, "signs_key_files", False))
    if settings.use_agent and host.identity_agent != "none":
        agent = _open_agent(host.identity_agent, max(0.1, min(remaining(), 10.0)))
        agent_keys = list(agent.get_keys()) if agent is not None else []

    def attempt(label: str, method: Callable[[], object], kind: str) -> bool:
        nonlocal allowed
        if allowed is not None and kind not in allowed:
            return False
        tried.append(label)
        transport.auth_timeout = remaining()
        try:
            method()
        except Exception as error:
            refusal = _refusal(error)
            if refusal is None:
                raise
            kind_of_refusal, methods = refusal
            if kind_of_refusal == "methods":
                allowed = methods
            elif kind_of_refusal == "timeout":
                # The server never answered in time: a slow or overloaded host, not a wrong credential.
                raise HostFailure(Outcome.UNREACHABLE, f"no answer to authentication ({label}) in time") from None
            return False
        return transport.is_authenticated()

    def offer(label: str, key: Key) -> bool:
        blob = key.public_blob.key_blob if key.public_blob is not None else key.asbytes()
        if blob in offered:
            return False  # the same key under another name, or already offered by the agent
        offered.add(blob)
        signer = key.paramiko() if isinstance(key, KeyFile) and not own_keys else key
        # A KeyFile goes to the lean client, paramiko's keys to paramiko's transport (own_keys above).
        return attempt(label, lambda: transport.auth_publickey(user, signer), "publickey")  # type: ignore[arg-type]

    def private_half(path: str) -> tuple[Key | None, str]:
        if path in keys:
            return keys[path], f"key {path}"
        twin = next((key for key in agent_keys if key.asbytes() == encrypted.get(path)), None)
        return twin, f"key {path} (through the agent)"

    def offer_file(path: str) -> bool:
        key, label = private_half(path)
        if key is None:
            return False
        if offer(label, key):
            return True
        cert = certificates.get(path + CERT_SUFFIX) if not host.certificate_files else None
        certified = with_certificate(key, cert) if cert is not None else None
        return certified is not None and offer(f"certificate {path}{CERT_SUFFIX}", certified)

    def offer_certificate(path: str) -> bool:
        blob = certificates.get(path)
        if blob is None:
            return False
        # Its private half: any key file of the host, or any agent key (ssh signs with whichever holds it).
        holders = [private_half(file)[0] for file in files] + list(agent_keys)
        for holder in holders:
            certified = with_certificate(holder, blob) if holder is not None else None
            if certified is not None:
                return offer(f"certificate {path}", certified)
        return False

    try:
        for path in host.certificate_files:
            if offer_certificate(path):
                return
        for path in named:
            if offer_file(path):
                return
        if not host.identities_only:
            for number, agent_key in enumerate(agent_keys, 1):
                if offer(f"agent key {number}", agent_key):
                    return
        for path in defaults:
            if offer_file(path):
                return
    finally:
        if agent is not None:
            agent.close()
    if password is not None and attempt(  # never with a lean connection: lean.eligible refuses passwords
        "password", lambda: transport.auth_password(user, password), "password"  # type: ignore[union-attr]
    ):
        return
    if not tried:
        what = f"the server allows only {', '.join(allowed)}" if allowed else "no key, agent key or password given"
        raise HostFailure(Outcome.AUTH_FAILED, f"cannot authenticate as {user}: {what}")
    suffix = f"; the server allows {', '.join(allowed)}" if allowed else ""
    raise HostFailure(Outcome.AUTH_FAILED, f"authentication as {user} failed (tried {', '.join(tried)}){suffix}")


def _refusal(error: Exception) -> tuple[str, list[str]] | None:
    """How a key or password was refused ("methods": the server takes none of this kind, with what it takes;
    "refused"; "timeout": no answer), from either client's exception; None for anything else."""
    if isinstance(error, AuthRefused):
        return error.kind, list(error.allowed)
    paramiko = sys.modules.get("paramiko")  # its exceptions exist only once a paramiko transport was made
    if paramiko is not None:
        if isinstance(error, paramiko.BadAuthenticationType):
            return "methods", list(error.allowed_types)
        if isinstance(error, paramiko.AuthenticationException):
            return ("timeout" if "timeout" in str(error).lower() else "refused"), []
    return None


def local_user() -> str:
    import getpass

    return getpass.getuser()
