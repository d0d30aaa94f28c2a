"""Rollouts without SSH: batch and budget arithmetic, order, the stop decision, and the dispatcher driving the
real pool with scripted work (lock-step batches, no host started after a stop, pauses and answers)."""

from __future__ import annotations

import io
import itertools
import threading

import pytest

from fleetrun.cancel import Cancel
from fleetrun.dispatch import Dispatcher
from fleetrun.errors import UsageError
from fleetrun.models import Host, HostResult, Outcome
from fleetrun.pool import Finished, PoolCallbacks, run_pool
from fleetrun.rollout import (
    Amount,
    Order,
    Rollout,
    batch_sizes,
    decide,
    make_plan,
    order_hosts,
    parse_batch,
    parse_canary,
    parse_max_fail,
    parse_order,
)


def sizes(total: int, spec: str | None, canary: str | None = None) -> list[int]:
    return batch_sizes(total, parse_batch(spec) if spec else None, parse_canary(canary) if canary else None)


@pytest.mark.parametrize(
    ("total", "spec", "expected"),
    [
        (20, "30%", [6, 6, 6, 2]),  # Ansible's documented example
        (10, "1,2,50%", [1, 2, 5, 2]),
        (10, "1%", [1] * 10),  # floor would be 0: at least 1
        (6, "2", [2, 2, 2]),
        (7, "3", [3, 3, 1]),
        (100, "1,5,10", [1, 5] + [10] * 9 + [4]),  # Ansible's "serial: [1, 5, 10]" example
        (100, "10%,20%,100%", [10, 20, 70]),  # Ansible's "serial: ['10%', '20%', '100%']" example
        (12, "20%", [2, 2, 2, 2, 2, 2]),
        (3, "10", [3]),
        (5, "150%", [5]),
        (100, "29%", [29, 29, 29, 13]),  # exact floor (Ansible's float arithmetic would say 28)
        (1, "1,5,20%", [1]),
        (0, "2", []),
    ],
)
def test_batch_sizes_follow_ansible_serial(total, spec, expected):
    assert sizes(total, spec) == expected
    assert sum(expected) == total


def test_no_spec_is_one_batch_and_a_canary_comes_first():
    assert sizes(8, None) == [8]
    assert sizes(8, None, "1") == [1, 7]
    assert sizes(10, "50%", "1") == [1, 5, 4]  # percentages stay of all the selected hosts
    assert sizes(10, "2", "20%") == [2, 2, 2, 2, 2]
    assert sizes(2, "1", "5") == [2]  # a canary bigger than the selection is all of it


@pytest.mark.parametrize("bad", ["0", "-1", "0%", "abc", "", "1,,2", "2.5%", "%", "1;2"])
def test_bad_batch_specs_are_usage_errors_with_the_reason(bad):
    with pytest.raises(UsageError) as error:
        parse_batch(bad)
    assert "--batch" in str(error.value) and "1,5,20%" in str(error.value)
    assert error.value.exit_status == 2


def test_max_fail_and_canary_parsing():
    assert parse_max_fail("0") == Amount(0) and parse_max_fail("20%") == Amount(20, True)
    assert parse_canary("3") == Amount(3)
    for bad in ("-1", "x", "1.5"):
        with pytest.raises(UsageError):
            parse_max_fail(bad)
    with pytest.raises(UsageError):
        parse_canary("0")


@pytest.mark.parametrize(
    ("spec", "total", "allowed", "text"),
    [("2", 12, 2, "--max-fail 2"), ("20%", 12, 2, "--max-fail 2 (20% of 12)"),
     ("20%", 10, 2, "--max-fail 2 (20% of 10)"), ("0", 5, 0, "--max-fail 0"),
     ("9%", 10, 0, "--max-fail 0 (9% of 10)"), ("100%", 4, 4, "--max-fail 4 (100% of 4)")],
)
def test_budget_is_a_floor_of_the_selected_hosts(spec, total, allowed, text):
    hosts = [Host(f"h{n}", "127.0.0.1") for n in range(total)]
    plan = make_plan(hosts, Rollout(max_fail=parse_max_fail(spec)))
    assert (plan.allowed, plan.budget_text) == (allowed, text)


