"""Ansible's YAML inventory format (`all:` with hosts, vars and children), read the way its `yaml` plugin reads it."""

from __future__ import annotations

from pathlib import Path

from yaml.nodes import MappingNode, Node, ScalarNode

from fleetrun.sources import hostpatterns
from fleetrun.sources.ansible_data import AnsibleData, fail
from fleetrun.sources.yamlload import construct, line_of, pairs, scalar_key

_NULL = "tag:yaml.org,2002:null"
_SECTIONS = ("vars", "children", "hosts")


def read_yaml(data: AnsibleData, path: Path, root: Node) -> None:
    """Add one Ansible YAML inventory (already composed) to `data`: each top-level key is a group."""
    if not isinstance(root, MappingNode):
        fail(line_of(path, root), "an Ansible YAML inventory must be a mapping of group names, e.g. 'all:'")
    for key_node, _ in pairs(path, root):
        if scalar_key(path, key_node) == "plugin":
            fail(line_of(path, key_node), "this is an inventory plugin configuration, not an inventory; read it "
                 "through Ansible with --ansible-inventory FILE")
    for key_node, value_node in pairs(path, root):
        _group(data, path, key_node, value_node)


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _group(data: AnsibleData, path: Path, key_node: Node, node: Node) -> str | None:
    where = line_of(path, key_node)
    name = scalar_key(path, key_node)
    if not (isinstance(node, MappingNode) or _is_null(node)):
        data.warnings.append(f"{where[0]}:{where[1]}: skipped {name!r}: not a valid group definition "
                             "(Ansible skips it too)")
        return None
    group = data.add_group(name, where)
    if _is_null(node):
        return group
    assert isinstance(node, MappingNode)
    for section_key, section in pairs(path, node):
        section_name = scalar_key(path, section_key)
        here = line_of(path, section_key)
        if section_name not in _SECTIONS:
            data.warnings.append(f"{here[0]}:{here[1]}: skipped the key {section_name!r} in group {group!r}: "
                                 "only vars, children and hosts are valid (Ansible skips it too)")
            continue
        if isinstance(section, ScalarNode) and not _is_null(section) and section.tag == "tag:yaml.org,2002:str":
            entries: list[tuple[Node, Node | None]] = [(section, None)]  # `hosts: web01` means {web01: null}
        elif _is_null(section):
            continue
        elif isinstance(section, MappingNode):
            entries = list(pairs(path, section))
        else:
            fail(line_of(path, section), f"group {group!r}: {section_name} must be a mapping, not a list or "
                 f"a single value (write '{section_name}: {{name: ...}}' or a name per line ending in ':')")
        for entry_key, entry in entries:
            if section_name == "vars":
                value = construct(path, entry) if entry is not None else None
                data.set_group_var(group, scalar_key(path, entry_key), value, line_of(path, entry_key))
            elif section_name == "children":
                child = _group(data, path, entry_key, entry if entry is not None else entry_key_null(entry_key))
                if child is None:
                    _odd_child(data, path, group, entry_key)
                else:
                    data.add_child(group, child, line_of(path, entry_key))
            else:
                _hosts(data, path, group, entry_key, entry)
    return group


def _odd_child(data: AnsibleData, path: Path, group: str, key_node: Node) -> None:
    """A child whose value is not a group definition (`children: {web: 5}`): Ansible skips the definition
    but still adds the name to the group, which works only if it already names a group (or a host, which
    becomes a member); otherwise its whole inventory fails. So here."""
    where = line_of(path, key_node)
    name = scalar_key(path, key_node)
    if name in data.groups:
        data.add_child(group, name, where)
    elif name in data.hosts:
        data.add_host(name, group, None, where)
    else:
        fail(where, f"child {name!r} of group {group!r} is neither a group definition (a mapping, or empty) "
             "nor a group defined before; write it as a mapping with hosts/vars/children, or leave it empty")


def entry_key_null(key_node: Node) -> Node:
    return ScalarNode(_NULL, "", key_node.start_mark, key_node.end_mark)


def _hosts(data: AnsibleData, path: Path, group: str, key_node: Node, node: Node | None) -> None:
    where = line_of(path, key_node)
    pattern = scalar_key(path, key_node)
    if not isinstance(pattern, str):
        fail(where, f"host name {pattern!r} must be a string; enclose numbers in quotes")
    address, port = hostpatterns.split_port(pattern)
    try:
        names = hostpatterns.expand(address)
    except ValueError as error:
        fail(where, str(error))
    variables = {}
    if isinstance(node, MappingNode):
        variables = {scalar_key(path, k): (construct(path, v), line_of(path, k)) for k, v in pairs(path, node)}
    elif node is not None and construct(path, node):  # Ansible reads `vars or {}`: 0, '', false, [] are no vars
        fail(line_of(path, node), f"host {pattern!r}: its value must be a mapping of variables (or empty)")
    for name in names:
        data.add_host(name, group, port, where)
        for key, (value, here) in variables.items():
            data.set_host_var(name, key, value, here)
