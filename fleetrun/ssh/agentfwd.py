"""ForwardAgent: the host's `auth-agent@openssh.com` channels served from the local ssh-agent, one message at a time.

paramiko's AgentRequestHandler only knows $SSH_AUTH_SOCK, polls with select() and sleeps between reads, and
leaves its threads to the garbage collector. The agent protocol is strictly request then reply, so one thread
per forwarded channel relays whole messages: read a request from the channel, pass it to the agent, pass the
reply back. The thread ends when the channel or the agent closes, which closing the session guarantees.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import struct
import threading

import paramiko

AGENT_TIMEOUT = 30.0  # seconds for the local agent to answer one request (a confirm-each-use agent may ask)
POLL = 0.5  # seconds between checks that the channel is still open while waiting for a request
MAX_MESSAGE = 256 * 1024  # OpenSSH's AGENT_MAX_LEN
_numbers = itertools.count(1)


def agent_socket(forward: bool | str, identity_agent: str | None) -> str | None:
    """The socket ForwardAgent forwards: its own path, else IdentityAgent (ssh exports it as SSH_AUTH_SOCK),
    else $SSH_AUTH_SOCK; None when there is none (IdentityAgent none)."""
    if isinstance(forward, str):
        return forward
    if identity_agent == "none":
        return None
    return identity_agent or os.environ.get("SSH_AUTH_SOCK") or None


def request_forwarding(chan: paramiko.Channel, path: str) -> None:
    """Ask the host to forward its agent requests over this session, and serve them from `path`."""

    def serve(remote: paramiko.Channel) -> None:  # called in the transport's thread: must not block
        thread = threading.Thread(target=_relay, args=(remote, path), name=f"fleetrun-agent-{next(_numbers)}")
        thread.start()

    chan.request_forward_agent(serve)


def _read(chan: paramiko.Channel, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        try:
            chunk = chan.recv(size - len(data))
        except TimeoutError:
            if chan.closed or not chan.get_transport().is_active():
                return None
            continue
        if not chunk:
            return None
        data += chunk
    return data


def _read_socket(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _relay(chan: paramiko.Channel, path: str) -> None:
    agent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        agent.settimeout(AGENT_TIMEOUT)
        agent.connect(path)
        chan.settimeout(POLL)
        while True:
            header = _read(chan, 4)
            if header is None:
                return
            length = struct.unpack(">I", header)[0]
            if length > MAX_MESSAGE:
                return
            body = _read(chan, length)
            if body is None:
                return
            agent.sendall(header + body)
            reply_header = _read_socket(agent, 4)
            if reply_header is None:
                return
            reply_length = struct.unpack(">I", reply_header)[0]
            if reply_length > MAX_MESSAGE:
                return
            reply = _read_socket(agent, reply_length)
            if reply is None:
                return
            chan.sendall(reply_header + reply)
    except (OSError, EOFError, paramiko.SSHException):
        return  # the agent or the session went away: the host's request fails, as with ssh
    finally:
        agent.close()
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            chan.close()