def test_decide_tolerates_n_failures_and_stops_at_the_next():
    hosts = [Host(f"h{n}", "127.0.0.1") for n in range(12)]
    plan = make_plan(hosts, Rollout(batch=parse_batch("4"), max_fail=parse_max_fail("20%")))
    assert decide(plan, 1, 2, 1, 1) is None  # 2 failures tolerated
    stop = decide(plan, 2, 3, 1, 1)
    assert stop is not None and stop.reason == "max-fail" and stop.after_batch == 3
    assert stop.message == "rollout stopped after batch 3: 3 failures > --max-fail 2 (20% of 12)"


def test_decide_canary_and_the_implicit_whole_batch_rule():
    hosts = [Host(f"h{n}", "127.0.0.1") for n in range(6)]
    canary = make_plan(hosts, Rollout(canary=parse_canary("2"), max_fail=parse_max_fail("50%")))
    stop = decide(canary, 0, 1, 1, 1)
    assert stop is not None and stop.reason == "canary"  # whatever the budget
    assert decide(canary, 1, 1, 1, 1) is None
    implicit = make_plan(hosts, Rollout(batch=parse_batch("2")))
    assert decide(implicit, 0, 1, 1, 1) is None  # half a batch failed: goes on
    assert decide(implicit, 0, 2, 2, 2) is not None  # the whole batch failed
    assert decide(implicit, 0, 2, 1, 2) is None
    going_on = make_plan(hosts, Rollout(batch=parse_batch("2"), continue_on_batch_failure=True))
    assert decide(going_on, 0, 2, 2, 2) is None
    budget = make_plan(hosts, Rollout(batch=parse_batch("2"), max_fail=parse_max_fail("3")))
    assert decide(budget, 0, 2, 2, 2) is None  # with a budget, the budget alone decides


def test_order():
    hosts = [Host(name, "127.0.0.1") for name in ("web10", "db2", "web2", "app1")]
    names = lambda order: [h.name for h in order_hosts(hosts, parse_order(order))]  # noqa: E731
    assert names("inventory") == ["web10", "db2", "web2", "app1"]
    assert names("sorted") == ["app1", "db2", "web10", "web2"]  # by name, as Ansible sorts
    assert names("reverse") == names("reverse_inventory") == ["app1", "web2", "db2", "web10"]
    assert names("reverse_sorted") == ["web2", "web10", "db2", "app1"]
    assert names("shuffle:7") == names("shuffle:7") and sorted(names("shuffle:7")) == sorted(names("inventory"))
    assert {tuple(names(f"shuffle:{seed}")) for seed in range(20)} != {tuple(names("inventory"))}
    assert parse_order("shuffle") == Order("shuffle") and str(parse_order("shuffle:ab")) == "shuffle:ab"
    for bad in ("random", "sorted:1", "shuffle:", ""):
        with pytest.raises(UsageError):
            parse_order(bad)


# -- the dispatcher on the real pool, with scripted hosts ---------------------------------------------------------


class Script:
    """Work that records the order of starts and ends and fails the hosts it is told to."""

    def __init__(self, failing=(), hold=None):
        self.failing = set(failing)
        self.hold = hold or {}  # host name -> Event the work waits for
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def work(self, host, emit):
        with self.lock:
            self.log.append(("start", host.name))
        if host.name in self.hold:
            self.hold[host.name].wait(10)
        outcome = Outcome.FAILED if host.name in self.failing else Outcome.OK
        with self.lock:
            self.log.append(("end", host.name))
        return HostResult(host, outcome)


def drive(hosts, rollout, script, *, forks=8, question=None, cancel=None):
    cancel = cancel or Cancel()
    err = io.StringIO()
    dispatcher = Dispatcher(make_plan(hosts, rollout), cancel, err, question=question)
    results: dict[str, HostResult] = {}

    def not_started(host):
        return HostResult(host, Outcome.NOT_STARTED)

    def handle(event):
        if isinstance(event, Finished):
            results[event.job.name] = event.result
            dispatcher.rendered(event.result)

    callbacks = PoolCallbacks(script.work, not_started, lambda job, error: HostResult(job, Outcome.FAILED), handle,
                              admit=dispatcher.admit, settled=lambda job, result: dispatcher.settle(result))
    assert run_pool(dispatcher.jobs(), callbacks, forks=forks, cancel=cancel) == []
    return results, dispatcher, err.getvalue()


HOSTS = [Host(f"h{n}", "127.0.0.1") for n in range(1, 7)]


