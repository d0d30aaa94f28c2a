"""SendEnv/SetEnv `env` requests: worked out once per distinct (send_env, set_env) per process, as if per host."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from fleetrun.environ import started_environment
from fleetrun.models import Host
from fleetrun.ssh import sendenv
from fleetrun.ssh.sendenv import env_requests


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """An empty cache, the test's variables in the environment, and a count of environment scans."""
    monkeypatch.setattr(sendenv, "_cache", {})
    monkeypatch.setenv("FLEETRUN_T_A", "a")
    monkeypatch.setenv("FLEETRUN_T_B", "b \udcff")  # an undecodable byte as os gives it: sent as that byte
    calls: list[int] = []

    def counted() -> dict[str, str]:
        calls.append(1)
        return started_environment()

    monkeypatch.setattr(sendenv, "started_environment", counted)
    return calls


def test_a_fleet_sharing_its_settings_scans_the_environment_once_and_gets_the_uncached_answer(scans):
    hosts = [Host(f"h{n}", "127.0.0.1", send_env=("FLEETRUN_T_*",), set_env=("X=1",)) for n in range(200)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(env_requests, hosts))
    uncached = env_requests(hosts[0], environ=started_environment())
    assert uncached == ((b"FLEETRUN_T_A", b"a"), (b"FLEETRUN_T_B", b"b \xff"), (b"X", b"1"))
    assert all(answer == uncached for answer in answers)
    assert len(scans) <= 8  # once, or once per thread that raced for the first entry; not once per host


def test_a_host_with_other_settings_gets_its_own_answer(scans):
    both = Host("both", "127.0.0.1", send_env=("FLEETRUN_T_*",))
    one = Host("one", "127.0.0.1", send_env=("FLEETRUN_T_A",))
    other_set = Host("set", "127.0.0.1", send_env=("FLEETRUN_T_A",), set_env=("Y=2",))
    set_only = Host("set-only", "127.0.0.1", set_env=("Y=2",))
    assert env_requests(both) == ((b"FLEETRUN_T_A", b"a"), (b"FLEETRUN_T_B", b"b \xff"))
    assert env_requests(one) == ((b"FLEETRUN_T_A", b"a"),)
    assert env_requests(other_set) == ((b"FLEETRUN_T_A", b"a"), (b"Y", b"2"))
    assert env_requests(set_only) == ((b"Y", b"2"),)
    assert env_requests(both) == ((b"FLEETRUN_T_A", b"a"), (b"FLEETRUN_T_B", b"b \xff"))
    assert len(scans) == 3  # one per distinct SendEnv setting; SetEnv alone reads no environment


def test_a_given_environment_bypasses_the_cache(scans):
    host = Host("h", "127.0.0.1", send_env=("FLEETRUN_T_A",))
    assert env_requests(host) == ((b"FLEETRUN_T_A", b"a"),)
    assert env_requests(host, environ={"FLEETRUN_T_A": "given"}) == ((b"FLEETRUN_T_A", b"given"),)
    assert env_requests(host, environ={}) == ()
    assert env_requests(host) == ((b"FLEETRUN_T_A", b"a"),) and len(scans) == 1
