"""Reference push: 20 threads, paramiko SFTP put to a temporary name, then posix_rename onto the target."""

from __future__ import annotations

import os
import posixpath
import secrets
from concurrent.futures import ThreadPoolExecutor

import paramiko
from clientlib import Target, known_keys, load_spec, parse_args, report

args = parse_args(__doc__ or "")
spec = load_spec(args.spec)
KNOWN = known_keys(spec.known_hosts)
KEY = paramiko.PKey.from_path(spec.key)
LOCAL, REMOTE = args.put
SIZE = os.path.getsize(LOCAL)


def push(host: Target) -> tuple[Target, str | None]:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    if host.known_name in KNOWN:
        keytype, blob = KNOWN[host.known_name]
        client.get_host_keys().add(host.known_name, keytype, paramiko.PKey.from_type_string(keytype, blob))
    try:
        client.connect(host.address, host.port, username=spec.user, pkey=KEY, timeout=10,
                       allow_agent=False, look_for_keys=False)  # fmt: skip
        sftp = client.open_sftp()
        hidden = f".{posixpath.basename(REMOTE)}.{secrets.token_hex(4)}"
        temporary = posixpath.join(posixpath.dirname(REMOTE), hidden)
        attributes = sftp.put(LOCAL, temporary)  # put() checks the size it wrote
        if attributes.st_size != SIZE:
            return host, f"wrote {attributes.st_size} bytes, not {SIZE}"
        sftp.posix_rename(temporary, REMOTE)
        sftp.close()
        return host, None
    except Exception as error:
        return host, f"{type(error).__name__}: {error}"
    finally:
        client.close()


with ThreadPoolExecutor(max_workers=args.forks or 20) as pool:
    for host, error in pool.map(push, spec.hosts):
        report(host.name, ok=error is None, rc=0 if error is None else None, error=error)
