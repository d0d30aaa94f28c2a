"""A compact YAML node tree for the fleetrun inventory: PyYAML's composer, with nodes of four slots.

`yaml.compose` gives every node a `__dict__`, a start and an end mark: 2.5 KiB per host of a lab inventory,
most of the peak memory of reading 1000 hosts (issue 13). These nodes keep only the tag, the value, the line
(1-based) and the offset in the text (for "defined later" order); the reader needs nothing else. The events
come from the same (C, when built with libyaml) parser and tags resolve with the same resolver as
`yaml.compose(text, Loader=CSafeLoader)`, so trees, syntax errors and their marks are the same.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.error import Mark
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

_PARSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # only its parser part (events) is used
_RESOLVER = yaml.resolver.Resolver()  # what SafeLoader and CSafeLoader resolve untagged nodes with


class Node:
    """One node: `value` is a str (scalars), a list of nodes (sequences) or of (key, value) node pairs."""

    __slots__ = ("index", "line", "tag", "value")

    def __init__(self, tag: str, value: Any, line: int, index: int) -> None:
        self.tag = tag
        self.value = value
        self.line = line  # 1-based, for error messages
        self.index = index  # character offset in the text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(tag={self.tag!r}, line={self.line})"


class ScalarNode(Node):
    __slots__ = ()
    value: str


class SequenceNode(Node):
    __slots__ = ()
    value: list[Node]


class MappingNode(Node):
    __slots__ = ()
    value: list[tuple[Node, Node]]


def compose(text: str) -> Node | None:
    """The tree of the one YAML document in `text` (None if empty); raises what `yaml.compose` raises."""
    parser = _PARSER(text)
    try:
        return _Composer(parser).single()
    finally:
        parser.dispose()


def _mark(node: Node) -> Mark:
    return Mark("<unicode string>", node.index, node.line - 1, 0, None, None)  # type: ignore[arg-type]


class _Composer:
    """yaml.composer.Composer's steps, building `Node`s; the errors are the C composer's words."""

    def __init__(self, parser: Any) -> None:
        self.parser = parser
        self.anchors: dict[str, Node] = {}

    def single(self) -> Node | None:
        parser = self.parser
        parser.get_event()  # stream start
        document = None
        if not parser.check_event(StreamEndEvent):
            parser.get_event()  # document start
            document = self.node()
            parser.get_event()  # document end
            self.anchors = {}
        if not parser.check_event(StreamEndEvent):
            event: Any = parser.get_event()
            raise ComposerError("expected a single document in the stream", _mark(document) if document else None,
                                "but found another document", event.start_mark)
        parser.get_event()  # stream end
        return document

    def node(self) -> Node:
        """The next node and everything in it; iterative, so that no nesting depth can exhaust the stack."""
        parser = self.parser
        open_nodes: list[Node] = []  # the sequences and mappings being filled, innermost last
        keys: list[Node | None] = []  # per open mapping: its key waiting for a value
        while True:
            event: Any = parser.get_event()
            if isinstance(event, (SequenceEndEvent, MappingEndEvent)):
                node = open_nodes.pop()
                keys.pop()
            elif isinstance(event, AliasEvent):
                if event.anchor not in self.anchors:
                    raise ComposerError(None, None, "found undefined alias", event.start_mark)  # type: ignore[arg-type]
                node = self.anchors[event.anchor]
            else:
                node = self.start(event)
                if not isinstance(node, ScalarNode):
                    open_nodes.append(node)
                    keys.append(None)
                    continue
            if not open_nodes:
                return node
            parent = open_nodes[-1]
            if isinstance(parent, SequenceNode):
                parent.value.append(node)
            elif keys[-1] is None:
                if type(node) is ScalarNode:  # the same few keys on every host: one string each
                    node.value = sys.intern(node.value)
                keys[-1] = node
            else:
                parent.value.append((keys[-1], node))
                keys[-1] = None

    def start(self, event: Any) -> Node:
        """A scalar, or an empty sequence or mapping, for the event that begins it."""
        anchor = event.anchor
        if anchor is not None and anchor in self.anchors:
            raise ComposerError("found duplicate anchor; first occurrence", _mark(self.anchors[anchor]),
                                "second occurrence", event.start_mark)
        tag, mark = event.tag, event.start_mark
        kind: type[Node]
        model: type[yaml.nodes.Node]
        value: Any
        if isinstance(event, ScalarEvent):
            kind, model, value = ScalarNode, yaml.nodes.ScalarNode, event.value
        elif isinstance(event, SequenceStartEvent):
            kind, model, value = SequenceNode, yaml.nodes.SequenceNode, []
        else:
            assert isinstance(event, MappingStartEvent), event
            kind, model, value = MappingNode, yaml.nodes.MappingNode, []
        if tag is None or tag == "!":
            tag = _RESOLVER.resolve(model, event.value if kind is ScalarNode else None,  # type: ignore[no-untyped-call]
                                    event.implicit)
        node = kind(tag, value, mark.line + 1, mark.index)
        if anchor is not None:
            self.anchors[anchor] = node
        return node
