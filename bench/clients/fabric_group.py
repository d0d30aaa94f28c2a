"""Fabric ThreadingGroup: one thread per host of the group; --forks N runs the fleet in groups of N."""

from __future__ import annotations

from typing import Any

import paramiko
from clientlib import echo, known_keys, load_spec, parse_args, report
from fabric import Config, Connection, ThreadingGroup
from fabric.exceptions import GroupException

args = parse_args(__doc__ or "")
spec = load_spec(args.spec)
KNOWN = known_keys(spec.known_hosts)
KEY = paramiko.PKey.from_path(spec.key)
RUN = {"hide": True, "warn": True, "in_stream": False}  # capture like the others; never read our stdin
config = Config(overrides={"load_ssh_configs": False, "run": RUN})
names: dict[Connection, str] = {}
for host in spec.hosts:
    auth = {"pkey": KEY, "allow_agent": False, "look_for_keys": False}
    connection = Connection(host.address, user=spec.user, port=host.port, config=config, connect_timeout=10,
                            connect_kwargs=auth)  # fmt: skip
    # Fabric trusts unknown host keys by default (AutoAddPolicy); hold it to known_hosts like the others.
    connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    if host.known_name in KNOWN:
        keytype, blob = KNOWN[host.known_name]
        key = paramiko.PKey.from_type_string(keytype, blob)
        connection.client.get_host_keys().add(host.known_name, keytype, key)
    names[connection] = host.name
connections = list(names)
size = args.forks or len(connections)
for start in range(0, len(connections), size):
    group = ThreadingGroup.from_connections(connections[start : start + size])
    try:
        results: Any = group.run(args.command)
    except GroupException as failed:
        results = failed.result
    for connection, result in results.items():
        if isinstance(result, BaseException):
            report(names[connection], ok=False, rc=None, error=f"{type(result).__name__}: {result}")
            continue
        out = result.stdout.encode()
        echo(out)
        report(names[connection], ok=result.exited == 0, rc=result.exited, stdout=out)
    group.close()
