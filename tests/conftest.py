"""Every test starts without the operator's own defaults file: ~/.config/fleetrun/config.yaml changes nothing."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def no_defaults_file(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.delenv("FLEETRUN_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
