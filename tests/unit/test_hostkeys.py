"""known_hosts reading, matching and appending, checked against real keys and OpenSSH's own ssh-keygen."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fleetrun import hostkeys
from fleetrun.hostkeys import KnownHosts, Verdict, fingerprint, known_hosts_name

SSH_KEYGEN = "/usr/bin/ssh-keygen"
pytestmark = pytest.mark.skipif(not Path(SSH_KEYGEN).exists(), reason="needs OpenSSH ssh-keygen")


class Key:
    """A real public key made by ssh-keygen: its type, base64 text and raw blob."""

    def __init__(self, pub: Path) -> None:
        self.pub = pub
        self.keytype, self.text = pub.read_text().split()[:2]
        self.blob = base64.b64decode(self.text)

    def line(self, hosts: str) -> str:
        return f"{hosts} {self.keytype} {self.text}"


def keygen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SSH_KEYGEN, *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Key]:
    folder = tmp_path_factory.mktemp("keys")
    made = {}
    for label, kind in [
        ("web", "ed25519"),
        ("db", "rsa"),
        ("wild", "ecdsa"),
        ("ca", "ed25519"),
        ("revoked", "ed25519"),
        ("hashed", "ed25519"),
        ("hashedport", "ecdsa"),
        ("other", "ed25519"),
    ]:
        extra = ["-b", "2048"] if kind == "rsa" else []
        keygen("-q", "-t", kind, *extra, "-N", "", "-C", label, "-f", str(folder / label)).check_returncode()
        made[label] = Key(folder / f"{label}.pub")
    return made


def hashed_lines(tmp_path: Path, lines: list[str]) -> list[str]:
    """Let ssh-keygen hash the host names, as `HashKnownHosts yes` would have."""
    scratch = tmp_path / "to_hash"
    scratch.write_text("\n".join(lines) + "\n")
    keygen("-H", "-f", str(scratch)).check_returncode()
    return scratch.read_text().splitlines()


@pytest.fixture
def user_file(tmp_path: Path, keys: dict[str, Key]) -> Path:
    hashed = hashed_lines(
        tmp_path, [keys["hashed"].line("hashed01"), keys["hashedport"].line("[vault]:2200")]
    )
    assert all(line.startswith("|1|") for line in hashed)
    lines = [
        "# fleet known hosts",
        "",
        "@cert-authority *.example.com " + keys["ca"].line("").strip(),
        keys["web"].line("web01,10.0.0.1") + " admin@laptop",
        "   ",
        "@revoked * " + keys["revoked"].line("").strip(),
        keys["db"].line("[db01]:2222"),
        *hashed,
        keys["wild"].line("*.internal,!secret.internal"),
        keys["db"].line("web01"),
        "justonefield",
        "broken ssh-ed25519 !!!not-base64!!!",
        "mislabelled ssh-rsa " + keys["web"].text,
        "@bogus-marker host " + keys["web"].line("").strip(),
        "\t# indented comment",
        keys["other"].line("app?.prod"),
    ]
    path = tmp_path / "known_hosts"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_realistic_file_loads_and_each_verdict_is_right(user_file: Path, keys: dict[str, Key]) -> None:
    known = KnownHosts.load([user_file, user_file.parent / "missing"])
    web, db, wild, ca, revoked = keys["web"], keys["db"], keys["wild"], keys["ca"], keys["revoked"]

    def check(names: list[str], key: Key, keytype: str | None = None) -> Verdict:
        return known.check(names, keytype or key.keytype, key.blob)

    assert check(["web01"], web) is Verdict.KNOWN
    assert check(["WEB01"], web) is Verdict.KNOWN  # host names are case-insensitive
    assert check(["10.0.0.1", "web01"], web) is Verdict.KNOWN
    assert check(["web01"], keys["other"]) is Verdict.CHANGED
    assert check(["newhost"], web) is Verdict.UNKNOWN
    assert check([], web) is Verdict.UNKNOWN
    # A second entry for web01 holds its RSA key: that is known too, whichever signature type is offered.
    assert check(["web01"], db, "rsa-sha2-512") is Verdict.KNOWN
    # Ports are part of the name.
    assert check([known_hosts_name("db01", 2222)], db, "rsa-sha2-256") is Verdict.KNOWN
    assert check([known_hosts_name("db01", 22)], db) is Verdict.UNKNOWN
    assert check(["[db01]:2222"], web) is Verdict.CHANGED
    # Hashed entries, with and without a port.
    assert check(["hashed01"], keys["hashed"]) is Verdict.KNOWN
    assert check(["hashed01"], web) is Verdict.CHANGED
    assert check(["[vault]:2200"], keys["hashedport"]) is Verdict.KNOWN
    assert check(["vault"], keys["hashedport"]) is Verdict.UNKNOWN
    # Wildcards and negation.
    assert check(["app.internal"], wild) is Verdict.KNOWN
    assert check(["secret.internal"], wild) is Verdict.UNKNOWN
    assert check(["app1.prod"], keys["other"]) is Verdict.KNOWN
    assert check(["app12.prod"], keys["other"]) is Verdict.UNKNOWN
    # @revoked * applies to every host, and wins even over a matching plain entry.
    assert check(["web01"], revoked) is Verdict.REVOKED
    assert check(["anything.at.all"], revoked) is Verdict.REVOKED
    # @cert-authority lines are loaded but vouch for nothing, and are not "a key for this name".
    assert check(["www.example.com"], ca) is Verdict.UNKNOWN
    assert known.key_types_for(["www.example.com"]) == []
    # Bad lines are skipped, not trusted. A line's shape is checked at load; its key, as OpenSSH does it,
    # once a lookup meets the line.
    assert [w.split(": ", 1)[0] for w in known.warnings] == [f"{user_file}:{n}" for n in (12, 15)]
    assert check(["mislabelled"], web) is Verdict.UNKNOWN
    assert check(["broken"], web) is Verdict.UNKNOWN

    assert known.key_types_for(["web01"]) == ["ssh-ed25519", "ssh-rsa"]
    assert known.key_types_for(["[vault]:2200", "hashed01"]) == ["ssh-ed25519", "ecdsa-sha2-nistp256"]

    warnings = sorted(known.warnings, key=lambda w: int(w.split(": ", 1)[0].rsplit(":", 1)[1]))
    assert [w.split(": ", 1)[0] for w in warnings] == [f"{user_file}:{n}" for n in (12, 13, 14, 15)]
    assert "invalid base64" in warnings[1]
    assert "not a ssh-rsa key" in warnings[2]
    assert "unknown marker" in warnings[3]


def test_unreadable_file_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "a_directory").mkdir()
    known = KnownHosts.load([tmp_path / "a_directory", tmp_path / "absent"])
    assert len(known.warnings) == 1
    assert known.warnings[0].startswith(f"{tmp_path / 'a_directory'}: cannot read")


def test_names_and_fingerprints_match_ssh_keygen(keys: dict[str, Key]) -> None:
    assert known_hosts_name("web01", 22) == "web01"
    assert known_hosts_name("127.0.0.5", 2222) == "[127.0.0.5]:2222"
    for key in keys.values():
        printed = keygen("-l", "-E", "sha256", "-f", str(key.pub)).stdout.split()[1]
        assert fingerprint(key.blob) == printed


def test_thirty_threads_add_thirty_hosts(user_file: Path, keys: dict[str, Key]) -> None:
    before = user_file.read_bytes()
    known = KnownHosts.load([user_file])
    names = [f"node{i:02d}.fleet" for i in range(30)]
    usable = [key for label, key in keys.items() if label != "revoked"]
    chosen = [usable[i % len(usable)] for i in range(30)]
    start = threading.Barrier(30)
    results: dict[str, bool] = {}

    def add(name: str, key: Key) -> None:
        start.wait()
        results[name] = known.add(user_file, name, key.keytype, key.blob)

    threads = [threading.Thread(target=add, args=pair) for pair in zip(names, chosen, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert results == dict.fromkeys(names, True)
    after = user_file.read_bytes()
    assert after.startswith(before)
    added = after[len(before) :].decode().splitlines()
    assert sorted(added) == sorted(key.line(name) for name, key in zip(names, chosen, strict=True))
    for name, key in zip(names, chosen, strict=True):
        found = keygen("-F", name, "-f", str(user_file))
        assert found.returncode == 0 and key.text in found.stdout
        assert known.check([name], key.keytype, key.blob) is Verdict.KNOWN
        assert KnownHosts.load([user_file]).check([name], key.keytype, key.blob) is Verdict.KNOWN


def test_same_name_from_many_threads_is_added_once(tmp_path: Path, keys: dict[str, Key]) -> None:
    path = tmp_path / "known_hosts"
    known = KnownHosts.load([path])
    start = threading.Barrier(10)
    results: list[bool] = []

    def add() -> None:
        start.wait()
        results.append(known.add(path, "[10.1.1.1]:2022", "ssh-ed25519", keys["web"].blob))

    threads = [threading.Thread(target=add) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False] * 9 + [True]
    assert path.read_text() == keys["web"].line("[10.1.1.1]:2022") + "\n"


def test_processes_append_without_losing_lines(tmp_path: Path, keys: dict[str, Key]) -> None:
    path = tmp_path / "known_hosts"
    script = (
        "import sys; from fleetrun.hostkeys import KnownHosts\n"
        "kh = KnownHosts.load([sys.argv[1]])\n"
        "blob = bytes.fromhex(sys.argv[3])\n"
        "for i in range(20): kh.add(sys.argv[1], f'p{sys.argv[2]}-{i}', 'ssh-ed25519', blob)\n"
    )
    blob = keys["web"].blob.hex()
    root = Path(__file__).resolve().parents[2]
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path), str(p), blob], cwd=root) for p in range(6)
    ]
    assert [proc.wait(timeout=60) for proc in procs] == [0] * 6
    lines = path.read_text().splitlines()
    assert sorted(lines) == sorted(keys["web"].line(f"p{p}-{i}") for p in range(6) for i in range(20))


def test_add_refuses_a_name_that_already_has_a_key(user_file: Path, keys: dict[str, Key]) -> None:
    known = KnownHosts.load([user_file])
    before = user_file.read_bytes()
    assert known.add(user_file, "web01", "ssh-ed25519", keys["web"].blob) is False
    assert known.add(user_file, "WEB01", "ssh-ed25519", keys["other"].blob) is False
    assert known.add(user_file, "hashed01", "ssh-ed25519", keys["other"].blob) is False
    assert known.add(user_file, "db.internal", "ssh-ed25519", keys["other"].blob) is False  # wildcard
    assert user_file.read_bytes() == before


def test_add_rechecks_the_file_another_process_changed(tmp_path: Path, keys: dict[str, Key]) -> None:
    path = tmp_path / "known_hosts"
    ours, theirs = KnownHosts.load([path]), KnownHosts.load([path])
    assert theirs.add(path, "web09", "ssh-ed25519", keys["web"].blob) is True
    assert ours.add(path, "web09", "ssh-ed25519", keys["other"].blob) is False
    assert path.read_text() == keys["web"].line("web09") + "\n"
    assert ours.check(["web09"], "ssh-ed25519", keys["other"].blob) is Verdict.CHANGED


def test_add_sees_wildcard_lines_another_process_appended(tmp_path: Path, keys: dict[str, Key]) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(keys["web"].line("*.zone-a") + "\n")
    ours = KnownHosts.load([path])
    assert ours.check(["db.zone-b"], "ssh-ed25519", keys["other"].blob) is Verdict.UNKNOWN
    with path.open("a") as other_process:
        other_process.write(keys["wild"].line("*.zone-b") + "\n")
    assert ours.add(path, "db.zone-b", "ssh-ed25519", keys["other"].blob) is False
    assert ours.check(["db.zone-b"], keys["wild"].keytype, keys["wild"].blob) is Verdict.KNOWN
    assert ours.check(["db.zone-b"], "ssh-ed25519", keys["other"].blob) is Verdict.CHANGED
    assert ours.key_types_for(["db.zone-b"]) == ["ecdsa-sha2-nistp256"]


def test_cert_authority_lines_do_not_block_accept_new(user_file: Path, keys: dict[str, Key]) -> None:
    known = KnownHosts.load([user_file])
    assert known.add(user_file, "www.example.com", "ssh-ed25519", keys["other"].blob) is True
    assert known.check(["www.example.com"], "ssh-ed25519", keys["other"].blob) is Verdict.KNOWN


def test_add_creates_ssh_dir_and_file_as_ssh_does(
    tmp_path: Path, keys: dict[str, Key], monkeypatch: pytest.MonkeyPatch
) -> None:
    # ssh creates ~/.ssh (0700) and no other directory; its fopen("a") makes the file 0666 less the umask.
    path = tmp_path / "home" / ".ssh" / "known_hosts"
    (tmp_path / "home").mkdir()
    monkeypatch.setattr(hostkeys, "default_known_hosts", lambda: path)
    known = KnownHosts.load([path])
    assert known.add(path, "[10.0.0.9]:2222", "rsa-sha2-512", keys["db"].blob) is True
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text() == keys["db"].line("[10.0.0.9]:2222") + "\n"  # stored as ssh-rsa
    assert keygen("-F", "[10.0.0.9]:2222", "-f", str(path)).returncode == 0
    elsewhere = tmp_path / "other" / "known_hosts"
    with pytest.raises(FileNotFoundError):
        known.add(elsewhere, "web09", "ssh-ed25519", keys["web"].blob)
    assert not elsewhere.parent.exists()


def test_add_to_file_without_trailing_newline(tmp_path: Path, keys: dict[str, Key]) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(keys["web"].line("web01"))
    assert KnownHosts.load([path]).add(path, "web02", "ssh-ed25519", keys["other"].blob) is True
    assert path.read_text() == keys["web"].line("web01") + "\n" + keys["other"].line("web02") + "\n"
    for name in ("web01", "web02"):
        assert keygen("-F", name, "-f", str(path)).returncode == 0


@pytest.mark.parametrize("name", ["two words", "a,b", "*.fleet", "!web", "line\nbreak", "", "#x", "|1|x"])
def test_add_rejects_names_that_would_corrupt_the_file(
    tmp_path: Path, keys: dict[str, Key], name: str
) -> None:
    path = tmp_path / "known_hosts"
    with pytest.raises(ValueError):
        KnownHosts.load([path]).add(path, name, "ssh-ed25519", keys["web"].blob)
    assert not path.exists()


def test_large_file_loads_and_checks_correctly(tmp_path: Path, keys: dict[str, Key]) -> None:
    # Speed is measured in bench/, never asserted here: these machines are shared and noisy.
    path = tmp_path / "known_hosts"
    lines = [keys["web"].line(f"[10.{i // 250}.{i % 250}.1]:2222,host{i}.fleet") for i in range(4990)]
    lines += [keys["wild"].line(f"*.zone{i}.fleet") for i in range(10)]
    path.write_text("\n".join(lines) + "\n")
    known = KnownHosts.load([path])
    verdicts = [
        known.check([f"host{i}.fleet", f"[10.0.{i % 250}.1]:2222"], "ssh-ed25519", keys["web"].blob)
        for i in range(1000)
    ]
    assert set(verdicts) == {Verdict.KNOWN} and not known.warnings
    assert known.check(["x.zone3.fleet"], keys["wild"].keytype, keys["wild"].blob) is Verdict.KNOWN


# --- OpenSSH's rules for [host]:port, bad salts, bad blobs, @cert-authority, messages (issue 8) ---------------


def write(tmp_path: Path, *lines: str, name: str = "known_hosts") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_port_falls_back_to_the_bare_name_only_without_a_port_entry(tmp_path: Path, keys: dict[str, Key]) -> None:
    web, other, wild = keys["web"], keys["other"], keys["wild"]
    hashed = hashed_lines(tmp_path, [web.line("hashedhost")])[0]
    path = write(
        tmp_path,
        web.line("plainhost"),
        hashed,
        web.line("*.zone"),
        web.line("typed") + " bare ed25519",
        wild.line("[typed]:2222") + " port entry of another type",
        web.line("stale"),
        other.line("[stale]:2222"),
        other.line("elsewhere"),
    )
    known = KnownHosts.load([path])

    def judge(name: str, key: Key) -> tuple[Verdict, bool, int | None]:
        check = known.judge([known_hosts_name(name, 2222)], key.keytype, key.blob)
        return check.verdict, check.without_port, check.line.line if check.line else None

    # "found matching key w/out port": plain, hashed and wildcard entries under the bare name.
    assert judge("plainhost", web) == (Verdict.KNOWN, True, 1)
    assert judge("hashedhost", web) == (Verdict.KNOWN, True, 2)
    assert judge("db.zone", web) == (Verdict.KNOWN, True, 3)
    assert known.check(["hashedhost"], web.keytype, web.blob) is Verdict.KNOWN  # port 22: the name itself
    # A [host]:port entry of any type is the host's record: no fallback, a different key is CHANGED.
    assert judge("typed", web) == (Verdict.CHANGED, False, 5)
    assert judge("stale", web) == (Verdict.CHANGED, False, 7)
    # The bare name only ever adds trust: a different key there leaves [host]:port unknown, as for ssh.
    assert judge("elsewhere", web) == (Verdict.UNKNOWN, False, None)
    # Key types for ordering algorithms come from the [host]:port lines alone, as in order_hostkeyalgs.
    assert known.key_types_for(["[plainhost]:2222"]) == []
    assert known.key_types_for(["[typed]:2222"]) == ["ecdsa-sha2-nistp256"]
    # Port 22 is the bare name: nothing to fall back to, and `[h]:22` is not a fallback either.
    assert known.check(["[plainhost]:22"], web.keytype, web.blob) is Verdict.UNKNOWN


def test_revoked_under_the_bare_name_is_refused_for_host_and_port(tmp_path: Path, keys: dict[str, Key]) -> None:
    web, revoked = keys["web"], keys["revoked"]
    path = write(
        tmp_path,
        "@revoked gone " + revoked.line("").strip(),
        "@revoked *.fleet " + revoked.line("").strip(),
        revoked.line("[vouched]:2222"),
        "@revoked vouched " + revoked.line("").strip(),
    )
    known = KnownHosts.load([path])
    for name, line in [("gone", 1), ("a.fleet", 2), ("vouched", 4)]:
        check = known.judge([known_hosts_name(name, 2222)], revoked.keytype, revoked.blob)
        assert (check.verdict, check.line and check.line.line, check.name) == (Verdict.REVOKED, line, name)
    # Only the revoked key is refused.
    assert known.check(["[gone]:2222"], web.keytype, web.blob) is Verdict.UNKNOWN


def test_hashed_salt_must_be_20_bytes(tmp_path: Path, keys: dict[str, Key]) -> None:
    import hmac

    web = keys["web"]

    def hashed(salt: bytes, name: str) -> str:
        digest = hmac.digest(salt, name.encode(), "sha1")
        return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"

    path = write(
        tmp_path,
        web.line(hashed(b"s" * 16, "short")),  # a correct HMAC, but OpenSSH ignores a 16-byte salt
        web.line(hashed(b"s" * 32, "long")),
        web.line(hashed(b"s" * 20, "right")),
        web.line("|1||" + hashed(b"s" * 20, "empty").rsplit("|", 1)[1]),
        web.line("|2|" + hashed(b"s" * 20, "magic")[3:]),
    )
    known = KnownHosts.load([path])
    assert known.check(["short"], web.keytype, web.blob) is Verdict.UNKNOWN  # was trusted
    assert known.check(["long"], web.keytype, web.blob) is Verdict.UNKNOWN
    assert known.check(["right"], web.keytype, web.blob) is Verdict.KNOWN
    assert [w.split(": ", 1)[0] for w in known.warnings] == [f"{path}:{n}" for n in (1, 2, 4, 5)]
    assert "16-byte salt, not 20" in known.warnings[0] and "32-byte salt" in known.warnings[1]
    assert all(w.endswith("line skipped") for w in known.warnings)
    for name in ("short", "long"):  # ssh-keygen agrees: no such host
        assert keygen("-F", name, "-f", str(path)).returncode == 1
    assert keygen("-F", "right", "-f", str(path)).returncode == 0


def rsa_blob(e: int, n: int) -> bytes:
    def mpint(v: int) -> bytes:
        data = v.to_bytes((v.bit_length() + 8) // 8, "big") if v else b""
        return len(data).to_bytes(4, "big") + data

    return b"\0\0\0\x07ssh-rsa" + mpint(e) + mpint(n)


def test_unparseable_key_blobs_are_skipped_with_a_warning(tmp_path: Path, keys: dict[str, Key]) -> None:
    web, wild = keys["web"], keys["wild"]
    ecdsa = wild.blob
    point_at = len(ecdsa) - 65
    off_curve = ecdsa[:-1] + bytes([ecdsa[-1] ^ 1])
    compressed = ecdsa[: point_at - 4] + (33).to_bytes(4, "big") + b"\x02" + ecdsa[point_at + 1 : point_at + 33]
    bad = {
        "truncated": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5",
        "short-key": "ssh-ed25519 " + base64.b64encode(web.blob[:-1]).decode(),
        "trailing": "ssh-ed25519 " + base64.b64encode(web.blob + b"\0").decode(),
        "off-curve": "ecdsa-sha2-nistp256 " + base64.b64encode(off_curve).decode(),
        "compressed": "ecdsa-sha2-nistp256 " + base64.b64encode(compressed).decode(),
        "wrong-curve": "ecdsa-sha2-nistp384 " + base64.b64encode(ecdsa).decode(),
        "rsa-1023": "ssh-rsa " + base64.b64encode(rsa_blob(65537, 2**1022 + 1)).decode(),
        "unknown-type": "ssh-foo " + web.text,
        "no-key": "ssh-ed25519",
    }
    lines = [f"{name} {rest}" for name, rest in bad.items()]
    lines.append("rsa-1024 ssh-rsa " + base64.b64encode(rsa_blob(65537, 2**1023 + 1)).decode())
    lines.append("sha2-label rsa-sha2-512 " + keys["db"].text)  # OpenSSH reads RSA under these names too
    path = write(tmp_path, *lines, web.line("crlf") + "\r", "\0" + web.line("nul"), web.line("nul2") + "\0junk")
    known = KnownHosts.load([path])
    for at, name in enumerate(bad, 1):
        # A bad line for the host is not a key on record: unknown, not "changed" (today's false alarm).
        check = known.judge([name], web.keytype, web.blob)
        assert check.verdict is Verdict.UNKNOWN, name
        assert keygen("-l", "-F", name, "-f", str(path)).stdout == "", name  # ssh-keygen skips them too
        if name not in ("unknown-type", "no-key"):  # these two are bad in shape: warned at load
            assert [w.split(": ", 1)[0] for w in check.bad_lines] == [f"{path}:{at}"], name
        assert known.judge([name], web.keytype, web.blob).bad_lines == ()  # reported once per run
    warnings = sorted(known.warnings, key=lambda w: int(w.split(": ", 1)[0].rsplit(":", 1)[1]))
    assert [w.split(": ", 1)[0] for w in warnings] == [f"{path}:{n}" for n in range(1, len(bad) + 1)]
    assert "truncated" in warnings[0] and "not on nistp256" in warnings[3]
    assert "uncompressed" in warnings[4] and "1023 bits" in warnings[6]
    assert [line.keytype for line in known.lines_for(["rsa-1024", "sha2-label"])] == ["ssh-rsa", "ssh-rsa"]
    assert known.check(["crlf"], web.keytype, web.blob) is Verdict.KNOWN  # CRLF files work, as for OpenSSH
    assert known.check(["nul"], web.keytype, web.blob) is Verdict.UNKNOWN  # a C string ends at the NUL
    assert known.check(["nul2"], web.keytype, web.blob) is Verdict.KNOWN


def test_cert_authority_lines_never_vouch_for_a_plain_key(tmp_path: Path, keys: dict[str, Key]) -> None:
    # A CA line only vouches for certificates it signed (tests/unit/test_hostcert.py), never for a key: not
    # even for the CA's own key offered as a host key.
    web, ca = keys["web"], keys["ca"]
    path = write(tmp_path, "@cert-authority *.fleet " + ca.line("").strip(), web.line("a.fleet"))
    known = KnownHosts.load([path])
    assert known.check(["a.fleet"], web.keytype, web.blob) is Verdict.KNOWN
    assert known.check(["b.fleet"], ca.keytype, ca.blob) is Verdict.UNKNOWN
    assert known.has_authority_for(["b.fleet"]) and not known.has_authority_for(["b.other"])


def test_changed_message_names_the_line_both_fingerprints_and_a_fix_that_works(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    web, other, wild = keys["web"], keys["other"], keys["wild"]
    user_file = write(tmp_path, web.line("[web01]:2222"), name="user_known_hosts")
    inventory_file = write(tmp_path, "# first", wild.line("db01"), web.line("db01"),
                           web.line("*.internal"), name="inventory_known_hosts")
    known = KnownHosts.load([user_file, inventory_file])

    check = known.judge(["db01"], other.keytype, other.blob)
    message = check.explain(user_file)
    assert check.verdict is Verdict.CHANGED and check.line is not None
    assert f"it offered ssh-ed25519 {fingerprint(other.blob)}" in message
    assert f"but {inventory_file}:3 records {fingerprint(web.blob)}" in message  # the ed25519 line, not line 2
    assert message.endswith(f"run: ssh-keygen -R db01 -f {inventory_file}") and "\n" not in message
    # The hint works: ssh-keygen removes the old lines from that file, and the host becomes unknown.
    assert subprocess.run(message.split("run: ", 1)[1].split(), capture_output=True, check=False).returncode == 0
    assert KnownHosts.load([user_file, inventory_file]).check(["db01"], other.keytype, other.blob) is Verdict.UNKNOWN

    # In the file ssh-keygen edits by default, no -f.
    changed = known.judge(["[web01]:2222"], other.keytype, other.blob).explain(user_file)
    assert f"records {fingerprint(web.blob)}" in changed and changed.endswith("run: ssh-keygen -R '[web01]:2222'")
    # A key of another type is named with its type.
    other_type = known.judge(["[web01]:2222"], wild.keytype, wild.blob).explain(user_file)
    assert f"records ssh-ed25519 {fingerprint(web.blob)}" in other_type
    # A pattern line covers other hosts: say so instead of deleting it with ssh-keygen -R.
    pattern = known.judge(["db.internal"], other.keytype, other.blob).explain(user_file)
    assert pattern.endswith(f"fix line 4 of {inventory_file} (its pattern '*.internal' covers other hosts too)")


def test_files_limit_which_lines_count(tmp_path: Path, keys: dict[str, Key]) -> None:
    web, other = keys["web"], keys["other"]
    mine, theirs = write(tmp_path, web.line("web01"), name="mine"), write(tmp_path, other.line("web01"), name="theirs")
    known = KnownHosts.load([mine, theirs])
    # Every loaded file counts by default; a host's own files are what ssh's UserKnownHostsFile would read.
    assert known.check(["web01"], other.keytype, other.blob) is Verdict.KNOWN
    assert known.check(["web01"], other.keytype, other.blob, {str(mine)}) is Verdict.CHANGED
    assert known.check(["web01"], web.keytype, web.blob, {str(theirs)}) is Verdict.CHANGED
    assert known.key_types_for(["web01"], {str(tmp_path / "none")}) == []
    assert known.add(tmp_path / "third", "web01", web.keytype, web.blob, {str(tmp_path / "third")}) is True
