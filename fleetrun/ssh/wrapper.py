"""The remote command line: the user's command as the session's main process, with a watcher that kills it
once the connection is gone; sudo, exported variables and a script sent ahead on stdin (pure text; no paramiko).

What runs on the host, for `wrap_command("make test")`:

    exec sh -c '<wrapper>' fleetrun 'make test'

- The leading `exec` makes the login shell (bash, zsh, dash, fish, tcsh all have it) replace itself, so the
  wrapper's `sh` is the process sshd started, and its parent is the sshd session process.
- The wrapper starts the **watcher** in the background, then `exec "${SHELL:-/bin/sh}" -c "$1"`, with the
  shell's base name as argv[0] as sshd gives it (`bash`, when PATH finds the same file): the command
  runs in the login shell exactly as `ssh host 'make test'` runs it, with the same pid, so sshd reports its
  true wait status (`exit 137` is exit status 137; `kill -KILL $$` is exit-signal KILL), and, since sshd made
  the session a process-group leader (setsid() in do_exec_no_pty), the command's process group is that pid.
- The watcher (`sh -c '<watcher>' fleetrun-watcher LIFELINE PID`, started through a subshell that exits at once
  so it is no child of the command, and with its own argv, so `pgrep -f` run by the
  command never matches the command's text in it) holds nothing of the channel: stdin, stdout and stderr
  are /dev/null and it ignores TERM and HUP (a terminal's hangup, under --become-pty). About once a second
  it checks that both the lifeline and the command are alive (`/proc/PID/stat` and not a zombie where /proc
  exists, else `kill -0`). When the command ends first, it just exits: daemons the command started with
  `nohup … &` survive, as with plain ssh. When the lifeline is gone but the command is not (the connection
  died, fleetrun closed it on --timeout, Ctrl-C or --deadline, or fleetrun was SIGKILLed), it sends TERM to
  the command's process group and to its pid, and KILL 2 s later. (The protocol's own `signal` request is no
  substitute: OpenSSH refuses it for root sessions, "session signalling requires privilege separation",
  older servers lack it, and it cannot help once the connection is gone.)

`lifeline` is an sh expression the wrapper expands once at start: the pid whose death means "fleetrun is
gone". The default `$PPID` is the sshd session process. Under sudo (`become`), the line is

    exec sh -c 'exec sudo -S -p PROMPT -u USER -H -- sh -c '"'"'<wrapper>'"'"' fleetrun "$1" "$PPID"' fleetrun CMD

so sudo sits outside the wrapper: the wrapper (now USER, often root) owns the watcher and can kill what it
started, and its lifeline is the sshd pid the outer `sh` passed as `$2`. The wrapper is then not a
process-group leader (sudo runs it in its own group), so `new_group` starts the command through `setsid`
(util-linux), which, the wrapper not being a group leader, does not fork: the pid sudo waits for is still
the command's. The wrapper checks that at run time (`/proc/$$/stat`, else `ps`): where it does lead a group
(sudo's `use_pty` on a terminal), it execs directly, since setsid would fork and its parent exit at once.

The watcher's ~1 s polling is the price of not owning a lifeline fd: the command is free to use stdin
(issue 14) and the wrapper works unchanged under sudo. It costs one `sleep 1` per second per running command.

Per-host variables are `export`ed by the wrapper, after sudo (whose env_reset would drop them) and before the
command: sshd's AcceptEnv refuses most SSH `env` requests. A `--script` arrives as the first `size` bytes of
stdin: the wrapper, as the user the command runs as, writes them to a `mktemp` file, opens it as fd 3,
deletes it, and the interpreter reads `/dev/fd/3`. So nothing is left on the host whatever happens (timeout,
kill, lost connection), sudo to another user can read it (it is that user's own file), and a `noexec` /tmp
does not matter (the interpreter reads the file; nothing executes it).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetrun.become import BecomeRequest

GRACE = 2  # seconds between TERM and KILL, for a command that cleans up on TERM
SCRIPT_FD = 3
SCRIPT_FAILED = 125  # the wrapper's exit status when the script could not be written on the host

# $1: the lifeline pid, $2: the command's pid. `a PID` says whether PID is alive.
_WATCHER = (
    'trap "" TERM HUP; '
    # With /proc, a zombie (exited, not yet reaped) counts as gone: `read` and `[` are builtins, no fork.
    'if [ -d /proc/$$ ]; then a() { read -r s 2>/dev/null <"/proc/$1/stat" || return 1; s=${s##*) }; '
    '[ "${s%% *}" != Z ]; }; else a() { kill -0 "$1" 2>/dev/null; }; fi; '
    # `|| exit`: without a working `sleep` (a PATH without it) give up rather than spin.
    'while a "$1" && a "$2"; do sleep 1 || exit 1; done; '
    'a "$2" || exit 0; '
    # The group and the pid: the command may have left its group, or (under sudo) never led one.
    'kill -TERM -"$2" 2>/dev/null; kill -TERM "$2" 2>/dev/null; '
    f"sleep {GRACE}; "
    'kill -KILL "$2" 2>/dev/null; kill -KILL -"$2" 2>/dev/null'
)

# sshd runs the login shell with its base name as argv[0] (`bash`: $0, and what bash's own messages start with).
# sh's exec has no -a, but passes a name it finds through PATH as argv[0]: so the name, where PATH finds that
# very shell first (builtins only, no fork), else the path. IFS, unset, is sh's default again.
_ARGV0 = ('S=${SHELL:-/bin/sh}; N=$S; IFS=:; set -f; for d in $PATH; do d=${d:-.}/${S##*/}; '
          'if [ -f "$d" ] && [ -x "$d" ]; then [ "$d" -ef "$S" ] && N=${S##*/}; break; fi; done; set +f; unset IFS; ')
_SHELL = '"$N" -c "$1"'
# The third field after the command name in /proc/PID/stat is the process group (builtins only, no fork).
_NEW_GROUP = (
    'g=; if [ -r /proc/$$/stat ]; then read -r g </proc/$$/stat; g=${g##*) }; g=${g#* }; g=${g#* }; '
    'g=${g%% *}; else g=$(ps -o pgid= -p $$ 2>/dev/null); fi; '
    f'if [ $g -ne $$ ] 2>/dev/null && command -v setsid >/dev/null 2>&1; then exec setsid {_SHELL}; fi; '
)


@dataclass(frozen=True)
class ScriptLoad:
    """A script that arrives first on stdin: `size` bytes; `exact` when the operator's stdin follows it."""

    size: int
    exact: bool


