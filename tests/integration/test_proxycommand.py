"""ProxyCommand against the lab: run as `$SHELL -c 'exec …'` like ssh, reaped, its stderr in the error line."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
import yaml
from bastion import processes_named, zombies_of

from fleetrun.cli import main

pytestmark = pytest.mark.integration

# A proxy in plain shell syntax: an interpreter, a quoted program, tokens, a redirection. It copies stdin to
# the host and the host to stdout, and does not stop on stdin's EOF by itself (the worst kind to clean up).
PROXY = """
import os, socket, sys, threading
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
def up():
    while (data := os.read(0, 65536)):
        s.sendall(data)
threading.Thread(target=up, daemon=True).start()
while (data := s.recv(65536)):
    os.write(1, data)
"""


def inventory(path, lab, proxy_command: str, count: int = 3):
    hosts = {f"p{index}": {"address": host.address, "port": host.port, "proxy_command": proxy_command}
             for index, host in enumerate(lab.hosts[:count], 1)}
    path.write_text(yaml.safe_dump({"defaults": {"user": lab.user, "key": str(lab.client_key),
                                                 "known_hosts": str(lab.known_hosts)}, "hosts": hosts}))
    return path


def run_in_process(args, monkeypatch, capsys, home):
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FLEETRUN_SSH_CONFIG", "none")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(SystemExit) as done:
        main(args)
    out = capsys.readouterr()
    records = [json.loads(line) for line in out.out.splitlines()]
    return done.value.code, {r["host"]: r for r in records if r["type"] == "host"}, out.err


def test_a_shell_proxy_command_works_and_leaves_nothing_behind(lab, tmp_path, monkeypatch, capsys):
    marker = f"fleetrun-proxy-{os.getpid()}"
    command = f"{sys.executable} -c {shlex.quote(PROXY)} %h %p {marker} 2>/dev/null"
    path = inventory(tmp_path / "inv.yaml", lab, command, count=6)
    code, hosts, err = run_in_process(["exec", "-i", str(path), "echo $FLEETRUN_LAB_HOST", "-H", "all",
                                       "--format", "json"], monkeypatch, capsys, tmp_path)
    assert code == 0, (hosts, err)
    assert [hosts[f"p{i}"]["stdout"].strip() for i in range(1, 7)] == [h.name for h in lab.hosts[:6]]
    # Every proxy was waited for: none still running, none a zombie of this process.
    assert processes_named(marker) == []
    assert zombies_of(os.getpid()) == []


def test_a_failing_proxy_command_says_why_in_the_host_line(lab, tmp_path, monkeypatch, capsys):
    command = f"{sys.executable} -c 'import sys; sys.stderr.write(\"no route to \" + sys.argv[1]); sys.exit(3)' %h"
    path = inventory(tmp_path / "inv.yaml", lab, command, count=1)
    code, hosts, _ = run_in_process(["exec", "-i", str(path), "true", "-H", "all", "--format", "json"],
                                    monkeypatch, capsys, tmp_path)
    assert code == 4
    error = hosts["p1"]["error"]
    assert f"ProxyCommand exited with status 3, stderr: no route to {lab.hosts[0].address}" in error, error
    assert zombies_of(os.getpid()) == []


def test_proxy_command_runs_like_ssh_runs_it(lab, tmp_path, monkeypatch, capsys):
    # ssh runs `$SHELL -c "exec COMMAND"`: a command that starts with exec itself fails, with ssh too.
    path = inventory(tmp_path / "inv.yaml", lab, "exec true", count=1)
    code, hosts, _ = run_in_process(["exec", "-i", str(path), "true", "-H", "all", "--format", "json"],
                                    monkeypatch, capsys, tmp_path)
    assert code == 4 and "exec: exec: not found" in hosts["p1"]["error"], hosts
    one = lab.hosts[0]
    theirs = subprocess.run(["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ProxyCommand=exec true",
                             "-p", str(one.port), one.address, "true"], capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL, env={**os.environ, "HOME": str(tmp_path)})
    assert theirs.returncode == 255 and "exec: exec: not found" in theirs.stderr
