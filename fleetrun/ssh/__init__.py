"""Everything that speaks SSH; the only package that imports paramiko."""

from fleetrun.ssh.auth import agent_blobs, load_certificates, load_identities, load_keys
from fleetrun.ssh.connect import ConnectSettings, connect
from fleetrun.ssh.session import ExecResult, Session

__all__ = ["ConnectSettings", "ExecResult", "Session", "agent_blobs", "connect", "load_certificates",
           "load_identities", "load_keys"]
