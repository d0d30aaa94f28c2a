"""Host-name ranges: expansion and folding, held against ClusterShell's NodeSet on many generated name sets."""

from __future__ import annotations

import itertools
import random
import re

import pytest
from ClusterShell.NodeSet import NodeSet  # test oracle only (dev extra), never imported by fleetrun

from fleetrun.hostnames import expand, expand_ranges, fold


@pytest.mark.parametrize(
    ("names", "folded"),
    [
        ([f"web{i:02d}" for i in range(1, 101)], "web[01-99,100]"),  # across a power of ten: one width per range
        ([f"web{i:03d}" for i in range(98, 103)], "web[098-102]"),
        (["web9", "web10", "web99", "web100"], "web[9-10,99-100]"),  # unpadded numbers need no width
        ([f"web{i:02d}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11)] + ["db02"], "db02,web[01-09,11]"),
        (["db02"], "db02"),
        ([], ""),
        (["beta", "alpha"], "alpha,beta"),
        (["web01", "web02", "web01"], "web[01-02]"),  # duplicates once
        (["web09", "web10", "web11"], "web[09-11]"),  # 10 and 11 have the width of 09
        (["web8", "web9", "web10"], "web[8-10]"),
        (["web01", "web1"], "web[1,01]"),  # two different names, both in one bracket
        (["web0", "web00"], "web[0,00]"),
        (["lab07", "lab31", "lab08"], "lab[07-08,31]"),
        (["rack1-node05", "rack1-node06", "rack2-node05"], "rack1-node[05-06],rack2-node05"),
        (["rack1-node05", "rack1-node06", "rack2-node05", "rack2-node06"], "rack[1-2]-node[05-06]"),
        (["n1.eu", "n2.eu", "n3.us"], "n[1-2].eu,n3.us"),
        (["web2", "db1", "web1"], "db1,web[1-2]"),  # sorted, as ClusterShell prints node sets
        (["web1", "web3", "web5"], "web[1,3,5]"),  # no /step notation
        (["08", "10", "11", "99", "100"], "[08,10-11,99-100]"),  # 99 is not padded: 99-100 needs no width
    ],
)
def test_fold(names, folded):
    assert fold(names) == folded
    assert fold(names) == str(NodeSet.fromlist(names))


def test_500_hosts_fold_to_one_range_with_holes():
    names = [f"web{i:03d}" for i in range(1, 501) if i not in (7, 300)]
    assert fold(names) == "web[001-006,008-299,301-500]"


def random_names(rng: random.Random) -> list[str]:
    """A name set of the shapes fleets have: padding of several widths, numbers near powers of ten,
    suffixes, several numeric groups, duplicates, names without digits, in any order."""
    names = []
    for _ in range(rng.randint(1, 40)):
        prefix = rng.choice(["web", "db", "n", "rack", "x", "web-", "", "edge.eu-"])
        number = rng.choice([rng.randint(0, 12), rng.randint(0, 120), rng.randint(95, 105), rng.randint(995, 1005)])
        digits = str(number).zfill(rng.choice([0, 0, 1, 2, 3, 4]))
        shape = rng.random()
        if shape < 0.3:
            node = str(rng.randint(0, 12)).zfill(rng.choice([0, 2]))
            names.append(f"{prefix}{rng.randint(1, 3)}-node{node}")
        elif shape < 0.4:
            names.append(f"{prefix}{digits}-{rng.choice('ab')}{rng.randint(1, 3)}.{rng.randint(8, 11)}")
        elif shape < 0.45:
            names.append(rng.choice(["gateway", "db", "web-a"]))
        else:
            names.append(f"{prefix}{digits}{rng.choice(['', '', '.eu', '.us', 'x'])}" or "solo")
    if rng.random() < 0.3:
        names += rng.sample(names, min(len(names), 5))  # duplicates
    rng.shuffle(names)
    return names


def dense_grid(rng: random.Random) -> list[str]:
    """Two or three numeric groups over a block with holes: the multi-dimensional folding."""
    axes = [range(start := rng.randint(0, 3), start + rng.randint(1, 6)) for _ in range(rng.randint(2, 3))]
    widths = [rng.choice([0, 2]) for _ in axes]
    keep = rng.choice([0.5, 0.8, 0.95, 1.0])
    names = ["r" + "-n".join(str(value).zfill(width) for value, width in zip(point, widths, strict=True))
             for point in itertools.product(*axes) if rng.random() < keep]
    rng.shuffle(names)
    return names or ["r1-n1"]


@pytest.mark.parametrize("generator", [random_names, dense_grid])
def test_fold_and_expand_match_clustershell(generator):
    rng = random.Random(generator.__name__)  # deterministic
    for _ in range(600):
        names = generator(rng)
        folded = fold(names)
        assert folded == str(NodeSet.fromlist(names)), names
        assert sorted(expand(folded)) == sorted(set(names)) == sorted(NodeSet(folded))


@pytest.mark.parametrize("text", ["web[01-99,100]", "web[1,01,001]", "rack[1-2]-node[05-06]", "a[1-3],b",
                                  "web[098-101].lan", "n[0-1],n[00-01]", "web-[1-2]-x", "web[1-2]3",
                                  "x[01-03]y[1-2],db", "web[ 1-2, 4]", "web[1 - 3]", "web[1-10/3]",
                                  "web[01-10/2,20-30/10]", "web[0-100/7].lan", "web[1-3/1]", "web[5-6/9]",
                                  # digits next to a bracket, where gluing them on changes nothing
                                  "web0[1-9]", "a0[01-10]", "a1[1-9/2]", "a1[08-10]", "01[1-2]", "a12[3-4]b5",
                                  "a[1-2]0", "a[9-10]0", "a[01-10]5", "a[1,3]0", "a[1-2]05", "a[1-2]0-1[1-2]",
                                  "rack[1-2]-node[1-2]", "a[1-3/2]x", "a1[1-3/2]", "a1[1,01]"])
def test_expand_matches_clustershell(text):
    assert sorted(expand(text)) == sorted(NodeSet(text))


@pytest.mark.parametrize("names", [["a1", "a１"], ["a٣", "a3"], ["a1", "a٣", "a3"], ["a٣", "a3", "a03", "a0٣"],
                                   ["a٠٣", "a٠٠", "a٠", "a1"], ["rack١-node٠٥", "rack2-node05", "rack1-node06"],
                                   ["web١٢", "web12", "web0١٣"], ["n1-x٢", "n1-x2", "n2-x2"]])
def test_fold_reads_unicode_digits_as_clustershell(names):
    """`a１` (a fullwidth 1) is a1 to ClusterShell: the same number, not a step of 0 (it crashed fold)."""
    assert fold(names) == str(NodeSet.fromlist(names))


@pytest.mark.parametrize("text", ["a[٣]", "a[٠٣]", "a[0٣-0٥]", "a[٣-١٢]", "a٣[1-2]", "a[1-2]٣", "a0٣[1-2]",
                                  "a٠1[1-10]", "x[1-2]-n١٢"])
def test_ranges_read_unicode_digits_as_clustershell(text):
    assert sorted(set(expand(text))) == sorted(NodeSet(text))


def test_a_name_without_brackets_is_kept_as_written():
    """A host's own name is never rewritten (nodeset would print a١ as a1; its fold does, see above)."""
    assert expand_ranges("a١") == ["a١"]
    assert expand("a١,a1") == ["a١", "a1"]


@pytest.mark.parametrize("text", ["a1[9-10]", "a9[9-10]", "a1[9,10]", "a1[10,9]", "a1[0-10]", "web1[5-20].lan",
                                  "x2[8-12]y[1-2]", "n1[9-10,99-100]", "r7-1[9-11]"])
def test_digits_before_a_bracket_join_each_bound_as_in_clustershell(text):
    """ClusterShell reads `a1[9-10]` as a[19-110] (92 names), not as a19 and a110."""
    names = expand_ranges(text)
    assert sorted(names) == sorted(NodeSet(text)) and len(names) == len(NodeSet(text))
    assert fold(names) == str(NodeSet(text))


@pytest.mark.parametrize(("text", "message"), [
    ("a0[1-10]", "range '[1-10]' in 'a0[1-10]' reads as 01-010, which mixes widths (digits next to a bracket "
                 "are part of each bound, as in ClusterShell); write a[01-09,010]"),
    ("a0[0-10]", "reads as 00-010, which mixes widths"),
    ("web0[8-12]", "reads as 08-012, which mixes widths"),
    ("a[0-10]5", "reads as 05-105, which mixes widths"),
])
def test_digits_next_to_a_bracket_must_keep_a_padded_range_of_one_width(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        expand_ranges(text)
    with pytest.raises(Exception, match="padding length mismatch"):
        NodeSet(text)


@pytest.mark.parametrize(("text", "refused", "instead"), [
    ("a[1-2][3-4]", "illegal reopening bracket", "has brackets with nothing or only digits between them, which "
                                                 "ClusterShell refuses too; write a[13-14,23-24]"),
    ("a[1-3]0[1-2]", "illegal reopening bracket", "write a[101-102,201-202,301-302]"),
    ("a[1-2]1[1-2]", "illegal reopening bracket", "write a[111-112,211-212]"),
    ("web[1-2][01-02].lan", "illegal reopening bracket", "write web[101-102,201-202].lan"),
    ("[0-999][0-999]", "illegal reopening bracket", "write each whole number in one bracket"),
    ("a[1-3/2]0", "illegal trailing digits after range with steps",
     "has digits after a stepped range ([1-3/2]0), which ClusterShell refuses too; write a[10,30]"),
    ("a[1-3/1]0", "illegal trailing digits after range with steps", "write a[10,20,30]"),
    ("a[1-9/4]00x", "illegal trailing digits after range with steps", "write a[100,500,900]x"),
])
def test_brackets_clustershell_refuses_are_refused_with_what_to_write(text, refused, instead):
    with pytest.raises(ValueError, match=re.escape(instead)):
        expand_ranges(text)
    with pytest.raises(Exception, match=re.escape(refused)):
        NodeSet(text)
    suggested = instead.rsplit("write ", 1)[1]
    if "[" in suggested and " " not in suggested:  # what it says to write is read alike by both
        assert sorted(expand(suggested)) == sorted(NodeSet(suggested))


def test_expand_keeps_the_written_order_once_per_name():
    assert expand("web[03,01-02],db,web01") == ["web03", "web01", "web02", "db"]
    assert expand("") == []


@pytest.mark.parametrize(("text", "message"), [
    ("web[01-100]", "range '[01-100]' in 'web[01-100]': 01-100 mixes widths; write 01-99,100 or 001-100"),
    ("web[01:1000]", "01-1000 mixes widths; write 01-99,100-1000 or 0001-1000"),
    ("web[1-010]", "1-010 mixes widths; write 001-010"),
    ("web[001-10]", "001-10 mixes widths; write 001-010"),
    ("web[0-09]", "0-09 mixes widths; write 00-09"),
])
def test_a_padded_range_has_bounds_of_one_width(text, message):
    """As ClusterShell ("padding length mismatch") and Ansible ("equal-length begin and end formats")."""
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        expand_ranges(text)
    with pytest.raises(Exception, match="padding length mismatch"):
        NodeSet(text.replace(":", "-"))


@pytest.mark.parametrize("text", ["web[8-10]", "web[099-100]", "web[0-10]", "web[00-10]", "web[10-100]"])
def test_ranges_of_one_width_or_unpadded_are_fine(text):
    assert expand_ranges(text) == list(NodeSet(text))


def test_inventory_and_patterns_use_the_same_ranges(tmp_path):
    from fleetrun.errors import InventoryError, SelectionError
    from fleetrun.inventory import load_inventory
    from fleetrun.selection import select

    path = tmp_path / "inventory.yaml"
    path.write_text("hosts:\n  web[01:99]:\n  web100:\n  rack[1:2]-node[05:06]:\n")
    inventory = load_inventory(path)
    names = list(inventory.hosts)
    folded = fold(names)
    assert folded == "rack[1-2]-node[05-06],web[01-99,100]"
    assert [host.name for host in select(inventory, folded)] == names  # a fold is a pattern for its names
    assert [host.name for host in select(inventory, "rack[1-2]-node[05-06]")] == names[-4:]
    with pytest.raises(SelectionError, match="mixes widths; write 01-99,100 or 001-100"):
        select(inventory, "web[01-100]")
    path.write_text("hosts:\n  db:\n  web[01:100]:\n")
    with pytest.raises(InventoryError, match=r"inventory.yaml:3: .*01-100 mixes widths; write 01-99,100 or 001-100"):
        load_inventory(path)
