"""Host and user certificates against lab sshd hosts, each verdict held against the real OpenSSH client.

Each host has an Ed25519 host key signed (after the lab started: sshd loads its keys per connection) with
`ssh-keygen -s CA -h`, with the validity and principals a case needs. fleetrun and `ssh` get the same
known_hosts for a host and must agree on whether to trust it; fleetrun also says why it did not.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from fleet import fleetrun

from fleetrun.errors import LabError
from fleetrun.lab import Lab, LabHost, start_lab, stop_lab

pytestmark = [pytest.mark.integration, pytest.mark.skipif(shutil.which("ssh") is None, reason="needs ssh")]


def keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True, stdin=subprocess.DEVNULL)


def pub(path: Path) -> str:
    return " ".join(path.read_text().split()[:2])


@dataclass(frozen=True)
class Case:
    sign: tuple[str, ...]  # ssh-keygen -s options besides -s/-I/-h: principals, validity
    lines: str  # known_hosts text; {port} is [addr]:port, {bare} the address, {ca}/{other_ca}/{key} keys
    expect: str  # fleetrun's verdict: ok, or the start of its error
    alias: str | None = None


CASES: dict[str, Case] = {
    "valid": Case(("-n", "{address}", "-V", "-5m:+1h"), "@cert-authority {port} {ca}\n", "ok"),
    "wildcard-line": Case(("-n", "{address}", "-V", "-5m:+1h"), "@cert-authority * {ca}\n", "ok"),
    "bare-name-line": Case(("-n", "{address}", "-V", "-5m:+1h"), "@cert-authority {bare} {ca}\n", "ok"),
    "any-principal": Case(("-V", "-5m:+1h"), "@cert-authority * {ca}\n", "ok"),
    "expired": Case(("-n", "{address}", "-V", "20200101:20200102"), "@cert-authority * {ca}\n",
                    "Certificate invalid: expired"),
    "not-yet-valid": Case(("-n", "{address}", "-V", "+1d:+2d"), "@cert-authority * {ca}\n",
                          "Certificate invalid: not yet valid"),
    "wrong-principal": Case(("-n", "web.example", "-V", "-5m:+1h"), "@cert-authority * {ca}\n",
                            "Certificate invalid: name is not a listed principal"),
    "other-ca": Case(("-n", "{address}",), "@cert-authority * {other_ca}\n", "is not the @cert-authority"),
    "revoked-ca": Case(("-n", "{address}",), "@cert-authority * {ca}\n@revoked * {ca}\n", "REVOKED"),
    "revoked-key": Case(("-n", "{address}",), "@cert-authority * {ca}\n@revoked * {key}\n", "REVOKED"),
    "ca-elsewhere-plain-key-known": Case(("-n", "{address}",), "@cert-authority nowhere {ca}\n{port} {key}\n", "ok"),
    "expired-plain-key-known": Case(("-n", "{address}", "-V", "20200101:20200102"),
                                    "@cert-authority * {ca}\n{port} {key}\n", "ok"),
    "alias": Case(("-n", "web07.example",), "@cert-authority web07.example {ca}\n", "ok", alias="web07.example"),
    "alias-wrong-principal": Case(("-n", "{address}",), "@cert-authority web08.example {ca}\n",
                                  "Certificate invalid: name is not a listed principal", alias="web08.example"),
}


@dataclass
class Setup:
    lab: Lab
    ca: Path
    other_ca: Path
    home: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("certlab")
    keys = tmp_path_factory.mktemp("cas")
    ca, other = keys / "ca", keys / "other_ca"
    for path in (ca, other):
        keygen("-t", "ed25519", "-N", "", "-f", str(path))
    count = len(CASES)
    names = [f"lab{i:02d}" for i in range(1, count + 1)]
    # Every host lists every host's certificate: sshd skips those that match none of its keys.
    config = "".join(f"HostCertificate {directory}/{name}_host_ed25519_key-cert.pub\n" for name in names)
    lab = start_lab(count, directory, extra_config=config)
    try:
        for host, (label, case) in zip(lab.hosts, CASES.items(), strict=True):
            options = [option.format(address=host.address) for option in case.sign]
            keygen("-s", str(ca), "-h", "-I", f"{label}-cert", *options, str(host.host_key.with_suffix(".pub")))
        yield Setup(lab, ca, other, tmp_path_factory.mktemp("home"))
    finally:
        with contextlib.suppress(LabError):
            stop_lab(directory)


def known_hosts(setup: Setup, host: LabHost, case: Case, folder: Path) -> Path:
    path = folder / f"{host.name}.known_hosts"
    path.write_text(case.lines.format(port=f"[{host.address}]:{host.port}", bare=host.address,
                                      ca=pub(setup.ca.with_suffix(".pub")),
                                      other_ca=pub(setup.other_ca.with_suffix(".pub")),
                                      key=pub(host.host_key.with_suffix(".pub"))))
    return path


def ssh(setup: Setup, host: LabHost, known: Path, case: Case, strict: str = "yes") -> subprocess.CompletedProcess[str]:
    alias = ["-o", f"HostKeyAlias={case.alias}"] if case.alias else []
    argv = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", f"StrictHostKeyChecking={strict}", "-o", "UpdateHostKeys=no",
            "-o", "KexAlgorithms=curve25519-sha256", "-o", "IdentitiesOnly=yes", *alias,
            "-i", str(setup.lab.client_key), "-p", str(host.port), f"{setup.lab.user}@{host.address}", "true"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)


def run_fleetrun(setup: Setup, files: dict[str, Path], folder: Path, *extra: str) -> dict[str, dict[str, object]]:
    hosts = dict(zip(CASES, setup.lab.hosts, strict=True))
    inventory = {"defaults": {"user": setup.lab.user, "key": str(setup.lab.client_key)},
                 "hosts": {label: {"address": host.address, "port": host.port, "known_hosts": [str(files[label])]}
                           for label, host in hosts.items()}}
    (folder / "inventory.yaml").write_text(json.dumps(inventory))
    config = folder / "ssh_config"
    config.write_text("".join(f"Host {hosts[label].address}\n  HostKeyAlias {case.alias}\n"
                              for label, case in CASES.items() if case.alias)
                      + "Host *\n  UserKnownHostsFile none\n  GlobalKnownHostsFile none\n")
    run = fleetrun("exec", "-i", str(folder / "inventory.yaml"), "--ssh-config", str(config), "true", "-H", "all",
                   "--format", "json", *extra, home=setup.home)
    return run.json()[0]


def test_host_certificates_as_ssh_judges_them(setup: Setup, tmp_path: Path) -> None:
    hosts = dict(zip(CASES, setup.lab.hosts, strict=True))
    files = {label: known_hosts(setup, host, CASES[label], tmp_path) for label, host in hosts.items()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        theirs = dict(zip(hosts, pool.map(lambda label: ssh(setup, hosts[label], files[label], CASES[label]).returncode,
                                          hosts), strict=True))
    records = run_fleetrun(setup, files, tmp_path)
    for label, case in CASES.items():
        record = records[label]
        assert (theirs[label] == 0) is (case.expect == "ok"), (label, theirs[label])  # the oracle agrees
        if case.expect == "ok":
            assert record["status"] == "ok", (label, record["error"])
            assert record["host_key_verified"] is True
        else:
            assert record["status"] == "host key", (label, record)
            assert case.expect in str(record["error"]), (label, record["error"])


def test_accept_new_with_an_invalid_certificate_records_the_plain_key_as_ssh_does(setup: Setup, tmp_path: Path) -> None:
    # ssh "downgrades" a certificate its CA will not vouch for to the plain key, which accept-new then records.
    label = "expired"
    host = dict(zip(CASES, setup.lab.hosts, strict=True))[label]
    case = CASES[label]
    (tmp_path / "ours").mkdir()
    (tmp_path / "theirs").mkdir()
    ours = known_hosts(setup, host, case, tmp_path / "ours")
    theirs = known_hosts(setup, host, case, tmp_path / "theirs")
    before = theirs.read_text()
    assert ssh(setup, host, theirs, case, strict="accept-new").returncode == 0
    inventory = {"defaults": {"user": setup.lab.user, "key": str(setup.lab.client_key)},
                 "hosts": {label: {"address": host.address, "port": host.port, "known_hosts": [str(ours)]}}}
    (tmp_path / "inventory.yaml").write_text(json.dumps(inventory))
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n  UserKnownHostsFile none\n  GlobalKnownHostsFile none\n")
    run = fleetrun("exec", "-i", str(tmp_path / "inventory.yaml"), "--ssh-config", str(config), "true", "-H", "all",
                   "--host-key-checking", "accept-new", home=setup.home)
    assert run.code == 0, run.out + run.err
    added_by_ssh = theirs.read_text()[len(before):]
    assert added_by_ssh == ours.read_text()[len(before):]
    assert added_by_ssh == f"[{host.address}]:{host.port} {pub(host.host_key.with_suffix('.pub'))}\n"


@pytest.fixture
def user_ca_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, Path]]:
    """A host that trusts a user CA and has no authorized_keys at all."""
    directory = tmp_path_factory.mktemp("usercalab")
    keys = tmp_path_factory.mktemp("userca")
    ca = keys / "user_ca"
    keygen("-t", "ed25519", "-N", "", "-f", str(ca))
    lab = start_lab(1, directory, extra_config=f"AuthorizedKeysFile none\nTrustedUserCAKeys {ca}.pub\n")
    try:
        yield lab, ca
    finally:
        with contextlib.suppress(LabError):
            stop_lab(directory)


def test_user_certificates(user_ca_lab: tuple[Lab, Path], tmp_path: Path) -> None:
    lab, ca = user_ca_lab
    host = lab.hosts[0]
    key = tmp_path / "id_ed25519"
    keygen("-t", "ed25519", "-N", "", "-f", str(key))
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(json.dumps({"defaults": {"user": lab.user, "key": str(key),
                                                  "known_hosts": str(lab.known_hosts)},
                                     "hosts": {"web": {"address": host.address, "port": host.port}}}))
    base = ("exec", "-i", str(inventory), "true", "-H", "web", "--format", "json", "--no-agent")
    plain = fleetrun(*base, home=tmp_path)
    assert plain.code == 4 and plain.json()[0]["web"]["status"] == "auth failed"  # the key alone is not enough

    # <key>-cert.pub next to the key is offered with it.
    keygen("-s", str(ca), "-I", "deploy", "-n", lab.user, "-V", "-5m:+1h", str(key) + ".pub")
    beside = fleetrun(*base, home=tmp_path)
    assert beside.code == 0, beside.out + beside.err

    # An expired certificate: auth failed, as with ssh.
    keygen("-s", str(ca), "-I", "deploy", "-n", lab.user, "-V", "20200101:20200102", str(key) + ".pub")
    expired = fleetrun(*base, home=tmp_path)
    assert expired.code == 4 and expired.json()[0]["web"]["status"] == "auth failed"
    assert f"certificate {key}-cert.pub" in str(expired.json()[0]["web"]["error"])

    # CertificateFile names one elsewhere (and then, as for ssh, the one beside the key is not used).
    elsewhere = tmp_path / "certs"
    elsewhere.mkdir()
    shutil.copy(str(key) + ".pub", elsewhere / "deploy.pub")
    keygen("-s", str(ca), "-I", "deploy", "-n", lab.user, "-V", "-5m:+1h", str(elsewhere / "deploy.pub"))
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  CertificateFile {elsewhere}/deploy-cert.pub\n")
    named = fleetrun(*base, "--ssh-config", str(config), home=tmp_path)
    assert named.code == 0, named.out + named.err
    # A certificate for another principal (user) is refused by the server.
    keygen("-s", str(ca), "-I", "deploy", "-n", "somebody-else", "-V", "-5m:+1h", str(elsewhere / "deploy.pub"))
    other = fleetrun(*base, "--ssh-config", str(config), home=tmp_path)
    assert other.code == 4
