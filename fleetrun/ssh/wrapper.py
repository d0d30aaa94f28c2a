"""The kill-on-EOF wrapper that runs a user's command on the host (pure text; no paramiko)."""

from __future__ import annotations

import shlex

# Runs the user's command in its own process group with stdin as a lifeline: when our side of the
# channel sends EOF or the connection dies, sshd closes the pipe, `read` returns and the whole group is
# killed. That is how a timed-out, cancelled or orphaned command is killed on the remote host (sshd
# itself would leave `sleep 60` running). A command killed by a signal is re-raised on the wrapper so
# sshd reports it as exit-signal, as it would without the wrapper. (The protocol's own `signal` request
# is no substitute: OpenSSH refuses it for root sessions, "session signalling requires privilege
# separation", older servers lack it, and it cannot help once the connection is gone.)
_WRAPPER = (
    # Background jobs of a non-interactive shell get /dev/null as stdin; keep the channel's stdin on fd 3.
    "exec 3<&0; "
    # The command itself runs in the login shell ($SHELL, set by sshd), exactly as plain ssh would run it.
    'if command -v setsid >/dev/null 2>&1; then setsid "${SHELL:-/bin/sh}" -c "$1" </dev/null 3<&- & '
    'else "${SHELL:-/bin/sh}" -c "$1" </dev/null 3<&- & fi; '
    "c=$!; "
    # The shell's own `read` (not `cat`) waits for EOF: one exec less per host on the server.
    "{ while read -r _ <&3; do :; done; kill -TERM -$c 2>/dev/null || kill -TERM $c 2>/dev/null; "
    "sleep 2; kill -KILL -$c 2>/dev/null; } >/dev/null 2>&1 & "
    "w=$!; exec 3<&-; wait $c 2>/dev/null; r=$?; kill $w 2>/dev/null; "
    'if [ "$r" -gt 128 ] && [ "$r" -lt 160 ]; then kill -$((r - 128)) $$; fi; exit $r'
)


def wrap_command(command: str) -> str:
    """The command line sent to the server: the user's command inside the kill-on-EOF wrapper."""
    return f"sh -c {shlex.quote(_WRAPPER)} fleetrun {shlex.quote(command)}"
