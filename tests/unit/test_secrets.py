"""Password sources and redaction: usable sources give the password, unusable ones say why, never what."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetrun import secrets
from fleetrun.errors import SecretError, UsageError
from fleetrun.models import Host
from fleetrun.secrets import MAX_PASSWORD_FILE, read_env_secret, read_password, redact

SECRET = "s3cr3t-Hunter2"


@pytest.fixture(autouse=True)
def _fresh_secrets():
    secrets.forget_all()
    yield
    secrets.forget_all()


def host(password_env: str | None = None, password_file: str | None = None) -> Host:
    return Host(name="web01", address="10.0.0.1", password_env=password_env, password_file=password_file)


def password_file(tmp_path: Path, content: str | bytes = SECRET + "\n", mode: int = 0o600) -> Path:
    path = tmp_path / "password"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    path.chmod(mode)
    return path


def refused(target: Host) -> str:
    with pytest.raises(SecretError) as caught:
        read_password(target)
    message = str(caught.value)
    assert "\n" not in message
    assert SECRET not in message
    assert "web01" in message
    return message


def test_no_source_means_no_password() -> None:
    assert read_password(host()) is None


# --- password_env ---------------------------------------------------------------------------------------


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_PW", SECRET)
    assert read_password(host(password_env="FLEET_PW")) == SECRET


@pytest.mark.parametrize("value", [SECRET + "\n", SECRET + "\n\n", SECRET + "\r\n", SECRET + "\nnote: rotate in May\n"])
def test_environment_value_is_its_first_line(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("FLEET_PW", value)
    assert read_password(host(password_env="FLEET_PW")) == SECRET


def test_environment_variable_is_taken_out_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_PW", SECRET)
    assert read_password(host(password_env="FLEET_PW")) == SECRET
    assert "FLEET_PW" not in os.environ  # a ProxyCommand or ssh -G started later never inherits it
    # Several hosts name the same variable: the second one still gets the password.
    assert read_password(Host(name="web02", address="10.0.0.2", password_env="FLEET_PW")) == SECRET
    monkeypatch.setenv("FLEET_PW", "rotated")  # set again later in this process: the new value wins
    assert read_password(host(password_env="FLEET_PW")) == "rotated"
    assert "FLEET_PW" not in os.environ


def test_passwords_read_are_remembered_for_masking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_PW", "from-env\nnote")
    read_password(host(password_env="FLEET_PW"))
    read_password(host(password_file=str(password_file(tmp_path, SECRET + "\nsecond line\n"))))
    assert secrets.held() == ("from-env", SECRET)
    assert redact(f"a from-env b {SECRET} c note") == "a *** b *** c note"


def test_env_secret_for_a_key_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    assert read_env_secret(None, "--key-passphrase-env") is None
    monkeypatch.setenv("KEY_PASS", "pass phrase")
    assert read_env_secret("KEY_PASS", "--key-passphrase-env") == "pass phrase"
    assert "KEY_PASS" not in os.environ and secrets.held() == ("pass phrase",)
    monkeypatch.setenv("EMPTY", "")
    for name in ("EMPTY", "UNSET_FLEET_VARIABLE"):
        with pytest.raises(SecretError) as caught:
            read_env_secret(name, "--key-passphrase-env")
        assert str(caught.value) == f"--key-passphrase-env: environment variable {name} is not set or empty"


def test_environment_variable_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEET_PW", raising=False)
    message = refused(host(password_env="FLEET_PW"))
    assert message == ("host web01: password_env names the environment variable FLEET_PW, which is not set; "
                       "export it before running fleetrun")


@pytest.mark.parametrize(("value", "why"), [("", "is empty"), ("\n", "is empty"),
                                          ("\n" + SECRET, "starts with an empty line")])
def test_environment_variable_empty(monkeypatch: pytest.MonkeyPatch, value: str, why: str) -> None:
    monkeypatch.setenv("FLEET_PW", value)
    assert f"FLEET_PW, which {why}; set it to the password" in refused(host(password_env="FLEET_PW"))


def test_environment_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEET_PW", "from-env")
    path = password_file(tmp_path)
    assert read_password(host(password_env="FLEET_PW", password_file=str(path))) == "from-env"


# --- password_file --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700, 0o200 | 0o400])
def test_from_private_file(tmp_path: Path, mode: int) -> None:
    assert read_password(host(password_file=str(password_file(tmp_path, mode=mode)))) == SECRET


@pytest.mark.parametrize(("content", "expected"), [
    (SECRET, SECRET),
    (SECRET + "\n", SECRET),
    (SECRET + "\r\n", SECRET),
    (SECRET + "\n\n", SECRET),
    (SECRET + "\nnote: the old one was hunter1\n", SECRET),  # printf 'pw\nnote\n': only the first line is sent
    (SECRET + "\r\nsecond\r\n", SECRET),
    (" " + SECRET + " \n", " " + SECRET + " "),
    ("pässwörd\n", "pässwörd"),
])
def test_file_gives_its_first_line(tmp_path: Path, content: str, expected: str) -> None:
    assert read_password(host(password_file=str(password_file(tmp_path, content)))) == expected


def test_symlink_to_a_private_file_is_fine(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(password_file(tmp_path))
    assert read_password(host(password_file=str(link))) == SECRET


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620, 0o602, 0o610, 0o601, 0o777])
def test_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = password_file(tmp_path, mode=mode)
    message = refused(host(password_file=str(path)))
    assert message == (f"host web01: password_file {path} has mode {mode:04o}, readable or writable by "
                       f"others; run chmod 600 {path}")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    message = refused(host(password_file=str(path)))
    assert message == f"host web01: password_file {path} does not exist; create it and chmod 600 {path}"


def test_directory_is_refused(tmp_path: Path) -> None:
    assert "is not a regular file" in refused(host(password_file=str(tmp_path)))


def test_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    assert f"password_file {fifo} is not a regular file" in refused(host(password_file=str(fifo)))


def test_file_owned_by_someone_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = password_file(tmp_path)
    me = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: me + 1)
    message = refused(host(password_file=str(path)))
    assert f"password_file {path} is owned by uid {me}, not by you (uid {me + 1})" in message
    assert f"chmod 600 {path}" in message


@pytest.mark.parametrize(("content", "fragment"), [
    ("", "is empty"),
    ("\n", "is empty"),
    ("\n" + SECRET + "\n", "starts with an empty line"),
    (b"\xff\xfe" + SECRET.encode(), "is not UTF-8 text"),
    ("x" * (MAX_PASSWORD_FILE + 1), f"is larger than {MAX_PASSWORD_FILE} bytes"),
])
def test_unusable_file_content(tmp_path: Path, content: str | bytes, fragment: str) -> None:
    path = password_file(tmp_path, content)
    assert fragment in refused(host(password_file=str(path)))


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = password_file(tmp_path)

    def deny(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", deny)
    assert f"cannot open password_file {path}: Permission denied" in refused(host(password_file=str(path)))


def test_secret_error_is_a_usage_error() -> None:
    assert issubclass(SecretError, UsageError)


# --- redact ---------------------------------------------------------------------------------------------


def test_redact_replaces_every_occurrence() -> None:
    assert redact(f"login {SECRET} ok {SECRET}", [SECRET]) == "login *** ok ***"


def test_redact_several_secrets_from_any_iterable() -> None:
    assert redact("a=one b=two c=three", (s for s in ["one", "three"])) == "a=*** b=two c=***"


def test_redact_ignores_empty_secrets() -> None:
    assert redact("nothing to hide", ["", ""]) == "nothing to hide"
    assert redact("nothing to hide", []) == "nothing to hide"


def test_redact_longer_secret_first_so_nothing_leaks() -> None:
    assert redact("token=abcdef", ["abc", "abcdef"]) == "token=***"
    assert redact("token=abcdef", ["abcdef", "abc"]) == "token=***"


def test_redact_treats_secrets_literally() -> None:
    assert redact("p=a.b*c+(d) q=aXb", ["a.b*c+(d)"]) == "p=*** q=aXb"
    assert redact("back\\slash", ["\\"]) == "back***slash"
