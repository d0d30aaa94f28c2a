"""Fabric through a bastion: `Connection(host, gateway=Connection(bastion))`, one gateway shared by every host.

That is Fabric's documented pattern; ThreadingGroup then runs groups of --forks hosts at once. Every host key
(bastion's included) is held to the fleet's known_hosts, as for the other tools: Fabric would otherwise use
AutoAddPolicy for both.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import paramiko
from clientlib import echo, known_keys, load_spec, parse_args, report
from fabric import Config, Connection, ThreadingGroup
from fabric.exceptions import GroupException

args = parse_args(__doc__ or "")
spec = load_spec(args.spec)
bastion = json.loads(Path(args.spec).read_text())["bastion"]
KNOWN = known_keys(spec.known_hosts)
KEY = paramiko.PKey.from_path(spec.key)
RUN = {"hide": True, "warn": True, "in_stream": False}
config = Config(overrides={"load_ssh_configs": False, "run": RUN})
AUTH = {"pkey": KEY, "allow_agent": False, "look_for_keys": False}


def strict(connection: Connection, known_name: str) -> Connection:
    connection.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    if known_name in KNOWN:
        keytype, blob = KNOWN[known_name]
        connection.client.get_host_keys().add(known_name, keytype, paramiko.PKey.from_type_string(keytype, blob))
    return connection


gateway = strict(Connection(bastion["address"], user=spec.user, port=bastion["port"], config=config,
                            connect_timeout=10, connect_kwargs=AUTH), bastion["known_name"])
names: dict[Connection, str] = {}
for host in spec.hosts:
    connection = Connection(host.address, user=spec.user, port=host.port, config=config, connect_timeout=10,
                            connect_kwargs=AUTH, gateway=gateway)  # fmt: skip
    names[strict(connection, host.known_name)] = host.name
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
gateway.close()
sys.exit(0)
