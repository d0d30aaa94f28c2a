"""Identity files from ssh_config and ssh's defaults: loaded once, skipped (never prompted for) when unusable."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from fleetrun.ssh.auth import _public_blob, load_identities
from fleetrun.sshconfig.files import read_file
from fleetrun.sshconfig.model import ConfigError

KEYGEN = shutil.which("ssh-keygen")
needs_keygen = pytest.mark.skipif(KEYGEN is None, reason="ssh-keygen (openssh-client) is not installed")


def keygen(path: Path, passphrase: str = "", keytype: str = "ed25519") -> Path:
    subprocess.run([str(KEYGEN), "-q", "-t", keytype, "-N", passphrase, "-f", str(path)], check=True,
                   capture_output=True)
    return path


def blob_of(path: Path) -> bytes:
    return base64.b64decode(path.with_name(path.name + ".pub").read_text().split()[1])


@needs_keygen
def test_missing_files_warn_only_when_named(tmp_path: Path) -> None:
    warnings: list[str] = []
    good = keygen(tmp_path / "good")
    named, default = str(tmp_path / "named_absent"), str(tmp_path / "id_rsa")
    keys, encrypted = load_identities([named, default, str(good), str(good)], {named, str(good)}, None,
                                      lambda blob: False, warnings.append)
    assert list(keys) == [str(good)] and encrypted == {}
    assert warnings == [f"identity file {named} does not exist: skipped (as ssh does)"]


@needs_keygen
def test_encrypted_identity_is_skipped_with_one_warning_unless_the_agent_holds_it(tmp_path: Path) -> None:
    locked = keygen(tmp_path / "locked", passphrase="pass phrase")
    for held, expected in ((False, 1), (True, 0)):
        warnings: list[str] = []
        keys, encrypted = load_identities([str(locked)] * 3, set(), None, lambda blob, h=held: h, warnings.append)
        assert keys == {} and encrypted == {str(locked): blob_of(locked)}
        assert len(warnings) == expected
        assert all("is encrypted and no passphrase was given" in warning for warning in warnings)
    keys, _ = load_identities([str(locked)], set(), "pass phrase", lambda blob: False, warnings.append)
    assert list(keys) == [str(locked)]  # with --key-passphrase-env it loads


@needs_keygen
def test_public_half_of_an_encrypted_key_without_its_pub_file(tmp_path: Path) -> None:
    locked = keygen(tmp_path / "locked", passphrase="pass phrase")
    expected = blob_of(locked)
    assert _public_blob(str(locked)) == expected
    locked.with_name("locked.pub").unlink()
    assert _public_blob(str(locked)) == expected  # read from the OpenSSH format's unencrypted header
    (tmp_path / "junk").write_text("not a key\n")
    assert _public_blob(str(tmp_path / "junk")) is None


def test_unusable_files_are_skipped_with_a_reason(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_text("not a key\n")
    warnings: list[str] = []
    keys, _ = load_identities([str(junk), str(tmp_path)], set(), None, lambda blob: False, warnings.append)
    assert keys == {} and len(warnings) == 2
    assert "cannot be loaded" in warnings[0] and "cannot be read" in warnings[1]


def test_user_config_must_not_be_writable_by_others(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("Port 2\n")
    config.chmod(0o602)  # group write alone can be fine (see test_include_permissions_match_ssh_G)
    with pytest.raises(ConfigError, match="bad owner or permissions"):
        read_file(str(config), user=True, check_permissions=True)
    assert read_file(str(config), user=True, check_permissions=False) is not None  # like -F / ssh_config
