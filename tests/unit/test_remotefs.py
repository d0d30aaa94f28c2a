"""The UTF-8 check on names push and pull send over SFTP, and the one refusal both give for a name that fails it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetrun.errors import UsageError
from fleetrun.pull import plan_pull
from fleetrun.pushplan import plan_push
from fleetrun.remotefs import NAME_MAX, is_leftover_of, not_utf8, shown, temp_basename, utf8

ODD = os.fsdecode(b"/srv/caf\xe9.conf")  # Latin-1 bytes, as os hands them over: a surrogate for \xe9


def test_only_names_that_encode_as_utf8_pass() -> None:
    assert utf8("/srv/café.conf") and utf8("/srv/plain")
    assert not utf8(ODD)
    assert not_utf8(ODD) == "b'/srv/caf\\xe9.conf' is not valid UTF-8: fleetrun sends SFTP names as UTF-8"


def test_push_refuses_a_non_utf8_local_or_remote_path_before_connecting(tmp_path: Path) -> None:
    local = tmp_path / "app.conf"
    local.write_text("x\n")
    with pytest.raises(UsageError) as caught:
        plan_push(str(local), ODD)
    assert str(caught.value) == "b'/srv/caf\\xe9.conf' is not valid UTF-8: fleetrun sends SFTP names as UTF-8"
    odd_local = os.fsencode(tmp_path) + b"/caf\xe9.conf"
    with open(odd_local, "wb") as handle:
        handle.write(b"x\n")
    with pytest.raises(UsageError, match=r"caf\\xe9.conf' is not valid UTF-8"):
        plan_push(os.fsdecode(odd_local), "/srv/")


def test_pull_refuses_a_non_utf8_remote_path_naming_it_the_remote_path(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        plan_pull(ODD, str(tmp_path))
    assert str(caught.value) == (
        "remote path b'/srv/caf\\xe9.conf' is not valid UTF-8: fleetrun sends SFTP names as UTF-8"
    )


def test_a_name_with_bytes_that_are_not_utf8_is_shown_escaped_and_gets_a_temp_name_that_fits() -> None:
    odd = os.fsdecode(b"caf\xe9.conf")
    assert shown(odd) == "caf\\xe9.conf" and shown("café.conf") == "café.conf"
    assert shown(Path(os.fsdecode(b"/srv/d\xefr/x"))) == "/srv/d\\xefr/x"
    for name in (os.fsdecode(b"\xe9" * 255), "é" * 127 + os.fsdecode(b"\xff"), odd):
        temp = temp_basename(name)
        assert len(temp.encode("utf-8", "surrogateescape")) <= NAME_MAX
        assert is_leftover_of(temp, name)
    cut = temp_basename("n" + "é" * 127)  # 255 bytes: cut before an é, never inside one
    assert utf8(cut) and len(cut.encode()) <= NAME_MAX
