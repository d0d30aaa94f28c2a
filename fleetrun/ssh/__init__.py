"""Everything that speaks SSH; the only package that imports paramiko."""

import sys

# paramiko imports `invoke` (a task runner, ~90 ms and ~150 modules) only to run paramiko.config's `Match exec`;
# fleetrun reads ssh_config with its own parser (fleetrun.sshconfig) and never asks paramiko's. So paramiko is
# imported with invoke out of reach, and invoke is left importable for anyone else in the process afterwards.
_hide_invoke = "invoke" not in sys.modules
if _hide_invoke:
    sys.modules["invoke"] = None  # type: ignore[assignment]  # makes `import invoke` raise ImportError
try:
    import paramiko  # noqa: F401  # the import this is all about
finally:
    if _hide_invoke and sys.modules.get("invoke", 0) is None:
        del sys.modules["invoke"]

from fleetrun.ssh.auth import agent_blobs, load_certificates, load_identities, load_keys  # noqa: E402
from fleetrun.ssh.connect import ConnectSettings, connect  # noqa: E402
from fleetrun.ssh.session import ExecResult, Session  # noqa: E402

__all__ = ["ConnectSettings", "ExecResult", "Session", "agent_blobs", "connect", "load_certificates",
           "load_identities", "load_keys"]
