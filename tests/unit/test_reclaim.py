"""Finished connections are reclaimed as the run goes: a full garbage collection every RECLAIM_EVERY sessions."""

from __future__ import annotations

import gc
import io
import weakref
from typing import ClassVar

from fleetrun import runner
from fleetrun.models import Host, HostResult, Outcome
from fleetrun.runner import RunOptions, execute


class Collect:
    def __init__(self) -> None:
        self.results: dict[str, HostResult] = {}

    def on_start(self, hosts) -> None:
        pass

    def on_started(self, host) -> None:
        pass

    def on_line(self, line) -> None:
        pass

    def on_result(self, result: HostResult) -> None:
        self.results[result.host.name] = result

    def on_finish(self, summary) -> None:
        pass

    wants_lines = False


class CyclicSession:
    """Like a paramiko transport: a reference cycle, which only the cyclic garbage collector frees."""

    host_key_verified = True
    gone: ClassVar[list[weakref.ref]] = []

    def __init__(self) -> None:
        self.handlers = {"close": self.close}  # a bound method of itself: the cycle
        CyclicSession.gone.append(weakref.ref(self))

    def close(self) -> None:
        pass

    def lost_reason(self) -> None:
        return None


def test_a_full_collection_runs_every_reclaim_every_closed_sessions_and_frees_finished_cycles(mocker):
    full = []

    def watch(phase: str, info: dict) -> None:
        if phase == "stop" and info["generation"] == 2:
            full.append(info["collected"])

    mocker.patch("fleetrun.ssh.connect", side_effect=lambda *args, **kwargs: CyclicSession())
    mocker.patch("fleetrun.runner.connect_settings", return_value=mocker.Mock(gateways=None))
    hosts = [Host(f"h{n:03d}", f"10.0.{n // 250}.{n % 250 + 1}") for n in range(3 * runner.RECLAIM_EVERY + 5)]
    CyclicSession.gone.clear()
    gc.callbacks.append(watch)
    try:
        summary = execute(hosts, lambda session, host, context: HostResult(host, Outcome.OK), RunOptions(forks=4),
                          Collect(), io.StringIO())
    finally:
        gc.callbacks.remove(watch)
    assert summary.counts[Outcome.OK] == len(hosts)
    # At least one per RECLAIM_EVERY sessions (the interpreter may add its own), each freeing finished sessions.
    assert len(full) >= 3
    assert sum(full) > 0
    # By the end, every session but the last few (closed after the last reclaim) is gone without a collection.
    alive = [ref for ref in CyclicSession.gone if ref() is not None]
    assert len(alive) < runner.RECLAIM_EVERY + 4


def test_a_run_collects_garbage_though_start_up_turned_collection_off_and_gives_it_back_off(mocker):
    """fleetrun.cli.main turns the collector off while it starts up; the run itself must collect (a finished
    paramiko transport is a cycle), and a library caller that had it off finds it off again."""
    seen: list[bool] = []

    def work(session, host, context) -> HostResult:
        seen.append(gc.isenabled())
        return HostResult(host, Outcome.OK)

    mocker.patch("fleetrun.ssh.connect", side_effect=lambda *args, **kwargs: CyclicSession())
    mocker.patch("fleetrun.runner.connect_settings", return_value=mocker.Mock(gateways=None))
    hosts = [Host(f"h{n}", f"10.0.0.{n + 1}") for n in range(5)]
    gc.disable()
    try:
        summary = execute(hosts, work, RunOptions(forks=2), Collect(), io.StringIO())
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert summary.counts[Outcome.OK] == 5
    assert seen == [True] * 5
