"""The reference: a bare paramiko thread-pool loop (the floor a Python SSH fleet runner can hope to reach)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import paramiko
from clientlib import Target, echo, known_keys, load_spec, parse_args, report

args = parse_args(__doc__ or "")
spec = load_spec(args.spec)
KNOWN = known_keys(spec.known_hosts)
KEY = paramiko.PKey.from_path(spec.key)


def run(host: Target) -> tuple[Target, bytes, str | None, int | None]:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    if host.known_name in KNOWN:  # known_hosts parsed once; each client gets its host's entry
        keytype, blob = KNOWN[host.known_name]
        client.get_host_keys().add(host.known_name, keytype, paramiko.PKey.from_type_string(keytype, blob))
    try:
        client.connect(host.address, host.port, username=spec.user, pkey=KEY, timeout=10,
                       allow_agent=False, look_for_keys=False)  # fmt: skip
        _, stdout, stderr = client.exec_command(args.command)
        out, _ = stdout.read(), stderr.read()  # both streams drained before the exit status
        return host, out, None, stdout.channel.recv_exit_status()
    except Exception as error:
        return host, b"", f"{type(error).__name__}: {error}", None
    finally:
        client.close()


with ThreadPoolExecutor(max_workers=args.forks or None) as pool:
    for host, out, error, rc in pool.map(run, spec.hosts):
        echo(out)
        report(host.name, ok=error is None and rc == 0, rc=rc, stdout=out, error=error)
