"""The run journal without SSH: where it lives, what it writes, reading it back, pruning, concurrent writers."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fleetrun import journal
from fleetrun.errors import UsageError
from fleetrun.journal import OUTPUT_CAP, JournalWriter, RunMeta, prune, selection_sha256, state_root
from fleetrun.journal_read import latest_for, list_runs, load_run, resolve_run
from fleetrun.models import Host, HostResult, Outcome, RunSummary
from fleetrun.status import ExitStatus

HOSTS = [Host(f"web{n:02}", f"10.0.0.{n}") for n in range(1, 7)]


def summary(status: ExitStatus = ExitStatus.COMMAND_FAILED) -> RunSummary:
    return RunSummary(total=6, counts={Outcome.OK: 1}, elapsed=1.0, exit_status=status)


def meta(**changes) -> RunMeta:
    fields = {"kind": "exec", "argv": ("exec", "uptime", "-H", "web"), "command": "uptime",
              "inventories": ("/etc/inv.yaml",), "pattern": "web", "options": {"forks": 4, "command": "uptime"},
              "cwd": "/tmp"}
    fields.update(changes)
    return RunMeta(**fields)


def write_run(root: Path, outcomes: dict[str, Outcome], *, finish: bool = True, **meta_changes) -> JournalWriter:
    writer = JournalWriter(root, meta(**meta_changes), io.StringIO())
    writer.on_start(HOSTS)
    for host in HOSTS:
        if host.name in outcomes:
            writer.on_result(HostResult(host, outcomes[host.name], stdout=b"out\n"))
    if finish:
        writer.on_finish(summary())
    return writer


def test_state_root_follows_xdg_and_ignores_a_relative_value(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert state_root({}) == tmp_path / ".local/state/fleetrun"
    assert state_root({"XDG_STATE_HOME": "/var/x"}) == Path("/var/x/fleetrun")
    assert state_root({"XDG_STATE_HOME": "rel/dir"}) == tmp_path / ".local/state/fleetrun"  # XDG: ignore relative
    assert state_root({"XDG_STATE_HOME": "/var/x", "FLEETRUN_STATE_DIR": "/srv/s"}) == Path("/srv/s")


def test_a_run_is_recorded_with_private_modes_and_read_back(tmp_path):
    root = tmp_path / "state" / "runs"
    writer = write_run(root, {"web01": Outcome.OK, "web02": Outcome.FAILED})
    run = resolve_run(root, "latest")
    assert run.id == writer.run_id and run.finished
    for path in [root.parent, root, run.path]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for name in ("run.json", "hosts.jsonl", "selection.txt", "summary.json"):
        assert stat.S_IMODE((run.path / name).stat().st_mode) == 0o600
    info = run.info
    assert info["schema"] == "fleetrun-run/1" and info["kind"] == "exec" and info["command"] == "uptime"
    assert info["selection"] == {"pattern": "web", "count": 6, "sha256": selection_sha256(h.name for h in HOSTS)}
    assert info["exit_status"] == 1 and info["ended"] >= info["started"] and info["parent"] is None
    assert run.selection() == [h.name for h in HOSTS]
    assert run.host_records()["web02"]["status"] == "failed" and run.host_records()["web01"]["schema"] == "fleetrun/1"
    assert run.summary()["type"] == "summary"
    # Not ok: the failed host, and the four that have no record at all.
    assert run.not_ok() == ["web02", "web03", "web04", "web05", "web06"]


def test_selection_digest_is_over_sorted_names():
    assert selection_sha256(["b", "a"]) == selection_sha256(["a", "b"])
    import hashlib

    assert selection_sha256(["a", "b"]) == hashlib.sha256(b"a\nb\n").hexdigest()


def test_output_is_capped_per_stream_and_marked(tmp_path):
    writer = JournalWriter(tmp_path, meta(), io.StringIO())
    writer.on_start(HOSTS[:1])
    writer.on_result(HostResult(HOSTS[0], Outcome.OK, stdout=b"x" * (OUTPUT_CAP + 10), stderr=b"small"))
    writer.on_finish(summary())
    record = load_run(tmp_path / str(writer.run_id)).host_records()["web01"]
    assert len(record["stdout"]) == OUTPUT_CAP and record["stdout_truncated"] is True
    assert record["stderr"] == "small" and record["stderr_truncated"] is False


def test_secrets_never_reach_the_journal(tmp_path):
    secret = "Corr3ct-horse"
    writer = JournalWriter(tmp_path, meta(argv=("exec", f"echo {secret}"), command=f"echo {secret}",
                                          options={"command": f"echo {secret}"}), io.StringIO(), secrets=[secret])
    writer.on_start(HOSTS[:1])
    writer.on_result(HostResult(HOSTS[0], Outcome.FAILED, stdout=f"{secret}\n".encode(), error=f"bad {secret}"))
    writer.on_finish(summary())
    for path in (tmp_path / str(writer.run_id)).iterdir():
        assert secret not in path.read_text(), path.name
    run = load_run(tmp_path / str(writer.run_id))
    assert run.info["redacted"] is True and run.info["command"] == "echo ***"


def test_an_interrupted_writer_leaves_a_readable_run(tmp_path):
    write_run(tmp_path, {"web01": Outcome.OK, "web02": Outcome.CANCELLED}, finish=False)
    (run,) = list_runs(tmp_path)
    assert not run.finished and run.summary() is None
    assert run.not_ok() == ["web02", "web03", "web04", "web05", "web06"]
    with (run.path / "hosts.jsonl").open("a") as handle:
        handle.write('{"schema": "fleetrun/1", "host": "web03", "stat')  # killed mid-line
    assert "web03" not in run.host_records()


def test_not_ok_covers_every_outcome_but_ok(tmp_path):
    outcomes = dict(zip([h.name for h in HOSTS], [Outcome.OK, Outcome.FAILED, Outcome.UNREACHABLE,
                                                  Outcome.CANCELLED, Outcome.NOT_STARTED, Outcome.HOST_KEY],
                        strict=True))
    write_run(tmp_path, outcomes)
    assert resolve_run(tmp_path, "latest").not_ok() == [h.name for h in HOSTS[1:]]


def test_resolving_runs(tmp_path):
    with pytest.raises(UsageError, match="no finished run"):
        resolve_run(tmp_path, "latest")
    first = write_run(tmp_path, {}).run_id
    time.sleep(0.01)
    second = write_run(tmp_path, {}).run_id
    assert first and second
    assert resolve_run(tmp_path, "latest").id == second
    assert resolve_run(tmp_path, first).id == first
    assert resolve_run(tmp_path, str(tmp_path / second)).id == second
    assert resolve_run(tmp_path, second[:-2]).id == second or second[:-2] == first[:-2]
    with pytest.raises(UsageError, match="no run 'nope'"):
        resolve_run(tmp_path, "nope")
    if first[:15] == second[:15]:
        with pytest.raises(UsageError, match="ambiguous"):
            resolve_run(tmp_path, first[:15])
    with pytest.raises(UsageError, match="not a fleetrun run"):
        resolve_run(tmp_path, str(tmp_path))


def test_latest_for_an_inventory(tmp_path):
    mine = write_run(tmp_path, {}, inventories=("/a/inv.yaml",)).run_id
    write_run(tmp_path, {}, inventories=("/b/other.yaml",))
    found = latest_for(tmp_path, ["/a/inv.yaml"])
    assert found is not None and found.id == mine
    assert latest_for(tmp_path, ["/c/none.yaml"]) is None


def test_prune_keeps_the_newest_and_never_latest_or_a_run_still_going(tmp_path):
    ids = [write_run(tmp_path, {"web01": Outcome.OK}).run_id for _ in range(5)]
    going = write_run(tmp_path, {}, finish=False)  # holds its lock, like a run in another process
    done = prune(tmp_path, keep=2, max_bytes=1 << 30)
    left = {run.id for run in list_runs(tmp_path)}
    assert going.run_id in left and ids[-1] in left  # the going one, and `latest`
    assert done.removed == 4 and done.kept == 2
    # By size: everything but latest and the going run goes.
    assert prune(tmp_path, keep=100, max_bytes=0).kept == 2
    going.on_finish(summary())
    assert os.readlink(tmp_path / "latest") == going.run_id
    assert prune(tmp_path, keep=0, max_bytes=0).kept == 1  # only latest is left: the other is no longer going


def test_prune_on_finish_keeps_at_most_the_configured_count(tmp_path):
    for _ in range(4):
        writer = JournalWriter(tmp_path, meta(), io.StringIO(), keep=3)
        writer.on_start(HOSTS[:1])
        writer.on_finish(summary())
    assert len(list_runs(tmp_path)) == 3


def test_an_unwritable_journal_warns_once_and_keeps_out_of_the_way(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    err = io.StringIO()
    writer = JournalWriter(blocker / "runs", meta(), err)
    writer.on_start(HOSTS)
    writer.on_result(HostResult(HOSTS[0], Outcome.OK))
    writer.on_finish(summary())
    assert err.getvalue().count("warning: run journal off") == 1 and "--no-journal" in err.getvalue()


def test_two_writers_in_threads_keep_their_records_apart(tmp_path):
    writers = [JournalWriter(tmp_path, meta(), io.StringIO()) for _ in range(2)]
    for writer in writers:
        writer.on_start(HOSTS)
    barrier = threading.Barrier(2)

    def feed(writer):
        barrier.wait()
        for _ in range(50):
            for host in HOSTS:
                writer.on_result(HostResult(host, Outcome.OK, stdout=b"y" * 1000))
        writer.on_finish(summary())

    threads = [threading.Thread(target=feed, args=(writer,)) for writer in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    runs = list_runs(tmp_path)
    assert sorted(run.id for run in runs) == sorted(str(w.run_id) for w in writers)
    for run in runs:
        lines = (run.path / "hosts.jsonl").read_text().splitlines()
        assert len(lines) == 300 and all(json.loads(line)["stdout"] == "y" * 1000 for line in lines)
        assert run.summary() is not None


WRITER = """
import io, sys, time
from pathlib import Path
from fleetrun.journal import JournalWriter, RunMeta
from fleetrun.models import Host, HostResult, Outcome, RunSummary
from fleetrun.status import ExitStatus
hosts = [Host(f"h{n}", "127.0.0.1") for n in range(200)]
writer = JournalWriter(Path(sys.argv[1]), RunMeta(kind="exec", argv=("exec", "x"), command=sys.argv[2]), io.StringIO(),
                       keep=int(sys.argv[3]))
