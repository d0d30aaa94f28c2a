"""The remote command line: the user's command as the session's main process, with a watcher that kills it
once the connection is gone (pure text; no paramiko).

What runs on the host, for `wrap_command("make test")`:

    exec sh -c '<wrapper>' fleetrun 'make test'

- The leading `exec` makes the login shell (bash, zsh, dash, fish, tcsh all have it) replace itself, so the
  wrapper's `sh` is the process sshd started, and its parent is the sshd session process.
- The wrapper starts the **watcher** in the background, then `exec "${SHELL:-/bin/sh}" -c "$1"`: the command
  runs in the login shell exactly as `ssh host 'make test'` runs it, with the same pid, so sshd reports its
  true wait status (`exit 137` is exit status 137; `kill -KILL $$` is exit-signal KILL), and, since sshd made
  the session a process-group leader (setsid() in do_exec_no_pty), the command's process group is that pid.
- The watcher (`sh -c '<watcher>' fleetrun-watcher LIFELINE PID`, its own argv, so `pgrep -f` run by the
  command never matches the command's text in it) holds nothing of the channel: stdin, stdout and stderr
  are /dev/null and it ignores TERM. About once a second it checks that both the lifeline and the command
  are alive (`/proc/PID/stat` and not a zombie where /proc exists, else `kill -0`). When the command ends
  first, it just exits: daemons the command started with `nohup … &` survive, as with plain ssh. When the
  lifeline is gone but the command is not (the connection died, fleetrun closed it on --timeout, Ctrl-C or
  --deadline, or fleetrun was SIGKILLed), it sends TERM to the command's process group and to its pid, and
  KILL 2 s later. (The protocol's own `signal` request is no substitute: OpenSSH refuses it for root
  sessions, "session signalling requires privilege separation", older servers lack it, and it cannot help
  once the connection is gone.)

`lifeline` is an sh expression the wrapper expands once at start: the pid whose death means "fleetrun is
gone". The default `$PPID` is the sshd session process. A caller that runs the wrapper under another program
(sudo, issue 10) passes the sshd pid it learnt before, and `new_group=True` when the wrapper is not a
process-group leader there: the command is then started through `setsid` (util-linux), which, the wrapper
not being a group leader, does not fork, so the pid sshd or sudo waits for is still the command's. Do not ask
for `new_group` where the wrapper is a group leader: setsid would fork and its parent would exit at once.

The watcher's ~1 s polling is the price of not owning a lifeline fd: the command is free to use stdin
(issue 14) and the wrapper works unchanged under sudo. It costs one `sleep 1` per second per running command.
"""

from __future__ import annotations

import shlex

GRACE = 2  # seconds between TERM and KILL, for a command that cleans up on TERM

# $1: the lifeline pid, $2: the command's pid. `a PID` says whether PID is alive.
_WATCHER = (
    'trap "" TERM; '
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


def wrapper_script(*, lifeline: str = "$PPID", new_group: bool = False) -> str:
    """The wrapper's sh text: `sh -c WRAPPER fleetrun COMMAND` runs COMMAND under the watcher."""
    start = 'exec setsid "${SHELL:-/bin/sh}" -c "$1"' if new_group else 'exec "${SHELL:-/bin/sh}" -c "$1"'
    return (
        f"L={lifeline}; "
        f'{{ exec sh -c {shlex.quote(_WATCHER)} fleetrun-watcher "$L" $$; }} </dev/null >/dev/null 2>&1 & '
        f"{start}"
    )


def wrap_command(command: str, *, lifeline: str = "$PPID", new_group: bool = False) -> str:
    """The command line sent to the server: the user's command as the main process, under the watcher."""
    script = wrapper_script(lifeline=lifeline, new_group=new_group)
    return f"exec sh -c {shlex.quote(script)} fleetrun {shlex.quote(command)}"
