"""Worker processes with scripted work: the same events as one process, in order, every host once, whatever
happens to a child; spilled outputs and long lines cross as file descriptors."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from fleetrun.cancel import Cancel
from fleetrun.lines import Lines
from fleetrun.models import BecomeStatus, Host, HostResult, Outcome, OutputLine
from fleetrun.pool import Finished, PoolCallbacks, Started, run_pool
from fleetrun.procs import ChildSpec, Processes, split
from fleetrun.spill import Spill

HOSTS = [Host(f"h{n:02d}", f"10.0.0.{n}") for n in range(1, 31)]


def make_spec(work, *, cancel=None, setup=None):
    return ChildSpec(
        HOSTS,
        work,
        crashed=lambda host, error: HostResult(host, Outcome.FAILED, error=f"internal error: {error}"),
        not_started=lambda host: HostResult(host, Outcome.NOT_STARTED, error="not started"),
        cancel=cancel or Cancel(),
        setup=setup or (lambda index, warn: None),
    )


def callbacks(spec, events, *, admit=lambda host: True):
    return PoolCallbacks(spec.work, spec.not_started, spec.crashed, events.append, admit=admit)


def pid_work(host, emit):
    return HostResult(host, Outcome.OK, exit_code=0, stdout=f"{host.name} in {os.getpid()}\n".encode())


def results(events):
    return [event.result for event in events if isinstance(event, Finished)]


def test_split_spreads_forks_evenly():
    assert split(64, 2) == [32, 32]
    assert split(5, 2) == [3, 2]
    assert split(1, 3) == [1, 1, 1]


def test_every_host_once_each_started_before_it_finished_and_dealt_out_by_position():
    spec = make_spec(pid_work)
    events: list[object] = []
    workers = Processes(3, 6, spec)
    errors = workers.run(iter(HOSTS), callbacks(spec, events), cancel=spec.cancel)
    assert errors == []
    done = results(events)
    assert sorted(result.host.name for result in done) == [host.name for host in HOSTS]
    assert all(result.host is next(h for h in HOSTS if h.name == result.host.name) for result in done)
    started = [event.job.name for event in events if isinstance(event, Started)]
    assert sorted(started) == sorted(host.name for host in HOSTS)
    order = [event.job.name if isinstance(event, Started) else event.result.host.name for event in events]
    for host in HOSTS:
        assert order.index(host.name) < len(order) - order[::-1].index(host.name) - 1  # Started, then Finished
    # Host k ran in share k mod 3: share 0 in this process, shares 1 and 2 in two children, each its own.
    pid_of = {r.host.name: int(r.stdout.split()[-1]) for r in done}
    assert len(set(pid_of.values())) == 3
    for index, host in enumerate(HOSTS):
        assert pid_of[host.name] == pid_of[HOSTS[index % 3].name]
        assert (pid_of[host.name] == os.getpid()) == (index % 3 == 0)
    assert [child.pid for child in workers.children] == [pid_of["h02"], pid_of["h03"]]
    assert not any(os.path.exists(f"/proc/{p}") and Path(f"/proc/{p}/stat").read_text().split()[2] != "Z"
                   for p in pid_of.values() if p != os.getpid())


def test_children_send_no_started_message_when_nothing_renders_it():
    spec = make_spec(pid_work)
    spec.announce_started = False
    events: list[object] = []
    workers = Processes(2, 4, spec)
    assert workers.run(iter(HOSTS), callbacks(spec, events), cancel=spec.cancel) == []
    assert len(results(events)) == len(HOSTS) and not any(isinstance(event, Started) for event in events)


def test_the_end_of_a_run_waits_for_no_polling_interval(monkeypatch):
    """The cancel forwarder and the reaper wake when the run ends and when a child exits, not on a tick: with
    the tick made 60 s, a run of quick hosts still ends at once (it took up to one tick, 0.2 s, on every run)."""
    import fleetrun.procs

    monkeypatch.setattr(fleetrun.procs, "TICK", 60.0)
    spec = make_spec(pid_work)
    events: list[object] = []
    workers = Processes(2, 4, spec)
    started = time.monotonic()
    assert workers.run(iter(HOSTS), callbacks(spec, events), cancel=spec.cancel) == []
    assert time.monotonic() - started < 30  # generous: a polling wait would be 60 s
    assert len(results(events)) == len(HOSTS)
    assert workers._over_r == -1 and workers._over_w == -1  # its pipe is closed with the run


def test_a_run_that_fails_around_its_children_leaves_no_thread_or_child_behind():
    """The caller's own failure mid-run (here a deadline check that raises, also in the run's own ending) ends
    in kill(): it must also wake the cancel forwarder, which otherwise sleeps until the run is over, stop the
    collector, and close the run's pipe, or a later fork (and the interpreter's exit) would find them."""
    spec = make_spec(pid_work)
    workers = Processes(2, 4, spec)
    calls = [0]

    def failing_check():
        calls[0] += 1
        if calls[0] >= 3:  # and on every call after: the run's own end (its finally) fails too
            raise RuntimeError("the caller failed")

    with pytest.raises(RuntimeError, match="the caller failed"):
        try:
            workers.run(iter(HOSTS), callbacks(spec, []), cancel=spec.cancel, deadline_check=failing_check)
        except BaseException:
            workers.kill()
            raise
    def ours(thread: threading.Thread) -> bool:  # share 0's workers run here: they must be gone too
        return thread.name.startswith(("fleetrun-cancel-forwarder", "fleetrun-collector", "fleetrun-reader-",
                                       "fleetrun-worker-"))

    deadline = time.monotonic() + 30
    while any(ours(t) for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not [t.name for t in threading.enumerate() if ours(t)]
    assert workers._over_r == -1 and workers._over_w == -1
    assert all(child.reaped for child in workers.children)


def test_the_same_records_as_one_process():
    def work(host, emit):
        number = int(host.name[1:])
        if number % 7 == 0:
            raise RuntimeError(f"bug on {host.name}")
        outcome = Outcome.FAILED if number % 5 == 0 else Outcome.OK
        # Every field set on some host; a become status (not a plain value) sends the record whole instead.
        return HostResult(
            host, outcome, exit_code=number % 5, signal="TERM" if number % 4 == 0 else None, stdout=b"x" * number,
            stderr=b"e\x00\xff" * (number % 3), stdout_truncated=number % 6 == 0, stderr_truncated=number % 8 == 0,
            duration=number / 7, error=f"e{number}" if number % 5 == 0 else None,
            changed=(None, True, False)[number % 3], details=(f"d{number}", "x") * (number % 2),
            host_key_verified=(None, True, False)[number % 3], reason="deadline" if number == 11 else None,
            become=BecomeStatus("root", "sudo") if number % 9 == 0 else None,
        )

    one: list[object] = []
    spec = make_spec(work)
    run_pool(iter(HOSTS), callbacks(spec, one), forks=4, cancel=Cancel())
    many: list[object] = []
    workers = Processes(2, 4, spec)
    workers.run(iter(HOSTS), callbacks(spec, many), cancel=spec.cancel)
    assert sorted(results(one), key=lambda r: r.host.name) == sorted(results(many), key=lambda r: r.host.name)


def test_a_stop_gives_the_rest_not_started_in_dispatch_order():
    """admit() says no once the rollout has stopped: every later host is not started, in the order it came."""
    stop_after = {"count": 0}
    lock = threading.Lock()

    def admit(host):
        with lock:
            stop_after["count"] += 1
            return int(host.name[1:]) <= 4

    spec = make_spec(pid_work)
    events: list[object] = []
    workers = Processes(2, 2, spec)
    workers.run(iter(HOSTS), callbacks(spec, events, admit=admit), cancel=spec.cancel)
    skipped = [r.host.name for r in results(events) if r.outcome is Outcome.NOT_STARTED]
    assert skipped == [host.name for host in HOSTS[4:]]


def test_cancel_reaches_the_children_and_every_host_is_accounted_for():
    cancel = Cancel()
    running = threading.Event()

    def work(host, emit):
        if spec.cancel.wait(30):  # the child's own copy, set by the parent's "cancel" message
            return HostResult(host, Outcome.CANCELLED, error=f"cancelled ({spec.cancel.reason})")
        return HostResult(host, Outcome.OK)

    spec = make_spec(work, cancel=cancel)
    events: list[object] = []

    def handle(event):
        events.append(event)
        if isinstance(event, Started) and len([e for e in events if isinstance(e, Started)]) == 4:
            running.set()

    workers = Processes(2, 4, spec)
    timer = threading.Thread(target=lambda: running.wait(30) and cancel.set("interrupted"))
    timer.start()
    workers.run(iter(HOSTS), PoolCallbacks(work, spec.not_started, spec.crashed, handle), cancel=cancel)
    timer.join()
    done = results(events)
    assert sorted(r.host.name for r in done) == [h.name for h in HOSTS]
    cancelled = [r for r in done if r.outcome is Outcome.CANCELLED]
    assert len(cancelled) == 4 and all(r.error == "cancelled (interrupted)" for r in cancelled)
    assert {r.outcome for r in done} == {Outcome.CANCELLED, Outcome.NOT_STARTED}


def test_a_killed_child_fails_its_hosts_and_the_others_go_on():
    parent = os.getpid()

    def work(host, emit):
        if host.name == "h04":  # the 4th host: share 1, a child
            assert os.getpid() != parent
            os.kill(os.getpid(), signal.SIGKILL)
        return HostResult(host, Outcome.OK)

    spec = make_spec(work)
    events: list[object] = []
    workers = Processes(2, 2, spec)
    workers.run(iter(HOSTS), callbacks(spec, events), cancel=spec.cancel)
    done = results(events)
    assert sorted(r.host.name for r in done) == [h.name for h in HOSTS]
    lost = [r for r in done if r.outcome is Outcome.FAILED]
    assert "h04" in {r.host.name for r in lost}
    assert all("worker process 1" in (r.error or "") for r in lost)
    assert any("killed by signal 9" in (r.error or "") for r in lost)
    assert {r.host.name for r in lost} <= {h.name for h in HOSTS[1::2]}
    # Share 0, the parent's own, ran to the end.
    assert all(r.outcome is Outcome.OK for r in done if int(r.host.name[1:]) % 2 == 1)


def test_spilled_outputs_and_long_lines_cross_as_descriptors_and_warnings_reach_the_parent():
    warnings: list[str] = []
    sent: dict[str, object] = {}

    def setup(index, warn):
        sent["warn"] = warn or warnings.append  # share 0 is the parent: its warnings go where they always go

    def work(host, emit):
        spill = Spill.create()
        spill.append(host.name.encode() * 50_000)
        import tempfile

        line_file = tempfile.TemporaryFile()  # noqa: SIM115  # the OutputLine owns it
        line_file.write(b"a long line of " + host.name.encode())
        emit(Lines((OutputLine(host, "stdout", b"short"), OutputLine(host, "stdout", b"", spill=line_file))))
        sent["warn"](f"note from {host.name}")  # type: ignore[operator]
        return HostResult(host, Outcome.OK, stdout=spill.read(0, 10), stdout_file=spill)

    spec = make_spec(work, setup=setup)
    events: list[object] = []
    workers = Processes(2, 2, spec)
    workers.run(iter(HOSTS[:6]), callbacks(spec, events), cancel=spec.cancel, warn=warnings.append)
    for result in results(events):
        assert result.output("stdout") == result.host.name.encode() * 50_000
        result.release()
    lines = [line for event in events if isinstance(event, Lines) for line in event.lines]
    long_lines = [b"".join(line.chunks()) for line in lines if line.spill is not None]
    assert sorted(long_lines) == sorted(b"a long line of " + h.name.encode() for h in HOSTS[:6])
    for event in events:
        if isinstance(event, Lines):
            event.release()
    assert sorted(warnings) == sorted(f"note from {h.name}" for h in HOSTS[:6])


def test_no_fork_while_another_thread_runs():
    from fleetrun.procs import CannotFork

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        with pytest.raises(CannotFork):
            Processes(2, 2, make_spec(pid_work))
    finally:
        stop.set()
        other.join()


def test_a_long_lines_file_crosses_whole_even_with_writes_still_in_the_senders_buffer():
    import socket
    import tempfile

    from fleetrun.procs_channel import Channel

    ours, theirs = socket.socketpair()
    with ours, theirs:
        sender, receiver = Channel(ours, HOSTS), Channel(theirs, HOSTS)
        line_file = tempfile.TemporaryFile()  # noqa: SIM115  # buffered, as fleetrun.lines writes it
        text = b"x" * 100_000
        for start in range(0, len(text), 1000):  # in pieces, as chunks arrive: the last 1696 bytes stay buffered
            line_file.write(text[start : start + 1000])
        sender.send(("lines", Lines((OutputLine(HOSTS[0], "stdout", b"", spill=line_file),))))
        _, lines = receiver.receive()  # type: ignore[misc]
        try:
            # Read before the sender closes its copy (closing would flush): the file must be whole already.
            assert b"".join(lines.lines[0].chunks()) == text
        finally:
            lines.release()
            line_file.close()


def test_plain_records_cross_in_one_write_without_the_pickler_hooks_and_keep_their_order():
    import socket

    from fleetrun.procs_channel import PLAIN, Channel, is_plain

    assert is_plain(("done", 3, "ok", None, b"out", 1.5, True, ("a", "b")))
    assert not is_plain(("finished", 3, HostResult(HOSTS[3], Outcome.OK)))  # a host: by its index, through the hooks
    assert not is_plain(("x", ("a", ("nested",))))
    ours, theirs = socket.socketpair()
    with ours, theirs:
        sender, receiver = Channel(ours, HOSTS), Channel(theirs, HOSTS)
        spill = Spill.create()
        spill.append(b"spilled")
        records = [("run", 4), ("finished", 2, HostResult(HOSTS[2], Outcome.OK, stdout_file=spill)), ("bye",)]
        for record in records:
            sender.send(record)
        spill.close()
        theirs.setblocking(False)
        header = theirs.recv(5, socket.MSG_PEEK)
        assert header[4] == PLAIN  # the first record's flags byte
        theirs.setblocking(True)
        assert receiver.receive() == ("run", 4)
        kind, position, result = receiver.receive()  # type: ignore[misc]
        assert (kind, position, result.host) == ("finished", 2, HOSTS[2])  # the very Host object: by index
        try:
            assert result.output("stdout") == b"spilled"  # through its own descriptor
        finally:
            result.release()
        assert receiver.receive() == ("bye",)


def test_each_share_sets_up_its_own_state_and_no_child_inherits_share_0s():
    """setup(0) runs in the parent after the forks: a child starts from the state before any share's setup,
    and only share 0 is told that its warnings need no channel."""
    seen: list[tuple[int, bool]] = []

    def setup(index, warn):
        seen.append((index, warn is None))

    def work(host, emit):
        return HostResult(host, Outcome.OK, stdout=repr(seen).encode())

    spec = make_spec(work, setup=setup)
    events: list[object] = []
    workers = Processes(3, 3, spec)
    assert workers.run(iter(HOSTS), callbacks(spec, events), cancel=spec.cancel) == []
    state = {r.host.name: r.stdout.decode() for r in results(events)}
    for index, host in enumerate(HOSTS):
        assert state[host.name] == repr([(index % 3, index % 3 == 0)])
