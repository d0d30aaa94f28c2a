"""Jump routes (fleetrun.route) and the gateway registry's once-only opening (fleetrun.ssh.gateway)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fleetrun.cancel import Cancel
from fleetrun.errors import HostFailure, UsageError
from fleetrun.models import Host, Outcome
from fleetrun.resolve import resolve_hosts
from fleetrun.route import hops_of, parse_jump_option, plan_routes
from fleetrun.ssh.gateway import Gateway, GatewayFailure, Gateways, Opened
from fleetrun.sshconfig import SshConfigSource

CONFIG = """\
Host b1
  HostName 10.0.0.1
  User jumper
  IdentityFile ~/.ssh/jump_key
  ProxyJump outer
Host b2
  HostName 10.0.0.2
  Port 2222
  ProxyJump elsewhere
Host outer
  HostName 10.0.0.9
  ProxyJump none
Host loop1
  ProxyJump loop2
Host loop2
  ProxyJump loop1
Host web*
  ProxyJump b1,b2
"""


def plan(tmp_path: Path, hosts: list[Host], inventory: dict[str, Host] | None = None, **overrides):
    path = tmp_path / "ssh_config"
    path.write_text(CONFIG)
    resolution = resolve_hosts(hosts, SshConfigSource(path=str(path)), lambda message: None)
    return plan_routes(resolution.hosts, resolution.config, inventory or {}, **overrides)


def test_hops_in_listed_order_each_with_its_own_settings(tmp_path: Path) -> None:
    (web,) = plan(tmp_path, [Host("web01", "web01")])
    # b1's own ProxyJump (outer) comes first, as `ssh -J b1` would use it; b2's own ProxyJump is replaced.
    assert [(h.name, h.address, h.port, h.user) for h in web.via] == [
        ("outer", "10.0.0.9", 22, None), ("b1", "10.0.0.1", 22, "jumper"), ("b2", "10.0.0.2", 2222, None)]
    assert web.via[1].identity_files[0].endswith("/.ssh/jump_key")  # the hop's own IdentityFile
    assert all(hop.jump == () and hop.proxy_command is None for hop in web.via)


def test_inventory_hops_and_command_line_policy(tmp_path: Path) -> None:
    inventory = {"b2": Host("b2", "192.0.2.2", port=22, key="/keys/b2", explicit=frozenset({"address", "port", "key"}))}
    (web,) = plan(tmp_path, [Host("web01", "web01")], inventory, host_key_checking="accept-new", connect_timeout=3)
    b2 = web.via[-1]
    assert (b2.address, b2.port, b2.key) == ("192.0.2.2", 22, "/keys/b2")  # the inventory beats ssh_config
    assert {hop.host_key_checking for hop in web.via} == {"accept-new"}
    assert {hop.connect_timeout for hop in web.via} == {3}


def test_loops_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="jump loop: x → loop2 → loop1 → loop2"):
        plan(tmp_path, [Host("x", "x", jump=("loop2",), explicit=frozenset({"jump"}))])
    with pytest.raises(UsageError, match="passes b1 twice"):
        plan(tmp_path, [Host("x", "x", jump=("b1", "b1"), explicit=frozenset({"jump"}))])
    with pytest.raises(UsageError, match="reaches the host itself"):
        plan(tmp_path, [Host("outer", "outer", jump=("b1",), explicit=frozenset({"jump"}))])  # b1 -> outer


def test_routes_are_shared_and_hops_listed_once(tmp_path: Path) -> None:
    hosts = plan(tmp_path, [Host("web01", "web01"), Host("web02", "web02"), Host("db", "db")])
    assert hosts[0].via is hosts[1].via and hosts[2].via == ()
    assert [hop.name for hop in hops_of(hosts)] == ["outer", "b1", "b2"]


@pytest.mark.parametrize(("spec", "hops"), [("none", ()), ("NONE", ()), ("b1", ("b1",)),
                                            ("ops@b1:2222, b2", ("ops@b1:2222", "b2"))])
def test_jump_option(spec: str, hops: tuple[str, ...]) -> None:
    assert parse_jump_option(spec) == hops


@pytest.mark.parametrize("spec", ["@b1", "b1:notaport", "b1,,b2", "[::1"])
def test_bad_jump_option_is_a_usage_error(spec: str) -> None:
    with pytest.raises(UsageError, match="-J/--jump"):
        parse_jump_option(spec)


class FakeTransport:
    def __init__(self) -> None:
        self.active = True
        self._handler_table: dict[int, object] = {}

    def is_active(self) -> bool:
        return self.active

    def _next_channel(self) -> int:
        return 0


def test_a_gateway_is_opened_once_and_a_failure_remembered() -> None:
    calls: list[str] = []

    def refuse(hop: Host, upstream: Gateway | None, cancel: Cancel) -> Opened:
        calls.append(hop.name)
        raise HostFailure(Outcome.UNREACHABLE, "connection refused by 10.0.0.1:22")

    gateway = Gateways(refuse, 4).get((Host("b1", "10.0.0.1"),))
    cancel = Cancel()
    for _ in range(5):
        with pytest.raises(GatewayFailure, match=r"^via bastion b1: connection refused by 10.0.0.1:22$"):
            gateway.transport(cancel)
    assert calls == ["b1"] and gateway.attempts == 1


@pytest.mark.parametrize("reconnect_works", [True, False])
def test_a_gateway_that_dies_is_reopened_once(reconnect_works: bool) -> None:
    made: list[FakeTransport] = []

    def opener(hop: Host, upstream: Gateway | None, cancel: Cancel) -> Opened:
        if made and not reconnect_works:
            raise HostFailure(Outcome.UNREACHABLE, "connection refused by 10.0.0.1:22")
        made.append(FakeTransport())
        return Opened(made[-1], lambda: None, lambda: "the connection was closed")  # type: ignore[arg-type]

    gateway = Gateways(opener, 4).get((Host("b1", "10.0.0.1"),))
    cancel = Cancel()
    first = gateway.transport(cancel)
    assert gateway.transport(cancel) is first  # shared while it lives
    made[0].active = False
    assert gateway.lost(first) == "lost connection to gateway b1 (the connection was closed)"  # type: ignore[arg-type]
    if reconnect_works:
        assert gateway.transport(cancel) is made[1]  # the one reconnect, for the hosts still queued
        made[1].active = False
        message = "lost connection to gateway b1 (the connection was closed), and it was reconnected once already"
    else:
        message = ("via bastion b1: connection refused by 10.0.0.1:22 (reconnecting after: lost connection to "
                   "gateway b1 (the connection was closed))")
    for _ in range(3):
        with pytest.raises(GatewayFailure) as failed:
            gateway.transport(cancel)
        assert failed.value.message == message
    assert gateway.attempts == 2


def test_hosts_wait_for_the_one_attempt_in_progress() -> None:
    release = threading.Event()
    calls: list[int] = []

    def slow(hop: Host, upstream: Gateway | None, cancel: Cancel) -> Opened:
        calls.append(1)
        release.wait(5)
        return Opened(FakeTransport(), lambda: None, lambda: None)  # type: ignore[arg-type]

    gateway = Gateways(slow, 4).get((Host("b1", "10.0.0.1"),))
    cancel = Cancel()
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(gateway.transport(cancel))) for _ in range(8)]
    for thread in threads:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(calls) == 1 and len(results) == 8 and len({id(r) for r in results}) == 1


def test_routes_share_upstream_gateways() -> None:
    registry = Gateways(lambda hop, upstream, cancel: None, 2)  # type: ignore[arg-type,return-value]
    b1, b2, b3 = Host("b1", "10.0.0.1"), Host("b2", "10.0.0.2"), Host("b3", "10.0.0.3")
    two = registry.get((b1, b2))
    three = registry.get((b1, b3))
    assert two.upstream is three.upstream is registry.get((b1,))
    assert two.label == "bastion b2 (via b1)"
    assert registry.get((Host("other-name", "10.0.0.1"),)) is registry.get((b1,))  # same address, port, user, key


def test_a_loop_or_a_bad_jump_is_exit_2_before_connecting(tmp_path: Path, capsys, monkeypatch) -> None:
    from fleetrun.cli import main

    monkeypatch.delenv("FLEETRUN_INVENTORY", raising=False)
    config = tmp_path / "ssh_config"
    config.write_text(CONFIG)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts:\n  x: {address: 192.0.2.1, jump: loop2}\n  y: {address: 192.0.2.2}\n")
    for args, message in [(("exec", "true", "-H", "x"), "jump loop: x → loop2 → loop1 → loop2"),
                          (("exec", "true", "-H", "y", "-J", "@b1"), "-J/--jump '@b1': empty user name"),
                          (("hosts", "--explain", "x"), "jump loop")]:
        with pytest.raises(SystemExit) as done:
            main([*args, "-i", str(inventory), "--ssh-config", str(config)])
        assert done.value.code == 2, args
        assert message in capsys.readouterr().err


def test_waiting_for_a_gateway_or_a_slot_ends_with_the_run() -> None:
    opening = threading.Event()
    release = threading.Event()

    def slow(hop: Host, upstream: Gateway | None, cancel: Cancel) -> Opened:
        opening.set()
        release.wait(10)
        raise HostFailure(Outcome.CANCELLED, "cancelled while connecting (interrupted)")

    gateway = Gateways(slow, 1).get((Host("b1", "10.0.0.1"),))
    cancel = Cancel()
    failures: list[HostFailure] = []

    def open_it() -> None:
        try:
            gateway.transport(cancel)
        except HostFailure as failure:
            failures.append(failure)

    first = threading.Thread(target=open_it)
    first.start()
    opening.wait(5)
    cancel.set("interrupted")
    with pytest.raises(HostFailure) as waited:
        gateway.transport(cancel)  # waits for the attempt in progress, then gives up with the run
    assert waited.value.outcome is Outcome.CANCELLED
    release.set()
    first.join(5)
    assert [failure.outcome for failure in failures] == [Outcome.CANCELLED]
    assert gateway.attempts == 1  # nobody started a second attempt after the cancel
    gateway.acquire_slot(Cancel())  # the one slot, taken
    with pytest.raises(HostFailure, match="cancelled while waiting for a channel"):
        gateway.acquire_slot(cancel)
