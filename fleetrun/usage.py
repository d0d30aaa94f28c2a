"""click's usage errors as fleetrun's own one-line messages: what is wrong, then where to look next."""

from __future__ import annotations

import re

import click

_BETWEEN = re.compile(r"is not in the range ([0-9.]*[0-9])<=x<=([0-9.]*[0-9])")  # click's IntRange/FloatRange
_AT_LEAST = re.compile(r"is not in the range x>=([0-9.]*[0-9])")


def usage_message(error: click.UsageError, root: click.Group, argv: list[str]) -> str:
    """click's usage error as one line in fleetrun's style, saying where to look next (exit 2 either way).

    Argument errors end with the usage line (the order of the arguments is the point); the others point at
    --help, which lists every option.
    """
    ctx = error.ctx
    where = ctx.command_path if ctx is not None else _command_path(root, argv)
    if isinstance(error, click.NoSuchOption):
        text = f"no such option {error.option_name!r}"
        if error.option_name == "--config" and ctx is not None and ctx.parent is not None:
            text += f": --config goes before the command (fleetrun --config FILE {ctx.info_name} …)"
        elif error.possibilities:
            text += f" (did you mean {' or '.join(error.possibilities)}?)"
    else:
        text = " ".join(error.format_message().split())
        text = re.sub(r"\.? Did you mean (.+?)\??$", r" (did you mean \1?)", text)
        text = text.replace("is not a valid integer range", "is not a whole number")
        text = text.replace("is not a valid float range", "is not a number")
        text = _BETWEEN.sub(r"is not from \1 to \2", _AT_LEAST.sub(r"is not at least \1", text)).rstrip(".")
        if text[:1].isupper() and not text[1:2].isupper():
            text = text[0].lower() + text[1:]
    arguments = isinstance(error, click.MissingParameter) and isinstance(error.param, click.Argument)
    if ctx is not None and (arguments or text.startswith("got unexpected extra argument")):
        return f"{text}; usage: {where} {' '.join(ctx.command.collect_usage_pieces(ctx))}"
    return f"{text}; see '{where} --help'"


def _command_path(root: click.Group, argv: list[str]) -> str:
    """'fleetrun exec' for ['exec', 'x', '--forks']: for the few click errors that carry no context."""
    command: click.Command = root
    path = ["fleetrun"]
    for word in argv:
        if not isinstance(command, click.Group) or word not in command.commands:
            if isinstance(command, click.Group) and not word.startswith("-"):
                break
            continue
        command = command.commands[word]
        path.append(word)
    return " ".join(path)
