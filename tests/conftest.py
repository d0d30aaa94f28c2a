"""Every test starts without the operator's own defaults file (~/.config/fleetrun/config.yaml changes nothing),
and with SIGHUP at its default disposition."""

from __future__ import annotations

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
