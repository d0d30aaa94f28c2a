"""--lock: a second run while the lock is held exits 75 before connecting anywhere."""

from __future__ import annotations

import fcntl
import os

import pytest

from fleetrun.cli import main


def test_held_lock_is_exit_75_and_names_the_holder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    inventory = tmp_path / "inv.yaml"
    inventory.write_text("hosts:\n  h1: {address: 127.0.0.1, port: 9}\n")  # would be 'unreachable' (4) if tried
    lock = tmp_path / "deploy.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    os.write(fd, b"4242\n")
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(SystemExit) as done:
            main(["exec", "-i", str(inventory), "true", "-H", "all", "--lock", str(lock)])
    finally:
        os.close(fd)
    assert done.value.code == 75
    err = capsys.readouterr().err
    assert "pid 4242" in err and str(lock) in err and len(err.strip().splitlines()) == 1


def test_free_lock_is_taken_and_released(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    inventory = tmp_path / "inv.yaml"
    inventory.write_text("hosts:\n  h1: {address: 127.0.0.1, port: 9}\n")
    lock = tmp_path / "deploy.lock"
    for _ in range(2):  # the second run proves the first released it
        with pytest.raises(SystemExit) as done:
            main(["exec", "-i", str(inventory), "true", "-H", "all", "--lock", str(lock), "--format", "json"])
        assert done.value.code == 4  # it ran: the closed port is unreachable
    assert lock.read_text().strip().isdigit()
