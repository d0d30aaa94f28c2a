"""How a fleetrun YAML inventory's hosts are put together once read: group precedence, and one shared object
for the values many hosts have in common (fleetrun.inventory_reader)."""

from __future__ import annotations

import heapq
from typing import Any, TypeVar

from fleetrun.models import OriginPair, Origins
from fleetrun.yamltree import Node

_V = TypeVar("_V")


class Sharing:
    """One object for equal values among the hosts of one inventory (see `_Reader.resolve`)."""

    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}
        self.pairs: dict[OriginPair, OriginPair] = {}
        self.labels: dict[str, tuple[str]] = {}

    def value(self, value: _V) -> _V:
        return self.values.setdefault(value, value)  # type: ignore[no-any-return]

    def origins(self, keys: list[str], sources: dict[str, str]) -> Origins:
        pairs = []
        for key in keys:
            label = sources[key]
            pair = (key, self.labels.setdefault(label, (label,)))
            pairs.append(self.pairs.setdefault(pair, pair))
        return Origins(pairs)


def group_precedence(order: list[str], children: dict[str, list[tuple[str, Node]]]) -> dict[str, int]:
    """Rank groups parents before children, file order among the rest (Kahn's sort, earliest first)."""
    index = {name: i for i, name in enumerate(order)}
    kids = {name: {child for child, _ in children[name]} for name in order}
    waiting = dict.fromkeys(order, 0)
    for name in order:
        for child in kids[name]:
            waiting[child] += 1
    ready = [index[name] for name in order if not waiting[name]]
    heapq.heapify(ready)
    rank: dict[str, int] = {}
    while ready:
        name = order[heapq.heappop(ready)]
        rank[name] = len(rank)
        for child in kids[name]:
            waiting[child] -= 1
            if not waiting[child]:
                heapq.heappush(ready, index[child])
    return rank
