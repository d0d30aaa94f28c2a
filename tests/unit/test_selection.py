"""The host-pattern language: atoms, left-to-right operators, globs, ranges, suggestions and ordering."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetrun.errors import SelectionError, UsageError
from fleetrun.hostnames import MAX_RANGE, expand_ranges
from fleetrun.inventory import Inventory, load_inventory
from fleetrun.models import Host
from fleetrun.selection import select

HOSTS = ["web01", "web02", "web03", "web04", "web05", "web07", "web10",
         "db01", "db02", "dbx", "lb.example.com"]
GROUPS = {
    "web": ("web01", "web02", "web03", "web04", "web05", "web07", "web10"),
    "db": ("db01", "db02", "dbx"),
    "prod": ("web01", "web02", "db01", "lb.example.com"),
    "canary": ("web01",),
    "g1": ("db01",),
    "g2": ("db02",),
    "empty": (),
}


@pytest.fixture
def inventory() -> Inventory:
    return Inventory(
        path=Path("inventory.yaml"),
        hosts={name: Host(name=name, address=name) for name in HOSTS},
        groups=dict(GROUPS),
    )


def names(inventory: Inventory, pattern: str) -> list[str]:
    return [host.name for host in select(inventory, pattern)]


def refused(inventory: Inventory, pattern: str) -> str:
    with pytest.raises(SelectionError) as caught:
        select(inventory, pattern)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- atoms ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "expected"), [
    ("db01", ["db01"]),
    ("lb.example.com", ["lb.example.com"]),
    ("db", ["db01", "db02", "dbx"]),
    ("  db  ", ["db01", "db02", "dbx"]),
    ("all", HOSTS),
    ("*", HOSTS),
    ("canary", ["web01"]),
])
def test_single_atoms(inventory: Inventory, pattern: str, expected: list[str]) -> None:
    assert names(inventory, pattern) == expected


def test_returns_the_inventory_host_records(inventory: Inventory) -> None:
    assert select(inventory, "db01")[0] is inventory.hosts["db01"]


@pytest.mark.parametrize(("pattern", "expected"), [
    ("web0*", ["web01", "web02", "web03", "web04", "web05", "web07"]),
    ("db?", ["dbx"]),
    ("db0?", ["db01", "db02"]),
    ("*.example.com", ["lb.example.com"]),
    ("*1*", ["web01", "web10", "db01"]),
])
def test_globs_match_host_names(inventory: Inventory, pattern: str, expected: list[str]) -> None:
    assert names(inventory, pattern) == expected


@pytest.mark.parametrize(("pattern", "expected"), [
    ("web[01-03]", ["web01", "web02", "web03"]),
    ("web[01:03]", ["web01", "web02", "web03"]),
    ("web[01-03,07]", ["web01", "web02", "web03", "web07"]),
    ("web[07,01-02]", ["web01", "web02", "web07"]),
    ("web[01-10]", ["web01", "web02", "web03", "web04", "web05", "web07", "web10"]),  # missing ones skipped
    ("db[01-02]", ["db01", "db02"]),
    ("g[1-2]", ["db01", "db02"]),  # a range can produce group names too
    ("web[0-1]*", ["web01", "web02", "web03", "web04", "web05", "web07", "web10"]),
])
def test_ranges(inventory: Inventory, pattern: str, expected: list[str]) -> None:
    assert names(inventory, pattern) == expected


# --- operators ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "expected"), [
    ("db01,web01", ["web01", "db01"]),  # inventory order, not pattern order
    ("web01,web01,canary,web[01-01]", ["web01"]),  # no duplicates
    ("web&prod", ["web01", "web02"]),
    ("prod!web", ["db01", "lb.example.com"]),
    ("!web", ["db01", "db02", "dbx", "lb.example.com"]),
    ("!web!db", ["lb.example.com"]),
    ("!web,web01", ["web01", "db01", "db02", "dbx", "lb.example.com"]),
    ("web&prod,db01!web02", ["web01", "db01"]),
    ("web[01-03,07]&prod", ["web01", "web02"]),
    ("web[01-05]!web[02-04]", ["web01", "web05"]),
    (" web & prod , db01 ", ["web01", "web02", "db01"]),
    ("all!canary&prod", ["web02", "db01", "lb.example.com"]),
    ("web[01-03]^web[02-05]", ["web01", "web04", "web05"]),  # ClusterShell's xor (clush -w, nodeset)
    ("prod ^ db", ["web01", "web02", "db02", "dbx", "lb.example.com"]),
    ("web^prod&db", ["db01"]),  # strictly left to right: (web ^ prod) & db
    ("web[01-10/3]", ["web01", "web04", "web07", "web10"]),  # ClusterShell's stepped range
])
def test_operators(inventory: Inventory, pattern: str, expected: list[str]) -> None:
    assert names(inventory, pattern) == expected


def test_operators_are_strictly_left_to_right(inventory: Inventory) -> None:
    # (db , web) & prod -- with `&` binding tighter it would be db , (web & prod) and keep db02 and dbx.
    assert names(inventory, "db,web&prod") == ["web01", "web02", "db01"]
    # (web ! web01) , canary -- with `,` binding tighter web01 would be gone.
    assert names(inventory, "web!web01,canary") == names(inventory, "web")


def test_design_example(inventory: Inventory) -> None:
    # web&prod,db01!web03 = (((web & prod) , db01) ! web03)
    assert names(inventory, "web&prod,db01!web03") == ["web01", "web02", "db01"]


# --- mistakes -------------------------------------------------------------------------------------------


def test_typo_suggests_close_names(inventory: Inventory) -> None:
    message = refused(inventory, "wbe01")
    assert message.startswith("no host or group matches 'wbe01' (did you mean web01, ")
    assert message.endswith("?)")


def test_typo_suggests_groups_too(inventory: Inventory) -> None:
    assert "did you mean canary" in refused(inventory, "web,canari")


def test_no_suggestion_when_nothing_is_close(inventory: Inventory) -> None:
    assert refused(inventory, "zzzzzz") == "no host or group matches 'zzzzzz'"


@pytest.mark.parametrize("pattern", ["web9*", "web[20-30]", "nothing?"])
def test_glob_or_range_matching_nothing(inventory: Inventory, pattern: str) -> None:
    assert refused(inventory, pattern).startswith(f"no host or group matches '{pattern}'")


def test_any_atom_matching_nothing_is_an_error_even_if_others_match(inventory: Inventory) -> None:
    assert "'wbe01'" in refused(inventory, "db,wbe01")


def test_pattern_selecting_nothing(inventory: Inventory) -> None:
    assert refused(inventory, "web&db") == "pattern 'web&db' selects no host"
    assert refused(inventory, "canary!web") == "pattern 'canary!web' selects no host"


def test_empty_group(inventory: Inventory) -> None:
    assert refused(inventory, "empty") == "group 'empty' has no host"


@pytest.mark.parametrize("pattern", ["", "   "])
def test_empty_pattern(inventory: Inventory, pattern: str) -> None:
    assert refused(inventory, pattern).startswith("empty host pattern")


@pytest.mark.parametrize(("pattern", "fragment"), [
    ("web,", "pattern 'web,' ends with ','; add a host or group"),
    ("web&", "ends with '&'"),
    ("web!", "ends with '!'"),
    ("!", "pattern '!' ends with '!'"),
    (",web", "pattern ',web' starts with ','"),
    ("web,,db", "has nothing between ',' and ','"),
    ("web&!db", "has nothing between '&' and '!'"),
    ("!!web", "has nothing between '!' and '!'"),
    ("web, ,db", "has nothing between ',' and ','"),
    ("web^", "ends with '^'"),
])
def test_dangling_operators(inventory: Inventory, pattern: str, fragment: str) -> None:
    assert fragment in refused(inventory, pattern)


def test_a_leading_ampersand_is_ansible_syntax(inventory: Inventory) -> None:
    assert names(inventory, "&web") == names(inventory, "web")  # Ansible's all & web, not a dangling '&'


@pytest.mark.parametrize(("pattern", "fragment"), [
    ("web[01-03", "never closed"),
    ("web01]", "unbalanced"),
    ("web[[01]]", "nested"),
    ("web[a-b]", "malformed range '[a-b]'"),
    ("web[05-01]", "goes backwards"),
    ("web[]", "malformed range"),
    ("web[0-99999999]", "more than"),
    ("web[1-9/0]", "a step must be 1 or more"),
    ("web[1/2]", "malformed range"),  # a step needs a range, as in ClusterShell
])
def test_bad_brackets_and_ranges(inventory: Inventory, pattern: str, fragment: str) -> None:
    assert fragment in refused(inventory, pattern)


def test_selection_error_is_a_usage_error() -> None:
    assert issubclass(SelectionError, UsageError)


# --- with a real inventory ------------------------------------------------------------------------------


def test_with_a_loaded_thousand_host_inventory(tmp_path: Path) -> None:
    lines = ["hosts:"] + [f"  n{i:04d}: {{groups: [g{i % 3}]}}" for i in range(1000)]
    lines += ["groups:", "  special: ['n[0100-0199]']"]
    path = tmp_path / "inventory.yaml"
    path.write_text("\n".join(lines) + "\n")
    inventory = load_inventory(path)
    assert len(select(inventory, "all")) == 1000
    expected = [f"n{i:04d}" for i in range(100, 200) if i % 3 == 0 and not 150 <= i < 160] + ["n0999"]
    assert names(inventory, "g0&special!n015*,n0999") == expected
    assert names(inventory, "n[0000-0002],g1&n000?") == ["n0000", "n0001", "n0002", "n0004", "n0007"]


# --- expand_ranges --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("web", ["web"]),
    ("web[1:3]", ["web1", "web2", "web3"]),
    ("web[01:03].lan", ["web01.lan", "web02.lan", "web03.lan"]),
    ("web[8-11]", ["web8", "web9", "web10", "web11"]),
    ("web[098-101]", ["web098", "web099", "web100", "web101"]),
    ("web[1,3, 5-6]", ["web1", "web3", "web5", "web6"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("web[7]", ["web7"]),
    ("web[3:3]", ["web3"]),
])
def test_expand_ranges(text: str, expected: list[str]) -> None:
    assert expand_ranges(text) == expected


@pytest.mark.parametrize("text", ["web[3:1]", "web[a:b]", "web[", "web]", "web[]", "web[1:2", "web[-1:2]",
                                  "web[1::2]", f"web[0:{MAX_RANGE}]", "[0-999][0-999]"])
def test_expand_ranges_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        expand_ranges(text)
