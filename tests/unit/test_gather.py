"""Gathering with hand-made results: grouping by stdout and status, ordering, notes, the diff, rendering."""

from __future__ import annotations

import difflib
import io
import random
import re

from fleetrun.models import Host, HostResult, Outcome, RunSummary
from fleetrun.output.gather import GatherRenderer, Grouper, unified_diff
from fleetrun.status import ExitStatus

HOSTS = [Host(f"lab{i:02d}", f"127.0.0.{i}") for i in range(1, 51)]
ODD = {"lab07", "lab08", "lab31"}


def ok(host: Host, stdout: bytes, **fields) -> HostResult:
    return HostResult(host, Outcome.OK, exit_code=0, stdout=stdout, **fields)


def failed(host: Host, code: int, stdout: bytes = b"", stderr: bytes = b"") -> HostResult:
    return HostResult(host, Outcome.FAILED, exit_code=code, stdout=stdout, stderr=stderr, error=f"exit status {code}")


def summary(ok: int = 0, failed: int = 0) -> RunSummary:
    counts = {Outcome.OK: ok, Outcome.FAILED: failed}
    return RunSummary(ok + failed, counts, 1.0, ExitStatus.COMMAND_FAILED if failed else ExitStatus.OK)


def grouped(results: list[HostResult], **options) -> Grouper:
    grouper = Grouper({host.name: n for n, host in enumerate(HOSTS)}, **options)
    for result in results:
        grouper.add(result)
    return grouper


def test_47_same_and_3_other_make_two_groups_largest_first():
    # Results arrive in any order; the groups and their host lists do not depend on it.
    results = [ok(h, b"other\n" if h.name in ODD else b"same\n") for h in HOSTS]
    random.Random(1).shuffle(results)
    groups = grouped(results).groups()
    assert [(len(g.hosts), g.stdout) for g in groups] == [(47, b"same\n"), (3, b"other\n")]
    assert groups[1].hosts == ["lab07", "lab08", "lab31"]
    assert groups[0].hosts == [h.name for h in HOSTS if h.name not in ODD]


def test_one_copy_of_each_distinct_output_is_kept():
    results = [ok(h, b"x" * 100_000) for h in HOSTS[:10]]
    groups = grouped(results).groups()
    assert len(groups) == 1
    assert groups[0].stdout is results[0].stdout  # the first host's bytes, not a copy; the rest only hashed


def test_same_stdout_but_different_status_is_another_group():
    results = [ok(HOSTS[0], b"a\n"), failed(HOSTS[1], 3, b"a\n"), failed(HOSTS[2], 4, b"a\n"),
               failed(HOSTS[3], 3, b"a\n"), ok(HOSTS[4], b"a\n", stdout_truncated=True)]
    groups = grouped(results).groups()
    assert [(g.status, g.hosts) for g in groups] == [
        ("failed (exit 3)", ["lab02", "lab04"]),
        ("ok", ["lab01"]),  # equal sizes in inventory order
        ("failed (exit 4)", ["lab03"]),
        ("ok", ["lab05"]),  # truncated: not the same as lab01's complete output
    ]
    assert groups[3].truncated and not groups[1].truncated


def test_notes_group_errors_and_stderr_tails():
    results = [failed(HOSTS[0], 1, stderr=b"noise\nboom\n"), failed(HOSTS[1], 1, stderr=b"other noise\nboom\n"),
               failed(HOSTS[2], 1, stderr=b"bang\n"),
               HostResult(HOSTS[3], Outcome.UNREACHABLE, error="connection refused by 127.0.0.4:22"),
               ok(HOSTS[4], b"", stderr=b"warning only\n")]
    groups = {tuple(g.hosts): g for g in grouped(results).groups()}
    notes = list(groups[("lab01", "lab02", "lab03")].notes.values())
    assert [(n.hosts, n.error, n.stderr) for n in notes] == [
        (["lab01"], "exit status 1", "noise\nboom"),
        (["lab02"], "exit status 1", "other noise\nboom"),
        (["lab03"], "exit status 1", "bang"),
    ]
    assert [n.error for n in groups[("lab04",)].notes.values()] == ["connection refused by 127.0.0.4:22"]
    assert groups[("lab05",)].notes == {}  # an ok host's stderr only with -v
    verbose = grouped([ok(HOSTS[4], b"", stderr=b"warning only\n")], full_stderr=True).groups()
    assert [n.stderr for n in verbose[0].notes.values()] == ["warning only"]
    pushed = HostResult(HOSTS[0], Outcome.OK, changed=True, details=("changed /etc/motd (12 bytes)",))
    assert [n.details for n in grouped([pushed], full_stderr=True).groups()[0].notes.values()] == [
        "changed /etc/motd (12 bytes)"]
    assert grouped([pushed]).groups()[0].status == "changed"