def test_batches_are_lock_step_even_with_more_forks_than_hosts():
    script = Script()
    results, dispatcher, _ = drive(HOSTS, Rollout(batch=parse_batch("2")), script, forks=64)
    assert len(results) == 6 and all(r.ok for r in results.values())
    position = {event: index for index, event in enumerate(script.log)}
    waves = [HOSTS[0:2], HOSTS[2:4], HOSTS[4:6]]
    for earlier, later in itertools.pairwise(waves):
        last_end = max(position[("end", h.name)] for h in earlier)
        assert all(position[("start", h.name)] > last_end for h in later)
    assert [(b.index, b.size, b.counts[Outcome.OK]) for b in dispatcher.batches()] == [(1, 2, 2), (2, 2, 2), (3, 2, 2)]


def test_max_fail_0_stops_after_the_failing_batch_and_nothing_else_starts():
    script = Script(failing={"h3"})
    results, dispatcher, err = drive(HOSTS, Rollout(batch=parse_batch("3"), max_fail=parse_max_fail("0")), script)
    assert {name for _, name in script.log} == {"h1", "h2", "h3"}
    assert [results[f"h{n}"].outcome for n in (4, 5, 6)] == [Outcome.NOT_STARTED] * 3
    stop = dispatcher.stop()
    assert stop is not None and stop.after_batch == 1 and "1 failure > --max-fail 0" in err


def test_a_stop_mid_batch_holds_back_the_rest_of_that_batch_too():
    # One fork, one batch of all: the first failure must stop the hosts still queued behind it.
    script = Script(failing={"h2"})
    results, _, _ = drive(HOSTS, Rollout(max_fail=parse_max_fail("0")), script, forks=1)
    assert [name for kind, name in script.log if kind == "start"] == ["h1", "h2"]
    assert sum(r.outcome is Outcome.NOT_STARTED for r in results.values()) == 4


def test_in_flight_hosts_finish_after_a_stop():
    release = threading.Event()
    script = Script(failing={"h2"}, hold={"h1": release})

    def fail_then_release(host, emit):
        result = Script.work(script, host, emit)
        if host.name == "h2":
            release.set()  # h1 is still running when h2's failure stops the rollout
        return result

    script.work = fail_then_release  # type: ignore[method-assign]
    results, dispatcher, _ = drive(HOSTS, Rollout(batch=parse_batch("3"), max_fail=parse_max_fail("0")), script)
    assert results["h1"].outcome is Outcome.OK  # finished, not cancelled
    assert dispatcher.stop() is not None


def test_unreachable_and_timeouts_count_against_the_budget_but_not_started_does_not():
    class Mixed(Script):
        def work(self, host, emit):
            Script.work(self, host, emit)
            outcome = {"h1": Outcome.UNREACHABLE, "h2": Outcome.TIMEOUT}.get(host.name, Outcome.OK)
            return HostResult(host, outcome)

    _, dispatcher, err = drive(HOSTS, Rollout(batch=parse_batch("2"), max_fail=parse_max_fail("1")), Mixed())
    assert dispatcher.stop() is not None and "2 failures > --max-fail 1" in err


def test_a_budget_exceeded_on_the_last_host_is_no_stop():
    script = Script(failing={"h6"})
    _, dispatcher, err = drive(HOSTS, Rollout(batch=parse_batch("3"), max_fail=parse_max_fail("0")), script)
    assert dispatcher.stop() is None and err == ""  # nothing was left to stop


class Answers:
    def __init__(self, *answers):
        self.answers = list(answers)
        self.prompts: list[str] = []

    def ask(self, prompt, cancel, tick):
        self.prompts.append(prompt)
        return self.answers.pop(0)


def test_confirm_asks_before_each_batch_after_the_first_and_no_stops():
    answers = Answers(True, False)
    results, dispatcher, _ = drive(HOSTS, Rollout(batch=parse_batch("2"), confirm=True), Script(), question=answers)
    assert len(answers.prompts) == 2 and "Start batch 2 (2 hosts)?" in answers.prompts[0]
    assert [results[f"h{n}"].outcome for n in (5, 6)] == [Outcome.NOT_STARTED] * 2
    stop = dispatcher.stop()
    assert stop is not None and stop.reason == "operator" and stop.after_batch == 2


