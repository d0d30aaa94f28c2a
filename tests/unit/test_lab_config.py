"""The lab's sshd_config options for misbehaving-server tests: extra keywords replace the lab's own."""

from __future__ import annotations

import pytest

from fleetrun.errors import LabError
from fleetrun.lab import _with_extra, start_lab


def test_an_extra_keyword_replaces_the_labs_line_for_it():
    config = "# header\nListenAddress 127.1.0.1:2222\nMaxStartups 200:30:400\nmaxsessions 64\n"
    extra = "MaxStartups 1\n  MaxSessions 2\n# a comment\n\nKexAlgorithms diffie-hellman-group14-sha1"
    merged = _with_extra(config, extra)
    assert merged.splitlines() == [
        "# header", "ListenAddress 127.1.0.1:2222",
        "MaxStartups 1", "MaxSessions 2", "KexAlgorithms diffie-hellman-group14-sha1",
    ]
    assert _with_extra(config, "") == config


@pytest.mark.parametrize(
    ("options", "words"),
    [({"host_key_type": "dsa"}, "host key type 'dsa'"), ({"extra_config": "Match user root\n  X11Forwarding no"},
                                                          "Match block")],
)
def test_bad_lab_options_are_refused_before_anything_starts(tmp_path, options, words):
    with pytest.raises(LabError, match=words):
        start_lab(1, tmp_path / "lab", **options)
    assert not (tmp_path / "lab").exists()