def _load_script(script: ScriptLoad) -> str:
    fail = f"{{ printf 'fleetrun: could not write the script to a temporary file on the host\\n' >&2; " \
           f"exit {SCRIPT_FAILED}; }}"
    if script.exact:
        # GNU head -c reads no byte past the count, so the operator's stdin stays for the script; others
        # (busybox) may read ahead through stdio, so they get dd one byte at a time.
        read = (f'if head --version >/dev/null 2>&1; then head -c {script.size}; '
                f'else dd ibs=1 count={script.size} 2>/dev/null; fi')
    else:
        read = "cat"
    return (f'F=$(mktemp) || {fail}; {{ {read}; }} >"$F" && n=$(wc -c <"$F") && [ $n -eq {script.size} ] && '
            f'exec {SCRIPT_FD}<"$F" || {{ rm -f "$F"; {fail}; }}; rm -f "$F"; ')


def _exports(env: Mapping[str, str]) -> str:
    if not env:
        return ""
    return "export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items()) + "; "


def wrapper_script(
    *,
    lifeline: str = "$PPID",
    new_group: bool = False,
    env: Mapping[str, str] | None = None,
    marker: str | None = None,
    script: ScriptLoad | None = None,
    stdin_null: bool = False,
) -> str:
    """The wrapper's sh text: `sh -c WRAPPER fleetrun COMMAND` runs COMMAND under the watcher.

    `env`: variables to export (names already checked). `marker`: an sh statement run just before the command
    (become's start marker). `script`: load a script from stdin first, onto fd 3. `stdin_null`: the command's
    stdin is /dev/null (under --become-pty, where stdin is the terminal).
    """
    start = _ARGV0 + (_NEW_GROUP if new_group else "") + f"exec {_SHELL}"
    return (
        f"L={lifeline}; "
        + _exports(env or {})
        # Through a subshell that exits at once: the watcher is no child of the command, which (as under ssh)
        # has only the children it starts, so a wait for any child (`os.wait()`) does not wait for the watcher.
        + f'( {{ exec sh -c {shlex.quote(_WATCHER)} fleetrun-watcher "$L" $$; }} </dev/null >/dev/null 2>&1 & ); '
        + (f"{marker}; " if marker else "")
        + (_load_script(script) if script else "")
        + ("exec </dev/null; " if stdin_null else "")
        + start
    )


def wrap_command(
    command: str,
    *,
    lifeline: str = "$PPID",
    new_group: bool = False,
    env: Mapping[str, str] | None = None,
    become: BecomeRequest | None = None,
    script: ScriptLoad | None = None,
) -> str:
    """The command line sent to the server: the user's command as the main process, under the watcher, and
    under sudo when `become` says so."""
    if become is None:
        script_text = wrapper_script(lifeline=lifeline, new_group=new_group, env=env, script=script)
        return f"exec sh -c {shlex.quote(script_text)} fleetrun {shlex.quote(command)}"
    from fleetrun.become import marker_printf, sudo_words

    inner = wrapper_script(lifeline="$2", new_group=True, env=env, marker=marker_printf(become), script=script,
                           stdin_null=become.pty)
    outer = f'exec {shlex.join(sudo_words(become))} sh -c {shlex.quote(inner)} fleetrun "$1" "$PPID"'
    return f"exec sh -c {shlex.quote(outer)} fleetrun {shlex.quote(command)}"


def script_command(interpreter: list[str], args: list[str]) -> str:
    """The command that runs a loaded script: its interpreter on /dev/fd/3, with the arguments quoted."""
    return "exec " + shlex.join([*interpreter, f"/dev/fd/{SCRIPT_FD}", *args])
