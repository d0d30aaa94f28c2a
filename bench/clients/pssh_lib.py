"""The parallel-ssh library (ParallelSSHClient, libssh2), with host keys checked against known_hosts."""

from __future__ import annotations

from typing import Any

from clientlib import echo, known_keys, load_spec, parse_args, report
from pssh.clients import ParallelSSHClient
from pssh.clients.native.single import SSHClient

args = parse_args(__doc__ or "")
spec = load_spec(args.spec)
KNOWN = known_keys(spec.known_hosts)
_authenticate = SSHClient.auth


class HostKeyRefused(Exception):
    """The server's key is not the one known_hosts has for it."""


def checked_auth(self: Any) -> Any:
    # parallel-ssh has no host key checking of its own: compare the key before authenticating, as ssh does.
    name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
    blob, _ = self.session.hostkey()
    if name not in KNOWN or KNOWN[name][1] != bytes(blob):
        raise HostKeyRefused(f"host key for {name} is not in known_hosts")
    return _authenticate(self)


SSHClient.auth = checked_auth  # type: ignore[method-assign]
by_address = {host.address: host for host in spec.hosts}
port = spec.hosts[0].port
extra: dict[str, Any] = {"pool_size": args.forks} if args.forks else {}
client = ParallelSSHClient([host.address for host in spec.hosts], user=spec.user, port=port, pkey=spec.key,
                           num_retries=1, allow_agent=False, identity_auth=False, **extra)  # fmt: skip
output = client.run_command(args.command, stop_on_errors=False)
client.join(output)
for host_output in output:
    name = by_address[host_output.host].name
    if host_output.exception is not None:
        error = host_output.exception
        report(name, ok=False, rc=None, error=f"{type(error).__name__}: {error}")
        continue
    out = "".join(f"{line}\n" for line in host_output.stdout).encode()
    for _ in host_output.stderr:
        pass
    echo(out)
    report(name, ok=host_output.exit_code == 0, rc=host_output.exit_code, stdout=out)
