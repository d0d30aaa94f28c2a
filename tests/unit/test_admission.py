"""Handshake admission: at most N hosts connecting at once, apart from --forks; cancel ends the wait."""

from __future__ import annotations

import io
import threading

import pytest

from fleetrun.admission import Admission, default_limit, share
from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure
from fleetrun.models import Host, HostResult, Outcome
from fleetrun.runner import RunOptions, execute


class Collect:
    wants_lines = False

    def __init__(self) -> None:
        self.results: dict[str, HostResult] = {}

    def on_start(self, hosts): pass

    def on_started(self, host): pass

    def on_line(self, line): pass

    def on_result(self, result):
        self.results[result.host.name] = result

    def on_finish(self, summary): pass


class FakeSession:
    host_key_verified = True

    def close(self) -> None:
        pass


def test_default_limit_grows_with_the_cores_and_has_a_floor():
    assert default_limit(1) == 16
    assert default_limit(2) == 32
    assert default_limit(8) == 128
    assert default_limit(0) == 8


@pytest.mark.parametrize(("limit", "processes"), [(32, 2), (33, 2), (5, 3), (2, 4), (1, 1)])
def test_process_shares_differ_by_at_most_one_and_never_drop_to_zero(limit, processes):
    shares = [share(limit, processes, index) for index in range(processes)]
    assert max(shares) - min(shares) <= 1
    assert min(shares) >= 1
    assert sum(shares) == max(limit, processes)


def test_no_more_than_the_limit_hold_a_slot_at_once():
    admission, cancel = Admission(3), Cancel()
    lock, inside, most = threading.Lock(), [0], [0]
    release = threading.Event()

    def hold():
        with admission.slot(cancel):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            release.wait(30)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=hold) for _ in range(10)]
    for thread in threads:
        thread.start()
    while admission.waited < 7:  # three hold a slot, the seven others wait for one
        threading.Event().wait(0.01)
    assert most[0] == 3
    release.set()
    for thread in threads:
        thread.join(30)
    assert most[0] == 3 and inside[0] == 0


def test_cancel_ends_every_wait_with_a_cancelled_failure():
    admission, cancel = Admission(1), Cancel()
    held, failures = threading.Event(), []

    def holder():
        with admission.slot(cancel):
            held.set()
            cancel.wait(30)

    def waiter():
        try:
            with admission.slot(cancel):
                failures.append("got a slot after the cancel")
        except HostFailure as failure:
            failures.append(failure)

    first = threading.Thread(target=holder)
    first.start()
    held.wait(30)
    waiters = [threading.Thread(target=waiter) for _ in range(5)]
    for thread in waiters:
        thread.start()
    while admission.waited < 5:
        threading.Event().wait(0.01)
    cancel.set("interrupted")
    for thread in [first, *waiters]:
        thread.join(30)
        assert not thread.is_alive()
    assert len(failures) == 5
    assert all(isinstance(f, HostFailure) and f.outcome is Outcome.CANCELLED for f in failures)
    assert "waiting for a handshake slot" in failures[0].message


def test_the_run_limits_handshakes_but_not_the_hosts_worked_on(mocker):
    """--forks 16 and --max-handshakes 3 on 8 hosts: never more than 3 in connect(), yet all 8 run at once."""
    lock, connecting, most = threading.Lock(), [0], [0]
    together = threading.Barrier(8, timeout=60)

    def connect(host, settings, password, cancel, lean=False):
        with lock:
            connecting[0] += 1
            most[0] = max(most[0], connecting[0])
        threading.Event().wait(0.02)  # long enough for the others to pile up on the slots
        with lock:
            connecting[0] -= 1
        return FakeSession()

    mocker.patch("fleetrun.ssh.connect", side_effect=connect)
    mocker.patch("fleetrun.runner.connect_settings", return_value=mocker.Mock(gateways=None))

    def task(session, host, context):
        together.wait()  # raises BrokenBarrierError (a failed host) unless all 8 are in their task at once
        return HostResult(host, Outcome.OK)

    hosts = [Host(f"h{n}", f"10.0.0.{n}") for n in range(8)]
    renderer = Collect()
    summary = execute(hosts, task, RunOptions(forks=16, max_handshakes=3), renderer, io.StringIO())
    assert summary.counts[Outcome.OK] == 8, {name: r.error for name, r in renderer.results.items()}
    assert 1 <= most[0] <= 3
