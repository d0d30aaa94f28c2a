"""Host-name ranges in one place: expand `web[01-03]` into names, and fold names back as ClusterShell does."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable

MAX_RANGE = 100_000  # a typo like web[1:10000000] must fail fast, not eat the memory
# `7`, `1-3` (or `1:3`), and ClusterShell's stepped `1-9/2`; spaces around the numbers are ignored, as there.
# `\d`, not [0-9]: ClusterShell reads any Unicode decimal digit (`٣` is 3), and so must a fold of such names.
_RANGE_ITEM = re.compile(r"\s*(\d+)\s*(?:[:-]\s*(\d+)\s*(?:/\s*(\d+)\s*)?)?\Z")
_GROUPS = re.compile(r"(\D*)(\d*)")
_ASCII_DIGITS = "0123456789"  # only these glue onto a bracket's bounds (ClusterShell strips string.digits)


class _GluedWidths(ValueError):
    """A range that mixes widths only once the digits next to its bracket are part of its bounds."""


# --- expanding ------------------------------------------------------------------------------------------


def expand_ranges(text: str) -> list[str]:
    """`web[01:03,7].lan` -> web01.lan web02.lan web03.lan web7.lan (`-` works as `:`); ValueError if bad.

    `/STEP` takes every STEP-th number, as ClusterShell does: `web[1-9/4]` is web1 web5 web9.

    Several brackets multiply: `rack[1-2]-node[1-2]` is four names. A zero-padded range has bounds of one
    width (`[01-99,100]`, not `[01-100]`), as ClusterShell and Ansible require. Digits written next to a
    bracket are part of each bound, as in ClusterShell: `web1[9-10]` is web[19-110], `web[1-2]0` web10 web20.
    A name without brackets is kept as written (a host's name is not rewritten, even with digits like `١`).
    """
    if "[" not in text and "]" not in text:
        return [text]
    parts = re.split(r"(\[[^\[\]]*\])", text)
    if any("[" in part or "]" in part for part in parts[0::2]):
        raise ValueError(f"unbalanced bracket in {text!r}")
    literals, brackets = parts[0::2], parts[1::2]
    # ClusterShell refuses `[1-2][3-4]` and `[1-2]0[3-4]`: no non-digit shows where one number ends.
    if any(not between.lstrip(_ASCII_DIGITS) for between in literals[1:-1]):
        raise ValueError(f"{text!r} has brackets with nothing or only digits between them, which ClusterShell "
                         f"refuses too; {_as_written(literals, brackets)}")
    choices: list[list[str]] = []
    rest = literals[0]
    for bracket, after in zip(brackets, literals[1:], strict=True):
        before = rest.rstrip(_ASCII_DIGITS)
        lead, trail = rest[len(before):], after[:len(after) - len(after.lstrip(_ASCII_DIGITS))]
        if trail and "/" in bracket:
            raise ValueError(f"{text!r} has digits after a stepped range ({bracket}{trail}), which ClusterShell "
                             f"refuses too; {_as_written(literals, brackets)}")
        try:
            numbers = _expand_bracket(bracket, text, lead, trail)
        except _GluedWidths as error:
            raise ValueError(f"{error}; {_as_written(literals, brackets)}") from None
        choices += [[_normalized(before)], numbers]
        rest = after[len(trail):]
    choices.append([_normalized(rest)])
    if math.prod(len(choice) for choice in choices) > MAX_RANGE:
        raise ValueError(f"{text!r} expands to more than {MAX_RANGE} names")
    return ["".join(combination) for combination in itertools.product(*choices)]


def expand(text: str) -> list[str]:
    """The names a node set stands for: `web[01-03],db02` -> web01 web02 web03 db02 (the inverse of `fold`).

    Items are separated by commas outside brackets; each name comes once, in the order written.
    """
    names: dict[str, None] = {}
    for item in re.split(r",(?![^\[]*\])", text):
        if item.strip():
            names.update(dict.fromkeys(expand_ranges(item.strip())))
    return list(names)


def _width(digits: str) -> int:
    """The zero-padded width ClusterShell gives a number as written, 0 if unpadded: '007' 3, '00' 2, '7' or '٠٣' 0."""
    if len(digits) > 1 and (digits[0] == "0" or (not digits.isascii() and int(digits) == 0)):
        return len(digits)
    return 0


def _padded(digits: str) -> bool:
    return _width(digits) > 0


def _ascii(digits: str) -> str:
    """A run of digits as ClusterShell prints it: '٣' -> '3', '0٣' -> '03' (ASCII digits are kept as they are)."""
    return digits if digits.isascii() else f"{int(digits):0{_width(digits)}d}"


def _normalized(literal: str) -> str:  # ClusterShell prints every number in a pattern in ASCII
    return literal if literal.isascii() else re.sub(r"\d+", lambda match: _ascii(match.group()), literal)


def _expand_bracket(bracket: str, text: str, lead: str = "", trail: str = "") -> list[str]:
    """The numbers in `bracket`, with the digits `lead` before it and `trail` after it glued onto each bound,
    as ClusterShell does: trailing digits make `1-3` read as 10-30/10; leading ones go onto both ends of each
    run of consecutive numbers, so `1[9-10]` is 19-110 (92 numbers) and `0[1-10]` is 01-010 (refused)."""
    numbers: list[str] = []
    for item in bracket[1:-1].split(","):
        match = _RANGE_ITEM.match(item)
        if not match:
            raise ValueError(f"malformed range {bracket!r} in {text!r}: use digits, e.g. [01:12] or [1-3,7]")
        start, end, step = match.group(1) + trail, match.group(2), int(match.group(3) or 1)
        if end is not None:
            end, step = end + trail, step * 10 ** len(trail)
        numbers += _expand_item(start, end, step, bracket, text, glued=bool(trail))
    if not lead:
        return numbers
    joined: list[str] = []
    for first, last, width in _runs(numbers):
        start, end = lead + f"{first:0{width}d}", lead + f"{last:0{width}d}"
        joined += _expand_item(start, end if last != first else None, 1, bracket, text, glued=True)
    return joined


def _expand_item(start: str, end: str | None, step: int, bracket: str, text: str, glued: bool) -> list[str]:
    if step < 1:
        raise ValueError(f"range {bracket!r} in {text!r}: a step must be 1 or more")
    if end is None:
        return [_ascii(start)]
    if int(start) > int(end):
        raise ValueError(f"range {bracket!r} in {text!r} goes backwards: put the smaller bound first")
    if (_padded(start) or _padded(end)) and len(start) != len(end):
        if glued:
            raise _GluedWidths(f"range {bracket!r} in {text!r} reads as {start}-{end}, which mixes widths "
                               f"(digits next to a bracket are part of each bound, as in ClusterShell)")
        raise ValueError(f"range {bracket!r} in {text!r}: {start}-{end} mixes widths; write {_one_width(start, end)}")
    if (int(end) - int(start)) // step >= MAX_RANGE:
        raise ValueError(f"{text!r} expands to more than {MAX_RANGE} names")
    # Bounds of one width: zero-padded ranges keep it ([01:12] gives 01..12), plain ones need none.
    return [f"{n:0{_width(start)}d}" for n in range(int(start), int(end) + 1, step)]


def _as_written(literals: list[str], brackets: list[str]) -> str:
    """What to write instead of `a[1-2][3-4]`: its names with each bracket read alone, folded (a[13-14,23-24])."""
    choices = [[literal] for literal in literals]
    for index, bracket in enumerate(brackets):
        choices.insert(2 * index + 1, _expand_bracket(bracket, bracket))
    if math.prod(len(choice) for choice in choices) <= MAX_RANGE:
        folded = fold("".join(combination) for combination in itertools.product(*choices))
        if len(folded) <= 80:
            return f"write {folded}"
    return "write each whole number in one bracket, e.g. a[13-14,23-24] for a[1-2][3-4]"


def _one_width(start: str, end: str) -> str:
    """What to write instead of a range whose bounds differ in width: the names padded alike, and, for a
    padded start, the names as Ansible and older fleetrun read it (web01 … web99, web100)."""
    width = max(len(start), len(end))
    same = f"{start.zfill(width)}-{end.zfill(width)}"
    if _padded(start) and len(end) > len(start):
        top = 10 ** len(start)
        rest = str(top) if top == int(end) else f"{top}-{end}"
        return f"{start}-{'9' * len(start)},{rest} or {same}"
    return same


# --- folding (ClusterShell's NodeSet.fromlist, string for string) ----------------------------------------


def fold(names: Iterable[str]) -> str:
    """Fold host names into a node set: web01 … web09, web11, db02 -> 'db02,web[01-09,11]'.

    The result is what ClusterShell's `str(NodeSet.fromlist(names))` gives (the tests compare the two):
    names are grouped by what is left when each run of digits is taken out; groups come sorted; a range
    is of one width (`web[01-99,100]`); names with several numbers fold on all of them
    (`rack[1-2]-node[05-06]`). Duplicates count once.
    """
    patterns: dict[str, tuple[tuple[str, ...], set[tuple[str, ...]]]] = {}
    for name in names:
        literals, numbers = _split(name)
        key = "%s".join(literal.replace("%", "%%") for literal in literals)  # ClusterShell's own sort key
        patterns.setdefault(key, (literals, set()))[1].add(numbers)
    items: list[str] = []
    for _, (literals, points) in sorted(patterns.items()):
        if len(literals) == 1:
            items.append(literals[0])
            continue
        for vector in _fold_points(points):
            pieces = [f"[{_rangeset(axis)}]" if len(axis) > 1 else next(iter(axis)) for axis in vector]
            items.append("".join(itertools.chain.from_iterable(zip(literals, [*pieces, ""], strict=True))))
    return ",".join(items)


def _split(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """'rack2-node07' -> (('rack', '-node', ''), ('2', '07')): the text around each run of digits."""
    literals, numbers, text = [], [], ""
    for match in _GROUPS.finditer(name):
        before, digits = match.groups()
        text += before
        if digits:
            literals.append(text)
            numbers.append(_ascii(digits))  # ClusterShell reads a١ as a1: the same name, never a step of 0
            text = ""
    return (*literals, text), tuple(numbers)


def _sort_key(digits: str) -> tuple[int, str]:
    return len(digits), digits  # shorter first, so '9' < '10' and '1' < '01'


def _rangeset(values: Iterable[str]) -> str:
    """{'01', …, '99', '100'} -> '01-99,100': runs of consecutive numbers, a zero-padded run of one width."""
    return ",".join(f"{a:0{w}d}" if a == b else f"{a:0{w}d}-{b:0{w}d}" for a, b, w in _runs(values))


def _runs(values: Iterable[str]) -> list[tuple[int, int, int]]:
    """The runs of `_rangeset` (RangeSet.contiguous): (first, last, zero-padded width or 0), sorted."""
    runs: list[tuple[int, int, int]] = []
    start = last = width = 0
    padded = False
    step: int | None = None
    started = False

    def flush_stepped(stop: int) -> None:
        # A run with gaps (1,3,5) prints as single numbers; ClusterShell's /step form is off by default.
        assert step is not None
        runs.extend((n, n, width if padded else 0) for n in range(start, stop, step))

    for digits in sorted(set(values), key=_sort_key):
        number = int(digits)
        if not started:
            start = last = number
            padded, width, step, started = _padded(digits), len(digits), None, True
            continue
        # A padded run keeps its width; an unpadded run takes no padded number (the set is sorted by length).
        width_breaks = len(digits) != width if padded else _padded(digits)
        step_breaks = not width_breaks and step is not None and step != number - last
        if width_breaks or step_breaks:
            if step is None or step == 1:
                runs.append((start, last, width if padded else 0))
                start, padded, width = number, _padded(digits), len(digits)
            elif width_breaks:
                flush_stepped(last + 1)
                start, padded, width = number, _padded(digits), len(digits)
            else:
                flush_stepped(last - step + 1)
                start = last  # the run goes on from the last number, with the padding it had
            step = number - last if step_breaks else None
            last = number
            continue
        step, last = number - last, number
    if started:
        if step is None or step == 1:
            runs.append((start, last, width if padded else 0))
        else:
            flush_stepped(last + 1)
    return runs


Vector = list[frozenset[str]]  # one set of numbers per digit position: their product is a block of names


def _fold_points(points: set[tuple[str, ...]]) -> list[Vector]:
    """The names of one pattern, as numbers per position, folded into blocks (ClusterShell's RangeSetND)."""
    dims = len(next(iter(points)))
    varying = [axis for axis in range(dims) if len({point[axis] for point in points}) > 1]
    if len(varying) <= 1:  # one number varies: a single block
        return [[frozenset(point[axis] for point in points) for axis in range(dims)]]
    return _merge([[frozenset((value,)) for value in point] for point in points])


def _block_key(vector: Vector) -> tuple[int, tuple[tuple[int, str, str], ...]]:
    """Bigger blocks first, then by each position's size, first and last number (RangeSetND._sort)."""
    axes = [sorted(axis, key=_sort_key) for axis in vector]
    return -math.prod(len(axis) for axis in axes), tuple((-len(axis), axis[0], axis[-1]) for axis in axes)


def _merged(first: Vector, second: Vector) -> Vector | None:
    """One block covering both when they differ at one position only (disjoint, or one inside the other)."""
    merged: Vector = []
    differences = 0
    for one, other in zip(first, second, strict=True):
        if one == other:
            merged.append(one)
            continue
        if one & other and not (one > other or one < other):
            return None  # overlapping: neither a union nor a superset is exact
        differences += 1
        if differences > 1:
            return None
        merged.append(one | other if not one & other else max(one, other, key=len))
    return merged


def _merge(vectors: list[Vector]) -> list[Vector]:
    """RangeSetND._fold_multivariate_merge: passes over the sorted blocks merging neighbours, then full
    pairwise passes until nothing changes. The same steps in the same order, so the same blocks."""
    full = False
    changed = True
    while changed:
        changed = False
        vectors.sort(key=_block_key)
        index1 = 0
        while index1 + 1 < len(vectors):
            item1 = vectors[index1]
            index2 = index1 + 1
            index1 += 1
            while index2 < len(vectors):
                item2 = vectors[index2]
                index2 += 1
                merged = _merged(item1, item2)
                if merged is not None:
                    changed = True
                    item1 = vectors[index1 - 1] = merged
                    index2 -= 1
                    vectors.pop(index2)
                elif not full:
                    break  # the quick pass only looks at the next block
        if not changed and not full:
            changed = full = True
    return vectors

