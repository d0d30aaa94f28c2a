"""Bounded job queue → N worker threads → one collector thread; knows nothing about SSH."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from fleetrun.cancel import Cancel

Job = TypeVar("Job")
Result = TypeVar("Result")

# How often blocked waits in the main thread wake to let signal handlers run and deadlines hold.
TICK = 0.2
_STOP = object()  # sentinel: one per worker on the job queue, one for the collector


@dataclass(frozen=True)
class Started(Generic[Job]):
    """A worker has picked up this job (for progress displays)."""

    job: Job


@dataclass(frozen=True)
class Finished(Generic[Job, Result]):
    """The one result for this job."""

    job: Job
    result: Result


Emit = Callable[[object], None]


def _admit_all(job: object) -> bool:
    return True


def _ignore(job: object, result: object) -> None:
    pass


@dataclass
class PoolCallbacks(Generic[Job, Result]):
    """What the pool calls; the runner supplies them. Only `handle` runs on the collector thread."""

    work: Callable[[Job, Emit], Result]  # runs on a worker; may emit progress events through Emit
    not_started: Callable[[Job], Result]  # the result for a job never started (cancelled run)
    crashed: Callable[[Job, BaseException], Result]  # the result when `work` raised anyway
    handle: Callable[[object], None]  # consumes every event, in order, on the collector thread
    # Runs on the worker just before a job starts; False gives it its `not_started` result instead. A rollout
    # decides to stop under the same lock, so no job starts after that decision (issue 11).
    admit: Callable[[Job], bool] = _admit_all
    # Runs with every result on the thread that made it, before it is queued for the collector: a worker's
    # next `admit` already knows about its last result (a failure budget must not let one more host start).
    settled: Callable[[Job, Result], None] = _ignore
    # Whether a Started event goes to `handle` as each job starts: only progress displays and --out-dir need
    # one, and every event is a queue hand-off to the collector thread (or a message from a worker process).
    announce_started: bool = True


def run_pool(
    jobs: Iterable[Job],
    callbacks: PoolCallbacks[Job, Result],
    *,
    forks: int,
    cancel: Cancel,
    deadline_check: Callable[[], None] = lambda: None,
) -> list[BaseException]:
    """Run every job, yielding exactly one Finished event per job to `callbacks.handle`.

    The main thread is the producer: a full job queue blocks it (back-pressure keeps memory flat however
    large the fleet). It only ever waits with timeouts so signal handlers and `deadline_check` run.
    Returns the errors the collector's handler raised (it keeps draining after one, so workers never block).
    """
    job_queue: queue.Queue[object] = queue.Queue(maxsize=max(2 * forks, 1))
    # Events can carry megabytes (a finished host's output): a few per worker is enough to keep the collector
    # busy, and a full queue makes workers wait, which the SSH window passes back to the servers.
    events: queue.Queue[object] = queue.Queue(maxsize=max(2 * forks, 16))
    handler_errors: list[BaseException] = []

    def emit(event: object) -> None:
        events.put(event)

    def finish(job: Job, result: Result) -> None:
        try:
            callbacks.settled(job, result)
        except BaseException as error:  # reported after the run like a handler's; the result still goes on
            handler_errors.append(error)
        emit(Finished(job, result))

    def worker() -> None:
        while True:
            job = job_queue.get()
            if job is _STOP:
                return
            typed_job: Job = job  # type: ignore[assignment]
            if cancel.is_set() or not callbacks.admit(typed_job):
                finish(typed_job, callbacks.not_started(typed_job))
                continue
            if callbacks.announce_started:
                emit(Started(typed_job))
            try:
                result = callbacks.work(typed_job, emit)
            except BaseException as error:  # a worker never dies from a job
                result = callbacks.crashed(typed_job, error)
            finish(typed_job, result)

    def collector() -> None:
        while True:
            event = events.get()
            if event is _STOP:
                return
            try:
                callbacks.handle(event)
            except BaseException as error:
                handler_errors.append(error)

    collector_thread = threading.Thread(target=collector, name="fleetrun-collector")
    collector_thread.start()
    workers = [threading.Thread(target=worker, name=f"fleetrun-worker-{n}") for n in range(forks)]
    for thread in workers:
        thread.start()
    try:
        for job in jobs:
            while True:
                deadline_check()
                if cancel.is_set():
                    finish(job, callbacks.not_started(job))
                    break
                try:
                    job_queue.put(job, timeout=TICK)
                    break
                except queue.Full:
                    continue
    finally:
        for _ in workers:
            _put_patiently(job_queue, _STOP, deadline_check)
        for thread in workers:
            while thread.is_alive():
                deadline_check()
                thread.join(TICK)
        events.put(_STOP)
        while collector_thread.is_alive():
            collector_thread.join(TICK)
    return handler_errors


def _put_patiently(target: queue.Queue[object], item: object, tick: Callable[[], None]) -> None:
    while True:
        tick()
        try:
            target.put(item, timeout=TICK)
            return
        except queue.Full:
            continue
