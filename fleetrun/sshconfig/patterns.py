"""OpenSSH's host patterns: `*` and `?` globs, comma lists with `!` negation (match.c, exactly)."""

from __future__ import annotations

import re
from functools import lru_cache

_SUBPATTERN_MAX = 1023  # match.c copies a subpattern into a 1024-byte buffer; longer ones never match
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(name: str) -> str:
    """A host name lowercased as ssh's lowercase() and match.c do: C's tolower, ASCII letters only.

    str.lower() would also fold 'É' to 'é', a name ssh never looks up (in known_hosts, Match host).
    """
    return name.lower() if name.isascii() else name.translate(_ASCII_LOWER)


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    # Only `*` and `?` are special: brackets, backslashes and the rest match themselves, as in match.c.
    glob = {"*": ".*", "?": "."}
    return re.compile("".join(glob.get(char) or re.escape(char) for char in pattern), re.DOTALL)


def match_pattern(text: str, pattern: str) -> bool:
    """True if `text` matches the glob `pattern` in full (case-sensitive)."""
    return _regex(pattern).fullmatch(text) is not None


def match_pattern_list(text: str, patterns: str, lower: bool) -> int:
    """1 if a positive subpattern of the comma list matches, -1 if a negated one does, else 0."""
    found = 0
    subs = patterns.split(",")
    if len(subs) > 1 and not subs[-1]:
        subs.pop()  # match.c stops at a trailing comma rather than trying an empty subpattern
    for sub in subs:
        negated = sub.startswith("!")
        if negated:
            sub = sub[1:]
        if len(sub) >= _SUBPATTERN_MAX:
            return 0
        if lower:
            sub = ascii_lower(sub)
        if match_pattern(text, sub):
            if negated:
                return -1
            found = 1
    return found


def match_hostname(host: str, patterns: str) -> bool:
    """`Match host`/`originalhost`: the comma list against the lower-cased name."""
    return match_pattern_list(ascii_lower(host), patterns, lower=True) == 1
