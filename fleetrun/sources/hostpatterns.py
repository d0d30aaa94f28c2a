"""Ansible's host names in inventories: `name[:port]` splitting and `[1:9]`/`[01:10:2]`/`[a:f]` range expansion."""

from __future__ import annotations

import functools
import re
import string

MAX_HOSTS = 100_000  # one line must not be able to make millions of hosts by a typo

# A range as Ansible's address parser accepts it inside a name: numeric, or one letter to one letter, optional step.
_RANGE = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_NUM_RANGE = r"\[[0-9]+:[0-9]+(?::[0-9]+)?\]"
_HEX_RANGE = r"\[[0-9a-f]+:[0-9a-f]+(?::[0-9]+)?\]"
_LABEL = rf"(?:\w|{_RANGE})(?:[\w-]|{_RANGE})*(?<![_-])"
_HOSTNAME = rf"{_LABEL}(?:\.{_LABEL})*\Z"
_V4_PART = rf"(?:[01]?[0-9]{{1,2}}|2[0-4][0-9]|25[0-5]|{_NUM_RANGE})"
_IPV4 = rf"(?:{_V4_PART}\.){{3}}{_V4_PART}\Z"
_H = rf"(?:[0-9a-f]{{1,4}}|{_HEX_RANGE})"
_V4_TAIL = rf"(?:{_H}\.){{3}}{_H}"
_IPV6 = (
    "(?:" + "|".join([
        rf"(?:{_H}:){{7}}{_H}",
        rf"(?:{_H}:){{1,6}}:",
        *(rf"(?:{_H}:){{{left}}}(?::{_H}){{1,{7 - left}}}" for left in range(1, 7)),
        rf":(?::{_H}){{1,6}}",
        rf"{_H}?::",
        rf"(?:0:){{6}}{_V4_TAIL}",
        rf"::(?:ffff:)?{_V4_TAIL}",
        rf"(?:0:){{5}}ffff:{_V4_TAIL}",
    ]) + r")\Z"
)
_BRACKETED_PORT = re.compile(r"\[(.+)\]:([0-9]+)\Z")
_NAME_PORT = re.compile(r"((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)\Z")


def is_address(text: str) -> bool:
    """Whether `text` is a host name, an IPv4 or an IPv6 address as Ansible's address parser reads them."""
    ipv4, ipv6, hostname = _compiled()
    return bool(ipv4.match(text) or ipv6.match(text) or hostname.match(text))


@functools.cache
def _compiled() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    # Compiled on first use: the IPv6 one alone costs milliseconds, and most host names have no ':' to split.
    return re.compile(_IPV4, re.I), re.compile(_IPV6, re.I), re.compile(_HOSTNAME, re.I)


def split_port(text: str) -> tuple[str, int | None]:
    """`web[1:3]:2222` -> ("web[1:3]", 2222); anything Ansible would not read as host[:port] stays whole."""
    if ":" not in text:
        return text, None  # what Ansible's parser gives too, valid name or not
    address, port = text, None
    for pattern in (_BRACKETED_PORT, _NAME_PORT):
        match = pattern.match(address)
        if match:
            address, port = match.group(1), int(match.group(2))
    if not is_address(address):
        return text, None
    return address, port


def expand(text: str) -> list[str]:
    """Every name a `[beg:end(:step)]` range makes, Ansible's way; ValueError with its reason if malformed.

    A start with a leading zero sets the width and then the end must have the same width (`[01:10]`, not
    `[01:9]`); an empty start is 0; letters go from one letter to another; several ranges multiply out.
    """
    if "[" not in text:
        return [text]
    names: list[str] = []
    pending = [text]
    while pending:
        current = pending.pop()
        if "[" not in current:
            names.append(current)
            if len(names) > MAX_HOSTS:
                raise ValueError(f"{text!r} makes more than {MAX_HOSTS} hosts")
            continue
        head, _, rest = current.partition("[")
        inner, closed, tail = rest.partition("]")
        if not closed:
            raise ValueError(f"the range in {text!r} has no closing ']'")
        pending.extend(reversed([head + item + tail for item in _sequence(inner, text)]))
    return names


def _sequence(inner: str, text: str) -> list[str]:
    bounds = inner.split(":")
    if len(bounds) not in (2, 3):
        raise ValueError(f"range [{inner}] in {text!r} must be begin:end or begin:end:step")
    begin, end = bounds[0] or "0", bounds[1]
    if not end:
        raise ValueError(f"range [{inner}] in {text!r} has no end value")
    width = len(begin) if begin[0] == "0" and len(begin) > 1 else 0
    if width and width != len(end):
        raise ValueError(f"range [{inner}] in {text!r}: a zero-padded begin and the end must have the same "
                         f"number of digits (write [{begin}:{end.zfill(width)}])")
    try:
        step = int(bounds[2]) if len(bounds) == 3 else 1
    except ValueError:
        raise ValueError(f"range [{inner}] in {text!r}: the step must be a whole number") from None
    if step <= 0:
        raise ValueError(f"range [{inner}] in {text!r}: the step must be 1 or more")
    letters = string.ascii_letters
    if begin in letters and end in letters and len(begin) == len(end) == 1:
        first, last = letters.index(begin), letters.index(end)
        if first > last:
            raise ValueError(f"range [{inner}] in {text!r} must have begin <= end")
        return list(letters[first:last + 1:step])
    try:
        numbers = range(int(begin), int(end) + 1, step)
    except ValueError:
        raise ValueError(f"range [{inner}] in {text!r} must be numbers (e.g. [01:10]) or letters (e.g. [a:f])") \
            from None
    if not numbers:  # Ansible silently makes no host here; a range that names nothing is a typo
        raise ValueError(f"range [{inner}] in {text!r} makes no host: put the smaller bound first")
    if len(numbers) > MAX_HOSTS:
        raise ValueError(f"{text!r} makes more than {MAX_HOSTS} hosts")
    return [str(n).zfill(width) for n in numbers]
