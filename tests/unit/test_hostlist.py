"""Host-list folding: compact ranges for many names, and back."""

from __future__ import annotations

import random

import pytest

from fleetrun.output.hostlist import expand, fold


@pytest.mark.parametrize(
    ("names", "folded"),
    [
        ([f"web{i:02d}" for i in (1, 2, 3, 4, 5, 6, 7, 8, 9, 11)] + ["db02"], "web[01-09,11],db02"),
        (["db02"], "db02"),
        ([], ""),
        (["alpha", "beta"], "alpha,beta"),
        (["web01", "web02", "web01"], "web[01-02]"),  # duplicates once
        (["web09", "web10", "web11"], "web[09-11]"),  # 10 and 11 need no padding to join 09
        (["web8", "web9", "web10"], "web[8-10]"),  # unpadded numbers of any length
        (["web01", "web1"], "web01,web1"),  # different names: never folded into one
        (["lab07", "lab31", "lab08"], "lab[07-08,31]"),  # ascending inside a fold
        (["rack1-node05", "rack1-node06", "rack2-node05"], "rack1-node[05-06],rack2-node05"),
        (["n1.eu", "n2.eu", "n3.us"], "n[1-2].eu,n3.us"),
        (["web2", "db1", "web1"], "web[1-2],db1"),  # folds in the order their first name came
    ],
)
def test_fold(names, folded):
    assert fold(names) == folded


def test_500_hosts_fold_to_one_range_with_holes():
    names = [f"web{i:03d}" for i in range(1, 501) if i not in (7, 300)]
    assert fold(names) == "web[001-006,008-299,301-500]"


def test_expand_inverts_fold():
    rng = random.Random(4)  # deterministic
    for _ in range(200):
        pool = [f"web{i:02d}" for i in range(1, 40)] + [f"db{i}" for i in range(1, 15)] + ["gw", "n1.eu", "n010"]
        names = rng.sample(pool, rng.randint(1, len(pool)))
        assert sorted(expand(fold(names))) == sorted(names)
