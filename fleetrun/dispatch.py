"""Feeds a run's hosts to the pool batch by batch: lock-step batches, the failure budget, pauses and --confirm.

The main thread iterates `jobs()` (the pool's producer), which holds batch k+1 back until every host of
batch k has been handled by the collector (`rendered()`). A worker calls `admit()` before starting a host and
`settle()` with each result before queueing it; both take one lock, so once `settle()` decides to stop, no
further host is admitted, not even by the worker that just finished the failing one.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol, TextIO

from fleetrun.cancel import Cancel
from fleetrun.models import BatchSummary, Host, HostResult, Outcome, RolloutStop
from fleetrun.rollout import FAILURES, Plan, decide, operator_stop

TICK = 0.2  # blocked waits wake this often, so signal handlers run and --deadline holds


class Question(Protocol):
    """Asks the operator yes or no; None when the run was cancelled while waiting for the answer."""

    def ask(self, prompt: str, cancel: Cancel, tick: Callable[[], None]) -> bool | None: ...


class TerminalQuestion:
    """--confirm on a terminal: the prompt on `out`, the answer read from the file descriptor `fd_in`.

    It waits with select() on the answer and on the run's cancel pipe, so Ctrl-C and --deadline end the wait
    (a plain input() would be restarted after the signal handler and sit there)."""

    def __init__(self, fd_in: int, out: TextIO) -> None:
        self.fd_in, self.out = fd_in, out

    def ask(self, prompt: str, cancel: Cancel, tick: Callable[[], None]) -> bool | None:
        self.out.write(prompt)
        self.out.flush()
        answer = b""
        while not answer.endswith(b"\n"):
            tick()
            if cancel.is_set():
                self.out.write("\n")
                return None
            ready, _, _ = select.select([self.fd_in, cancel.fileno()], [], [], TICK)
            if self.fd_in not in ready:
                continue
            chunk = os.read(self.fd_in, 1024)
            if not chunk:  # end of input (Ctrl-D): no answer is no
                self.out.write("\n")
                break
            answer += chunk
        return answer.strip().lower() in (b"y", b"yes")


class Dispatcher:
    """One run's batches through the pool; thread-safe where the docstrings say so."""

    def __init__(self, plan: Plan, cancel: Cancel, err: TextIO, *, question: Question | None = None,
                 deadline_check: Callable[[], None] = lambda: None) -> None:
        self.plan, self.cancel, self.err = plan, cancel, err
        self.question = question
        self.deadline_check = deadline_check
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.batch_of = {host.name: index for index, batch in enumerate(plan.batches) for host in batch}
        self.counts = [dict.fromkeys(Outcome, 0) for _ in plan.batches]  # settled results per batch
        self.settled = [0] * len(plan.batches)
        self.done = [0] * len(plan.batches)  # results the collector has handled: the barrier counts these
        self.failures = 0
        self.admitted = 0  # hosts started
        self.running = 0  # hosts started and without a result yet
        self.stopped: RolloutStop | None = None
        self._stopper: str | None = None  # the host whose result stopped the rollout: announced when rendered

    # -- the producer (main thread) ----------------------------------------------------------------------------

    def jobs(self) -> Iterator[Host]:
        """Every host exactly once, batch after batch. Once stopped or cancelled the rest are yielded at once:
        the pool then gives them their `not started` result without starting them."""
        for index, batch in enumerate(self.plan.batches):
            if index and not self._halted():
                self._wait_for(index - 1)
                if not self._halted():
                    self._between(index)
            yield from batch

    def _halted(self) -> bool:
        with self.lock:
            return self.stopped is not None or self.cancel.is_set()

    def _wait_for(self, index: int) -> None:
        """Until every host of batch `index` has a result (or the run is stopped or cancelled)."""
        size = len(self.plan.batches[index])
        with self.changed:
            while self.done[index] < size and self.stopped is None and not self.cancel.is_set():
                self.changed.wait(TICK)
                self.deadline_check()

    def _between(self, index: int) -> None:
        """--pause, then --confirm, before batch `index` (0-based, never the first)."""
        if self.plan.pause > 0:
            self.err.write(f"fleetrun: batch {index} of {len(self.plan.batches)} done ({self._counts_text(index - 1)});"
                           f" pausing {self.plan.pause:g} s before batch {index + 1}\n")
            self.err.flush()
            self._pause(self.plan.pause)
        if self.plan.confirm and self.question is not None and not self.cancel.is_set():
            prompt = (f"fleetrun: batch {index} of {len(self.plan.batches)} done ({self._counts_text(index - 1)}). "
                      f"Start batch {index + 1} ({len(self.plan.batches[index])} hosts)? [y/N] ")
            try:
                answer = self.question.ask(prompt, self.cancel, self.deadline_check)
            except OSError:  # the terminal went away: nobody can say yes
                answer = False
            if answer is False:
                with self.lock:
                    if self.stopped is None:
                        self.stopped = operator_stop(index)
                self.err.write(f"fleetrun: {operator_stop(index).message}\n")
                self.err.flush()

    def _pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.deadline_check()
            if self.cancel.wait(min(TICK, left)):
                return

    def _counts_text(self, index: int) -> str:
        with self.lock:
            counts = self.counts[index]
            return ", ".join(f"{n} {outcome.value}" for outcome, n in counts.items() if n) or "no hosts"

    # -- workers -------------------------------------------------------------------------------------------------

    def admit(self, host: Host) -> bool:
        """Called on a worker just before `host` starts: False once the rollout has stopped."""
        with self.lock:
            if self.stopped is not None:
                return False
            self.admitted += 1
            self.running += 1
            return True

    def settle(self, result: HostResult) -> None:
        """Counts a result on the thread that produced it and decides, under the dispatch lock, whether to stop."""
        abort = False
        with self.lock:
            index = self.batch_of.get(result.host.name)
            if index is None:  # not one of ours; nothing to count
                return
            self.counts[index][result.outcome] += 1
            self.settled[index] += 1
            if result.outcome is not Outcome.NOT_STARTED:  # only admitted hosts end any other way
                self.running -= 1
            if result.outcome in FAILURES:
                self.failures += 1
            if self.stopped is None and not self.cancel.is_set():
                batch_failures = sum(self.counts[index][outcome] for outcome in FAILURES)
                stop = decide(self.plan, index, self.failures, batch_failures, self.settled[index])
                # A stop needs something to stop: hosts not started yet, or running ones to cancel.
                abort = stop is not None and self.plan.abort_running and self.running > 0
                if stop is not None and (self.admitted < self.plan.total or abort):
                    self.stopped, self._stopper = stop, result.host.name
        if abort:
            self.cancel.set("rollout stopped")

    # -- the collector -------------------------------------------------------------------------------------------

    def rendered(self, result: HostResult) -> None:
        """The collector has handled `result`: the barrier may open; the stop is announced after its cause."""
        with self.changed:
            index = self.batch_of.get(result.host.name)
            if index is None:
                return
            self.done[index] += 1
            announce = self.stopped if result.host.name == self._stopper else None
            self.changed.notify_all()
        if announce is not None:
            self.err.write(f"fleetrun: {announce.message}\n")
            self.err.flush()

    def stop(self) -> RolloutStop | None:
        with self.lock:
            return self.stopped

    def batches(self) -> tuple[BatchSummary, ...]:
        with self.lock:
            return tuple(BatchSummary(index + 1, len(batch), dict(self.counts[index]))
                         for index, batch in enumerate(self.plan.batches))
