"""fleetrun's known_hosts reader held against OpenSSH's `ssh-keygen -F` on generated files (thousands of cases).

For every query name, the lines fleetrun finds must be exactly the lines `ssh-keygen -l -F NAME` lists (which
entries match a name, with which marker and fingerprint), and every line that `ssh-keygen -F` matches by name
but drops once it parses the key (`-l`) must be one fleetrun skipped with a warning. The real `ssh` client's
verdicts are compared in tests/integration/test_hostkeys_openssh.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fleetrun.hostkeys import KnownHosts

SSH_KEYGEN = "/usr/bin/ssh-keygen"
pytestmark = pytest.mark.skipif(not Path(SSH_KEYGEN).exists(), reason="needs OpenSSH ssh-keygen")
SEED = 20260808
LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")  # ssh lowercases ASCII only
UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
P256 = 2**256 - 2**224 + 2**192 + 2**96 - 1
P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def keygen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SSH_KEYGEN, *args], capture_output=True, text=True, check=False)


def string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def mpint(value: int) -> bytes:
    return string(value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b"")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def p256_point(x: int) -> bytes | None:
    """An uncompressed P-256 point with this x, if there is one (p = 3 mod 4, so a square root is one pow)."""
    rhs = (x**3 - 3 * x + P256_B) % P256
    y = pow(rhs, (P256 + 1) // 4, P256)
    if y * y % P256 != rhs:
        return None
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


@dataclass
class Material:
    """Real keys from ssh-keygen (type label, base64) and hand-made blobs, good and bad."""

    good: list[tuple[str, str]] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    folder = tmp_path_factory.mktemp("corpus-keys")
    found = Material()
    pubs: dict[str, tuple[str, str]] = {}
    for label, args in [
        ("ed1", ["-t", "ed25519"]), ("ed2", ["-t", "ed25519"]), ("ed3", ["-t", "ed25519"]),
        ("p256", ["-t", "ecdsa", "-b", "256"]), ("p384", ["-t", "ecdsa", "-b", "384"]),
        ("p521", ["-t", "ecdsa", "-b", "521"]), ("rsa", ["-t", "rsa", "-b", "2048"]),
        ("rsa1024", ["-t", "rsa", "-b", "1024"]), ("dsa", ["-t", "dsa"]), ("ca", ["-t", "ed25519"]),
    ]:
        keygen("-q", *args, "-N", "", "-C", label, "-f", str(folder / label)).check_returncode()
        keytype, text = (folder / f"{label}.pub").read_text().split()[:2]
        pubs[label] = (keytype, text)
    keygen("-q", "-s", str(folder / "ca"), "-h", "-I", "host", "-n", "cert.example", str(folder / "ed3.pub"))
    pubs["cert"] = tuple((folder / "ed3-cert.pub").read_text().split()[:2])  # type: ignore[assignment]
    found.good += [pubs[label] for label in pubs]
    rsa_text = pubs["rsa"][1]
    found.good += [("rsa-sha2-256", rsa_text), ("rsa-sha2-512", rsa_text)]
    ed = base64.b64decode(pubs["ed1"][1])
    p256 = base64.b64decode(pubs["p256"][1])
    key32, point = ed[-32:], p256[-65:]
    # Security-key types need no device to be read: only their blobs.
    sk_ed = string(b"sk-ssh-ed25519@openssh.com") + string(key32) + string(b"ssh:")
    sk_ec = string(b"sk-ecdsa-sha2-nistp256@openssh.com") + string(b"nistp256") + string(point) + string(b"ssh:")
    found.good += [("sk-ssh-ed25519@openssh.com", b64(sk_ed)), ("sk-ecdsa-sha2-nistp256@openssh.com", b64(sk_ec)),
                   ("webauthn-sk-ecdsa-sha2-nistp256@openssh.com", b64(sk_ec))]
    found.good.append(("ssh-ed25519", b64(string(b"ssh-ed25519\0") + string(key32))))  # one NUL at the end is fine

    def ecdsa(pt: bytes, curve: bytes = b"nistp256", name: bytes = b"ecdsa-sha2-nistp256") -> str:
        return b64(string(name) + string(curve) + string(pt))

    small_x = next(p for x in range(1, 100) if (p := p256_point(x)) is not None)
    big_x = next(p for x in range(P256_N - 1, P256_N + 200) if (p := p256_point(x)) is not None)
    off_curve = point[:-1] + bytes([point[-1] ^ 1])
    rng = random.Random(SEED)
    n1023, n1024 = rng.getrandbits(1022) | 1 << 1022 | 1, rng.getrandbits(1023) | 1 << 1023 | 1
    found.good.append(("ssh-rsa", b64(string(b"ssh-rsa") + mpint(65537) + mpint(n1024))))
    found.good.append(("ssh-rsa", b64(string(b"ssh-rsa") + string(b"\0\0\x01\0\x01") + mpint(n1024))))  # zeros
    found.bad += [
        ("ssh-ed25519", "AAAAC3NzaC1lZDI1NTE5"),  # the truncated blob
        ("ssh-ed25519", b64(ed[:-1])),
        ("ssh-ed25519", b64(ed + b"\0")),
        ("ssh-ed25519", b64(string(b"ssh-ed\0519") + string(key32))),
        ("ssh-ed25519", pubs["ed1"][1][:-2] + "Q="),  # non-zero padding bits
        ("ssh-ed25519", pubs["ed1"][1].rstrip("=")),  # missing padding
        ("ssh-ed25519", pubs["ed1"][1][:20] + "*" + pubs["ed1"][1][20:]),
        ("ssh-rsa", pubs["ed1"][1]),  # label and blob disagree
        ("ecdsa-sha2-nistp384", pubs["p256"][1]),
        ("ecdsa-sha2-nistp256", ecdsa(point, b"nistp384")),
        ("ecdsa-sha2-nistp256", ecdsa(off_curve)),
        ("ecdsa-sha2-nistp256", ecdsa(b"\x02" + point[1:33])),  # compressed
        ("ecdsa-sha2-nistp256", ecdsa(small_x)),  # on the curve, but OpenSSH rejects a tiny coordinate
        ("ecdsa-sha2-nistp256", ecdsa(big_x)),  # on the curve, but x >= order - 1
        ("ssh-rsa", b64(string(b"ssh-rsa") + mpint(65537) + mpint(n1023))),
        ("ssh-rsa", b64(string(b"ssh-rsa") + mpint(65537) + string(n1024.to_bytes(128, "big")))),  # negative
        ("sk-ssh-ed25519@openssh.com", b64(string(b"sk-ssh-ed25519@openssh.com") + string(key32))),
        ("SSH-ED25519", pubs["ed1"][1]),
        ("ssh-foo", pubs["ed1"][1]),
        ("ssh-ed25519-cert-v01@openssh.com", pubs["ed1"][1]),
    ]
    assert small_x and big_x
    return found


def salted(salt: bytes, name: str, mangle: Callable[[str], str] = lambda text: text) -> str:
    digest = hmac.digest(salt, name.encode("utf-8"), "sha1")
    return f"|1|{mangle(b64(salt))}|{b64(digest)}"


@dataclass
class Corpus:
    data: bytes
    names: list[str]
    lines: int


def build_corpus(rng: random.Random, material: Material) -> Corpus:
    """A known_hosts file with every feature OpenSSH's reader has an opinion on, and names to look up."""
    bases = [f"web{i:02d}.example.com" for i in range(1, 9)] + [f"db{i}" for i in range(1, 5)]
    bases += ["10.0.0.1", "10.0.0.2", "fe80::1", "Mixed.Case.Host", "héllo.example", "a|b", "cert.example"]
    bases.append("x" * 1022)  # the longest pattern OpenSSH still matches
    ports = [2222, 22, 8022]

    def named(base: str) -> str:
        choice = rng.random()
        if choice < 0.5:
            return base
        if choice < 0.6:
            return base.translate(UPPER)
        return f"[{base}]:{rng.choice(ports)}"

    def wild(name: str) -> str:
        chars = list(name)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(chars))
            chars[at] = rng.choice(["*", "?", "*", "?*"])
        return "".join(chars)

    def hosts() -> str:
        choice = rng.random()
        base = rng.choice(bases)
        if choice < 0.25:
            return named(base)
        if choice < 0.4:
            return ",".join(named(rng.choice(bases)) for _ in range(rng.randint(2, 4)))
        if choice < 0.55:
            return wild(named(base))
        if choice < 0.65:
            parts = [wild(named(base)), "!" + named(rng.choice(bases)), named(rng.choice(bases))]
            rng.shuffle(parts)
            return ",".join(parts)
        if choice < 0.8:  # hashed as `HashKnownHosts yes` writes them: the lowercased name
            return salted(rng.randbytes(20), named(base).translate(LOWER))
        if choice < 0.88:  # hashed lines OpenSSH ignores or that can never match
            name = named(base).translate(LOWER)
            return rng.choice([
                salted(rng.randbytes(16), name), salted(rng.randbytes(32), name), salted(rng.randbytes(19), name),
                salted(rng.randbytes(21), name), salted(b"", name), salted(rng.randbytes(20), name, lambda s: s[:-1]),
                salted(rng.randbytes(20), name, lambda s: s[:-2] + "B="), "|2|" + salted(rng.randbytes(20), name)[3:],
                salted(rng.randbytes(20), name) + "|x", salted(rng.randbytes(20), name)[:-2] + "=",
                "|1|" + b64(rng.randbytes(20)), salted(rng.randbytes(20), name.translate(UPPER)),
            ])
        if choice < 0.93:  # empty and lone-negation parts, and an over-long pattern
            return rng.choice([f"{base},,db1", f",{base}", f"{base},", f"!,{base}", f"{'y' * 1023},{base}"])
        return rng.choice(bases)

    def key() -> str:
        label, text = rng.choice(material.bad if rng.random() < 0.2 else material.good)
        blank = rng.choice([" ", " ", "\t", "  ", " \t "])
        if rng.random() < 0.05:
            return rng.choice(["", label, label + blank, "#" + label + blank + text])
        return label + blank + text + rng.choice(["", "", " comment here", "\tuser@laptop", " # not a comment"])

    lines = ["# generated known_hosts corpus", ""]
    for _ in range(700):
        marker = ""
        choice = rng.random()
        if choice < 0.12:
            marker = "@revoked" + rng.choice([" ", " ", "\t"])
        elif choice < 0.2:
            marker = "@cert-authority "
        elif choice < 0.23:
            marker = rng.choice(["@bogus ", "@REVOKED ", "@revoked @revoked ", "@ ", "@cert-authority"])
        blank = rng.choice([" ", " ", " ", "\t", "   "])
        line = rng.choice(["", "", "", " ", "\t"]) + marker + hosts() + blank + key()
        ending = rng.random()
        if ending < 0.05:
            line += "\r"
        elif ending < 0.07:
            at = rng.randrange(len(line) + 1)
            line = line[:at] + "\0" + line[at:]
        elif ending < 0.1:
            line = rng.choice(["#" + line, "  # " + line, "", "   ", "\r", line.split()[0] if line.split() else ""])
        lines.append(line)

    names: list[str] = []
    for base in bases:
        upper = base.translate(UPPER)
        names += [base, upper, base.upper(), f"[{base}]:2222", f"[{base}]:8022", f"[{base}]:22", f"[{upper}]:2222"]
    # Names that only wildcards match, made by filling the line's own wildcards in.
    for line in lines:
        found = re.search(r"(?:^|[ ,@])([^ \t,!|@#]*[*?][^ \t,!|]*)", line)
        if found:
            pattern = found.group(1)
            names.append("".join(rng.choice("abc.") if c == "*" else rng.choice("xyz") if c == "?" else c
                                 for c in pattern))
    names += ["nothing.here", "[nothing.here]:2222", "y" * 1023, "web01.example.co", "eb01.example.com"]
    data = "\n".join(lines).encode("utf-8", "surrogateescape") + b"\n"
    return Corpus(data, list(dict.fromkeys(n for n in names if n and "\0" not in n)), len(lines))


