"""--shard K/N and --shard auto: parsing, every scheduler's variables and bases, bad input, the distribution, the
digest, and `fleetrun hosts --shard` (no SSH)."""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest

from fleetrun.cli import main
from fleetrun.errors import UsageError
from fleetrun.models import Host
from fleetrun.shard import (
    ShardSpec,
    check_options,
    from_environment,
    parse_explicit,
    parse_shard,
    selection_digest,
    share,
    share_names,
    take_share,
)


def hosts(count: int, prefix: str = "web") -> list[Host]:
    return [Host(f"{prefix}{n:02}", f"10.0.{n // 250}.{n % 250 + 1}") for n in range(count)]


def where(spec: ShardSpec) -> tuple[int, int]:
    return spec.index, spec.total


# -- --shard K/N ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [("1/1", (1, 1)), ("2/4", (2, 4)), ("4/4", (4, 4)), (" 3 / 7 ", (3, 7))])
def test_explicit_shard_is_one_based(text, expected):
    assert where(parse_explicit(text)) == expected


@pytest.mark.parametrize(("text", "says"), [
    ("0/4", "K must be between 1 and 4"),
    ("5/4", "K must be between 1 and 4"),
    ("1/0", "N must be at least 1"),
    ("2", "is not K/N"),
    ("/4", "is not K/N"),
    ("2/", "is not K/N"),
    ("a/4", "--shard K='a' is not a whole number"),
    ("2/four", "--shard N='four' is not a whole number"),
    ("-1/4", "is not a whole number"),
    ("1.5/4", "is not a whole number"),
    ("²/4", "is not a whole number"),
])
def test_bad_explicit_shards_are_usage_errors_that_say_what_to_give(text, says):
    with pytest.raises(UsageError) as error:
        parse_explicit(text)
    assert says in str(error.value) and "1 <= K <= N" in str(error.value)
    assert error.value.exit_status == 2