def test_cancel_during_a_pause_leaves_the_rest_not_started():
    cancel = Cancel()
    timer = threading.Timer(0.3, cancel.set, args=("interrupted",))
    timer.start()
    try:
        results, dispatcher, err = drive(HOSTS, Rollout(batch=parse_batch("2"), pause=60), Script(), cancel=cancel)
    finally:
        timer.cancel()
    assert "pausing 60 s before batch 2" in err
    assert sum(r.outcome is Outcome.OK for r in results.values()) == 2
    assert sum(r.outcome is Outcome.NOT_STARTED for r in results.values()) == 4
    assert dispatcher.stop() is None  # the cancel explains it, not the rollout


def test_abort_running_cancels_the_hosts_in_flight():
    cancel = Cancel()
    release = threading.Event()
    cancel.add_callback(release.set)
    both_running = threading.Barrier(3)  # h1 and h3 are running when h2 fails
    script = Script(failing={"h2"}, hold={"h1": release, "h3": release})

    def work(host, emit):
        if host.name in ("h1", "h2", "h3"):
            both_running.wait(10)
        return Script.work(script, host, emit)

    script.work = work  # type: ignore[method-assign]
    results, _, _ = drive(HOSTS, Rollout(batch=parse_batch("3"), max_fail=parse_max_fail("0"),
                                         abort_running=True), script, cancel=cancel)
    assert cancel.reason == "rollout stopped"  # h1 and h3 were told to stop instead of being waited for
    assert [name for name in ("h4", "h5", "h6") if results[name].outcome is Outcome.NOT_STARTED] == ["h4", "h5", "h6"]
    assert {name for kind, name in script.log if kind == "start"} == {"h1", "h2", "h3"}


def test_the_worker_that_saw_the_failure_starts_no_other_host():
    # One fork, one batch: the worker that ran the failing host must not start the next one, even though the
    # collector may not have handled the failure yet.
    for _ in range(20):
        script = Script(failing={"h1"})
        results, _, _ = drive(HOSTS, Rollout(max_fail=parse_max_fail("0")), script, forks=1)
        assert [name for kind, name in script.log if kind == "start"] == ["h1"]
        assert sum(r.outcome is Outcome.NOT_STARTED for r in results.values()) == 5


def test_every_host_once_without_a_rollout():
    script = Script(failing={"h1", "h2", "h3", "h4", "h5", "h6"})
    results, dispatcher, _ = drive(HOSTS, None, script, forks=3)
    assert len(results) == 6 and dispatcher.stop() is None  # one batch: all failing stops nothing
    assert [b.size for b in dispatcher.batches()] == [6]


def test_a_terminal_that_goes_away_at_the_question_is_a_no():
    class Gone:
        def ask(self, prompt, cancel, tick):
            raise OSError(5, "Input/output error")

    results, dispatcher, _ = drive(HOSTS, Rollout(batch=parse_batch("3"), confirm=True), Script(), question=Gone())
    assert sum(r.outcome is Outcome.NOT_STARTED for r in results.values()) == 3
    stop = dispatcher.stop()
    assert stop is not None and stop.reason == "operator"


def test_terminal_question_reads_the_answer_and_wakes_on_cancel():
    import os

    from fleetrun.dispatch import TerminalQuestion

    read_end, write_end = os.pipe()
    try:
        out = io.StringIO()
        question = TerminalQuestion(read_end, out)
        os.write(write_end, b"yes\n")
        assert question.ask("go? ", Cancel(), lambda: None) is True and out.getvalue() == "go? "
        os.write(write_end, b"n\n")
        assert question.ask("go? ", Cancel(), lambda: None) is False
        cancel = Cancel()
        threading.Timer(0.2, cancel.set, args=("interrupted",)).start()
        assert question.ask("go? ", cancel, lambda: None) is None  # Ctrl-C while waiting for an answer
        os.close(write_end)
        write_end = -1
        assert question.ask("go? ", Cancel(), lambda: None) is False  # end of input is no
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_pool_hooks_admit_and_settled():
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    def settled(job, result):
        with lock:
            seen.append(("settled", job))
        if job == "boom":
            raise RuntimeError("settle bug")

    def handle(event):
        if isinstance(event, Finished):
            with lock:
                seen.append(("handled", event.job))

    callbacks = PoolCallbacks(lambda job, emit: "ran", lambda job: "refused", lambda job, error: "crashed", handle,
                              admit=lambda job: job != "no", settled=settled)
    errors = run_pool(["a", "no", "boom"], callbacks, forks=2, cancel=Cancel())
    assert [str(error) for error in errors] == ["settle bug"]  # reported, and the result still went on
    for job in ("a", "no", "boom"):
        assert seen.index(("settled", job)) < seen.index(("handled", job))
