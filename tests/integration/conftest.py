"""Integration fixtures: throwaway fleets of real sshd processes on loopback, and a clean SSH env."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fleetrun.errors import LabError
from fleetrun.lab import Lab, start_lab, stop_lab

LAB_SIZE = 20


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One 20-host lab shared by the whole session; stopped at the end even if tests failed."""
    directory = tmp_path_factory.mktemp("lab")
    try:
        yield start_lab(LAB_SIZE, directory)
    finally:
        # start_lab cleans up after itself when it fails, leaving no state: nothing to stop then.
        with contextlib.suppress(LabError):
            stop_lab(directory)


@pytest.fixture
def make_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Lab]]:
    """`make_lab(n, **start_lab_options)` starts a lab of its own for this test, stopped when it ends."""
    directories: list[Path] = []

    def make(count: int, **options: Any) -> Lab:
        directory = tmp_path_factory.mktemp("lab")
        directories.append(directory)
        return start_lab(count, directory, **options)

    yield make
    for directory in directories:
        with contextlib.suppress(LabError):
            stop_lab(directory)


@pytest.fixture
def ssh_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """No agent and an empty HOME, so nothing reaches the real user's keys, agent or ~/.ssh."""
    home = tmp_path_factory.mktemp("home")
    home.chmod(0o700)
    for name in ("SSH_AUTH_SOCK", "SSH_AGENT_PID", "SSH_ASKPASS", "DISPLAY", "XDG_STATE_HOME", "FLEETRUN_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    return home
