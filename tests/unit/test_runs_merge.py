"""`fleetrun runs merge` without SSH: shard results written by the real renderers and journal, then loaded, checked
and joined; every refusal; the exit status one run would have had."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from fleetrun.cli import main
from fleetrun.errors import UsageError
from fleetrun.journal import JournalWriter, RunMeta
from fleetrun.models import BatchSummary, Host, HostResult, Outcome, RolloutStop, RunSummary
from fleetrun.output.json import JsonRenderer, summary_record
from fleetrun.runs_merge import load, load_all, merge
from fleetrun.shard import ShardSpec, take_share
from fleetrun.status import ExitStatus, worst

HOSTS = [Host(f"h{n:02}", f"10.0.0.{n}") for n in range(1, 11)]


def results_for(hosts: list[Host], outcomes: dict[str, Outcome]) -> list[HostResult]:
    return [HostResult(host, outcomes.get(host.name, Outcome.OK), exit_code=0 if host.name not in outcomes else 1,
                       stdout=f"hi {host.name}\n".encode(), duration=0.5) for host in hosts]


def summary_of(results: list[HostResult], *, extra: list[ExitStatus] = (), **changes) -> RunSummary:
    counts = dict.fromkeys(Outcome, 0)
    for result in results:
        counts[result.outcome] += 1
    status = worst([*(o.exit_status for o, n in counts.items() if n), *extra])
    return RunSummary(total=len(results), counts=counts, elapsed=2.0, exit_status=status, **changes)


def write_shard(path: Path, index: int, total: int, outcomes: dict[str, Outcome] | None = None,
                hosts: list[Host] = HOSTS, **summary_changes) -> Path:
    """What `fleetrun exec --shard index/total --format json > path` writes."""
    share, info = take_share(hosts, ShardSpec(index, total, f"--shard {index}/{total}"))
    out = io.StringIO()
    renderer = JsonRenderer(out, {"shard": info.record()})
    results = results_for(share, outcomes or {})
    for result in results:
        renderer.on_result(result)
    renderer.on_finish(summary_of(results, **summary_changes))
    path.write_text(out.getvalue())
    return path


def shard_files(tmp_path: Path, total: int = 3, outcomes: dict[str, Outcome] | None = None) -> list[Path]:
    return [write_shard(tmp_path / f"shard-{i}.json", i, total, outcomes) for i in range(1, total + 1)]


def refusal(paths: list[Path]) -> str:
    with pytest.raises(UsageError) as error:
        merge(load_all(map(str, paths)))
    assert error.value.exit_status == 2 and "\n" not in str(error.value)
    return str(error.value)


def test_merge_joins_every_host_once_in_name_order_with_the_worst_status(tmp_path):
    files = shard_files(tmp_path, 3, {"h04": Outcome.FAILED, "h08": Outcome.UNREACHABLE})
    merged = merge(load_all(map(str, files)))
    assert [result.host.name for result in merged.results] == [host.name for host in HOSTS]
    assert merged.summary.exit_status is ExitStatus.UNREACHABLE  # 4 > 1, as for one run
    assert merged.summary.counts[Outcome.OK] == 8 and merged.summary.total == 10
    assert merged.results[0].stdout == b"hi h01\n" and merged.results[0].host.address == "10.0.0.1"
    assert merged.record()["merged"]["total"] == 3
    assert [shard["hosts"] for shard in merged.record()["merged"]["shards"]] == [4, 3, 3]


def test_an_interrupted_shard_makes_the_merge_interrupted(tmp_path):
    files = shard_files(tmp_path, 2, {"h02": Outcome.UNREACHABLE})
    write_shard(files[0], 1, 2, {"h03": Outcome.CANCELLED}, extra=[ExitStatus.INTERRUPTED], interrupted=True)
    merged = merge(load_all(map(str, files)))
    assert merged.summary.exit_status is ExitStatus.INTERRUPTED and merged.summary.interrupted


def test_batches_and_a_stopped_rollout_are_joined_per_shard(tmp_path):
    stop = RolloutStop("max-fail", 1, "rollout stopped after batch 1: 1 failure > --max-fail 0")
    batches = (BatchSummary(1, 2, {Outcome.OK: 2}), BatchSummary(2, 3, {Outcome.OK: 3}))
    first = write_shard(tmp_path / "a.json", 1, 2, batches=batches)
    second = write_shard(tmp_path / "b.json", 2, 2, batches=batches[:1], stopped=stop)
    merged = merge(load_all([str(first), str(second)]))
    assert merged.summary.batches == (BatchSummary(1, 4, {Outcome.OK: 4}), BatchSummary(2, 3, {Outcome.OK: 3}))
    assert merged.summary.stopped == RolloutStop("max-fail", 1, f"shard 2/2: {stop.message}")


def test_missing_shards_are_listed(tmp_path):
    files = shard_files(tmp_path, 4)
    assert refusal([files[0], files[2]]) == "shards 2/4, 4/4 are missing (have 2 of 4): give every shard's result"
    assert refusal(files[1:]) == "shard 1/4 is missing (have 3 of 4): give every shard's result"


def test_a_shard_given_twice_is_refused(tmp_path):
    files = shard_files(tmp_path, 2)
    assert refusal([*files, files[0]]) == f"shard 1/2 is given twice: {files[0]} and {files[0]}; give each shard once"


def test_shards_of_different_selections_or_counts_are_refused(tmp_path):
    files = shard_files(tmp_path, 2)
    other = write_shard(tmp_path / "other.json", 2, 2, hosts=HOSTS[:9])
    assert refusal([files[0], other]).startswith("shards of different selections: shard 1/2 (")
    three = write_shard(tmp_path / "three.json", 2, 3)
    assert "shards of different selections" in refusal([files[0], three])


def test_a_host_in_two_shards_is_refused(tmp_path):
    files = shard_files(tmp_path, 2)
    lines = files[1].read_text().splitlines()
    stolen = json.loads(files[0].read_text().splitlines()[0])  # h01, shard 1's
    summary = json.loads(lines[-1])
    summary["total"] += 1
    files[1].write_text("\n".join([json.dumps(stolen), *lines[:-1], json.dumps(summary)]) + "\n")
    assert refusal(files) == (f"host h01 is in two shards: shard 1/2 ({files[0]}) and shard 2/2 ({files[1]}); "
                              "the shards were not made with the same --shard N")


def test_hosts_missing_from_every_shard_or_in_the_wrong_share_are_refused(tmp_path):
    files = shard_files(tmp_path, 2)
    lines = files[1].read_text().splitlines()
    summary = json.loads(lines[-1])
    summary["total"] -= 1
    files[1].write_text("\n".join([*lines[1:-1], json.dumps(summary)]) + "\n")
    assert "the shards hold 9 hosts, not the 10 hosts of the selection" in refusal(files)
    # the right hosts overall, but not each shard's share
    first, second = (path.read_text().splitlines() for path in shard_files(tmp_path, 2))
    s1, s2 = json.loads(first[-1]), json.loads(second[-1])
    s1["total"], s2["total"] = s1["total"] + 1, s2["total"] - 1
    files[0].write_text("\n".join([*first[:-1], second[0], json.dumps(s1)]) + "\n")
    files[1].write_text("\n".join([*second[1:-1], json.dumps(s2)]) + "\n")
    assert "does not hold its share of the selection" in refusal(files)


@pytest.mark.parametrize(("content", "says"), [
    ("", "it is empty"),
    ("not json\n", ":1: not a shard result: not JSON"),
    ('{"schema": "fleetrun/1", "type": "host", "host": "h01", "status": "ok"}\n', "no summary record"),
    ('{"a": 1}\n', ":1: not a shard result: not a fleetrun --format json record"),
])
def test_inputs_that_are_not_shard_results_are_refused(tmp_path, content, says):
    files = shard_files(tmp_path, 2)
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert says in refusal([*files, bad])


def test_a_run_without_shard_an_incomplete_file_and_a_merged_output_are_refused(tmp_path):
    files = shard_files(tmp_path, 2)
    plain = tmp_path / "plain.json"
    out = io.StringIO()
    JsonRenderer(out).on_finish(summary_of([]))
    plain.write_text(out.getvalue())
    assert refusal([plain]).endswith("not a shard result: it was run without --shard (run each shard with --shard "
                                     "K/N or --shard auto)")
    lines = files[0].read_text().splitlines()
    cut = tmp_path / "cut.json"
    cut.write_text("\n".join([*lines[1:]]) + "\n")
    assert "host records but its summary counts" in refusal([cut, files[1]])
    after = tmp_path / "after.json"
    after.write_text("\n".join([*lines, lines[0]]) + "\n")
    assert "a record after the summary" in refusal([after, files[1]])
    merged = merge(load_all(map(str, files)))
    again = tmp_path / "merged.json"
    out = io.StringIO()
    renderer = JsonRenderer(out, merged.record())
    for result in merged.results:
        renderer.on_result(result)
    renderer.on_finish(merged.summary)
    again.write_text(out.getvalue())
    assert "it is already a merge of 2 shards" in refusal([again])
    assert "no such file or directory" in refusal([tmp_path / "nowhere.json"])
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    assert "not text" in refusal([binary])


def test_journal_runs_are_shard_results_and_a_directory_of_results_is_read_whole(tmp_path):
    root = tmp_path / "runs"
    for index in (1, 2):
        share, info = take_share(HOSTS, ShardSpec(index, 2, f"--shard {index}/2"))
        writer = JournalWriter(root, RunMeta(kind="exec", argv=("exec",), command="uptime", shard=info.record()),
                               io.StringIO())
        writer.on_start(share)
        results = results_for(share, {"h05": Outcome.FAILED})
        for result in results:
            writer.on_result(result)
        writer.on_finish(summary_of(results))
        run = json.loads((root / str(writer.run_id) / "run.json").read_text())
        assert run["shard"] == info.record() and run["selection"]["count"] == 5
        summary = json.loads((root / str(writer.run_id) / "summary.json").read_text())
        assert summary["shard"] == info.record()
    loaded = load(root)
    assert sorted(shard.index for shard in loaded) == [1, 2] and loaded[0].kind == "exec"
    assert merge(loaded).summary.exit_status is ExitStatus.COMMAND_FAILED
    first_run = sorted(path for path in root.iterdir() if path.name[0] == "2")[0]
    assert load(first_run / "run.json")[0].source == str(first_run)
    unfinished = JournalWriter(root, RunMeta(kind="exec", argv=("exec",), shard={"index": 1, "total": 1,
                               "selection_sha256": "x", "selection_count": 1, "source": "--shard 1/1"}), io.StringIO())
    unfinished.on_start(HOSTS[:1])
    with pytest.raises(UsageError, match="no summary record: the shard did not finish"):
        load(root / str(unfinished.run_id))
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    with pytest.raises(UsageError, match="no shard results in it"):
        load(empty)


def test_the_summary_record_takes_the_shard_field_and_keeps_the_pinned_ones(tmp_path):
    summary = summary_of([])
    plain = summary_record(summary)
    assert "shard" not in plain and "merged" not in plain
    assert summary_record(summary, {"shard": {"index": 1}}) == {**plain, "shard": {"index": 1}}


def test_the_merge_command_renders_table_json_and_junit(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLEETRUN_CONFIG", "none")
    files = [str(path) for path in shard_files(tmp_path, 2, {"h03": Outcome.FAILED})]

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as done:
            main(["runs", "merge", *args])
        captured = capsys.readouterr()
        return int(done.value.code or 0), captured.out, captured.err

    code, out, _ = run(*files, "--junit", str(tmp_path / "junit.xml"))
    assert code == 1 and out.splitlines()[-1].startswith("9 ok, 1 failed in 2.0 s")
    assert 'tests="10"' in (tmp_path / "junit.xml").read_text()
    code, out, _ = run(*files, "--format", "json")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [r["host"] for r in records[:-1]] == [h.name for h in HOSTS]
    assert records[-1]["exit_status"] == 1 and records[-1]["merged"]["shards"][1]["index"] == 2
    code, out, _ = run(*files, "--names", "--status", "failed")
    assert code == 0 and out == "h03\n"
    code, _, err = run(*files, "--status", "failed")
    assert code == 2 and "--status goes with --names" in err
    code, _, err = run(files[0])
    assert code == 2 and err == "fleetrun: error: shard 2/2 is missing (have 1 of 2): give every shard's result\n"
