"""Inventory sources: detect what each `-i` names, read it without importing Ansible, merge them in order.

Detection, per source: `-` is `--list` JSON on stdin; `a,b:2222` (a comma, and no such file) is Ansible's
host list; a directory is an Ansible inventory directory (every inventory file in it, plus group_vars/ and
host_vars/); an executable file (other than .ini/.yml/.yaml/.json) is an inventory script; `.json` is
`--list` JSON (or an Ansible YAML inventory written as JSON); a YAML mapping whose top keys are only
defaults/hosts/groups is a fleetrun inventory; any other YAML mapping is an Ansible YAML inventory;
everything else is Ansible INI, a .yml/.json that is not YAML/JSON included (as Ansible's plugin chain does).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from fleetrun.errors import InventoryError, UsageError
from fleetrun.inventory import TOP_KEYS as _FLEETRUN_TOP_KEYS
from fleetrun.inventory import Inventory, load_inventory
from fleetrun.models import Host
from fleetrun.sources.yamlload import VAULT_HEADER, compose, read_text
from fleetrun.yamltree import MappingNode as TreeMapping
from fleetrun.yamltree import ScalarNode as TreeScalar
from fleetrun.yamltree import compose as compose_tree

if TYPE_CHECKING:
    from fleetrun.sources.ansible_data import AnsibleData

FLEETRUN_KEYS = frozenset(_FLEETRUN_TOP_KEYS)  # a YAML file with only these top keys is fleetrun YAML
DATA_SUFFIXES = frozenset({".ini", ".yml", ".yaml", ".json", ".cfg", ".txt", ".md"})
# Ansible skips these in an inventory directory (INVENTORY_IGNORE_EXTS and the always-ignored names).
_IGNORED = re.compile(r"^\.|^host_vars$|^group_vars$|^vars_plugins$|"
                      r"(?:\.pyc|\.pyo|\.swp|\.bak|~|\.rpm|\.md|\.txt|\.rst|\.orig|\.cfg|\.retry)$")
_SECTION_LINE = re.compile(r"^\s*\[[^\]\s]+\]\s*(?:[#;].*)?$", re.M)


class _Ansible:
    """The Ansible inventory being read, made on first use: a run on fleetrun YAML alone never imports the
    Ansible readers (their modules are a tenth of a run's start-up)."""

    def __init__(self) -> None:
        self._data: AnsibleData | None = None

    @property
    def data(self) -> AnsibleData:
        if self._data is None:
            from fleetrun.sources.ansible_data import AnsibleData

            self._data = AnsibleData()
        return self._data

    def add_source(self, path: Path, *, adjacent: bool, label: str) -> None:
        from fleetrun.sources.ansible_data import Source

        self.data.sources.append(Source(path, adjacent=adjacent, label=label))


def load_sources(specs: list[str], ansible_sources: tuple[str, ...] = ()) -> Inventory:
    """Every `-i` in order, then every `--ansible-inventory`, merged into one Inventory.

    Ansible sources (INI, YAML, directories, scripts, JSON) are read into one Ansible inventory, as
    `ansible -i a -i b` would, so that group_vars and precedence work across them; fleetrun YAML files are
    resolved on their own. A host in several parts keeps its first position; the later part's settings win.
    """
    ansible = _Ansible()
    parts: list[Inventory | None] = []  # None marks where the Ansible part goes (at its first source)
    for spec in specs:
        fleetrun_inventory = _read(ansible, spec)
        if fleetrun_inventory is not None:
            parts.append(fleetrun_inventory)
        elif None not in parts:
            parts.append(None)
    for spec in ansible_sources:
        _run_ansible_inventory(ansible, spec)
        if None not in parts:
            parts.append(None)
    labels = [*specs] + [f"ansible-inventory -i {spec}" for spec in ansible_sources]
    if None in parts:
        from fleetrun.sources.resolve import resolve

        resolved = resolve(ansible.data)
        ansible_part = Inventory(path=Path(specs[0] if specs else ansible_sources[0]), hosts=resolved.hosts,
                                 groups=resolved.groups, sources=tuple(labels), warnings=resolved.warnings,
                                 unsupported=resolved.unsupported, ansible=True,
                                 ansible_order=resolved.order)
        parts = [ansible_part if part is None else part for part in parts]
    merged = [part for part in parts if part is not None]
    if len(merged) == 1:
        return merged[0] if merged[0].sources else _with_sources(merged[0], labels)
    return _merge(merged, labels)


def _with_sources(inventory: Inventory, labels: list[str]) -> Inventory:
    return dataclasses.replace(inventory, sources=tuple(labels))


def _merge(parts: list[Inventory], labels: list[str]) -> Inventory:
    hosts: dict[str, Host] = {}
    groups: dict[str, dict[str, None]] = {}
    unsupported: dict[str, str] = {}
    warnings: list[str] = []
    for part in parts:
        for name, host in part.hosts.items():
            if name in hosts:  # the later part's settings, both parts' groups
                union = tuple(sorted(set(hosts[name].groups) | set(host.groups)))
                host = dataclasses.replace(host, groups=union)
            hosts[name] = host
        for group, members in part.groups.items():
            groups.setdefault(group, {}).update(dict.fromkeys(members))
        unsupported.update(part.unsupported)
        warnings.extend(part.warnings)
    order = {name: index for index, name in enumerate(hosts)}
    return Inventory(path=parts[0].path, hosts=hosts,
                     groups={g: tuple(sorted(m, key=order.__getitem__)) for g, m in groups.items()},
                     sources=tuple(labels), warnings=tuple(dict.fromkeys(warnings)), unsupported=unsupported,
                     ansible=any(part.ansible for part in parts),
                     ssh_config=all(part.ssh_config for part in parts))


def _read(ansible: _Ansible, spec: str) -> Inventory | None:
    """Read one -i source into the Ansible inventory, or return it as a fleetrun inventory."""
    if spec == "-":
        from fleetrun.sources import listjson

        ansible.add_source(Path("-"), adjacent=False, label="<stdin>")
        listjson.read_list(ansible.data, sys.stdin.read(), "<stdin>")
        return None
    path = Path(spec).expanduser()
    if "," in spec and not path.exists():  # Ansible's host_list plugin: -i 'web1,web2:2222,'
        ansible.add_source(Path(spec), adjacent=False, label=spec)  # no group_vars for it, as in Ansible
        _read_host_list(ansible.data, spec)
        return None
    if path.is_dir():
        ansible.add_source(path.absolute(), adjacent=True, label=spec)
        if not _read_directory(ansible, path):
            raise InventoryError(str(path), None, "no inventory file in this directory; add one (INI or YAML)")
        return None
    if not path.exists():
        return load_inventory(path)  # its own "cannot read the inventory" error
    fleetrun_inventory = _read_file(ansible, path)
    if fleetrun_inventory is None:
        # --list JSON has its group_vars folded in already; any other file gets those beside it, as in Ansible
        ansible.add_source(path.absolute(), adjacent=path not in ansible.data.listed_files, label=spec)
    return fleetrun_inventory


def _read_directory(ansible: _Ansible, directory: Path) -> bool:
    """Every inventory file in an Ansible inventory directory, sorted, recursing; whether any was read."""
    read = False
    for name in sorted(os.listdir(directory)):
        if _IGNORED.search(name):
            continue
        full = directory / name
        if full.is_dir():
            read = _read_directory(ansible, full) or read
        elif full.is_file():
            if _read_file(ansible, full) is not None:
                raise InventoryError(str(full), None, "a fleetrun inventory cannot be part of an Ansible inventory "
                                     "directory; pass it with its own -i")
            read = True
    return read


def _read_file(ansible: _Ansible, path: Path) -> Inventory | None:
    if path.suffix == ".toml":
        raise InventoryError(str(path), None, "TOML inventories are not read directly; use --ansible-inventory FILE")
    if os.access(path, os.X_OK) and path.suffix not in DATA_SUFFIXES:
        _run_script(ansible.data, path)
        return None
    text = read_text(path)
    if text.lstrip().startswith(VAULT_HEADER):  # else its ciphertext lines would be read as INI host names
        raise InventoryError(str(path), 1, "this inventory file is vault-encrypted, and fleetrun does not decrypt "
                             "vaults; read it through Ansible (and your vault password) with --ansible-inventory "
                             "FILE")
    if path.suffix == ".json":
        import json

        try:
            top = json.loads(text)
        except json.JSONDecodeError as error:
            _ini_instead(ansible.data, path, text, InventoryError(str(path), error.lineno,
                                                                   f"not valid JSON: {error.msg}"))
            return None
        _read_json(ansible.data, path, text, top)
        return None
    if path.suffix == ".ini":
        _read_ini(ansible.data, path, text)
        return None
    yaml_suffix = path.suffix in (".yml", ".yaml")
    if yaml_suffix or not _SECTION_LINE.search(text):
        try:
            tree = compose_tree(text)  # the compact tree: all a fleetrun inventory needs, a quarter of the memory
        except yaml.YAMLError:
            if yaml_suffix:
                try:
                    compose(path, text)  # the error, worded as for every YAML source
                except InventoryError as error:
                    _ini_instead(ansible.data, path, text, error)
                    return None
            tree = None
        if isinstance(tree, TreeMapping):
            if _is_fleetrun(tree):
                return load_inventory(path, tree)
            del tree  # before the full tree
            root = compose(path, text)
            assert root is not None
            _read_yaml(ansible.data, path, root)
            return None
        if yaml_suffix and tree is None:  # Ansible reads an empty .yml as an empty INI file: fleetrun says so
            raise InventoryError(str(path), 1, "the inventory is empty; add 'all:' with hosts (Ansible) or "
                                 "'hosts:' (fleetrun)")
        if yaml_suffix:
            _ini_instead(ansible.data, path, text, InventoryError(
                str(path), 1, "the inventory is not a mapping; add 'all:' with hosts (Ansible) or 'hosts:' (fleetrun)"))
            return None
    _read_ini(ansible.data, path, text)
    return None


def _ini_instead(data: AnsibleData, path: Path, text: str, error: InventoryError) -> None:
    """A .yml/.yaml/.json file that is not a YAML mapping (or not JSON) is read as INI, as Ansible does: its
    `ini` plugin comes after `yaml` and takes any file name, so an INI file called hosts.yml or a bare `web1`
    load there. When INI cannot read it either, the YAML/JSON error is the one that is meant, and the one
    shown."""
    try:
        _read_ini(data, path, text)
    except InventoryError:
        raise error from None


def _read_ini(data: AnsibleData, path: Path, text: str) -> None:
    from fleetrun.sources.ini import read_ini

    read_ini(data, path, text)


def _read_yaml(data: AnsibleData, path: Path, root: yaml.Node) -> None:
    from fleetrun.sources.ansible_yaml import read_yaml

    read_yaml(data, path, root)


def _read_host_list(data: AnsibleData, spec: str) -> None:
    """`-i 'a,b:2222,'`, as Ansible's host_list plugin reads it: hosts in 'ungrouped', each with its port; no
    ranges (`web[1:3]` is that one odd name); a host some earlier source already has is left as it is."""
    from fleetrun.sources import hostpatterns

    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        name, port = hostpatterns.split_port(item)
        if "[" in name:  # a range: Ansible's parser (allow_ranges=False) leaves the whole item unchanged
            name, port = item, None
        if name not in data.hosts:
            data.add_host(name, "ungrouped", port, (spec, None))


def _is_fleetrun(root: TreeMapping) -> bool:
    keys = {key.value for key, _ in root.value if isinstance(key, TreeScalar)}
    return "hosts" in keys and keys <= FLEETRUN_KEYS


def _read_json(data: AnsibleData, path: Path, text: str, top: object) -> None:
    from fleetrun.sources import listjson

    list_shape = isinstance(top, dict) and ("_meta" in top or any(
        isinstance(body, list) or (isinstance(body, dict) and any(
            isinstance(body.get(key), list) for key in ("hosts", "children"))) for body in top.values()))
    if list_shape or not isinstance(top, dict):
        data.listed_files.add(path)
        listjson.read_list(data, text, str(path))
    else:
        root = compose(path, text)
        assert root is not None
        _read_yaml(data, path, root)


def _run_script(data: AnsibleData, path: Path) -> None:
    from fleetrun.sources import listjson

    label = str(path)
    deadline = time.monotonic() + listjson.timeout()
    command = str(path.absolute())
    output = listjson.run([command, "--list"], label, deadline)
    listjson.read_list(data, output, label, host_vars=lambda host: listjson.run([command, "--host", host], label,
                                                                                 deadline))


def find_ansible_inventory() -> str:
    """The ansible-inventory program: on $PATH, else next to this Python (the same virtualenv)."""
    found = shutil.which("ansible-inventory")
    beside = Path(sys.executable).parent / "ansible-inventory"
    if found is None and beside.is_file() and os.access(beside, os.X_OK):
        found = str(beside)
    if found is None:
        raise UsageError("--ansible-inventory needs Ansible's ansible-inventory program, which is not installed "
                         "(pip install ansible-core); or read INI/YAML/directories/scripts directly with -i")
    return found


def _run_ansible_inventory(ansible: _Ansible, spec: str) -> None:
    from fleetrun.sources import listjson

    program = find_ansible_inventory()
    label = f"ansible-inventory -i {spec}"
    # Fail instead of printing an empty inventory when Ansible cannot parse the source.
    env = {**os.environ, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
           "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "true"}
    output = listjson.run([program, "-i", spec, "--list"], label, time.monotonic() + listjson.timeout(), env=env)
    ansible.add_source(Path(spec), adjacent=False, label=label)
    listjson.read_list(ansible.data, output, label)
