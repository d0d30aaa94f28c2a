"""`fleetrun hosts --fold/--expand/--count`, held against ClusterShell's nodeset, and folds pasted back into -H."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ClusterShell.NodeSet import NodeSet  # test oracle only (dev extra), never imported by fleetrun
from test_hostnames import dense_grid, random_names

from fleetrun.cli import main
from fleetrun.selection import names_of

NODESET = str(Path(sys.executable).with_name("nodeset"))  # installed next to python by the dev extra


def nodeset(*args: str, stdin: str = "") -> str:
    done = subprocess.run([NODESET, *args], input=stdin, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory with no inventory in reach: NAMES never need one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEETRUN_INVENTORY", raising=False)
    return tmp_path


CASES = [
    ("web[01-99,100]",),
    ("web1", "web01", "web001"),  # mixed paddings: three different names
    ("rack[1-2]-node[05-06]", "rack3-node05"),  # several numeric groups
    ("web[1-5],db[1-3]&web[2-8]",),  # set operations, strictly left to right, as ClusterShell reads them
    ("web[1-10]!web[3-4],db1",),
    ("a[1-3]", "a[2-6]", "b"),
    ("x[098-102].lan", "x[1-2].lan"),
    ("n[0-1],n[00-01]",),
    ("a[1-5]^a[3-7]", "b1^b2,a9"),  # ^ is ClusterShell's xor, not part of a name
    ("a[1-10/3],b[01-10/2]", "c[0-20/5]!c10"),  # ClusterShell's stepped ranges
    ("n[ 1 - 3 ]", "m[1 -2, 5]"),  # spaces inside brackets are ignored, as there
    ("a1[9-10]", "web0[1-9]", "b[1-2]0"),  # digits next to a bracket join each bound: a[19-110] is 92 names
    ("x[٣-٥]", "y[٠٣-١٢]", "z٣-[1-2]"),  # Unicode digits in a pattern read as ClusterShell reads them
]


@pytest.mark.parametrize("args", CASES)
@pytest.mark.parametrize("action", ["-f", "-e", "-c"])
def test_fold_expand_count_match_the_nodeset_command(capsys, nowhere, args, action):
    long = {"-f": "--fold", "-e": "--expand", "-c": "--count"}[action]
    assert run(capsys, "hosts", long, *args) == (0, nodeset(action, *args), "")


def test_generated_sets_fold_and_expand_as_clustershell(capsys, nowhere):
    rng = random.Random("node sets")
    for _ in range(150):
        names = random_names(rng) if rng.random() < 0.7 else dense_grid(rng)
        code, folded, _ = run(capsys, "hosts", "--fold", *names)
        assert (code, folded) == (0, f"{NodeSet.fromlist(names)}\n"), names
        assert run(capsys, "hosts", "--expand", folded.strip())[1] == " ".join(NodeSet.fromlist(names)) + "\n"
        assert run(capsys, "hosts", "--count", folded.strip())[1] == f"{len(set(names))}\n"


def test_generated_set_operations_match_clustershell():
    rng = random.Random("set operations")
    for _ in range(300):
        parts = [f"{rng.choice(['a', 'b'])}[{(lo := rng.randint(0, 9))}-{lo + rng.randint(0, 9)}"
                 f"{rng.choice(['', '', '/2', '/3'])}]" for _ in range(rng.randint(1, 4))]
        pattern = parts[0] + "".join(rng.choice(",&!^") + part for part in parts[1:])
        assert sorted(names_of(pattern)) == sorted(NodeSet(pattern)), pattern


def test_names_on_stdin_with_comments_as_nodeset_reads_them(capsys, nowhere, monkeypatch):
    text = "web01 web02  # the first two\n\nweb[03-04]\ndb1\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert run(capsys, "hosts", "--fold") == (0, nodeset("-f", stdin=text), "")
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert run(capsys, "hosts", "--count", "-", "lb") == (0, nodeset("-c", "-", "lb", stdin=text), "")
    monkeypatch.setattr(sys, "stdin", io.StringIO("web01\nweb[3-\n"))
    code, _, err = run(capsys, "hosts", "--fold")
    assert code == 2 and err.startswith("fleetrun: error: <stdin>:2: ")


@pytest.mark.parametrize("text", ["a[1-5]!a3 b1,b2\n", "a[1-3]&a[2-9]  # two\nb1^b[1-2]\n", "x1,x2\n\nx[3-4]\n"])
def test_each_word_on_stdin_is_a_node_set_as_nodeset_reads_it(capsys, nowhere, monkeypatch, text):
    for action, long in (("-f", "--fold"), ("-c", "--count")):
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))
        assert run(capsys, "hosts", long) == (0, nodeset(action, stdin=text), "")


def test_an_argument_of_several_lines_is_a_node_set_per_line(capsys, nowhere):
    """`fleetrun hosts --fold "$(cat hosts.txt)"`: nodeset reads each line of an argument (and of -x) alone."""
    lines = "web01\nweb02\n\nweb[03-05]\ndb1\n"
    assert run(capsys, "hosts", "--fold", lines) == (0, nodeset("-f", lines), "")
    assert run(capsys, "hosts", "--fold", "web[01-09]", "-x", "web02\nweb05") == \
        (0, nodeset("-f", "web[01-09]", "-x", "web02\nweb05"), "")
    assert run(capsys, "hosts", "--count", "") == (0, nodeset("-c", ""), "")


def test_exclude_separator_and_pick_work_on_names(capsys, nowhere):
    assert run(capsys, "hosts", "--fold", "web[1-10]", "-x", "web5") == \
        (0, nodeset("-f", "web[1-10]", "-x", "web5"), "")
    assert run(capsys, "hosts", "--expand", "-S", "\\n", "web[1-3]") == (0, nodeset("-e", "-S", "\\n", "web[1-3]"), "")
    assert run(capsys, "hosts", "--expand", "-S", ",", "web[1-3]") == (0, "web1,web2,web3\n", "")
    picked = run(capsys, "hosts", "--expand", "web[1-20]", "--pick", "4", "--seed", "7")
    assert picked == run(capsys, "hosts", "--expand", "web[1-20]", "--pick", "4", "--seed", "7")
    assert len(picked[1].split()) == 4 and set(picked[1].split()) <= {f"web{i}" for i in range(1, 21)}


def test_a_fold_pasted_into_hosts_selects_the_same_hosts(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEETRUN_INVENTORY", raising=False)
    rng = random.Random("round trip")
    for attempt in range(40):
        every = sorted(set(random_names(rng) + dense_grid(rng)))
        path = tmp_path / f"inventory{attempt}.yaml"
        path.write_text(yaml.safe_dump({"hosts": dict.fromkeys(every)}))
        chosen = rng.sample(every, rng.randint(1, len(every)))
        code, folded, _ = run(capsys, "hosts", "--fold", *chosen)
        assert code == 0
        listed = run(capsys, "hosts", "-i", str(path), "--names", "-H", folded.strip())
        assert listed[0] == 0 and sorted(listed[1].split()) == sorted(set(chosen)), (chosen, folded)
        # and the other way: the inventory's own selection, folded with -H, is a pattern for the same hosts
        code, again, _ = run(capsys, "hosts", "-i", str(path), "--fold", "-H", folded.strip())
        assert (code, again) == (0, folded)


def test_fold_of_the_inventory_with_h(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inventory.yaml").write_text("hosts:\n  web[01:05]:\n  db1:\ngroups:\n  web: [web01, web02, web03]\n")
    assert run(capsys, "hosts", "--fold", "-H", "all") == (0, "db1,web[01-05]\n", "")
    assert run(capsys, "hosts", "--count", "-H", "web", "-x", "web02") == (0, "2\n", "")
    assert run(capsys, "hosts", "--expand", "-H", "web") == (0, "web01 web02 web03\n", "")


@pytest.mark.parametrize(("args", "message"), [
    (("--fold", "--count", "a1"), "--fold and --count do not go together"),
    (("--fold", "--names", "a1"), "--names and --fold do not go together"),
    (("--expand", "--format", "json", "a1"), "--format json and --expand do not go together"),
    (("--fold", "a1", "-H", "web"), "--fold takes NAMES or -H PATTERN (the inventory's hosts), not both"),
    (("--fold", "-i", "inventory.yaml", "a1"), "--fold over NAMES reads no inventory"),
    (("--fold", "web*"), "the glob 'web*' needs an inventory"),
    (("--fold", "!web1"), "a leading '!' needs an inventory"),
    (("--count", "web[01-100]"), "01-100 mixes widths"),
    (("--fold", "a[1-2][3-4]"), "only digits between them, which ClusterShell refuses too; write a[13-14,23-24]"),
    (("--expand", "a[1-3]0[1-2]"), "write a[101-102,201-202,301-302]"),
    (("--count", "a[1-3/2]0"), "digits after a stepped range ([1-3/2]0), which ClusterShell refuses"),
    (("--count", "a0[1-10]"), "reads as 01-010, which mixes widths"),
    (("--expand", "--seed", "3", "a1"), "--seed only goes with --pick N"),
    (("a1", "b1"), "one PATTERN, not 2"),
])
def test_node_set_mistakes_are_exit_2(capsys, nowhere, args, message):
    code, out, err = run(capsys, "hosts", *args)
    assert (code, out) == (2, "") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("names", [("a1", "a１"), ("a1", "a٣", "a3"), ("web٠٣", "web03", "web3")])
def test_unicode_digits_fold_and_expand_as_nodeset_does(capsys, nowhere, names):
    """`a１` is a1 to ClusterShell: the same number, never a range with a step of 0 (it was exit 70)."""
    for action, long in (("-f", "--fold"), ("-e", "--expand")):
        assert run(capsys, "hosts", long, *names) == (0, nodeset(action, *names), "")


def test_an_inventory_with_unicode_digits_folds(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inventory.yaml").write_text("hosts:\n  a1:\n  a１:\n", encoding="utf-8")
    assert run(capsys, "hosts", "--fold", "-H", "all") == (0, f"{NodeSet.fromlist(['a1', 'a１'])}\n", "")
    assert run(capsys, "hosts", "--names", "-H", "all") == (0, "a1\na１\n", "")  # still two hosts


def test_a_terminal_on_stdin_is_not_waited_for(capsys, nowhere, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal())
    code, _, err = run(capsys, "hosts", "--count")
    assert code == 2 and "give NAMES, pipe them on stdin, or -H PATTERN" in err


def test_the_real_command_reads_a_pipe(nowhere):
    done = subprocess.run([sys.executable, "-m", "fleetrun", "hosts", "--fold"], input="b2\nb1\na7\n",
                          capture_output=True, text=True, timeout=60, env={**os.environ, "FLEETRUN_CONFIG": "none"})
    assert (done.returncode, done.stdout, done.stderr) == (0, "a7,b[1-2]\n", "")