writer.on_start(hosts)
for host in hosts:
    writer.on_result(HostResult(host, Outcome.OK, stdout=b"z" * 500))
time.sleep(float(sys.argv[4]))
writer.on_finish(RunSummary(total=200, counts={Outcome.OK: 200}, elapsed=1.0, exit_status=ExitStatus.OK))
print(writer.run_id)
"""


def test_concurrent_processes_write_complete_journals_and_latest_is_the_last_to_finish(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"cmd{n}", "3", str(0.2 * n)],
                              stdout=subprocess.PIPE, text=True) for n in range(4)]
    ids = [proc.communicate(timeout=120)[0].strip() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs) and len(set(ids)) == 4
    runs = {run.id: run for run in list_runs(tmp_path)}
    # keep=3: each pruned at its end, never a run still going nor latest, so three or four are left.
    assert 3 <= len(runs) <= 4 and set(runs) <= set(ids)
    for run in runs.values():
        assert len(run.host_records()) == 200 and run.summary() is not None and run.finished
    last = max(runs.values(), key=lambda run: run.info["ended"])
    assert os.readlink(tmp_path / "latest") == last.id  # the one that finished last
    assert not [name for name in os.listdir(tmp_path) if name.startswith((".new-", ".trash-", ".latest-"))]


def test_default_retention_is_200_runs_and_500_mb(tmp_path: Path) -> None:
    """With no limits given, prune keeps the newest 200 runs, and (by size) 500 MB in all."""
    assert (journal.KEEP_RUNS, journal.MAX_BYTES) == (200, 500 << 20)
    for number in range(205):
        run = tmp_path / f"20261201T{number:06d}-x"
        run.mkdir()
        (run / "run.json").write_text("{}")
    journal.prune(tmp_path)
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert len(left) == 200 and left[0] == "20261201T000005-x"
