"""Shell completion: click's own for commands and options, plus the inventory's host and group names for -H and -x.

Completing never connects and never imports paramiko; it reads the inventory the command would read (-i as typed,
else the defaults file, $FLEETRUN_INVENTORY or the usual places). Any problem completes nothing: a TAB must never
print an error or a traceback into the middle of a command line.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

from fleetrun.errors import UsageError

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_FLEETRUN_COMPLETE"
_SEPARATORS = ",&!:"  # after one of these a new atom starts (':' for Ansible's syntax)
_BASH_COMPLETION = ("/usr/share/bash-completion/bash_completion", "/etc/bash_completion",
                    "/usr/local/etc/profile.d/bash_completion.sh", "/opt/homebrew/etc/profile.d/bash_completion.sh")


def complete_pattern(ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    """Completions for a host pattern: the atom after the last operator, as a group, a host or a host list."""
    head, atom = split_last_atom(incomplete)
    if atom[:1] in ("^", "@"):
        return [CompletionItem(head + atom[0] + path) for path in _paths(atom[1:])]
    if atom[:1] == "~":
        return []  # a regular expression: nothing sensible to offer
    try:
        names = inventory_names(ctx)
    except Exception:  # whatever went wrong, the shell gets no completions rather than noise
        return []
    return [CompletionItem(head + name) for name in names if name.startswith(atom)]


def split_last_atom(text: str) -> tuple[str, str]:
    """'web&pr' -> ('web&', 'pr'): everything up to the last operator outside brackets, and the atom after it."""
    depth, cut = 0, 0
    for index, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth <= 0 and char in _SEPARATORS:
            cut = index + 1
    return text[:cut], text[cut:]


def inventory_names(ctx: click.Context) -> list[str]:
    """'all', then the group names, then the host names of the inventory this command line would read."""
    from fleetrun.defaults import load_defaults
    from fleetrun.inventory import find_inventory
    from fleetrun.sources import load_sources

    specs = list(ctx.params.get("inventory") or ())
    if not specs:
        root = ctx.find_root()
        configured = load_defaults(root.params.get("config")).values.get("inventory")
        if configured and not os.environ.get("FLEETRUN_INVENTORY"):
            specs = list(configured)
        else:
            specs = [str(find_inventory(None))]
    # Never --ansible-inventory here: running Ansible takes seconds, too slow for a TAB.
    inventory = load_sources(specs)
    return list(dict.fromkeys(["all", *inventory.groups, *inventory.hosts]))


def complete_files(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Let the shell complete file names (for -i, --ssh-config, --config)."""
    return [CompletionItem(incomplete, type="file")]


def _paths(prefix: str) -> list[str]:
    """Files and directories whose path starts with `prefix` (directories end in /)."""
    directory, _, start = prefix.rpartition("/")
    base = Path(os.path.expanduser(directory or "."))
    if directory == "" and prefix.startswith("/"):
        base = Path("/")
    try:
        entries = sorted(os.scandir(base), key=lambda entry: entry.name)
    except OSError:
        return []
    shown = f"{directory}/" if directory or prefix.startswith("/") else ""
    return [f"{shown}{entry.name}{'/' if entry.is_dir() else ''}" for entry in entries
            if entry.name.startswith(start) and (start or not entry.name.startswith("."))]


# --- installing ---------------------------------------------------------------------------------------------


def script(command: click.Command, shell: str) -> str:
    """The completion script click generates for `shell`: it calls fleetrun itself on every TAB."""
    complete = get_completion_class(shell)
    if complete is None:
        raise UsageError(f"no completion for {shell!r}; pick one of {', '.join(SHELLS)}")
    source: str = complete(command, {}, "fleetrun", COMPLETE_VAR).source()
    return source


def target(shell: str) -> Path:
    """Where each shell looks for a user's completion files (loaded on demand, no rc file edited)."""
    home = Path.home()
    data = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    if shell == "bash":
        user_dir = os.environ.get("BASH_COMPLETION_USER_DIR")
        return (Path(user_dir) if user_dir else data / "bash-completion") / "completions" / "fleetrun"
    if shell == "zsh":
        return data / "zsh" / "site-functions" / "_fleetrun"
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return config / "fish" / "completions" / "fleetrun.fish"


def install(command: click.Command, shell: str) -> str:
    """Write the completion script where `shell` finds it; returns what to tell the user (what, if anything,
    they still have to add to their shell's startup file)."""
    path = target(shell)
    text = script(command, shell)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".fleetrun-completion-")
        with os.fdopen(handle, "w") as file:
            file.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as error:
        raise UsageError(f"cannot write the {shell} completion to {path}: {error.strerror}") from None
    return f"wrote {path}\n{_next_step(shell, path)}\n"


def _next_step(shell: str, path: Path) -> str:
    if shell == "bash":
        if any(os.path.exists(loader) for loader in _BASH_COMPLETION):
            return "bash-completion loads it in new shells"
        return f"bash-completion is not installed: add this line to ~/.bashrc:\n  source {path}"
    if shell == "zsh":
        return (f"new shells load it if {path.parent} is on your fpath; if not, add this line to ~/.zshrc "
                f"before compinit:\n  fpath=({path.parent} $fpath)")
    return "fish loads it in new shells"


def show_or_install(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """The callback of --show-completion / --install-completion (eager: nothing else runs)."""
    if value is None or ctx.resilient_parsing:
        return
    command = ctx.find_root().command
    if param.name == "show_completion":
        click.echo(script(command, value), nl=False)
    else:
        click.echo(install(command, value), nl=False, err=True)
    ctx.exit(0)