def ssh_keygen_lines(path: Path, name: str, parse_keys: bool) -> dict[int, tuple[str | None, str | None]]:
    """line number -> (marker, fingerprint) for each line `ssh-keygen -F` lists for the name."""
    args = ["-F", name, "-f", str(path)] + (["-l"] if parse_keys else [])
    done = subprocess.run([SSH_KEYGEN, *args], capture_output=True, check=False)
    assert done.returncode in (0, 1), done.stderr
    found: dict[int, tuple[str | None, str | None]] = {}
    output = done.stdout.decode("utf-8", "replace").split("\n")
    markers = {"": None, "CA": "@cert-authority", "REVOKED": "@revoked"}
    for at, text in enumerate(output):
        header = re.fullmatch(r"# Host .* found: line (\d+) (CA|REVOKED|)", text)
        if header:
            fp = output[at + 1].rsplit(" SHA256:", 1)[1].split()[0] if parse_keys else None
            found[int(header.group(1))] = (markers[header.group(2)], fp and "SHA256:" + fp)
    return found


def test_lines_matching_each_name_agree_with_ssh_keygen(tmp_path: Path, material: Material) -> None:
    corpus = build_corpus(random.Random(SEED), material)
    path = tmp_path / "known_hosts"
    path.write_bytes(corpus.data)
    known = KnownHosts.load([path])
    mismatches, matches, dropped = [], 0, set()
    for name in corpus.names:
        # ssh lowercases the host name before it looks anything up (ssh.c); ssh-keygen -F takes it as given.
        lookup = name.translate(LOWER)
        expected = ssh_keygen_lines(path, lookup, parse_keys=True)
        got = {line.line: (line.marker, line.fingerprint) for line in known.lines_for([name])}
        if got != expected:
            mismatches.append((name, sorted(set(got.items()) ^ set(expected.items()))))
        matches += len(expected)
        # Matched by name, dropped once the key is parsed: OpenSSH skips these lines, and fleetrun must warn.
        dropped |= set(ssh_keygen_lines(path, lookup, parse_keys=False)) - set(expected)
    # Bad keys are warned as lookups meet them, so the warnings are complete only now.
    warned = {int(w.split(": ", 1)[0].rsplit(":", 1)[1]): w for w in known.warnings}
    never_match = {line for line, warning in warned.items() if "never match" in warning}
    assert mismatches == []
    assert dropped and dropped <= set(warned), sorted(dropped - set(warned))
    assert not (never_match & dropped)
    # The corpus is big and varied enough to mean something.
    assert len(corpus.names) * corpus.lines > 100_000 and matches > 300 and len(dropped) > 20
    kinds = {line.marker for name in corpus.names for line in known.lines_for([name])}
    assert kinds == {None, "@revoked", "@cert-authority"}
    for reason in ("salt, not 20", "not valid base64", "not on nistp256", "invalid public value", "1023 bits",
                   "negative", "unknown marker", "unknown key type", "truncated", "never match"):
        assert any(reason in w for w in known.warnings), reason


def test_hashes_are_the_names_ssh_keygen_hashes(tmp_path: Path, material: Material) -> None:
    # ssh-keygen -H writes the hashed form of each name; fleetrun must match exactly those names.
    label, text = material.good[0]
    names = ["web01", "[web01]:2222", "10.1.2.3", "héllo", "[fe80::1%eth0]:22"]
    path = tmp_path / "known_hosts"
    path.write_text("".join(f"{name} {label} {text}\n" for name in names))
    assert keygen("-H", "-f", str(path)).returncode == 0
    known = KnownHosts.load([path])
    assert not known.warnings
    for at, name in enumerate(names, 1):
        assert [line.line for line in known.lines_for([name])] == [at]
        assert [line.line for line in known.lines_for([name.translate(UPPER)])] == [at]  # ssh lowercases first
    assert known.lines_for(["web02", "web01 "]) == []
    assert hashlib.sha1(b"").digest_size == 20  # the salt length OpenSSH insists on is HMAC-SHA1's
