"""Open-files limit: raised for --forks when allowed, else --forks is lowered with one warning."""

from __future__ import annotations

import resource

from fleetrun.runner import FDS_PER_FORK, fit_forks


def test_forks_never_exceed_hosts():
    assert fit_forks(64, 3, lambda message: None) == 3


def test_soft_limit_raised_when_the_hard_limit_allows(mocker):
    mocker.patch.object(resource, "getrlimit", return_value=(256, 1 << 20))
    setrlimit = mocker.patch.object(resource, "setrlimit")
    warnings: list[str] = []
    assert fit_forks(256, 1000, warnings.append) == 256
    setrlimit.assert_called_once_with(resource.RLIMIT_NOFILE, (256 * FDS_PER_FORK + 64, 1 << 20))
    assert warnings == []


def test_forks_lowered_with_one_warning_when_the_limit_cannot_grow(mocker):
    mocker.patch.object(resource, "getrlimit", return_value=(256, 256))
    mocker.patch.object(resource, "setrlimit", side_effect=ValueError("not allowed"))
    warnings: list[str] = []
    forks = fit_forks(256, 1000, warnings.append)
    assert forks == (256 - 64) // FDS_PER_FORK
    assert len(warnings) == 1 and "lowering --forks from 256" in warnings[0]
