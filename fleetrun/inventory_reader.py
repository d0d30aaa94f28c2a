"""The YAML inventory's reader: parse, validate every node (file:line errors) and resolve each host's settings."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml

from fleetrun.errors import InventoryError
from fleetrun.hostnames import expand_ranges
from fleetrun.inventory import RESERVED_ENV, TOP_KEYS, Inventory
from fleetrun.inventory_sharing import Sharing, group_precedence
from fleetrun.models import Host
from fleetrun.yamltree import MappingNode, Node, ScalarNode, SequenceNode, compose

# Only the node tree (fleetrun.yamltree, from the C parser's events) is used, nothing gets constructed from tags.
_SCALARS = yaml.constructor.SafeConstructor()  # only its stateless scalar builders (int, float, bool) run
_T = "tag:yaml.org,2002:"
_STR, _INT, _NULL, _SEQ, _MAP, _MERGE = (_T + tag for tag in ("str", "int", "null", "seq", "map", "merge"))
# Timestamps stay the text the user wrote: vars end up in commands and JSON, where a datetime is a surprise.
_SCALAR_TAGS = {_T + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
_CONN_KEYS = ("user", "port", "key", "password_env", "password_file", "connect_timeout", "known_hosts", "jump",
              "proxy_command")
_BECOME_KEYS = ("become", "become_user", "become_password_env", "become_password_file")  # sudo (issue 10)
_DEFAULTS_KEYS = (*_CONN_KEYS, *_BECOME_KEYS, "env", "ssh_config")
_HOST_KEYS = ("address", *_CONN_KEYS, *_BECOME_KEYS, "groups", "vars", "env")
_GROUP_KEYS = ("hosts", "children", "vars", "env", *_CONN_KEYS, *_BECOME_KEYS)
# The keys that resolve by precedence (only hosts may set address); `vars` and `env` merge key by key.
_SETTINGS = {"address", *_CONN_KEYS, *_BECOME_KEYS}
_BAD_NAME = re.compile(r"[\s,&!^*?\[\]]")  # characters the selection language gives a meaning to
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_DEPTH = 100
_V = TypeVar("_V")
_NO_PASSWORD = (
    "a literal password is not allowed in the inventory; set password_env (the name of an environment "
    "variable) or password_file (a file readable only by you)"
)


def read_inventory(path: Path, tree: Node | None = None) -> Inventory:
    """Read, validate and resolve one inventory file; raises InventoryError, never a YAML or OS error.

    `tree`: the file's node tree when the caller already composed it (fleetrun.sources, to tell formats apart).
    """
    if tree is not None:
        return _read_tree(path, tree)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except OSError as error:
        raise InventoryError(str(path), None, f"cannot read the inventory: {error.strerror}; "
                             "check the path or pass -i FILE") from None
    except UnicodeDecodeError as error:
        bad_line = raw[: error.start].count(b"\n") + 1
        raise InventoryError(str(path), bad_line, "not UTF-8 text; save the file as UTF-8") from None
    try:
        root = compose(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        # problem/context only: str(error) quotes the offending source line, which may hold a secret.
        what = " ".join("; ".join(str(part) for part in (error.context, error.problem) if part).split())
        line = mark.line + 1 if mark else None
        raise InventoryError(str(path), line, f"invalid YAML: {what}; fix the syntax") from None
    except yaml.YAMLError as error:
        position = getattr(error, "position", None)
        where = text[:position].count("\n") + 1 if isinstance(position, int) else None
        raise InventoryError(str(path), where, "invalid YAML: unreadable character; remove it") from None
    if root is None or root.tag == _NULL:
        raise InventoryError(str(path), 1, "the inventory is empty; add a 'hosts:' mapping (see the example)")
    return _read_tree(path, root)


def _read_tree(path: Path, root: Node) -> Inventory:
    try:
        return _Reader(path).inventory(root)
    except RecursionError:
        raise InventoryError(str(path), None, "the inventory is nested too deeply; flatten it") from None


@dataclass
class _Entry:
    """One host or group as written, before precedence is applied."""

    node: Node  # its key, for error lines
    settings: dict[str, Any]
    vars: dict[str, Any]
    env: dict[str, str | None] = field(default_factory=dict)  # None: unset what a group or defaults set


def _apply(resolved: dict[str, Any], level: dict[str, Any], sources: dict[str, str], label: str) -> None:
    # password_env and password_file are one choice: a more specific level picking one drops the other.
    # So are jump and proxy_command (how to reach the host).
    for pair in (("password_env", "password_file"), ("jump", "proxy_command"),
                 ("become_password_env", "become_password_file")):
        if pair[0] in level or pair[1] in level:
            for key in pair:
                resolved.pop(key, None)
                sources.pop(key, None)
    resolved.update(level)
    sources.update(dict.fromkeys(level, label))


def _kind(node: Node) -> str:
    if isinstance(node, ScalarNode) and node.tag in _SCALAR_TAGS:
        return "null" if node.tag == _NULL else repr(node.value)
    if node.tag not in (_SEQ, _MAP):
        tag = node.tag.replace(_T, "!!")
        return f"the YAML tag {tag!r} (only plain values, lists and mappings are allowed)"
    return "a list" if isinstance(node, SequenceNode) else "a mapping"


def _suggest(word: str, choices: Any) -> str:
    from difflib import get_close_matches  # an error path: not ~3 ms of every start-up
    close = get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Reader:
    """Walks the composed node tree of one file; every failure becomes an InventoryError at a node's line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.absolute().parent
        self.active: set[int] = set()  # mappings/lists being walked: an alias back into one is a loop
        self.built: dict[int, Any] = {}  # aliases share nodes: build each once so alias bombs stay linear
        self.entries_by_host: dict[str, _Entry] = {}
        self.entries_by_group: dict[str, _Entry] = {}
        self.direct: dict[str, set[str]] = {}  # group -> hosts listed directly, from either side
        self.children: dict[str, list[tuple[str, Node]]] = {}
        self.defined: dict[str, Node] = {}  # group -> where it is defined: the "later wins" order

    def fail(self, node: Node | None, message: str) -> NoReturn:
        line = node.line if node is not None else None
        raise InventoryError(str(self.path), line, " ".join(message.splitlines()))

    def enter(self, node: Node, where: str) -> None:
        if id(node) in self.active:
            self.fail(node, f"{where} contains itself through a YAML alias; remove the loop")
        if len(self.active) >= MAX_DEPTH:  # well before Python's recursion limit
            self.fail(node, f"{where} is nested more than {MAX_DEPTH} levels deep; flatten it")
        self.active.add(id(node))

    def pairs(self, node: Node, where: str, noun: str = "key") -> dict[str, tuple[Node, Node]]:
        """A mapping as key -> (key node, value node); applies `<<` merges, refuses duplicates and passwords."""
        if node.tag == _NULL:
            return {}
        if not isinstance(node, MappingNode) or node.tag != _MAP:
            self.fail(node, f"{where} must be a mapping, got {_kind(node)}")
        merged: dict[str, tuple[Node, Node]] = {}
        own: dict[str, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag != _STR or key_node.__class__ is not ScalarNode:
                if key_node.tag != _MERGE:
                    self.fail(key_node, f"{where}: the {noun} {_kind(key_node)} is not a string; quote it")
                self.enter(node, where)
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:  # earlier sources win, as YAML's merge key says
                    for key, pair in self.pairs(source, where, noun).items():
                        merged.setdefault(key, pair)
                self.active.discard(id(node))
                continue
            key = key_node.value
            if key in own:
                first = own[key][0].line
                self.fail(key_node, f"{where}: duplicate {noun} {key!r} (first at line {first}); keep one")
            if len(key) == 8 and key.lower() == "password":
                self.fail(key_node, f"{where}: {_NO_PASSWORD}")
            own[key] = (key_node, value_node)
        return {**merged, **own} if merged else own

    def section(self, node: Node, where: str, allowed: tuple[str, ...]) -> dict[str, tuple[Node, Node]]:
        """A mapping whose keys must come from `allowed`; null counts as empty."""
        fields = self.pairs(node, where)
        for key, (key_node, _) in fields.items():
            if key not in allowed:
                hint = _suggest(key, allowed) or f"; valid keys: {', '.join(allowed)}"
                self.fail(key_node, f"{where}: unknown key {key!r}{hint}")
        return fields

    def scalar(self, node: Node, where: str) -> Any:
        if not isinstance(node, ScalarNode) or node.tag not in _SCALAR_TAGS:
            self.fail(node, f"{where} must be a single value, got {_kind(node)}")
        if node.tag in (_STR, _T + "timestamp"):
            return node.value
        if node.tag == _INT and node.value.isdigit() and node.value[0] != "0":  # skips YAML 1.1 octal/base 60
            return int(node.value)
        try:
            return _SCALARS.yaml_constructors[node.tag](_SCALARS, yaml.nodes.ScalarNode(node.tag, node.value))
        except (ValueError, KeyError, yaml.YAMLError):  # e.g. `!!int abc`, `!!bool maybe`
            self.fail(node, f"{where}: {node.value!r} is not a valid {node.tag.rsplit(':', 1)[-1]}")

    def data(self, node: Node, where: str) -> Any:
        """Plain data (for vars): scalars, lists and mappings, nothing else."""
        if id(node) in self.built:
            return self.built[id(node)]
        if isinstance(node, ScalarNode):
            return self.scalar(node, where)
        self.enter(node, where)
        if isinstance(node, SequenceNode) and node.tag == _SEQ:
            value: Any = [self.data(item, where) for item in node.value]
        else:
            value = {key: self.data(item, f"{where}.{key}") for key, (_, item) in self.pairs(node, where).items()}
        self.active.discard(id(node))
        self.built[id(node)] = value
        return value

    def names(self, node: Node | None, where: str) -> list[tuple[str, Node]]:
        """A list of names (a single name is accepted too), each with its node for error lines."""
        if node is None or node.tag == _NULL:
            return []
        items = node.value if isinstance(node, SequenceNode) and node.tag == _SEQ else [node]
        out: list[tuple[str, Node]] = []
        for item in items:
            if not isinstance(item, ScalarNode) or item.tag != _STR or not item.value.strip():
                self.fail(item, f"{where} must be a list of names, got {_kind(item)}")
            out.append((item.value.strip(), item))
        return out

    def check_name(self, name: str, node: Node, kind: str) -> None:
        if not name or _BAD_NAME.search(name) or name == "all":
            self.fail(node, f"{kind} name {name!r} is not usable in host patterns; avoid 'all', spaces "
                      "and , & ! ^ * ? [ ] (brackets only as ranges like web[01:12])")

    def path_value(self, value: str) -> str:
        # Relative to the inventory, not the working directory: cron and CI run from anywhere.
        return os.path.normpath(self.base / os.path.expanduser(value))

    def setting(self, key: str, node: Node, where: str) -> Any:
        label = f"{where}: {key}"
        if key == "known_hosts" and node.tag != _NULL:
            return tuple(self.path_value(name) for name, _ in self.names(node, label))
        if key == "jump" and node.tag != _NULL:
            return self.jump(node, label)
        value = self.scalar(node, label)
        if value is None:
            return None
        if key == "port":
            if isinstance(value, str) and value.isascii() and value.isdigit():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
                self.fail(node, f"{label} must be an integer from 1 to 65535, got {value!r}")
        elif key == "become":
            if not isinstance(value, bool):
                self.fail(node, f"{label} must be true or false, got {value!r}")
        elif key == "connect_timeout":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                self.fail(node, f"{label} must be a positive number of seconds, got {value!r}")
            return float(value)
        elif not isinstance(value, str) or not value.strip():
            self.fail(node, f"{label} must be a non-empty string, got {value!r}")
        elif key in ("password_env", "become_password_env") and not _ENV_NAME.match(value):
            # Not echoed: a value that is not a variable name may well be the password itself.
            self.fail(node, f"{label} must be the name of an environment variable (letters, digits, _), "
                      "not the password itself")
        elif key in ("key", "password_file", "become_password_file"):
            return self.path_value(value)
        return value

    def jump(self, node: Node, label: str) -> tuple[str, ...]:
        """`jump:` one hop, a comma list or a YAML list of `[user@]host[:port]`; `none` means direct."""
        from fleetrun.sshconfig import parse_hop

        hops = [hop.strip() for name, _ in self.names(node, label) for hop in name.split(",")]
        if [hop.lower() for hop in hops] == ["none"]:
            return ()
        for hop in hops:
            if hop.lower() == "none":
                self.fail(node, f"{label}: 'none' must be alone (it means: connect directly)")
            try:
                parse_hop(hop)
            except ValueError as error:
                self.fail(node, f"{label}: {error}; write [user@]host[:port]")
        return tuple(hops)

    def entry(self, key_node: Node, fields: dict[str, tuple[Node, Node]], where: str) -> _Entry:
        settings = {key: self.setting(key, node, where) for key, (_, node) in fields.items() if key in _SETTINGS}
        for env_key, file_key in (("password_env", "password_file"), ("become_password_env", "become_password_file")):
            if settings.get(env_key) and settings.get(file_key):
                self.fail(fields[file_key][0], f"{where}: set {env_key} or {file_key}, not both")
        if settings.get("jump") is not None and settings.get("proxy_command") is not None:
            self.fail(fields["proxy_command"][0], f"{where}: set jump or proxy_command, not both")
        variables = self.data(fields["vars"][1], f"{where}: vars") if "vars" in fields else None
        if not isinstance(variables, (dict, type(None))):
            self.fail(fields["vars"][1], f"{where}: vars must be a mapping, got {_kind(fields['vars'][1])}")
        env = self.env(fields["env"][1], f"{where}: env") if "env" in fields else {}
        return _Entry(key_node, settings, dict(variables or {}), env)

    def env(self, node: Node, where: str) -> dict[str, str | None]:
        """`env:` NAME: value, exported to the command (issue 14); scalars only, as the shell sees them."""
        out: dict[str, str | None] = {}
        for name, (key_node, value_node) in self.pairs(node, where, "variable").items():
            if not _ENV_NAME.match(name):
                self.fail(key_node, f"{where}: {name!r} is not a variable name (letters, digits, _; not a digit "
                          "first)")
            if RESERVED_ENV.match(name):
                self.fail(key_node, f"{where}: {name} is set by fleetrun itself; pick another name")
            value = self.scalar(value_node, f"{where}.{name}")
            if value is None:
                out[name] = None
                continue
            text = value if isinstance(value, str) else ("true" if value is True else "false" if value is False
                                                         else str(value))
            if "\0" in text:
                self.fail(value_node, f"{where}.{name}: a NUL character cannot be in an environment variable")
            out[name] = text
        return out

    def expand(self, text: str, node: Node, where: str) -> list[str]:
        try:
            return expand_ranges(text)
        except ValueError as error:
            self.fail(node, f"{where}: {error}")

    def inventory(self, root: Node) -> Inventory:
        top = self.section(root, "the top level", TOP_KEYS)
        if "hosts" not in top:
            self.fail(root, "no 'hosts:' section; add one mapping each host name to its settings")
        default_fields = self.section(top["defaults"][1], "defaults", _DEFAULTS_KEYS) if "defaults" in top else {}
        defaults = self.entry(root, default_fields, "defaults") if "defaults" in top else _Entry(root, {}, {})
        use_ssh_config = all(self.flag(fields["ssh_config"][1], where) for where, fields in
                             (("ssh_config", top), ("defaults: ssh_config", default_fields)) if "ssh_config" in fields)
        self.hosts(top["hosts"][1])
        self.groups(top["groups"][1] if "groups" in top else None)
        order = sorted(self.defined, key=lambda group: self.defined[group].index)
        for name in order:
            if name in self.entries_by_host:
                self.fail(self.defined[name], f"{name!r} is both a host and a group; rename one of them")
            for child, item in self.children.setdefault(name, []):
                if child not in self.defined:
                    hint = "; it is a host: list it under hosts" if child in self.entries_by_host \
                        else _suggest(child, order)
                    self.fail(item, f"group {name!r}: unknown child group {child!r}{hint}")
        return replace(self.resolve(defaults, order, self.flatten(order)), ssh_config=use_ssh_config)

    def flag(self, node: Node, where: str) -> bool:
        value = self.scalar(node, where)
        if not isinstance(value, bool):
            self.fail(node, f"{where} must be true or false, got {value!r}")
        return value

    def hosts(self, node: Node) -> None:
        """Read `hosts:`; group mentions in a host's `groups:` count as membership."""
        hosts = self.entries_by_host
        for text, (key_node, value_node) in self.pairs(node, "hosts", noun="host").items():
            where = f"host {text!r}"
            names = self.expand(text, key_node, where)
            fields = self.section(value_node, where, _HOST_KEYS)
            entry = self.entry(key_node, fields, where)
            if len(names) > 1 and entry.settings.get("address"):
                self.fail(fields["address"][0], f"{where}: the {len(names)} hosts of a range cannot "
                          "share one address; list them separately")
            for name in names:
                self.check_name(name, key_node, "host")
                if name in hosts:
                    first = hosts[name].node  # may be a range that made this name too
                    self.fail(key_node, f"{where}: duplicate host {name!r} (also made by {first.value!r} on "
                              f"line {first.line}); keep one")
                hosts[name] = entry
            for group, item in self.names(fields["groups"][1], f"{where}: groups") if "groups" in fields else []:
                self.check_name(group, item, "group")
                self.defined.setdefault(group, item)
                self.direct.setdefault(group, set()).update(names)
        if not hosts:
            self.fail(node, "'hosts:' is empty; add at least one host")

    def groups(self, node: Node | None) -> None:
        """Read `groups:`: a list of members, or a mapping with hosts, children, vars and settings."""
        declared = self.pairs(node, "groups", "group") if node is not None else {}
        known = declared.keys() | self.defined.keys()
        for name, (key_node, value_node) in declared.items():
            where = f"group {name!r}"
            self.check_name(name, key_node, "group")
            spec: dict[str, tuple[Node, Node]] = {"hosts": (key_node, value_node)} \
                if isinstance(value_node, SequenceNode) else self.section(value_node, where, _GROUP_KEYS)
            self.entries_by_group[name] = self.entry(key_node, spec, where)
            self.defined[name] = key_node  # its own entry, not a host's mention, is what "defined later" means
            self.children[name] = self.names(spec["children"][1], f"{where}: children") \
                if "children" in spec else []
            for text, item in self.names(spec["hosts"][1], f"{where}: hosts") if "hosts" in spec else []:
                for host in self.expand(text, item, where):
                    if host not in self.entries_by_host:
                        hint = "; it is a group: list it under children" if host in known \
                            else _suggest(host, self.entries_by_host)
                        self.fail(item, f"{where}: unknown host {host!r}{hint}")
                    self.direct.setdefault(name, set()).add(host)

    def flatten(self, order: list[str]) -> dict[str, set[str]]:
        """Every group's hosts, its children's included; a group met again on the way down is a cycle."""
        members: dict[str, set[str]] = {}
        trail: list[str] = []

        def visit(group: str) -> set[str]:
            if group not in members:
                trail.append(group)
                found = set(self.direct.get(group, ()))
                for child, item in self.children[group]:
                    if child in trail:
                        cycle = " -> ".join([*trail[trail.index(child):], child])
                        self.fail(item, f"cycle in group children: {cycle}; remove one of these links")
                    found |= visit(child)
                members[group] = found
                trail.pop()
            return members[group]

        for name in order:
            visit(name)
        return members

    def resolve(self, defaults: _Entry, order: list[str], members: dict[str, set[str]]) -> Inventory:
        hosts, groups = self.entries_by_host, self.entries_by_group
        rank = group_precedence(order, self.children)
        belongs: dict[str, list[str]] = {host: [] for host in hosts}
        for name in order:
            for host in members[name]:
                belongs[host].append(name)
        resolved: dict[str, Host] = {}
        # Hosts share group sets: (settings, vars, where each setting came from, env as written, env to export)
        # per set of groups.
        inherited: dict[tuple[str, ...], tuple[dict[str, Any], dict[str, Any], dict[str, str],
                                               dict[str, str | None], dict[str, str]]] = {}
        # Memory flat in fleet size (issue 13): what hosts have in common is one object that they all point to
        # (the group tuple, the set of given keys, the origin pairs, vars and env without a key of the host's
        # own); only what is the host's own is built per host.
        shared = Sharing()
        for host, entry in hosts.items():
            member_of = shared.value(tuple(belongs[host]))
            if member_of not in inherited:
                settings, variables, written = dict(defaults.settings), {}, dict(defaults.env)
                sources = dict.fromkeys(defaults.settings, "inventory defaults")
                for name in sorted(member_of, key=rank.__getitem__):
                    if name in groups:
                        _apply(settings, groups[name].settings, sources, f"inventory groups.{name}")
                        variables.update(groups[name].vars)
                        written.update(groups[name].env)
                inherited[member_of] = settings, variables, sources, written, _exported(written)
            settings, variables, sources, written, env = inherited[member_of]
            if entry.settings:
                settings, sources = dict(settings), dict(sources)
                _apply(settings, entry.settings, sources, f"inventory hosts.{host}")
            if entry.vars:
                variables = {**variables, **entry.vars}
            if entry.env:
                env = _exported({**written, **entry.env})
            # null resets a setting: it counts as not set, so ssh_config (which ranks lower) may supply it.
            given = [key for key, value in settings.items() if value is not None]
            resolved[host] = Host(
                name=host, address=settings.get("address") or host, port=settings.get("port") or 22,
                user=settings.get("user"), key=settings.get("key"),
                password_env=settings.get("password_env"), password_file=settings.get("password_file"),
                connect_timeout=settings.get("connect_timeout"),
                known_hosts=settings.get("known_hosts") or (), groups=member_of, vars=variables,
                explicit=shared.value(frozenset(given)), origins=shared.origins(given, sources),
                jump=settings.get("jump"), proxy_command=settings.get("proxy_command"),
                become=bool(settings.get("become")), become_user=settings.get("become_user"),
                become_password_env=settings.get("become_password_env"),
                become_password_file=settings.get("become_password_file"),
                env=env,
            )
        position = {name: index for index, name in enumerate(hosts)}
        # Each name as the host's own string, not the copy the group's list spelled it with.
        members_in_order = {name: tuple(resolved[host].name for host in sorted(members[name], key=position.__getitem__))
                            for name in order}
        return Inventory(path=self.path, hosts=resolved, groups=members_in_order)


def _exported(env: dict[str, str | None]) -> dict[str, str]:
    return {name: value for name, value in env.items() if value is not None}  # None: unset by a later level
