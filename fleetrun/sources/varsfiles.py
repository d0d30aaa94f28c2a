"""group_vars/ and host_vars/ next to an inventory source, found and merged the way Ansible's host_group_vars does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, ScalarNode

from fleetrun.sources.ansible_data import AnsibleData, Origin, fail
from fleetrun.sources.yamlload import VAULT_HEADER, compose, construct, line_of, pairs, read_text, scalar_key

EXTENSIONS = ("", ".yml", ".yaml", ".json")  # Ansible's order: the first one that exists is the only one read
Vars = tuple[dict[str, Any], dict[str, Origin]]


class VarsDir:
    """One `group_vars` or `host_vars` directory; lists itself once so that 5,000 hosts cost 5,000 dict lookups."""

    def __init__(self, data: AnsibleData, path: Path) -> None:
        self.data = data
        self.path = path
        try:
            self.names = set(os.listdir(path)) if path.is_dir() else set()
        except OSError as error:
            fail((str(path), None), f"cannot list it: {error.strerror}")
        self.cache: dict[str, Vars] = {}

    def get(self, name: str) -> Vars:
        """The merged vars of the entity `name`; ({}, {}) when it has no file."""
        if name in self.cache:
            return self.cache[name]
        merged: Vars = ({}, {})
        if self.names and not name.startswith(os.sep):
            for extension in EXTENSIONS:
                candidate = name + extension
                if candidate in self.names:
                    full = self.path / candidate
                    for file in _files(full) if full.is_dir() else [full]:
                        values, origins = load_file(self.data, file)
                        merged[0].update(values)
                        merged[1].update(origins)
                    break
        self.cache[name] = merged
        return merged


def _files(directory: Path) -> list[Path]:
    """Every vars file under a directory, sorted, recursing; hidden and backup (`~`) files are skipped."""
    found: list[Path] = []
    for entry in sorted(os.listdir(directory)):
        if entry.startswith(".") or entry.endswith("~"):
            continue
        full = directory / entry
        extension = os.path.splitext(entry)[1]
        if full.is_dir() and not extension:
            found.extend(_files(full))
        elif full.is_file() and extension in EXTENSIONS:
            found.append(full)
    return found


def load_file(data: AnsibleData, path: Path) -> Vars:
    """One vars file: a mapping of variables (YAML or JSON); empty is fine; vault-encrypted is skipped, said."""
    text = read_text(path)
    if text.lstrip().startswith(VAULT_HEADER):
        data.warnings.append(f"{path}: vault-encrypted, so its variables are not loaded (fleetrun does not "
                             "decrypt vaults; --ansible-inventory SRC reads them through Ansible)")
        return {}, {}
    root = compose(path, text)
    if root is None or (isinstance(root, ScalarNode) and root.tag == "tag:yaml.org,2002:null"):
        return {}, {}
    if not isinstance(root, MappingNode):
        fail(line_of(path, root), "a vars file must be a mapping of variable names to values")
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for key_node, value_node in pairs(path, root):
        key = data.var_name(scalar_key(path, key_node), line_of(path, key_node))
        value = construct(path, value_node)
        data.check_secret(key, value, line_of(path, key_node))
        values[key] = value
        origins[key] = line_of(path, key_node)
    return values, origins
