"""Reference pull: paramiko's SFTPClient.get() of one file from each host, with its default prefetch or a cap."""

from __future__ import annotations

import argparse
import os

import paramiko
from clientlib import known_keys, load_spec, report

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--spec", required=True)
parser.add_argument("--get", nargs=2, metavar=("REMOTE", "LOCALDIR"), required=True)
parser.add_argument("--max-requests", type=int, default=None,
                    help="get()'s max_concurrent_prefetch_requests (default: paramiko's, unlimited)")
args = parser.parse_args()
spec = load_spec(args.spec)
KNOWN = known_keys(spec.known_hosts)
KEY = paramiko.PKey.from_path(spec.key)
REMOTE, LOCAL_DIR = args.get

for host in spec.hosts:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    keytype, blob = KNOWN[host.known_name]
    client.get_host_keys().add(host.known_name, keytype, paramiko.PKey.from_type_string(keytype, blob))
    try:
        client.connect(host.address, host.port, username=spec.user, pkey=KEY, timeout=10,
                       allow_agent=False, look_for_keys=False)  # fmt: skip
        local = os.path.join(LOCAL_DIR, host.name, os.path.basename(REMOTE))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        client.open_sftp().get(REMOTE, local, max_concurrent_prefetch_requests=args.max_requests)
        report(host.name, ok=True, rc=0)
    except Exception as error:
        report(host.name, ok=False, rc=None, error=f"{type(error).__name__}: {error}")
    finally:
        client.close()
