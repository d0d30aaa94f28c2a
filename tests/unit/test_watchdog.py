"""The transfer watchdog: closes channels at the limit or on cancel, then the connection after the grace."""

from __future__ import annotations

import threading

import pytest

from fleetrun.cancel import Cancel
from fleetrun.watchdog import TransferStopped, Watchdog

PATIENCE = 10  # seconds to wait for something that should happen at once; never a measured duration


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.event = threading.Event()
        self.lock = threading.Lock()

    def closer(self, name: str):
        def close() -> None:
            with self.lock:
                self.calls.append(name)
            self.event.set()

        return close


def test_limit_closes_channels_then_the_connection_when_the_transfer_does_not_stop():
    record, cancel = Recorder(), Cancel()
    last = threading.Event()
    watchdog = Watchdog(0.05, cancel, last.set, grace=0.05)
    watchdog.guard(record.closer("sftp"))
    assert record.event.wait(PATIENCE) and last.wait(PATIENCE)
    assert record.calls == ["sftp"] and watchdog.fired == "timeout" and watchdog.reason() == "timeout"
    with pytest.raises(TransferStopped, match="timeout"):
        watchdog.check()
    late = Recorder()
    watchdog.guard(late.closer("opened after firing"))  # a channel opened too late is closed at once
    assert late.calls == ["opened after firing"]
    watchdog.stop()
    cancel.close()


def test_stopped_in_time_closes_nothing():
    record, cancel = Recorder(), Cancel()
    watchdog = Watchdog(30, cancel, record.closer("connection"))
    watchdog.guard(record.closer("sftp"))
    assert watchdog.reason() is None and 0 < (watchdog.remaining() or 0) <= 30
    watchdog.check()
    watchdog.stop()
    watchdog._thread.join(PATIENCE)
    assert not watchdog._thread.is_alive() and record.calls == [] and watchdog.fired is None
    cancel.set("interrupted")  # its callback is gone: a later cancel reaches nothing of this transfer
    assert record.calls == []
    cancel.close()


def test_cancel_fires_at_once_without_a_limit_and_released_closers_are_left_alone():
    record, cancel = Recorder(), Cancel()
    last = threading.Event()
    watchdog = Watchdog(None, cancel, last.set, grace=30)
    assert watchdog.remaining() is None
    handle = watchdog.guard(record.closer("released"))
    watchdog.release(handle)
    watchdog.guard(record.closer("sftp"))
    cancel.set("interrupted")
    assert record.event.wait(PATIENCE)
    assert record.calls == ["sftp"] and watchdog.reason() == "cancelled"
    watchdog.stop()  # within the grace: the connection stays open for the cleanup
    watchdog._thread.join(PATIENCE)
    assert not last.is_set()
    cancel.close()


def test_a_failing_closer_does_not_stop_the_others():
    record, cancel = Recorder(), Cancel()

    def broken() -> None:
        raise OSError("already closed")

    watchdog = Watchdog(0.01, cancel, lambda: None)
    watchdog.guard(broken)
    watchdog.guard(record.closer("sftp"))
    assert record.event.wait(PATIENCE)
    watchdog.stop()
    cancel.close()
