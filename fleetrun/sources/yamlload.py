"""YAML for Ansible files: node trees with lines, values as Ansible's loader builds them (`!vault`, `!unsafe`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from fleetrun.errors import InventoryError

if TYPE_CHECKING:  # a fleetrun YAML inventory is composed here too, and never needs the Ansible data model
    from fleetrun.sources.ansible_data import Origin, Vaulted

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
VAULT_HEADER = "$ANSIBLE_VAULT;"


class _Constructor(yaml.constructor.SafeConstructor):
    """SafeConstructor plus Ansible's own tags; values as `ansible-inventory --list` prints them (JSON)."""


def _vault(constructor: _Constructor, node: Node) -> Vaulted:
    from fleetrun.sources.ansible_data import Vaulted

    return Vaulted(constructor.construct_scalar(node))  # type: ignore[arg-type]  # the ciphertext, kept for export


def _unsafe(constructor: _Constructor, node: Node) -> Any:
    if isinstance(node, ScalarNode):
        return constructor.construct_scalar(node)
    if isinstance(node, SequenceNode):
        return constructor.construct_sequence(node, deep=True)
    return constructor.construct_mapping(node, deep=True)  # type: ignore[arg-type]


def _timestamp(constructor: _Constructor, node: Node) -> Any:
    # Ansible holds a date or datetime, which --list prints in ISO 8601: `2024-01-02 10:00:00Z` is
    # "2024-01-02T10:00:00+00:00" there, and so here (a plain date keeps its text, 2024-01-02).
    return constructor.construct_yaml_timestamp(node).isoformat()  # type: ignore[arg-type]


def _set(constructor: _Constructor, node: Node) -> Any:
    # A set has no JSON form: --list prints `!!set {a, b}` as a list; kept in the order written.
    if not isinstance(node, MappingNode):
        raise yaml.constructor.ConstructorError(None, None, "!!set must be a mapping ({a, b})", node.start_mark)
    return [constructor.construct_object(key, deep=True) for key, _ in node.value]


def _pairs(constructor: _Constructor, node: Node) -> Any:
    # `!!omap`/`!!pairs` are lists of (key, value) tuples, which --list prints as two-item lists.
    if not isinstance(node, SequenceNode):
        raise yaml.constructor.ConstructorError(None, None, f"{node.tag} must be a list", node.start_mark)
    pairs = []
    for item in node.value:
        if not isinstance(item, MappingNode) or len(item.value) != 1:
            raise yaml.constructor.ConstructorError(None, None, f"each item of {node.tag} must be one key: value",
                                                    item.start_mark)
        key, value = item.value[0]
        pairs.append([constructor.construct_object(key, deep=True), constructor.construct_object(value, deep=True)])
    return pairs


def _binary(constructor: _Constructor, node: Node) -> Any:
    # Bytes: `ansible-inventory --list` fails on them ("not JSON serializable"), and fleetrun's JSON output would.
    raise yaml.constructor.ConstructorError(None, None, "a !!binary value is bytes, which ansible-inventory cannot "
                                            "print either; write it as text (base64 in a string)", node.start_mark)


_Constructor.add_constructor("tag:yaml.org,2002:binary", _binary)  # type: ignore[type-var]
_Constructor.add_constructor("!vault", _vault)  # type: ignore[type-var]
_Constructor.add_constructor("!unsafe", _unsafe)  # type: ignore[type-var]
_Constructor.add_constructor("tag:yaml.org,2002:timestamp", _timestamp)  # type: ignore[type-var]
_Constructor.add_constructor("tag:yaml.org,2002:set", _set)  # type: ignore[type-var]
_Constructor.add_constructor("tag:yaml.org,2002:omap", _pairs)  # type: ignore[type-var]
_Constructor.add_constructor("tag:yaml.org,2002:pairs", _pairs)  # type: ignore[type-var]


def read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise InventoryError(str(path), None, f"cannot read it: {error.strerror}; check the path") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise InventoryError(str(path), line, "not UTF-8 text; save the file as UTF-8") from None


def compose(path: Path, text: str) -> Node | None:
    """The node tree of one YAML document; InventoryError at the line of a syntax error."""
    try:
        return yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        # problem/context only: str(error) quotes the source line, which may hold a secret.
        what = " ".join("; ".join(str(part) for part in (error.context, error.problem) if part).split())
        raise InventoryError(str(path), mark.line + 1 if mark else None, f"invalid YAML: {what}; fix the syntax") \
            from None
    except yaml.YAMLError:
        raise InventoryError(str(path), None, "invalid YAML: unreadable character; remove it") from None


def line_of(path: Path, node: Node) -> Origin:
    return (str(path), node.start_mark.line + 1)


def construct(path: Path, node: Node) -> Any:
    """Plain data for one value node; an unknown tag or a bad scalar is an error at its line."""
    constructor = _Constructor()
    try:
        return constructor.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as error:
        mark = error.problem_mark or node.start_mark
        raise InventoryError(str(path), mark.line + 1, f"cannot read this value: {error.problem}") from None
    except (ValueError, TypeError, RecursionError) as error:
        raise InventoryError(str(path), node.start_mark.line + 1, f"cannot read this value: {error}") from None


def pairs(path: Path, node: MappingNode) -> list[tuple[Node, Node]]:
    """The (key, value) nodes of a mapping with `<<` merges applied, as the dict Ansible builds from it has
    them: a repeated key keeps its first place and takes its last value ("Using last defined value only").
    Merged keys count: in `web: {<<: *base, hosts: {w1: }}` the `hosts` of *base is gone, not added to."""
    constructor = _Constructor()
    try:
        constructor.flatten_mapping(node)
    except yaml.constructor.ConstructorError as error:
        mark = error.problem_mark or node.start_mark
        raise InventoryError(str(path), mark.line + 1, f"invalid merge key: {error.problem}") from None
    found: dict[Any, tuple[Node, Node]] = {}
    for key_node, value_node in node.value:
        # A non-scalar key is refused later (scalar_key); until then it is its own entry.
        key = construct(path, key_node) if isinstance(key_node, ScalarNode) else ("node", id(key_node))
        found[key] = (key_node, value_node)
    return list(found.values())


def scalar_key(path: Path, node: Node) -> Any:
    """A mapping key as a Python value (usually a string)."""
    if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:timestamp":
        # Ansible gets a date: not a host or group name ("must be a string"), and --list fails on a date var name
        raise InventoryError(str(path), node.start_mark.line + 1, f"the name {node.value!r} is a date in YAML; "
                             f"quote it ('{node.value}':)")
    if isinstance(node, ScalarNode):
        return construct(path, node)
    raise InventoryError(str(path), node.start_mark.line + 1, "a key must be a plain value, not a list or mapping")
