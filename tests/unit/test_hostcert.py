"""Host certificates read and judged as OpenSSH does (sshkey_cert_check_host, check_host_key's CA lookup).

Certificates are made in-process with `cryptography`'s SSHCertificateBuilder, so every corner (expired, not
yet valid, other principals, critical options, a forged signature) is one line; the lab tests in
tests/integration/test_hostcerts.py hold the same rules against the real ssh client.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import SSHCertificateBuilder, SSHCertificateType

from fleetrun.hostcert import (
    CERT_TYPE_HOST,
    CERT_TYPE_USER,
    CertificateError,
    certificate_type_of,
    read_certificate,
)
from fleetrun.hostkeys import KnownHosts, Verdict, host_key_files, host_key_names
from fleetrun.keyblob import parse_blob
from fleetrun.models import Host

# Validity windows are days wide: a suite on a loaded machine can take many minutes between import and test.
NOW = int(time.time())
DAY = 86400


def openssh(public: object) -> str:
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()  # type: ignore[attr-defined]


def certificate(ca: object, key: object, *, principals: list[bytes] | None = (b"web01",),  # type: ignore[assignment]
                kind: SSHCertificateType = SSHCertificateType.HOST, after: int = NOW - DAY,
                before: int = NOW + 60 * DAY,
                critical: dict[bytes, bytes] | None = None) -> bytes:
    builder = (SSHCertificateBuilder().public_key(key.public_key()).serial(7).type(kind).key_id(b"web01-id")  # type: ignore[attr-defined]
               .valid_after(after).valid_before(before))
    builder = builder.valid_principals(list(principals)) if principals else builder.valid_for_all_principals()
    for name, value in (critical or {}).items():
        builder = builder.add_critical_option(name, value)
    cert = builder.sign(ca)  # type: ignore[arg-type]
    return base64.b64decode(cert.public_bytes().split()[1])


@pytest.fixture(scope="module")
def keys() -> dict[str, object]:
    return {"ca": ed25519.Ed25519PrivateKey.generate(), "other_ca": ec.generate_private_key(ec.SECP256R1()),
            "host": ed25519.Ed25519PrivateKey.generate()}


def test_reading_a_certificate(keys) -> None:
    cert = read_certificate(certificate(keys["ca"], keys["host"], principals=[b"web01", b"web01.example"]))
    assert (cert.cert_type, cert.serial, cert.key_id) == (CERT_TYPE_HOST, 7, "web01-id")
    assert cert.principals == ("web01", "web01.example")
    assert cert.signature_type == "ssh-ed25519"
    assert cert.signature_key == base64.b64decode(openssh(keys["ca"].public_key()).split()[1])
    assert cert.key.plain == base64.b64decode(openssh(keys["host"].public_key()).split()[1])
    assert certificate_type_of(certificate(keys["ca"], keys["host"], kind=SSHCertificateType.USER)) == CERT_TYPE_USER
    assert certificate_type_of(cert.key.plain) is None  # a plain key is no certificate


def test_a_forged_signature_or_a_plain_key_is_refused(keys) -> None:
    blob = bytearray(certificate(keys["ca"], keys["host"]))
    blob[-5] ^= 1  # inside the CA's signature
    with pytest.raises(CertificateError, match="signature does not verify"):
        read_certificate(bytes(blob))
    with pytest.raises(CertificateError, match="not a certificate"):
        read_certificate(base64.b64decode(openssh(keys["host"].public_key()).split()[1]))


@pytest.mark.parametrize(("options", "name", "reason"), [
    ({}, "web01", None),
    ({"principals": None}, "anything", None),  # no principals: valid for every host, as in OpenSSH
    ({"kind": SSHCertificateType.USER}, "web01", "Certificate invalid: not a host certificate"),
    ({"after": NOW + 30 * DAY}, "web01", "Certificate invalid: not yet valid"),
    ({"before": NOW - 1}, "web01", "Certificate invalid: expired"),
    ({}, "WEB01", "Certificate invalid: name is not a listed principal"),  # compared exactly (names are lowercased)
    ({"critical": {b"force-command": b"true"}}, "web01", "Certificate contains unsupported critical options"),
])
def test_check_host(keys, options, name, reason) -> None:
    assert read_certificate(certificate(keys["ca"], keys["host"], **options)).check_host(name) == reason


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_cert_authority_line_vouches_for_the_certificates_it_signed(tmp_path: Path, keys) -> None:
    ca, other, host = (openssh(keys[k].public_key()) for k in ("ca", "other_ca", "host"))
    cert = read_certificate(certificate(keys["ca"], keys["host"]))
    known = KnownHosts.load([write(tmp_path, f"@cert-authority *.fleet,web01 {ca}", f"@cert-authority db* {other}")])
    check = known.judge_certificate(["web01"], cert, "web01")
    assert check.verdict is Verdict.KNOWN and check.by_certificate and check.line is not None
    assert check.line.line == 1
    # The CA line must name the host: under another name, the certificate is just its plain key (unknown).
    unknown = known.judge_certificate(["db01"], cert, "web01")
    assert unknown.verdict is Verdict.UNKNOWN and "is not the @cert-authority for this host" in str(
        unknown.certificate_refused)
    assert known.judge_certificate(["elsewhere"], cert, "web01").certificate_refused is None  # no CA line at all
    # A plain line for the key itself still vouches for it when the certificate is refused ("downgrade").
    expired = read_certificate(certificate(keys["ca"], keys["host"], before=NOW - 5))
    plain = KnownHosts.load([write(tmp_path, f"@cert-authority * {ca}", f"web01 {host}")])
    fallback = plain.judge_certificate(["web01"], expired, "web01")
    assert fallback.verdict is Verdict.KNOWN and not fallback.by_certificate
    assert "Certificate invalid: expired" in str(fallback.certificate_refused)


def test_port_fallback_and_revocation(tmp_path: Path, keys) -> None:
    ca, host = (openssh(keys[k].public_key()) for k in ("ca", "host"))
    cert = read_certificate(certificate(keys["ca"], keys["host"]))
    bare = KnownHosts.load([write(tmp_path, f"@cert-authority web01 {ca}")])
    # No CA line for [web01]:2222 at all: the bare name's, as ssh retries without the port.
    assert bare.judge_certificate(["[web01]:2222"], cert, "web01").verdict is Verdict.KNOWN
    # A CA line for [web01]:2222 that did not sign it: no retry under the bare name.
    (tmp_path / "a").mkdir()
    other = openssh(keys["other_ca"].public_key())
    both = KnownHosts.load([write(tmp_path / "a", f"@cert-authority [web01]:2222 {other}",
                                  f"@cert-authority web01 {ca}")])
    assert both.judge_certificate(["[web01]:2222"], cert, "web01").verdict is Verdict.UNKNOWN
    # @revoked for the CA or for the certified key refuses it, under either name.
    for number, revoked in enumerate((ca, host)):
        (tmp_path / f"revoked{number}").mkdir()  # not named after the key: base64 has "/"
        lines = (f"@cert-authority * {ca}", f"@revoked web01 {revoked}")
        known = KnownHosts.load([write(tmp_path / f"revoked{number}", *lines)])
        check = known.judge_certificate(["[web01]:2222"], cert, "web01")
        assert check.verdict is Verdict.REVOKED and check.explain().startswith("REVOKED host key for web01: ")


def test_host_key_names_and_files() -> None:
    host = Host("web01", "10.0.0.5", port=2222, known_hosts=("/inv/kh",), user_known_hosts=("/u/a", "/u/b"),
                global_known_hosts=("/etc/ssh/ssh_known_hosts",))
    assert host_key_names(host) == ["[10.0.0.5]:2222", "[web01]:2222"]
    assert host_key_names(Host("x", "10.0.0.5", host_key_alias="web01.alias")) == ["web01.alias"]
    assert host_key_files(host) == (("/inv/kh", "/u/a", "/u/b", "/etc/ssh/ssh_known_hosts"), "/inv/kh")
    # Without the inventory's file, accept-new writes UserKnownHostsFile's first; with `none`, nowhere.
    assert host_key_files(Host("w", "w", user_known_hosts=("/u/a", "/u/b")))[1] == "/u/a"
    assert host_key_files(Host("w", "w", user_known_hosts=()))[1] is None


def test_hashed_append_is_found_by_ssh_keygen(tmp_path: Path, keys) -> None:
    import subprocess

    host = openssh(keys["host"].public_key())
    blob = base64.b64decode(host.split()[1])
    path = tmp_path / "known_hosts"
    known = KnownHosts.load([path])
    assert known.add(path, "[web01]:2222", "ssh-ed25519", blob, hashed=True)
    line = path.read_text()
    assert line.startswith("|1|") and "web01" not in line
    assert known.check(["[web01]:2222"], "ssh-ed25519", blob) is Verdict.KNOWN
    assert not known.add(path, "[web01]:2222", "ssh-ed25519", blob, hashed=True)  # once only
    found = subprocess.run(["ssh-keygen", "-F", "[web01]:2222", "-f", str(path)], capture_output=True, text=True)
    assert found.returncode == 0 and parse_blob(blob).fingerprint  # ssh-keygen finds the hashed line
    assert "Host [web01]:2222 found: line 1" in found.stdout
