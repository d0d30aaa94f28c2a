"""Compact host lists: 'web[01-09,11],db02' for many names, and back; pure functions."""

from __future__ import annotations

import re
from collections.abc import Iterable

# The last run of digits is the index: 'rack2-node07' folds on 07, so racks stay apart.
_NUMBERED = re.compile(r"^(.*?)(\d+)(\D*)$")
_ITEM = re.compile(r"^([^\[\]]*)\[([^\[\]]+)\]([^\[\]]*)$")


def _width(digits: str) -> int:
    """Zero-padded numbers keep their width; 0 means unpadded."""
    return len(digits) if len(digits) > 1 and digits.startswith("0") else 0


def _ranges(numbers: list[int], width: int) -> str:
    """[1, 2, 3, 5] → '1-3,5', each number zero-padded to `width`."""
    parts: list[str] = []
    start = previous = numbers[0]
    for number in [*numbers[1:], None]:
        if number is not None and number == previous + 1:
            previous = number
            continue
        first, last = str(start).zfill(width), str(previous).zfill(width)
        parts.append(first if start == previous else f"{first}-{last}")
        if number is not None:
            start = previous = number
    return ",".join(parts)


def fold(names: Iterable[str]) -> str:
    """Fold host names into ranges: web01…web09, web11, db02 → 'web[01-09,11],db02'.

    Names sharing a prefix, suffix and padding fold together; the folds come in the order their first name
    came (pass names in inventory order), numbers inside a fold ascend. Duplicates are ignored.
    """
    unique = list(dict.fromkeys(names))
    parsed: list[tuple[str, str, str] | None] = []
    padded: dict[tuple[str, str], set[int]] = {}
    for name in unique:
        match = _NUMBERED.match(name)
        if match is None:
            parsed.append(None)
            continue
        prefix, digits, suffix = match.groups()
        parsed.append((prefix, digits, suffix))
        if _width(digits):
            padded.setdefault((prefix, suffix), set()).add(_width(digits))

    # key → sorted numbers; a key is either a literal name (no digits) or (prefix, suffix, width).
    folds: dict[tuple[str, str, int] | str, set[int]] = {}
    for name, parts in zip(unique, parsed, strict=True):
        if parts is None:
            folds.setdefault(name, set())
            continue
        prefix, digits, suffix = parts
        width = _width(digits)
        if not width:
            # An unpadded number (10, 100) prints the same at any padding up to its length: join the
            # widest padded fold it fits, so web01…web09 and web10 become one range.
            fitting = [w for w in padded.get((prefix, suffix), ()) if w <= len(digits)]
            width = max(fitting, default=0)
        folds.setdefault((prefix, suffix, width), set()).add(int(digits))

    items: list[str] = []
    for key, numbers in folds.items():
        if isinstance(key, str):
            items.append(key)
            continue
        prefix, suffix, width = key
        ordered = sorted(numbers)
        if len(ordered) == 1:
            items.append(f"{prefix}{str(ordered[0]).zfill(width)}{suffix}")
        else:
            items.append(f"{prefix}[{_ranges(ordered, width)}]{suffix}")
    return ",".join(items)


def expand(text: str) -> list[str]:
    """The names a fold stands for: 'web[01-03],db02' → web01, web02, web03, db02 (inverse of `fold`)."""
    names: list[str] = []
    for item in re.split(r",(?![^\[]*\])", text):  # commas outside brackets separate items
        if not item:
            continue
        match = _ITEM.match(item)
        if match is None:
            names.append(item)
            continue
        prefix, inside, suffix = match.groups()
        for part in inside.split(","):
            first, _, last = part.partition("-")
            width = len(first) if _width(first) else 0
            for number in range(int(first), int(last or first) + 1):
                names.append(f"{prefix}{str(number).zfill(width)}{suffix}")
    return names
