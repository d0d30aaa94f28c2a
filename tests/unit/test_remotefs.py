"""Names that are not UTF-8 in push and pull: accepted as bytes, shown as escapes, given temp names that fit."""

from __future__ import annotations

import os
from pathlib import Path

from fleetrun.errors import printable
from fleetrun.pull import plan_pull
from fleetrun.pushplan import plan_push
from fleetrun.remotefs import NAME_MAX, is_leftover_of, temp_basename
from fleetrun.ssh.sftpio import wire

ODD = os.fsdecode(b"/srv/caf\xe9.conf")  # Latin-1 bytes, as os and argv hand them over: a surrogate for \xe9


def test_a_name_goes_to_the_host_as_the_bytes_it_was_and_is_shown_with_escapes() -> None:
    assert wire(ODD) == b"/srv/caf\xe9.conf" and wire("/srv/café.conf") == "/srv/café.conf".encode()
    assert printable(ODD) == "/srv/caf\\xe9.conf" and printable("/srv/café.conf") == "/srv/café.conf"


def test_push_and_pull_take_paths_that_are_not_utf8_as_scp_does(tmp_path: Path) -> None:
    local = tmp_path / "app.conf"
    local.write_text("x\n")
    assert plan_push(str(local), ODD).remote == ODD
    odd_local = os.fsencode(tmp_path) + b"/caf\xe9.conf"
    with open(odd_local, "wb") as handle:
        handle.write(b"x\n")
    assert plan_push(os.fsdecode(odd_local), "/srv/").source_name == os.fsdecode(b"caf\xe9.conf")
    assert plan_pull(ODD, str(tmp_path)).remote == ODD


def test_a_temp_name_fits_whatever_bytes_the_name_has() -> None:
    for name in (os.fsdecode(b"\xe9" * 255), "é" * 127 + os.fsdecode(b"\xff"), os.fsdecode(b"caf\xe9.conf")):
        temp = temp_basename(name)
        assert len(wire(temp)) <= NAME_MAX
        assert is_leftover_of(temp, name)
    cut = temp_basename("n" + "é" * 127)  # 255 bytes: cut before an é, never inside one
    assert len(cut.encode()) <= NAME_MAX


def test_runs_list_shows_a_recorded_path_that_is_not_utf8_with_escapes() -> None:
    from fleetrun.cli_journal import _what

    recorded = {"kind": "push", "transfer": {"local": ODD, "remote": "/srv/"}}  # as run.json gives it back
    assert _what(recorded) == "push /srv/caf\\xe9.conf /srv/"
    assert _what({"kind": "pull", "transfer": {"remote": ODD, "local_dir": "/tmp/x"}}).encode("utf-8")
