"""An ssh-agent reached through a given socket (IdentityAgent), through paramiko's agent protocol."""

from __future__ import annotations

import socket

from paramiko.agent import AgentSSH


class SocketAgent(AgentSSH):
    """An ssh-agent reached through a given socket (IdentityAgent), with a timeout on every exchange."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            self._connect(sock)  # type: ignore[attr-defined]  # paramiko's own Agent does the same
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        self._close()  # type: ignore[attr-defined]
