"""Every test starts without the operator's own defaults file (~/.config/fleetrun/config.yaml changes nothing),
with SIGHUP at its default disposition, and leaves paramiko's logger as it found it."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def no_defaults_file(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.delenv("FLEETRUN_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))


@pytest.fixture(autouse=True, scope="session")
def hangup_at_its_default() -> Iterator[None]:
    """The suite tests what a hangup does. Started under `nohup`, every process it starts would inherit SIGHUP
    ignored, and fleetrun rightly keeps it ignored then (tests/integration/test_hangup_and_prompt.py): those
    tests would wait out their timeouts and the wrapper's `kill -HUP $$` would do nothing."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGHUP, previous)


@pytest.fixture(autouse=True)
def paramiko_logger_as_found() -> Iterator[None]:
    """An in-process run with FLEETRUN_DEBUG=1 gives paramiko's logger a handler on the stderr of that moment,
    pytest's capture, closed once the test ends: every later in-process paramiko connection then printed a
    "Logging error" to the terminal."""
    logger = logging.getLogger("paramiko")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
