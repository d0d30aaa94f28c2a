"""Split ssh_config lines into keyword and arguments exactly as readconf.c and misc.c do."""

from __future__ import annotations

WHITESPACE = " \t\r\n"


class LexError(ValueError):
    """A line that readconf.c would refuse to split (unbalanced quotes)."""


def strdelim(text: str | None, split_equals: bool = True) -> tuple[str | None, str | None]:
    """misc.c strdelim(): the next token and the rest (None once nothing is left).

    Splits on whitespace, or on one `=` (with whitespace around it); a token starting with `"` runs to the
    next `"`. Returns (None, None) for an unterminated quote, as the C code returns NULL.
    """
    if text is None:
        return None, None
    delimiters = WHITESPACE + '"' + ("=" if split_equals else "")
    index = next((i for i, char in enumerate(text) if char in delimiters), -1)
    if index == -1:
        return text, None
    if text[index] == '"':
        unquoted = text[:index] + text[index + 1 :]
        end = unquoted.find('"', index)
        if end == -1:
            return None, None
        return unquoted[:end], unquoted[end + 1 :].lstrip(WHITESPACE)
    equals_seen = split_equals and text[index] == "="
    token, rest = text[:index], text[index + 1 :].lstrip(WHITESPACE)
    if split_equals and rest.startswith("=") and not equals_seen:
        rest = rest[1:].lstrip(WHITESPACE)
    return token, rest


def argv_split(text: str) -> list[str]:
    """misc.c argv_split() with terminate_on_comment: words, '…' and "…" quoting, \\ escapes, # comments."""
    words: list[str] = []
    index, length = 0, len(text)
    while index < length:
        if text[index] in " \t":
            index += 1
            continue
        if text[index] == "#":
            break
        quote = ""
        word: list[str] = []
        while index < length:
            char = text[index]
            if char == "\\" and index + 1 < length and (
                text[index + 1] in "'\"\\" or (not quote and text[index + 1] == " ")
            ):
                index += 1
                word.append(text[index])
            elif not quote and char in " \t":
                break
            elif not quote and char in "\"'":
                quote = char
            elif quote and char == quote:
                quote = ""
            else:
                word.append(char)
            index += 1
        if quote:
            raise LexError("invalid quotes (a quote is never closed)")
        words.append("".join(word))
    return words


def split_line(line: str) -> tuple[str, str] | None:
    """(keyword as written, the rest of the line) or None for a blank or comment line.

    The rest is "" when the keyword has no argument (readconf.c refuses that line).
    """
    line = line.rstrip(WHITESPACE + "\f")
    keyword, rest = strdelim(line)
    if keyword == "":
        keyword, rest = strdelim(rest)
    if not keyword or keyword.startswith(("\n", "#")):
        return None
    return keyword, (rest.lstrip(WHITESPACE) if rest is not None else "")