def test_shard_total_only_goes_with_auto_or_the_same_total():
    assert where(parse_shard("2/4", 4, {})) == (2, 4)
    with pytest.raises(UsageError, match="--shard 2/4 and --shard-total 3 disagree"):
        parse_shard("2/4", 3, {})
    with pytest.raises(UsageError, match="--shard-total goes with --shard auto"):
        parse_shard(None, 3, {})
    assert parse_shard(None, None, {"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "2"}) is None  # not asked for: not read


# -- --shard auto: each scheduler ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("environ", "total", "expected"), [
    # Kubernetes Indexed Job: 0-based, no total injected
    ({"JOB_COMPLETION_INDEX": "0"}, 3, (1, 3)),
    ({"JOB_COMPLETION_INDEX": "2"}, 3, (3, 3)),
    ({"JOB_COMPLETION_INDEX": "2", "FLEETRUN_SHARD_TOTAL": "3"}, None, (3, 3)),
    ({"JOB_COMPLETION_INDEX": "1", "FLEETRUN_SHARD_TOTAL": "9"}, 3, (2, 3)),  # the option over the variable
    # GitLab: 1-based
    ({"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "3"}, None, (1, 3)),
    ({"CI_NODE_INDEX": "3", "CI_NODE_TOTAL": "3"}, None, (3, 3)),
    ({"CI_NODE_TOTAL": "1"}, None, (1, 1)),  # a GitLab job without parallel:
    # Buildkite: 0-based
    ({"BUILDKITE_PARALLEL_JOB": "0", "BUILDKITE_PARALLEL_JOB_COUNT": "3"}, None, (1, 3)),
    ({"BUILDKITE_PARALLEL_JOB": "2", "BUILDKITE_PARALLEL_JOB_COUNT": "3"}, None, (3, 3)),
    # CircleCI: 0-based
    ({"CIRCLE_NODE_INDEX": "0", "CIRCLE_NODE_TOTAL": "4"}, None, (1, 4)),
    ({"CIRCLE_NODE_INDEX": "3", "CIRCLE_NODE_TOTAL": "4"}, None, (4, 4)),
    # two schedulers that agree; and a bystander CI_NODE_TOTAL=1 next to a real index
    ({"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "3", "CIRCLE_NODE_INDEX": "1", "CIRCLE_NODE_TOTAL": "3"}, None, (2, 3)),
    ({"JOB_COMPLETION_INDEX": "1", "CI_NODE_TOTAL": "1"}, 2, (2, 2)),
    ({"CI_NODE_INDEX": "", "CI_NODE_TOTAL": "", "JOB_COMPLETION_INDEX": "0"}, 2, (1, 2)),  # empty means unset
])
def test_auto_reads_each_schedulers_variables_with_its_base(environ, total, expected):
    spec = parse_shard("auto", total, environ)
    assert spec is not None and where(spec) == expected


def test_auto_says_where_the_shard_came_from():
    assert from_environment({"CI_NODE_INDEX": "2", "CI_NODE_TOTAL": "4"}).source == \
        "GitLab CI_NODE_INDEX=2 CI_NODE_TOTAL=4"
    assert from_environment({"JOB_COMPLETION_INDEX": "0"}, 2).source == \
        "Kubernetes Indexed Job JOB_COMPLETION_INDEX=0 --shard-total 2"


@pytest.mark.parametrize(("environ", "total", "says"), [
    ({}, None, "--shard auto: no scheduler variable is set"),
    ({"GITHUB_ACTIONS": "true"}, None, "elsewhere pass --shard K/N"),
    ({"JOB_COMPLETION_INDEX": "1"}, None,
     "JOB_COMPLETION_INDEX=1 is set but the number of shards is not: pass --shard-total N"),
    ({"JOB_COMPLETION_INDEX": "3"}, 3,
     "JOB_COMPLETION_INDEX=3 is out of range: with --shard-total 3 it must be 0 to 2"),
    ({"JOB_COMPLETION_INDEX": "x"}, 3, "JOB_COMPLETION_INDEX='x' is not a whole number"),
    ({"JOB_COMPLETION_INDEX": "-1"}, 3, "JOB_COMPLETION_INDEX='-1' is not a whole number"),
    ({"JOB_COMPLETION_INDEX": "0", "FLEETRUN_SHARD_TOTAL": "many"}, None,
     "FLEETRUN_SHARD_TOTAL='many' is not a whole"),
    ({"JOB_COMPLETION_INDEX": "0", "FLEETRUN_SHARD_TOTAL": "0"}, None,
     "FLEETRUN_SHARD_TOTAL='0': the number of shards"),
    ({"JOB_COMPLETION_INDEX": "0"}, 0, "--shard-total 0: the number of shards is at least 1"),
    ({"CI_NODE_INDEX": "0", "CI_NODE_TOTAL": "3"}, None,
     "CI_NODE_INDEX=0 is out of range: with CI_NODE_TOTAL=3 it must be 1 to 3 (GitLab counts from 1)"),
    ({"CI_NODE_INDEX": "4", "CI_NODE_TOTAL": "3"}, None, "CI_NODE_INDEX=4 is out of range"),
    ({"CI_NODE_INDEX": "2"}, None, "CI_NODE_INDEX=2 is set but CI_NODE_TOTAL is not"),
    ({"CI_NODE_TOTAL": "3"}, None, "CI_NODE_TOTAL=3 is set but CI_NODE_INDEX is not"),
    ({"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "0"}, None, "CI_NODE_TOTAL='0': the number of parallel jobs is at least"),
    ({"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "three"}, None, "CI_NODE_TOTAL='three' is not a whole number"),
    ({"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "3"}, 4, "--shard-total 4 and CI_NODE_TOTAL=3 disagree"),
    ({"BUILDKITE_PARALLEL_JOB": "3", "BUILDKITE_PARALLEL_JOB_COUNT": "3"}, None,
     "BUILDKITE_PARALLEL_JOB=3 is out of range: with BUILDKITE_PARALLEL_JOB_COUNT=3 it must be 0 to 2"),
    ({"BUILDKITE_PARALLEL_JOB_COUNT": "3"}, None, "BUILDKITE_PARALLEL_JOB_COUNT=3 is set but BUILDKITE_PARALLEL_JOB"),
    ({"CIRCLE_NODE_INDEX": "4", "CIRCLE_NODE_TOTAL": "4"}, None, "CIRCLE_NODE_INDEX=4 is out of range"),
    ({"CIRCLE_NODE_INDEX": "one", "CIRCLE_NODE_TOTAL": "4"}, None, "CIRCLE_NODE_INDEX='one' is not a whole number"),
    ({"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "3", "CIRCLE_NODE_INDEX": "1", "CIRCLE_NODE_TOTAL": "3"}, None,
     "--shard auto: GitLab CI_NODE_INDEX=1 CI_NODE_TOTAL=3 (shard 1/3) and CircleCI CIRCLE_NODE_INDEX=1 "
     "CIRCLE_NODE_TOTAL=3 (shard 2/3) disagree"),
    ({"JOB_COMPLETION_INDEX": "0", "BUILDKITE_PARALLEL_JOB": "0", "BUILDKITE_PARALLEL_JOB_COUNT": "4"}, 2, "disagree"),
])
def test_auto_refuses_missing_bad_and_inconsistent_variables_naming_them(environ, total, says):
    with pytest.raises(UsageError) as error:
        parse_shard("auto", total, environ)
    message = str(error.value)
    assert says in message, message
    assert "\n" not in message and error.value.exit_status == 2
    # every message names a way out
    ways_out = ("pass --shard", "--shard-total N", "unset", "fix", "drop", "check", "pass the")
    assert any(word in message for word in ways_out)


# -- the distribution and the digest -------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "total"), [(30, 1), (30, 2), (30, 3), (30, 7), (200, 4), (3, 5), (0, 3)])
def test_every_host_is_in_exactly_one_shard_and_shares_differ_by_at_most_one(count, total):
    selection = hosts(count)
    random.Random(count * total).shuffle(selection)  # inventory order is not name order
    shares = [share(selection, index, total) for index in range(1, total + 1)]
    names = [host.name for part in shares for host in part]
    assert sorted(names) == sorted(host.name for host in selection) and len(names) == len(set(names))
    sizes = [len(part) for part in shares]
    assert max(sizes) - min(sizes) <= 1
    assert shares == [share(list(selection), index, total) for index in range(1, total + 1)]  # deterministic


def test_shares_follow_name_order_and_keep_the_selections_own_order():
    selection = [Host(name, name) for name in ("db2", "web10", "app1", "web9", "db10")]
    # by name (plain string order): app1 db10 db2 web10 web9 → shards 1 2 3 1 2
    assert [h.name for h in share(selection, 1, 3)] == ["web10", "app1"]  # inventory order within the share
    assert [h.name for h in share(selection, 2, 3)] == ["web9", "db10"]
    assert [h.name for h in share(selection, 3, 3)] == ["db2"]
    assert share_names([h.name for h in selection], 2, 3) == ["web9", "db10"]


def test_the_share_is_the_same_whatever_order_the_selection_came_in():
    selection = hosts(50)
    shuffled = list(selection)
    random.Random(1).shuffle(shuffled)
    for index in (1, 2, 3):
        assert {h.name for h in share(selection, index, 3)} == {h.name for h in share(shuffled, index, 3)}


def test_digest_is_sha256_of_the_sorted_names_each_with_a_newline():
    names = ["web02", "db01", "web10", "Web1"]
    assert selection_digest(names) == hashlib.sha256(b"Web1\ndb01\nweb02\nweb10\n").hexdigest()
    assert selection_digest(reversed(names)) == selection_digest(names)
    assert selection_digest([]) == hashlib.sha256(b"").hexdigest()
    assert selection_digest(["a", "b"]) != selection_digest(["a", "b", "c"])


def test_take_share_records_the_whole_selection():
    selection = hosts(10)
    mine, info = take_share(selection, ShardSpec(2, 3, "--shard 2/3"))
    assert [h.name for h in mine] == ["web01", "web04", "web07"]
    assert info.record() == {"index": 2, "total": 3, "selection_sha256": selection_digest(h.name for h in selection),
                             "selection_count": 10, "source": "--shard 2/3"}
    empty, info = take_share(selection[:2], ShardSpec(3, 3, "--shard 3/3"))
    assert empty == [] and info.selection_count == 2


def test_every_pair_of_shards_is_disjoint():
    selection = hosts(23)
    for total in (2, 5):
        for a, b in itertools.combinations(range(1, total + 1), 2):
            assert not {h.name for h in share(selection, a, total)} & {h.name for h in share(selection, b, total)}


def test_options_that_would_make_shards_differ_are_refused():
    spec = ShardSpec(1, 2, "--shard 1/2")
    with pytest.raises(UsageError, match="--shard does not go with --retry-failed: each shard's journal"):
        check_options(spec, retry_failed=True, rerun=False, pick=None, seed=None)
    with pytest.raises(UsageError, match="--shard does not go with rerun"):
        check_options(spec, retry_failed=False, rerun=True, pick=None, seed=None)
    with pytest.raises(UsageError, match=r"--pick 3 picks differently in each shard.*add --seed S"):
        check_options(spec, retry_failed=False, rerun=False, pick=3, seed=None)
    check_options(spec, retry_failed=False, rerun=False, pick=3, seed="x")


# -- fleetrun hosts --shard ------------------------------------------------------------------------------------------


def run_main(args: list[str], capsys, monkeypatch, **environ: str) -> tuple[int, str, str]:
    for name in ("JOB_COMPLETION_INDEX", "CI_NODE_INDEX", "CI_NODE_TOTAL", "BUILDKITE_PARALLEL_JOB",
                 "BUILDKITE_PARALLEL_JOB_COUNT", "CIRCLE_NODE_INDEX", "CIRCLE_NODE_TOTAL", "FLEETRUN_SHARD_TOTAL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FLEETRUN_CONFIG", "none")
    with pytest.raises(SystemExit) as done:
        main(args)
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


NAMES = "n01,n02,n03,n04,n05,n06,n07"


def test_hosts_shard_lists_the_share(capsys, monkeypatch):
    code, out, _ = run_main(["hosts", "--shard", "2/3", "--names", NAMES], capsys, monkeypatch)
    assert code == 0 and out.split() == ["n02", "n05"]
    code, out, _ = run_main(["hosts", "--shard", "2/3", NAMES], capsys, monkeypatch)
    assert code == 0 and out.splitlines()[-1] == "2 hosts (shard 2/3 of 7 selected)"
    code, out, _ = run_main(["hosts", "--shard", "1/3", "--fold", NAMES], capsys, monkeypatch)
    assert code == 0 and out.strip() == "n[01,04,07]"
    code, out, _ = run_main(["hosts", "--shard", "auto", "--names", NAMES], capsys, monkeypatch,
                            CI_NODE_INDEX="3", CI_NODE_TOTAL="3")
    assert code == 0 and out.split() == ["n03", "n06"]


def test_hosts_shard_with_more_shards_than_hosts_is_an_empty_share_and_a_note(capsys, monkeypatch):
    code, out, err = run_main(["hosts", "--shard", "5/5", "--names", "n1,n2"], capsys, monkeypatch)
    assert code == 0 and out == ""
    assert "shard 5/5 has no hosts (the selection has 2 hosts)" in err


def test_hosts_shard_bad_input_is_exit_2_in_one_line(capsys, monkeypatch):
    code, _, err = run_main(["hosts", "--shard", "4/3", "--names", NAMES], capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1 and "K must be between 1 and 3" in err
    code, _, err = run_main(["hosts", "--shard", "auto", "--names", NAMES], capsys, monkeypatch,
                            JOB_COMPLETION_INDEX="1")
    assert code == 2 and "pass --shard-total N" in err
