"""Host ranges, host:port splitting and INI values, each checked against Ansible's own functions."""

from __future__ import annotations

import pytest

from fleetrun.sources import hostpatterns
from fleetrun.sources.ini import parse_value, split_line

RANGES = ["web[01:10]", "web[1:10]", "web[0:10:2]", "web[01:10:3]", "db-[a:f]", "db-[a:f:2]", "[1:3]x[a:b]y",
          "r[:3]", "n[08:12]", "h[9:11].lan", "x[A:C]", "plain", "web[001:100:25]"]
ADDRESSES = ["web01", "web01:2222", "web[1:3]:22", "10.0.0.1:22", "[::1]:22", "fe80::1", "bad_:22", "web-:22",
             "a.b.c:1", "host:name", "[10.0.0.1]:2200", "xn--bcher-kva.example:80", "web[a:c].lan:22"]
VALUES = ["1", "010", "0", "00", "-5", "1_000", "1.5", "1e3", "True", "true", "None", "none", "[1,2]", "(1,2)",
          "{1,2}", "{'a':1}", "'quoted'", "\"dq\"", "b'x'", "...", "1j", "a-b", "a.b", "10.0.0.1", "1.2.3",
          "{{ x }}", "abc # c", "23 # c", "", "é", "0x1f", "0o17", "web01", "[1, 'a', [2]]"]


def test_ranges_equal_ansibles() -> None:
    from ansible.plugins.inventory import expand_hostname_range

    for pattern in RANGES:
        expected = expand_hostname_range(pattern) if "[" in pattern else [pattern]
        assert hostpatterns.expand(pattern) == expected, pattern


@pytest.mark.parametrize("pattern", ["w[01:9]", "w[1:a]", "w[1]", "w[1:2:3:4]", "w[1:]", "w[f:a]", "w[1:3:0]"])
def test_ranges_ansible_refuses_are_refused(pattern: str) -> None:
    from ansible.errors import AnsibleError
    from ansible.plugins.inventory import expand_hostname_range

    with pytest.raises((AnsibleError, ValueError)):
        expand_hostname_range(pattern)
    with pytest.raises(ValueError):
        hostpatterns.expand(pattern)


def test_backwards_ranges_are_refused_though_ansible_makes_no_host() -> None:
    from ansible.plugins.inventory import expand_hostname_range

    assert expand_hostname_range("w[9:1]") == []  # silently nothing: a typo a fleet runner should not swallow
    with pytest.raises(ValueError, match="makes no host"):
        hostpatterns.expand("w[9:1]")


def test_host_port_split_equals_ansibles() -> None:
    from ansible.plugins.inventory import BaseInventoryPlugin

    plugin = BaseInventoryPlugin()
    for text in ADDRESSES:
        names, port = plugin._expand_hostpattern(text)
        address, mine = hostpatterns.split_port(text)
        assert (hostpatterns.expand(address), mine) == (names, port), text


def test_ini_values_equal_ansibles() -> None:
    from ansible._internal._datatag._tags import Origin
    from ansible.plugins.inventory.ini import InventoryModule

    module = InventoryModule()
    module._origin = Origin(path="/x", line_num=1)
    for text in VALUES:
        assert parse_value(text) == module._parse_value(text), text


@pytest.mark.parametrize("line", ["h1 a=1 b=2", "h1 a='x y' #c", "h1 p=#x q=a#b", "h1 a=\"x\\\"y\"", "h1\ta=1",
                                  "h1\x1fa=1 b=2"])  # \x1f: whitespace to str.split(), not to shlex
def test_host_lines_split_like_shlex(line: str) -> None:
    import shlex

    assert split_line(line) == shlex.split(line, comments=True)
