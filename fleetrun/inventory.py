"""Load the YAML inventory into validated, resolved Host records; every mistake names file, line and key.

Precedence, least to most specific: `defaults`, then each group the host belongs to, then the host's own
entry. Groups apply ancestors first, so a child group overrides its parents; between groups where neither is
an ancestor of the other, the one defined later in the file wins. `vars` and `env` merge the same way, key by
key. A `null` value resets a setting to the built-in default (in `env`: unsets the variable); setting
password_env or password_file replaces both, and so do become_password_env and become_password_file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fleetrun.errors import UsageError
from fleetrun.models import Host

if TYPE_CHECKING:
    from fleetrun.yamltree import Node

TOP_KEYS = ("defaults", "hosts", "groups", "ssh_config")  # also how fleetrun.sources tells this format apart
# Set for the command by fleetrun itself (issue 14): `env:` and --env may not name them.
RESERVED_ENV = re.compile(r"FLEETRUN_(HOST|ADDRESS|VAR_.*)\Z")


@dataclass(frozen=True)
class Inventory:
    """Every host, fully resolved, and every group with its members (children flattened), in file order."""

    path: Path
    hosts: dict[str, Host]
    groups: dict[str, tuple[str, ...]]
    ssh_config: bool = True  # `ssh_config: false` (top level or defaults): resolve without ~/.ssh/config
    # Filled by fleetrun.sources (issue 12): every source read, warnings to show once, hosts that are listed
    # but must not be run on (host -> why, with file:line), and whether any source was an Ansible one.
    sources: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    unsupported: Mapping[str, str] = field(default_factory=dict)
    ansible: bool = False
    ansible_order: tuple[str, ...] = ()  # the hosts as Ansible's `all` group lists them (patterns use it)


class NoInventory(UsageError):
    """No inventory was given or found: -H names are then the hosts themselves (fleetrun.adhoc)."""


def find_inventory(explicit: str | None) -> Path:
    """-i FILE, else $FLEETRUN_INVENTORY, else ./inventory.yaml, else ~/.config/fleetrun/inventory.yaml."""
    if explicit:
        return Path(explicit).expanduser()
    from_env = os.environ.get("FLEETRUN_INVENTORY")
    if from_env:
        return Path(from_env).expanduser()
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    for candidate in (Path("inventory.yaml"), config / "fleetrun" / "inventory.yaml"):
        if candidate.is_file():
            return candidate
    raise NoInventory(f"no inventory found: looked at $FLEETRUN_INVENTORY (not set), ./inventory.yaml and "
                      f"{config / 'fleetrun' / 'inventory.yaml'}; pass -i FILE")


def load_inventory(path: Path, tree: Node | None = None) -> Inventory:
    """Read, validate and resolve one inventory file; raises InventoryError, never a YAML or OS error.

    `tree`: its fleetrun.yamltree node tree, when the caller has already composed the file."""
    from fleetrun.inventory_reader import read_inventory

    return read_inventory(path, tree)
