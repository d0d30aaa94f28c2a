"""Memory flat in fleet size (issue 13): what 1000 hosts cost beyond 200, measured with tracemalloc.

Not the process's RSS (noisy on a shared machine) but the bytes Python allocates and keeps: the difference
between 1000 and 200 hosts, divided by 800, so that everything fixed (imports, caches) cancels out. The path is
the one `fleetrun hosts all` and `fleetrun exec` take: read the inventory, select, resolve through ssh_config.
Before the work on issue 13 a lab host kept 5.8 KiB (two unslotted Host records with a dict of origins each)
and reading the YAML peaked at 8 KiB more per host (PyYAML's node tree, composed twice).
"""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest
from big_inventory import write

from fleetrun.inventory import Inventory
from fleetrun.models import Host
from fleetrun.resolve import resolve_hosts
from fleetrun.selection import select
from fleetrun.sources import load_sources
from fleetrun.sshconfig import SshConfigSource

KEPT_PER_HOST = 1536  # bytes; today ≈ 1.1–1.3 KiB with the inventory's copy and the resolved copy both alive
PEAK_PER_HOST = 4096  # bytes, the transient high-water mark while reading; today ≈ 1.4 KiB (fleetrun YAML)


def _measure(inventory_path: Path, ssh_config: Path) -> tuple[int, int, list[Host], Inventory]:
    """(bytes kept, peak bytes) over loading, selecting and resolving; the results are returned to keep them."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        inventory = load_sources([str(inventory_path)])
        selected = select(inventory, "all")
        resolved = resolve_hosts(selected, SshConfigSource(path=str(ssh_config)), lambda _: None).hosts
        gc.collect()
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return kept - before, peak - before, resolved, inventory


@pytest.mark.parametrize("kind", ["yaml", "ini", "ansible-yaml"])
def test_a_host_more_costs_little_memory_once_loaded_selected_and_resolved(tmp_path, kind):
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host 127.*\n  ServerAliveInterval 30\nHost *\n  IdentitiesOnly yes\n")
    _measure(write(tmp_path, 20, kind), ssh_config)  # warm-up: imports and caches are not per host
    small_kept, small_peak, small_hosts, _ = _measure(write(tmp_path, 200, kind), ssh_config)
    big_kept, big_peak, big_hosts, big_inventory = _measure(write(tmp_path, 1000, kind), ssh_config)
    assert len(small_hosts) == 200 and len(big_hosts) == 1000 and len(big_inventory.hosts) == 1000
    assert big_hosts[999].port == 20999 and big_hosts[0].server_alive_interval == 30.0  # resolved for real
    per_host = (big_kept - small_kept) / 800
    assert per_host <= KEPT_PER_HOST, f"{kind}: {per_host:.0f} bytes kept per host"
    if kind != "ansible-yaml":  # Ansible YAML values are built by PyYAML's own constructor, from its own tree
        peak_per_host = (big_peak - small_peak) / 800
        assert peak_per_host <= PEAK_PER_HOST, f"{kind}: {peak_per_host:.0f} bytes peak per host"


def test_hosts_share_what_they_have_in_common(tmp_path):
    """The objects behind flat memory: equal values are one object, each host's own ones stay its own."""
    inventory = load_sources([str(write(tmp_path, 50, "yaml"))])
    first, second = inventory.hosts["lab0000"], inventory.hosts["lab0004"]  # both only in web and even
    assert first.groups is second.groups and first.explicit is second.explicit and first.vars is second.vars
    assert dict(first.origins) == {"user": ("inventory defaults",), "key": ("inventory defaults",),
                                   "known_hosts": ("inventory defaults",),
                                   "connect_timeout": ("inventory defaults",),
                                   "address": ("inventory hosts.lab0000",), "port": ("inventory hosts.lab0000",)}
    assert second.origins["port"] == ("inventory hosts.lab0004",)
    assert first.origins.pairs[0] is second.origins.pairs[0]  # ("user", ("inventory defaults",)): one pair
    resolved = resolve_hosts([first, second], SshConfigSource(disabled=True), lambda _: None).hosts
    assert resolved[0].user_known_hosts is resolved[1].user_known_hosts
    assert resolved[0].origins["address"] == ("inventory hosts.lab0000",)
    assert not hasattr(first, "__dict__")  # slotted: no dict per record
