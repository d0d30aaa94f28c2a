"""Host lists as clush, pdsh and Ansible users write them: ^FILE and @FILE, -x, --pick/--seed, the padding hint."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fleetrun.cli import main
from fleetrun.errors import SelectionError
from fleetrun.inventory import Inventory
from fleetrun.models import Host
from fleetrun.selection import padding_hint, parse_host_list, pick, read_host_list, select

HOSTS = ["web01", "web02", "web03", "web04", "web05", "db1", "db2", "lb"]
GROUPS = {"web": ("web01", "web02", "web03", "web04", "web05"), "db": ("db1", "db2"),
          "prod": ("web01", "web02", "db1", "lb")}
INVENTORY = """\
hosts:
  web[01:05]:
  db1:
  db2:
  lb:
groups:
  web: [web01, web02, web03, web04, web05]
  db: [db1, db2]
  prod: [web01, web02, db1, lb]
"""


@pytest.fixture
def inventory() -> Inventory:
    return Inventory(path=Path("inventory.yaml"), hosts={name: Host(name=name, address=name) for name in HOSTS},
                     groups=dict(GROUPS))


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with the inventory above and no other inventory in reach."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEETRUN_INVENTORY", raising=False)
    (tmp_path / "inventory.yaml").write_text(INVENTORY)
    return tmp_path


def names(inventory: Inventory, pattern: str) -> list[str]:
    return [host.name for host in select(inventory, pattern)]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


# --- the file ------------------------------------------------------------------------------------------------


def test_a_host_list_has_names_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("# the canaries\nweb01   # first\n\n  web03 db1\nweb[04-05]\n")
    listed = read_host_list(f"^{path}")
    assert [(entry.name, entry.line) for entry in listed] == [("web01", 2), ("web03", 4), ("db1", 4),
                                                              ("web[04-05]", 5)]
    assert listed[0].where == f"{path}:2"


@pytest.mark.parametrize(("text", "message"), [
    ("web01\nweb&prod\n", "list.txt:2: 'web&prod' is not one name"),
    ("web01,web02\n", "list.txt:1: 'web01,web02' is not one name"),
    ("!web01\n", "list.txt:1: '!web01' is not one name"),
    ("web01\n^other.txt\n", "list.txt:2: '^other.txt': host lists do not include other lists"),
    ("web[01-\n", "list.txt:1: pattern 'web[01-': a '[' is never closed"),
])
def test_a_bad_entry_is_refused_at_its_line(text: str, message: str) -> None:
    with pytest.raises(SelectionError, match=message.replace("[", r"\[").replace("^", r"\^")):
        parse_host_list(text, "list.txt")


def test_an_unreadable_list_is_exit_2_with_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   here: Path) -> None:
    with pytest.raises(SelectionError, match=r"host list .*absent\.txt: cannot read it: No such file"):
        read_host_list(f"^{tmp_path}/absent.txt")
    (here / "latin1.txt").write_bytes(b"web01\nw\xe9b02\n")
    with pytest.raises(SelectionError, match=r"latin1.txt:2: not UTF-8"):
        read_host_list("@latin1.txt")
    code, out, err = run(capsys, "hosts", "-H", "^absent.txt&web")
    assert (code, out) == (2, "") and err == ("fleetrun: error: host list absent.txt: cannot read it: No such file "
                                              "or directory; check the path\n")


# --- as atoms of a pattern -----------------------------------------------------------------------------------


def test_a_list_is_an_atom_in_both_syntaxes(inventory: Inventory, tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("web03\nweb01\ndb\n")
    assert names(inventory, f"^{path}") == ["web01", "web03", "db1", "db2"]  # inventory order, groups expanded
    assert names(inventory, f"@{path}") == names(inventory, f"^{path}")
    assert names(inventory, f"^{path}&prod") == ["web01", "db1"]
    assert names(inventory, f"web!^{path}") == ["web02", "web04", "web05"]
    assert set(names(inventory, f"@{path}:&prod")) == {"web01", "db1"}  # Ansible's --limit @FILE
    assert set(names(inventory, f"prod:!@{path}")) == {"web02", "lb"}


def test_list_entries_may_be_globs_and_ranges(inventory: Inventory, tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("web0[4-5]\nl?\n")
    assert names(inventory, f"^{path}") == ["web04", "web05", "lb"]


def test_a_name_in_a_list_that_matches_nothing_is_an_error_at_its_line(inventory: Inventory, tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("web01\n\nwbe02\n")
    with pytest.raises(SelectionError, match=rf"^{path}:3: no host or group matches 'wbe02' \(did you mean web02"):
        select(inventory, f"^{path}")
    with pytest.raises(SelectionError, match=rf"^{path}:3: no host or group matches 'wbe02'"):
        select(inventory, f"@{path}:&prod")
    path.write_text("# nothing yet\n")
    with pytest.raises(SelectionError, match="names no host"):
        select(inventory, f"^{path}")


def test_at_group_says_clustershell_groups_are_plain_names_here(inventory: Inventory, here: Path) -> None:
    with pytest.raises(SelectionError, match=r"@web: there is no host-list file 'web'; for the group write web"):
        select(inventory, "@web")


def test_without_an_inventory_the_same_reader_names_the_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEETRUN_INVENTORY", raising=False)
    (tmp_path / "list.txt").write_text("web01 # a comment\ndeploy@10.0.0.5:2222\nweb[02-03]\n")
    assert run(capsys, "hosts", "--names", "-H", "@list.txt") == (0, "web01\n10.0.0.5\nweb02\nweb03\n", "")
    (tmp_path / "list.txt").write_text("web01\nweb02:99999\n")
    code, _, err = run(capsys, "hosts", "-H", "^list.txt")
    assert code == 2 and err.startswith("fleetrun: error: list.txt:2: -H: bad port '99999'")


# --- -x ------------------------------------------------------------------------------------------------------


def test_exclude_is_applied_after_h_and_repeatable(capsys: pytest.CaptureFixture[str], here: Path) -> None:
    assert run(capsys, "hosts", "--names", "-H", "web", "-x", "web03", "-x", "web0[4-5]") == (0, "web01\nweb02\n", "")
    assert run(capsys, "hosts", "--names", "-H", "all", "--exclude", "web&prod,db2") == \
        (0, "web03\nweb04\nweb05\ndb1\nlb\n", "")
    # An exclusion in Ansible's syntax, from a selection in fleetrun's: each is read on its own.
    assert run(capsys, "hosts", "--names", "-H", "web,db", "-x", "all:&prod:!lb") == \
        (0, "web03\nweb04\nweb05\ndb2\n", "")


def test_an_exclusion_list_may_name_hosts_that_are_not_there(capsys: pytest.CaptureFixture[str], here: Path) -> None:
    (here / "down.txt").write_text("web02\ndecommissioned07\n")
    assert run(capsys, "hosts", "--names", "-H", "web", "-x", "^down.txt") == \
        (0, "web01\nweb03\nweb04\nweb05\n", "")
    assert run(capsys, "hosts", "--names", "-H", "web", "-x", "db&web") == \
        (0, "web01\nweb02\nweb03\nweb04\nweb05\n", "")  # nothing in both: nothing to leave out


@pytest.mark.parametrize(("args", "message"), [
    (("-H", "web", "-x", "wbe"), "-x 'wbe': no host or group matches 'wbe' (did you mean web?)"),
    (("-H", "web", "-x", "web"), "-H 'web' -x 'web' leaves no host"),
    (("-H", "web", "-x", "web0[1-3]", "-x", "web0[4-5]"), "-H 'web' -x 'web0[1-3]' -x 'web0[4-5]' leaves no host"),
    (("-H", "web", "-x", "^absent.txt"), "-x '^absent.txt': host list absent.txt: cannot read it"),
])
def test_exclude_mistakes_are_exit_2(capsys: pytest.CaptureFixture[str], here: Path, args: tuple[str, ...],
                                     message: str) -> None:
    code, out, err = run(capsys, "hosts", "--names", *args)
    assert (code, out) == (2, "") and err.startswith(f"fleetrun: error: {message}") and err.count("\n") == 1


def test_exclude_without_an_inventory_picks_among_the_h_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLEETRUN_INVENTORY", raising=False)
    assert run(capsys, "hosts", "--names", "-H", "web[01-06]", "-x", "web0[2-3]", "-x", "web06") == \
        (0, "web01\nweb04\nweb05\n", "")
    assert run(capsys, "hosts", "--names", "-H", "web[01-06]", "-x", "web*!web01") == (0, "web01\n", "")
    code, _, err = run(capsys, "hosts", "--names", "-H", "web[01-06]", "-x", "web7")
    assert code == 2 and "-x 'web7': no host or group matches 'web7'" in err
    code, _, err = run(capsys, "hosts", "--names", "-H", "web[01-06]", "-x", "web[1-2]")
    assert code == 2 and "did you mean web[01-02]? the names are zero-padded" in err


# --- --pick --------------------------------------------------------------------------------------------------


def test_pick_with_a_seed_is_deterministic_and_keeps_the_order() -> None:
    items = [f"n{i}" for i in range(100)]
    first = pick(items, 7, "1")
    assert first == pick(items, 7, "1") and len(first) == 7 and len(set(first)) == 7
    assert first == sorted(first, key=items.index)
    assert pick(items, 7, "2") != first  # another seed, another pick (fixed seeds: no chance involved)
    assert pick(items, 500, None) == items  # asking for more than there are: all of them
    assert len(pick(items, 3, None)) == 3


def test_pick_on_the_command_line(capsys: pytest.CaptureFixture[str], here: Path) -> None:
    once = run(capsys, "hosts", "--names", "-H", "all", "--pick", "3", "--seed", "1")
    again = run(capsys, "hosts", "--names", "-H", "all", "--pick", "3", "--seed", "1")
    assert once == again and once[0] == 0
    picked = once[1].split()
    assert picked == [name for name in HOSTS if name in picked] and len(picked) == 3
    assert picked == [HOSTS[i] for i in sorted(random.Random("1").sample(range(8), 3))]  # clush's way: sample
    excluded = run(capsys, "hosts", "--names", "-H", "all", "-x", "web", "--pick", "2", "--seed", "x")[1].split()
    assert len(excluded) == 2 and not set(excluded) & set(GROUPS["web"])  # picked after -x


@pytest.mark.parametrize(("args", "message"), [
    (("--seed", "1"), "--seed only goes with --pick N"),
    (("--pick", "0"), "invalid value for '--pick': 0 is not at least 1"),
    (("--pick", "many"), "invalid value for '--pick': 'many' is not a whole number"),
])
def test_pick_mistakes_are_exit_2(capsys: pytest.CaptureFixture[str], here: Path, args: tuple[str, ...],
                                  message: str) -> None:
    code, out, err = run(capsys, "hosts", "-H", "all", *args)
    assert (code, out) == (2, "") and err.startswith(f"fleetrun: error: {message}")


# --- the zero-padding hint -----------------------------------------------------------------------------------


def test_zero_padding_hint_both_ways(inventory: Inventory) -> None:
    with pytest.raises(SelectionError, match=r"^no host or group matches 'web\[1-5\]' \(did you mean web\[01-05\]\? "
                                             r"the names are zero-padded\)$"):
        select(inventory, "web[1-5]")
    with pytest.raises(SelectionError, match=r"'db\[01-02\]' \(did you mean db\[1-2\]\? the names are not "
                                             r"zero-padded\)$"):
        select(inventory, "db[01-02]")
    with pytest.raises(SelectionError, match=r"'web3' \(did you mean web03\? the names are zero-padded\)"):
        select(inventory, "web3")
    with pytest.raises(SelectionError, match=r"'web[\[]1-9[\]]' \(did you mean web\[01-05\]\?"):
        select(inventory, "web[1-9]")  # only the hosts that are there


def test_padding_hint_other_widths_and_nothing_to_say() -> None:
    assert padding_hint(["web001", "web002"], ["web01", "web02"]) == \
        "did you mean web[001-002]? the names are padded to another width"
    assert padding_hint(["web1"], ["db1"]) is None
    assert padding_hint(["web01"], ["web01"]) is None  # the same name: not a padding problem