def apply(old: list[str], diff: list[str]) -> list[str]:
    """Apply a unified diff to `old`, checking every header count and context line on the way."""
    result, at, lines = [], 0, diff[2:]
    while lines:
        header = re.fullmatch(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", lines.pop(0))
        assert header, "a hunk starts with its header"
        start, length = int(header[1]), int(header[2] if header[2] is not None else 1)
        start -= 0 if length == 0 else 1
        result += old[at:start]
        at = start
        body = []
        while lines and not lines[0].startswith("@@"):
            body.append(lines.pop(0))
        taken = [line[1:] for line in body if line[0] in " -"]
        assert old[at:at + len(taken)] == taken and len(taken) == length
        added = [line[1:] for line in body if line[0] in " +"]
        assert len(added) == int(header[4] if header[4] is not None else 1)
        result += added
        at += len(taken)
    return result + old[at:]


def test_unified_diff_patches_old_into_new():
    rng = random.Random(7)
    for _ in range(500):
        old = [rng.choice("abcde") for _ in range(rng.randint(0, 40))]
        new = list(old)
        for _ in range(rng.randint(0, 4)):
            at = rng.randint(0, len(new))
            new[at:at + rng.randint(0, 3)] = [rng.choice("abcxyz") for _ in range(rng.randint(0, 3))]
        diff = list(unified_diff(old, new, "A", "B"))
        if old == new:
            assert diff == []
            continue
        assert diff[:2] == ["--- A", "+++ B"]
        assert apply(old, diff) == new, (old, new)


def test_unified_diff_is_what_difflib_writes_for_a_simple_change():
    old, new = list("abcdefghij"), list("abcdXfghij")
    assert list(unified_diff(old, new, "A", "B")) == list(difflib.unified_diff(old, new, "A", "B", lineterm=""))
    old, new = list("abc"), list("abcd")
    assert list(unified_diff(old, new, "A", "B")) == list(difflib.unified_diff(old, new, "A", "B", lineterm=""))
    assert list(unified_diff([], ["x"], "A", "B")) == list(difflib.unified_diff([], ["x"], "A", "B", lineterm=""))


def test_diff_of_large_outputs_shows_only_the_change():
    old = [str(n) for n in range(200_000)]
    new = list(old)
    new[100_000] = "changed"
    lines = list(unified_diff(old, new, "majority", "lab07"))
    assert lines == ["--- majority", "+++ lab07", "@@ -99998,7 +99998,7 @@", " 99997", " 99998", " 99999",
                     "-100000", "+changed", " 100001", " 100002", " 100003"]


def test_gather_renders_groups_with_folded_host_lists():
    out = io.StringIO()
    renderer = GatherRenderer(out)
    renderer.on_start(HOSTS)
    for host in HOSTS:
        renderer.on_result(ok(host, b"other\n" if host.name in ODD else b"same\n"))
    renderer.on_finish(summary(ok=50))
    assert out.getvalue() == (
        "==== lab[01-06,09-30,32-50] (47 hosts): ok\nsame\n\n"
        "==== lab[07-08,31] (3 hosts): ok\nother\n\n"
        "50 ok in 1.0 s\n"
    )


def test_diff_mode_shows_minorities_as_diffs_and_failures_with_notes():
    out = io.StringIO()
    renderer = GatherRenderer(out, diff=True)
    renderer.on_start(HOSTS[:6])
    text = "".join(f"line {n}\n" for n in range(1, 21)).encode()
    for host in HOSTS[:4]:
        renderer.on_result(ok(host, text))
    renderer.on_result(ok(HOSTS[4], text.replace(b"line 10\n", b"line ten\n")))
    renderer.on_result(failed(HOSTS[5], 2, text, stderr=b"disk full\n"))
    renderer.on_finish(summary(ok=5, failed=1))
    blocks = out.getvalue().split("\n\n")
    assert blocks[0].startswith("==== lab[01-04] (4 hosts): ok\nline 1\n") and "line 20" in blocks[0]
    assert blocks[1] == ("==== lab05 (1 host): ok\n--- lab[01-04]\n+++ lab05\n@@ -7,7 +7,7 @@\n"
                         " line 7\n line 8\n line 9\n-line 10\n+line ten\n line 11\n line 12\n line 13")
    assert blocks[2] == ("==== lab06 (1 host): failed (exit 2)\n(same output as lab[01-04])\n"
                         "! lab06: exit status 2\n  stderr: disk full")


def test_status_words_coloured_only_when_asked():
    for colour in (False, True):
        out = io.StringIO()
        renderer = GatherRenderer(out, colour=colour)
        renderer.on_start(HOSTS[:2])
        renderer.on_result(ok(HOSTS[0], b"a\n"))
        renderer.on_result(failed(HOSTS[1], 1))
        renderer.on_finish(summary(ok=1, failed=1))
        assert ("\x1b[32mok\x1b[0m" in out.getvalue()) is colour
        assert ("\x1b[31mfailed (exit 1)\x1b[0m" in out.getvalue()) is colour
        assert ("\x1b[" in out.getvalue()) is colour
