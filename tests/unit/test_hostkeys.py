"""known_hosts reading, matching and appending, checked against real keys and OpenSSH's own ssh-keygen."""

from __future__ import annotations

import base64
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

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
    # Bad lines that look like names are skipped, not trusted.
    assert check(["mislabelled"], web) is Verdict.UNKNOWN

    assert known.key_types_for(["web01"]) == ["ssh-ed25519", "ssh-rsa"]
    assert known.key_types_for(["[vault]:2200", "hashed01"]) == ["ssh-ed25519", "ecdsa-sha2-nistp256"]

    assert [w.split(": ", 1)[0] for w in known.warnings] == [f"{user_file}:{n}" for n in (12, 13, 14, 15)]
    assert "invalid base64" in known.warnings[1]
    assert "not a ssh-rsa key" in known.warnings[2]
    assert "unknown marker" in known.warnings[3]


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


def test_add_creates_private_directory_and_file(tmp_path: Path, keys: dict[str, Key]) -> None:
    path = tmp_path / "home" / ".ssh" / "known_hosts"
    known = KnownHosts.load([path])
    assert known.add(path, "[10.0.0.9]:2222", "rsa-sha2-512", keys["db"].blob) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.read_text() == keys["db"].line("[10.0.0.9]:2222") + "\n"  # stored as ssh-rsa
    assert keygen("-F", "[10.0.0.9]:2222", "-f", str(path)).returncode == 0


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
