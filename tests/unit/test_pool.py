"""The pool with scripted work functions: every job accounted for, back-pressure, crashes, cancel."""

from __future__ import annotations

import threading
import time

from fleetrun.cancel import Cancel
from fleetrun.pool import Finished, PoolCallbacks, Started, run_pool


def make_callbacks(work, events):
    return PoolCallbacks(
        work=work,
        not_started=lambda job: ("not started", job),
        crashed=lambda job, error: ("crashed", job, str(error)),
        handle=events.append,
    )


def finished(events):
    return [event.result for event in events if isinstance(event, Finished)]


def test_every_job_yields_exactly_one_result():
    events: list[object] = []
    errors = run_pool(range(100), make_callbacks(lambda job, emit: ("ok", job), events), forks=7, cancel=Cancel())
    assert errors == []
    results = finished(events)
    assert sorted(job for _, job in results) == list(range(100))
    assert sum(isinstance(event, Started) for event in events) == 100


def test_no_started_events_when_nothing_renders_them():
    events: list[object] = []
    callbacks = make_callbacks(lambda job, emit: ("ok", job), events)
    callbacks.announce_started = False
    run_pool(range(50), callbacks, forks=4, cancel=Cancel())
    assert len(finished(events)) == 50 and not any(isinstance(event, Started) for event in events)


def test_a_crashing_job_becomes_a_result_and_the_worker_keeps_going():
    def work(job, emit):
        if job % 3 == 0:
            raise RuntimeError(f"boom {job}")
        return ("ok", job)

    events: list[object] = []
    run_pool(range(30), make_callbacks(work, events), forks=2, cancel=Cancel())
    results = finished(events)
    assert len(results) == 30
    assert sorted(r[1] for r in results if r[0] == "crashed") == list(range(0, 30, 3))


def test_producer_is_throttled_by_the_bounded_queue():
    release = threading.Event()
    pulled = 0

    def jobs():
        nonlocal pulled
        for job in range(1000):
            pulled += 1
            yield job

    def work(job, emit):
        release.wait(5)
        return ("ok", job)

    events: list[object] = []
    runner = threading.Thread(target=run_pool, args=(jobs(), make_callbacks(work, events)),
                              kwargs={"forks": 4, "cancel": Cancel()})
    runner.start()
    time.sleep(0.5)
    # 4 jobs in workers, 8 in the queue, one in the producer's hand: nowhere near 1000.
    assert pulled <= 4 + 8 + 1
    release.set()
    runner.join(10)
    assert len(finished(events)) == 1000


def test_cancel_marks_queued_jobs_not_started_and_accounts_for_all():
    cancel = Cancel()
    started = threading.Event()

    def work(job, emit):
        started.set()
        cancel.wait(5)
        return ("cancelled", job)

    events: list[object] = []
    # Cancel once a job runs, not after a fixed delay: on a loaded machine no worker may have started by then.
    threading.Thread(target=lambda: started.wait(60) and cancel.set("interrupted")).start()
    run_pool(range(50), make_callbacks(work, events), forks=3, cancel=cancel)
    results = finished(events)
    assert sorted(job for _, job in results) == list(range(50))
    kinds = {kind for kind, _ in results}
    assert kinds == {"cancelled", "not started"}
    assert sum(kind == "cancelled" for kind, _ in results) <= 3


def test_a_failing_handler_does_not_block_the_workers():
    def handle(event):
        raise BrokenPipeError("reader went away")

    callbacks = PoolCallbacks(lambda job, emit: job, lambda job: job, lambda job, error: job, handle)
    errors = run_pool(range(500), callbacks, forks=4, cancel=Cancel())
    assert errors and all(isinstance(error, BrokenPipeError) for error in errors)


def test_workers_are_named_and_gone_afterwards():
    names: set[str] = set()
    events: list[object] = []
    run_pool(range(20), make_callbacks(lambda job, emit: names.add(threading.current_thread().name), events),
             forks=3, cancel=Cancel())
    assert names <= {"fleetrun-worker-0", "fleetrun-worker-1", "fleetrun-worker-2"}
    assert not [t for t in threading.enumerate() if t.name.startswith("fleetrun-")]


def test_cancel_wakes_select_waiters_and_runs_callbacks():
    import select

    cancel = Cancel()
    calls: list[str] = []
    cancel.add_callback(lambda: calls.append("closed"))
    timer = threading.Timer(0.1, lambda: cancel.set("deadline"))
    timer.start()
    ready, _, _ = select.select([cancel.fileno()], [], [], 5)
    timer.join(5)  # callbacks run on the cancelling thread, right after the wake-up
    assert ready and cancel.reason == "deadline" and calls == ["closed"]
    assert cancel.set("interrupted") is False and cancel.reason == "deadline"
    cancel.close()
