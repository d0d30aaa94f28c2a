"""Hosts named on the command line when there is no inventory, like `pdsh -w` and `clush -w`."""

from __future__ import annotations

import ipaddress
import re

from fleetrun.errors import SelectionError
from fleetrun.hostnames import expand_ranges
from fleetrun.models import Host
from fleetrun.selection import LIST_PREFIXES, read_host_list

_NOT_A_NAME = re.compile(r"[\s&!^*?]")


def _split(pattern: str) -> list[str]:
    """Comma-separated items; a comma inside [...] belongs to a range (web[01-03,07])."""
    items, depth, start = [], 0, 0
    for index, char in enumerate(pattern + ","):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(pattern[start:index].strip())
            start = index + 1
    return [item for item in items if item]


def _address_in_brackets(text: str) -> tuple[str, str] | None:
    """`[::1]` or `[::1]:2222` -> (address, rest after the bracket); None if the brackets are a range."""
    if not text.startswith("[") or "]" not in text:
        return None
    inside, rest = text[1:].split("]", 1)
    try:
        ipaddress.ip_address(inside)
    except ValueError:
        return None
    return inside, rest


def _one(item: str) -> list[Host]:
    user = None
    if "@" in item:
        user, item = item.rsplit("@", 1)
        if not user:
            raise SelectionError(f"-H: empty user name in {item!r}")
    bracketed = _address_in_brackets(item)
    if bracketed is not None:
        names, tail = [bracketed[0]], bracketed[1]
    else:
        try:
            names, tail = expand_ranges(item), ""
        except ValueError as error:
            raise SelectionError(f"-H: {error}") from None
    hosts = []
    for text in names:
        port = None
        if bracketed is None and text.count(":") == 1:  # host:port; a bare IPv6 address has several colons
            text, tail = text.split(":")
        if tail:
            port_text = tail.removeprefix(":")
            if not (port_text.isascii() and port_text.isdigit() and 1 <= int(port_text) <= 65535):
                raise SelectionError(f"-H: bad port {port_text!r} for {text!r} (1-65535)")
            port = int(port_text)
        if not text or _NOT_A_NAME.search(text) or text == "all":
            raise SelectionError(
                f"-H: {text!r} is not a host name; without an inventory -H takes names, user@name, name:port and "
                "ranges like web[01-05] (groups, globs, 'all' and & ! ^ need an inventory: pass -i FILE)")
        explicit = {name for name, value in (("user", user), ("port", port)) if value is not None}
        hosts.append(Host(name=text, address=text, port=port or 22, user=user, explicit=frozenset(explicit),
                          origins={"name": ("-H",), **{name: ("-H",) for name in explicit}}))
    return hosts


def adhoc_hosts(pattern: str) -> list[Host]:
    """`web01,deploy@10.0.0.5:2222,web[01-03]` (or `^FILE`/`@FILE`, one name per line) as hosts, in order, once
    each. The lists are read by fleetrun.selection.read_host_list, as with an inventory."""
    items: list[tuple[str, str | None]] = []  # (item, where it was listed)
    for item in _split(pattern):
        if item[0] in LIST_PREFIXES:
            items.extend((entry.name, entry.where) for entry in read_host_list(item))
        else:
            items.append((item, None))
    hosts: dict[str, Host] = {}
    for item, where in items:
        try:
            one = _one(item)
        except SelectionError as error:
            raise SelectionError(f"{where}: {error}" if where else str(error)) from None
        for host in one:
            earlier = hosts.get(host.name)
            if earlier is not None and (earlier.user, earlier.port) != (host.user, host.port):
                raise SelectionError(f"-H: {host.name!r} is listed twice with different users or ports")
            hosts.setdefault(host.name, host)
    if not hosts:
        raise SelectionError("-H names no host: give names like web01,deploy@10.0.0.5:2222 or ^FILE")
    return list(hosts.values())
