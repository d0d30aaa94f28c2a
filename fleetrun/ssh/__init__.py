"""Everything that speaks SSH; the only package that imports paramiko, and only once a connection needs it: a run
whose connections all go through the lean client (fleetrun.ssh.lean) never imports it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fleetrun.ssh.auth import agent_blobs, load_certificates, load_identities, load_keys
from fleetrun.ssh.connect import ConnectSettings, connect
from fleetrun.ssh.results import ExecResult

if TYPE_CHECKING:
    from fleetrun.ssh.session import Session

__all__ = ["ConnectSettings", "ExecResult", "Session", "agent_blobs", "connect", "load_certificates",
           "load_identities", "load_keys"]


def __getattr__(name: str) -> Any:
    if name == "Session":  # paramiko's session: imported on first use
        from fleetrun.ssh.session import Session

        return Session
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
