"""The progress line with a fake clock and StringIO streams: its text, the guard that erases it, the ticker."""

from __future__ import annotations

import io
import threading
import time

from fleetrun.models import Host, HostResult, Outcome, RunSummary
from fleetrun.output.progress import CLEAR, ProgressRenderer, duration
from fleetrun.status import ExitStatus

HOSTS = [Host(f"web{i:02d}", "127.0.0.1") for i in range(1, 21)]
SUMMARY = RunSummary(20, {Outcome.OK: 20}, 1.0, ExitStatus.OK)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(**options) -> tuple[ProgressRenderer, io.StringIO, Clock]:
    err, clock = io.StringIO(), Clock()
    # A long interval: these tests draw by hand; the ticker thread stays asleep.
    progress = ProgressRenderer(err, interval=3600, clock=clock, width=lambda: 200, **options)
    return progress, err, clock


def test_duration():
    assert [duration(s) for s in (0, 9.9, 61, 3599, 3725)] == ["0s", "9s", "1m01s", "59m59s", "1h02m"]


def test_counts_elapsed_and_eta():
    progress, _, clock = make()
    progress.on_start(HOSTS)
    for host in HOSTS[:10]:
        progress.on_started(host)
    for host, outcome in zip(HOSTS[:4], [Outcome.OK, Outcome.OK, Outcome.FAILED, Outcome.UNREACHABLE], strict=True):
        progress.on_result(HostResult(host, outcome))
    clock.now += 8
    assert progress.line() == "[ 4/20] 2 ok, 1 failed, 1 unreachable | 8s, ETA 32s | 6 running"
    progress.stop()


def test_names_the_last_hosts_running():
    progress, _, clock = make()
    progress.on_start(HOSTS)
    for host in HOSTS:
        progress.on_started(host)
    for host in HOSTS[:17]:
        progress.on_result(HostResult(host, Outcome.OK))
    clock.now += 17
    assert progress.line() == "[17/20] 17 ok | 17s, ETA 3s | waiting for web18, web19, web20"
    progress.stop()


def test_writes_through_the_guard_erase_the_line_first():
    progress, err, _ = make()
    out = io.StringIO()
    guarded_out, guarded_err = progress.guard(out), progress.guard(err)
    progress.on_start(HOSTS)
    progress.draw()
    assert err.getvalue() == CLEAR + "[ 0/20] 0 ok | 0s"
    guarded_out.write("web01 | hello\n")
    assert err.getvalue().endswith(CLEAR)  # erased before stdout got its line
    assert out.getvalue() == "web01 | hello\n"
    progress.draw()
    guarded_err.write("fleetrun: warning: something\n")
    assert err.getvalue().endswith(CLEAR + "fleetrun: warning: something\n")
    progress.stop()


def test_not_drawn_in_the_middle_of_someone_elses_line():
    progress, err, _ = make()
    guarded_err = progress.guard(err)
    progress.on_start(HOSTS)
    guarded_err.write("half a line")
    progress.draw()
    assert err.getvalue() == "half a line"
    guarded_err.write(" and the rest\n")
    progress.draw()
    assert err.getvalue().startswith("half a line and the rest\n" + CLEAR + "[")
    progress.stop()


def test_cut_to_the_terminal_width():
    progress, err, _ = make()
    progress.width = lambda: 12
    progress.on_start(HOSTS)
    progress.draw()
    assert err.getvalue() == CLEAR + "[ 0/20] 0 o"
    progress.stop()


def test_ticker_is_a_daemon_that_redraws_and_stops_clean():
    err = io.StringIO()
    progress = ProgressRenderer(err, interval=0.01, width=lambda: 80)
    progress.on_start(HOSTS)
    ticker = next(t for t in threading.enumerate() if t.name == "fleetrun-progress")
    assert ticker.daemon
    deadline = time.monotonic() + 30
    while "[ 0/20]" not in err.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    progress.on_finish(SUMMARY)
    assert "[ 0/20] 0 ok" in err.getvalue() and err.getvalue().endswith(CLEAR)
    ticker.join(30)
    assert not ticker.is_alive()
    stopped = err.getvalue()
    time.sleep(0.05)
    assert err.getvalue() == stopped  # nothing drawn after the end


def test_an_unchanged_line_is_not_redrawn():
    progress, err, clock = make()
    progress.on_start(HOSTS)
    progress.draw()
    progress.draw()
    assert err.getvalue() == CLEAR + "[ 0/20] 0 ok | 0s"
    clock.now += 1
    progress.draw()
    assert err.getvalue() == CLEAR + "[ 0/20] 0 ok | 0s" + CLEAR + "[ 0/20] 0 ok | 1s"
    progress.stop()
