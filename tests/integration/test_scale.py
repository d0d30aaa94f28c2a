"""1000 lab hosts at --forks 256 with the default connect timeout: every one ok, every run (issue 13)."""

from __future__ import annotations

import pytest
from fleet import fleetrun

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTS = 1000
# The lab starts in ~20 s and the run takes ~30-45 s on a loaded 2-core machine; a run that needed more than
# this would blow CI's suite budget, so it fails rather than passes slowly.
RUN_TIME_BOX = 150


def test_a_thousand_hosts_at_256_forks_are_all_ok_with_the_default_connect_timeout(make_lab, tmp_path):
    # No private /srv (the command needs none): 1000 fewer unshare+mount steps make the lab start twice as fast.
    lab = make_lab(HOSTS, private_srv=False)
    # The lab's inventory says `connect_timeout: 10`, fleetrun's default; --procs is left at its default (the
    # usable cores), as an operator would run it. Before admission control, 889-919 of 1000 were ok here.
    run = fleetrun("exec", "-i", str(lab.inventory), "-H", "all", "--forks", "256", "--format", "json",
                   "--no-journal", "echo $FLEETRUN_LAB_HOST", home=tmp_path, timeout=RUN_TIME_BOX)
    hosts, summary = run.json()  # asserts one record per host, no duplicates
    failed = {name: (record["status"], record.get("error")) for name, record in hosts.items()
              if record["status"] != "ok"}
    assert not failed, f"{len(failed)} of {HOSTS} hosts not ok, e.g. {sorted(failed.items())[:5]}"
    assert run.code == 0, run.err[-2000:]
    assert sorted(hosts) == sorted(host.name for host in lab.hosts)
    # Each answer came from the host's own sshd (the lab tells them apart by $FLEETRUN_LAB_HOST).
    assert all(record["stdout"] == f"{name}\n" for name, record in hosts.items())
    assert summary["total"] == HOSTS and summary["counts"] == {"ok": HOSTS}
