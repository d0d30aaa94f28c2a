"""Inventory loading: resolution and precedence, ranges, and one clear line for every kind of mistake."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fleetrun.errors import InventoryError, UsageError
from fleetrun.inventory import Inventory, find_inventory, load_inventory
from fleetrun.models import Host

SECRET = "s3cr3t-Hunter2"


def write(tmp_path: Path, text: str, name: str = "inventory.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str) -> Inventory:
    return load_inventory(write(tmp_path, text))


def fails(tmp_path: Path, text: str, line: int | None, *fragments: str) -> str:
    """Load `text`, expect an InventoryError at `line`, and return its message after checking the basics."""
    path = write(tmp_path, text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    message = str(caught.value)
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert message.startswith(where), message
    assert caught.value.line == line
    assert "\n" not in message
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- resolution -------------------------------------------------------------------------------------------


def test_bare_host_gets_builtin_defaults(tmp_path: Path) -> None:
    inventory = load(tmp_path, "hosts:\n  db01:\n")
    assert inventory.hosts == {"db01": Host(name="db01", address="db01")}
    host = inventory.hosts["db01"]
    assert (host.port, host.user, host.key, host.connect_timeout) == (22, None, None, None)
    assert host.known_hosts == ()
    assert host.vars == {}
    assert inventory.groups == {}
    assert inventory.path == tmp_path / "inventory.yaml"


def test_every_host_key_is_read(tmp_path: Path) -> None:
    inventory = load(tmp_path, """
        hosts:
          db01:
            address: 10.0.0.5
            port: 2222
            user: postgres
            key: /keys/db
            password_env: DB_PASS
            connect_timeout: 2.5
            known_hosts: [/etc/kh1, /etc/kh2]
            groups: [db]
            vars: {role: primary, weight: 3, enabled: true, ratio: 0.5, nothing: null, list: [1, two]}
    """)
    host = inventory.hosts["db01"]
    assert host == Host(
        name="db01", address="10.0.0.5", port=2222, user="postgres", key="/keys/db", password_env="DB_PASS",
        connect_timeout=2.5, known_hosts=("/etc/kh1", "/etc/kh2"), groups=("db",),
    )
    assert host.vars == {"role": "primary", "weight": 3, "enabled": True, "ratio": 0.5, "nothing": None,
                         "list": [1, "two"]}
    assert isinstance(host.connect_timeout, float)


def test_defaults_apply_to_every_host(tmp_path: Path) -> None:
    inventory = load(tmp_path, """
        defaults: {user: deploy, port: 2200, connect_timeout: 3, known_hosts: /etc/fleet_known_hosts}
        hosts:
          a:
          b: {port: 22}
    """)
    assert inventory.hosts["a"].user == inventory.hosts["b"].user == "deploy"
    assert inventory.hosts["a"].port == 2200
    assert inventory.hosts["b"].port == 22
    assert inventory.hosts["a"].known_hosts == ("/etc/fleet_known_hosts",)
    assert inventory.hosts["a"].connect_timeout == 3.0


def test_host_beats_group_beats_defaults(tmp_path: Path) -> None:
    inventory = load(tmp_path, """
        defaults: {user: d, port: 1001, connect_timeout: 1}
        hosts:
          a: {groups: [g], user: host}
          b: {groups: [g]}
          c:
        groups:
          g: {user: group, port: 1002}
    """)
    a, b, c = (inventory.hosts[n] for n in "abc")
    assert (a.user, a.port, a.connect_timeout) == ("host", 1002, 1.0)
    assert (b.user, b.port) == ("group", 1002)
    assert (c.user, c.port) == ("d", 1001)


@pytest.mark.parametrize("child_first", [True, False])
def test_child_group_beats_its_parent_wherever_defined(tmp_path: Path, child_first: bool) -> None:
    child = "  web: {user: child, vars: {layer: child, only_child: 1}}\n"
    parent = "  prod: {children: [web], user: parent, port: 2022, vars: {layer: parent, only_parent: 1}}\n"
    groups = child + parent if child_first else parent + child
    inventory = load(tmp_path, "hosts:\n  w1: {groups: [web]}\ngroups:\n" + groups)
    host = inventory.hosts["w1"]
    assert (host.user, host.port) == ("child", 2022)
    assert host.vars == {"layer": "child", "only_child": 1, "only_parent": 1}
    assert set(host.groups) == {"web", "prod"}


def test_grandchild_beats_child_beats_grandparent(tmp_path: Path) -> None:
    inventory = load(tmp_path, """
        hosts:
          h: {groups: [leaf]}
        groups:
          leaf: {vars: {x: leaf}}
          root: {children: [mid], vars: {x: root, y: root, z: root}}
          mid: {children: [leaf], vars: {x: mid, y: mid}}
    """)
    assert inventory.hosts["h"].vars == {"x": "leaf", "y": "mid", "z": "root"}


@pytest.mark.parametrize(("first", "second"), [("a", "b"), ("b", "a")])
def test_unrelated_groups_later_definition_wins(tmp_path: Path, first: str, second: str) -> None:
    inventory = load(tmp_path, f"""
        hosts:
          h: {{groups: [{first}, {second}]}}
        groups:
          {first}: {{user: {first}, vars: {{who: {first}, {first}_only: 1}}}}
          {second}: {{user: {second}, vars: {{who: {second}}}}}
    """)
    host = inventory.hosts["h"]
    assert host.user == second
    assert host.vars == {"who": second, f"{first}_only": 1}


def test_later_wins_uses_the_group_definition_not_the_first_mention(tmp_path: Path) -> None:
    # x is mentioned first (in hosts) but defined after y: x is the later definition.
    inventory = load(tmp_path, """
        hosts:
          h: {groups: [x, y]}
        groups:
          y: {user: y}
          x: {user: x}
    """)
    assert inventory.hosts["h"].user == "x"


def test_vars_merge_key_by_key_across_levels(tmp_path: Path) -> None:
    inventory = load(tmp_path, """
        hosts:
          h: {groups: [g], vars: {c: host}}
        groups:
          g: {vars: {a: group, b: group, c: group}}
          all_prod: {children: [g], vars: {a: parent, d: parent}}
    """)
    assert inventory.hosts["h"].vars == {"a": "group", "b": "group", "c": "host", "d": "parent"}


def test_null_resets_a_setting_to_the_builtin_default(tmp_path: Path) -> None:
    inventory = load(tmp_path, """
        defaults: {user: deploy, port: 2222, key: /k, connect_timeout: 4, known_hosts: [/kh]}
        hosts:
          h: {user: null, port: ~, key: null, connect_timeout: null, known_hosts: null}
    """)
    assert inventory.hosts["h"] == Host(name="h", address="h")


def test_a_more_specific_password_source_replaces_the_other(tmp_path: Path) -> None:
    inventory = load(tmp_path, """
        defaults: {password_file: /secrets/fleet}
        hosts:
          a: {password_env: A_PASS}
          b: {groups: [g]}
          c:
        groups:
          g: {password_env: G_PASS}
    """)
    a, b, c = (inventory.hosts[n] for n in "abc")
    assert (a.password_env, a.password_file) == ("A_PASS", None)
    assert (b.password_env, b.password_file) == ("G_PASS", None)
    assert (c.password_env, c.password_file) == (None, "/secrets/fleet")


def test_paths_are_relative_to_the_inventory_and_expand_tilde(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "conf").mkdir()
    monkeypatch.chdir("/")
    path = write(tmp_path / "conf", """
        defaults: {key: keys/id_ed25519, password_file: ~/pw, known_hosts: [kh, /abs/kh, ../other/kh]}
        hosts:
          h:
    """)
    host = load_inventory(path).hosts["h"]
    assert host.key == str(tmp_path / "conf" / "keys" / "id_ed25519")
    assert host.password_file == str(tmp_path / "home" / "pw")
    assert host.known_hosts == (str(tmp_path / "conf" / "kh"), "/abs/kh", str(tmp_path / "other" / "kh"))


def test_relative_inventory_path_still_gives_absolute_paths(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "hosts:\n  h: {key: k}\n")
    host = load_inventory(Path("inventory.yaml")).hosts["h"]
    assert host.key == str(tmp_path / "k")


def test_quoted_port_digits_are_accepted(tmp_path: Path) -> None:
    assert load(tmp_path, "hosts:\n  h: {port: '2222'}\n").hosts["h"].port == 2222


def test_timestamps_and_odd_scalars_in_vars_stay_plain(tmp_path: Path) -> None:
    inventory = load(tmp_path, """
        hosts:
          h:
            vars: {day: 2024-01-31, hex: 0x1F, flag: no, text: !!str 12, empty: ""}
    """)
    assert inventory.hosts["h"].vars == {"day": "2024-01-31", "hex": 31, "flag": False, "text": "12",
                                         "empty": ""}


# --- ranges -----------------------------------------------------------------------------------------------


def test_range_expands_with_padding_from_the_start_bound(tmp_path: Path) -> None:
    inventory = load(tmp_path, """
        hosts:
          web[01:12].example.com: {groups: [web], port: 2200}
          app[8:10]:
    """)
    webs = [f"web{n:02d}.example.com" for n in range(1, 13)]
    assert list(inventory.hosts) == [*webs, "app8", "app9", "app10"]
    assert inventory.groups["web"] == tuple(webs)
    assert all(inventory.hosts[name].port == 2200 for name in webs)
    assert inventory.hosts["web07.example.com"].address == "web07.example.com"


def test_several_ranges_and_lists_in_one_name(tmp_path: Path) -> None:
    inventory = load(tmp_path, "hosts:\n  r[1:2]-n[1-2,07]:\n")
    assert list(inventory.hosts) == ["r1-n1", "r1-n2", "r1-n07", "r2-n1", "r2-n2", "r2-n07"]


def test_ranges_in_group_host_lists(tmp_path: Path) -> None:
    inventory = load(tmp_path, """
        hosts:
          web[01:05]:
        groups:
          canary: ["web[01:02]", web05]
    """)
    assert inventory.groups["canary"] == ("web01", "web02", "web05")


# --- groups -----------------------------------------------------------------------------------------------


def test_group_membership_from_both_sides_and_flattened_children(tmp_path: Path) -> None:
    inventory = load(tmp_path, """
        hosts:
          w1: {groups: [web]}
          w2:
          d1:
          b1: {groups: [prod]}
        groups:
          web: [w2]
          prod: {hosts: [d1], children: [web]}
          empty:
          lonely: {vars: {a: 1}}
    """)
    assert inventory.groups == {
        "web": ("w1", "w2"),
        "prod": ("w1", "w2", "d1", "b1"),
        "empty": (),
        "lonely": (),
    }
    assert inventory.hosts["w1"].groups == ("web", "prod")
    assert inventory.hosts["d1"].groups == ("prod",)


def test_group_known_only_from_a_host_list_exists(tmp_path: Path) -> None:
    inventory = load(tmp_path, "hosts:\n  a: {groups: solo}\n  b: {groups: [solo, duo]}\n")
    assert inventory.groups == {"solo": ("a", "b"), "duo": ("b",)}


def test_child_can_be_a_group_known_only_from_host_lists(tmp_path: Path) -> None:
    inventory = load(tmp_path, """
        hosts:
          web[01:02]: {groups: [web]}
          db01:
        groups:
          prod: {hosts: [db01], children: [web], vars: {env: prod}}
    """)
    assert inventory.groups == {"web": ("web01", "web02"), "prod": ("web01", "web02", "db01")}
    assert inventory.hosts["web02"].vars == {"env": "prod"}


def test_the_example_inventory_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/op")
    example = Path(__file__).resolve().parents[2] / "inventory.example.yaml"
    inventory = load_inventory(example)
    assert len(inventory.hosts) == 15
    web05, web01, db01 = (inventory.hosts[n] for n in ("web05.example.com", "web01.example.com", "db01"))
    assert (web05.user, web05.connect_timeout, web05.vars) == ("www", 5.0, {"env": "prod", "tier": 1,
                                                                            "role": "frontend"})
    assert web05.key == str(example.parent / "keys" / "web_ed25519")
    assert web01.vars["tier"] == 0
    assert (db01.user, db01.port, db01.address, db01.key) == ("postgres", 2222, "10.0.0.5", "/home/op/.ssh/id_ed25519")
    assert inventory.hosts["db02"].password_env == "DB02_SSH_PASSWORD"
    db02 = inventory.hosts["db02"]
    assert (db02.become, db02.become_user, db02.become_password_env) == (True, None, "DB02_SUDO_PASSWORD")
    assert db01.env == {"APP_ENV": "production"} and not db01.become


def test_diamond_children_are_not_a_cycle(tmp_path: Path) -> None:
    inventory = load(tmp_path, """
        hosts:
          h: {groups: [d]}
        groups:
          a: {children: [b, c], vars: {v: a}}
          b: {children: [d], vars: {v: b}}
          c: {children: [d], vars: {v: c}}
          d:
    """)
    assert inventory.groups["a"] == ("h",)
    assert inventory.hosts["h"].vars == {"v": "c"}  # b and c are unrelated: c is defined later


def test_member_order_is_inventory_order(tmp_path: Path) -> None:
    inventory = load(tmp_path, "hosts:\n  z:\n  a:\n  m:\ngroups:\n  g: [m, z, a]\n")
    assert inventory.groups["g"] == ("z", "a", "m")


# --- yaml features --------------------------------------------------------------------------------------


def test_anchors_aliases_and_merge_keys_work(tmp_path: Path) -> None:
    inventory = load(tmp_path, """
        defaults: &common {user: ops, port: 2200}
        hosts:
          a: &host {port: 2201, vars: &v {x: 1}}
          b: *host
          c: {<<: *common, port: 2202, vars: *v}
          d: {<<: [*host, *common]}
    """)
    assert inventory.hosts["b"].port == 2201
    assert (inventory.hosts["c"].user, inventory.hosts["c"].port) == ("ops", 2202)
    assert inventory.hosts["c"].vars == {"x": 1}
    assert inventory.hosts["d"].port == 2201  # the first merged mapping wins


def test_alias_bomb_stays_cheap(tmp_path: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = "hosts:\n  h:\n    vars:\n" + "".join(f"      {line}\n" for line in levels)
    vars_ = load_inventory(write(tmp_path, text)).hosts["h"].vars
    assert vars_["a8"][0] is vars_["a7"]  # shared, not copied 10**9 times


# --- 1000 hosts -----------------------------------------------------------------------------------------


def test_a_thousand_host_inventory_loads_correctly(tmp_path: Path) -> None:
    lines = ["defaults: {user: deploy, connect_timeout: 5}", "hosts:"]
    lines += [f"  host{i:04d}.example.com: {{address: 10.0.{i // 256}.{i % 256}, port: {2200 + i % 50}, "
              f"groups: [g{i % 10}], vars: {{idx: {i}}}}}" for i in range(1000)]
    lines += ["groups:"] + [f"  g{g}: {{user: u{g}, vars: {{grp: {g}}}}}" for g in range(10)]
    lines += ["  even: {children: [g0, g2, g4, g6, g8], vars: {even: true}}"]
    inventory = load_inventory(write(tmp_path, "\n".join(lines) + "\n"))
    assert len(inventory.hosts) == 1000
    assert list(inventory.hosts)[:2] == ["host0000.example.com", "host0001.example.com"]
    host = inventory.hosts["host0517.example.com"]
    assert (host.address, host.port, host.user, host.connect_timeout) == ("10.0.2.5", 2217, "u7", 5.0)
    assert host.vars == {"grp": 7, "idx": 517}
    assert len(inventory.groups["even"]) == 500
    assert inventory.hosts["host0004.example.com"].vars == {"grp": 4, "even": True, "idx": 4}
    assert inventory.hosts["host0004.example.com"].groups == ("g4", "even")


# --- mistakes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "line", "fragments"), [
    ("hosts:\n  a: {port: 1\n  b:\n", 3, ["invalid YAML", "fix the syntax"]),
    ("hosts:\n\ta:\n", 2, ["invalid YAML"]),
    ("hosts:\n  a: *nowhere\n", 2, ["invalid YAML", "undefined alias"]),
    ("hosts:\n  a:\n---\nhosts:\n  b:\n", 3, ["invalid YAML", "single document"]),
    ("hosts:\n  a\x07:\n", 2, ["invalid YAML", "character"]),
])
def test_yaml_syntax_errors(tmp_path: Path, text: str, line: int, fragments: list[str]) -> None:
    fails(tmp_path, text, line, *fragments)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    fails(tmp_path, text, 1, "empty", "hosts:")


@pytest.mark.parametrize(("text", "line", "fragments"), [
    ("- a\n- b\n", 1, ["the top level must be a mapping", "a list"]),
    ("just text\n", 1, ["the top level must be a mapping", "'just text'"]),
    ("defaults: {user: x}\n", 1, ["no 'hosts:' section"]),
    ("hosts:\n", 1, ["'hosts:' is empty"]),
    ("hosts: {}\n", 1, ["'hosts:' is empty"]),
    ("hosts: [a, b]\n", 1, ["hosts must be a mapping, got a list"]),
    ("hosts:\n  a: 10.0.0.1\n", 2, ["host 'a' must be a mapping, got '10.0.0.1'"]),
    ("hosts:\n  a:\ngroups: [a]\n", 3, ["groups must be a mapping"]),
    ("defaults: [user]\nhosts:\n  a:\n", 1, ["defaults must be a mapping"]),
])
def test_wrong_shapes(tmp_path: Path, text: str, line: int, fragments: list[str]) -> None:
    fails(tmp_path, text, line, *fragments)


@pytest.mark.parametrize(("text", "line", "fragments"), [
    ("host:\n  a:\n", 1, ["the top level: unknown key 'host'", "did you mean 'hosts'?"]),
    ("defaults:\n  usr: x\nhosts:\n  a:\n", 2, ["defaults: unknown key 'usr'", "'user'"]),
    ("defaults:\n  address: x\nhosts:\n  a:\n", 2, ["defaults: unknown key 'address'"]),
    ("hosts:\n  db01:\n    prot: 22\n", 3, ["host 'db01': unknown key 'prot'", "did you mean 'port'?"]),
    ("hosts:\n  a:\n    zzz: 1\n", 3, ["unknown key 'zzz'", "valid keys: address, user, port"]),
    ("hosts:\n  a:\ngroups:\n  g:\n    childs: [x]\n", 5, ["group 'g': unknown key 'childs'", "'children'"]),
    ("hosts:\n  a:\ngroups:\n  g: {address: 1.2.3.4}\n", 4, ["group 'g': unknown key 'address'"]),
])
def test_unknown_keys_with_suggestions(tmp_path: Path, text: str, line: int, fragments: list[str]) -> None:
    fails(tmp_path, text, line, *fragments)


@pytest.mark.parametrize(("value", "fragment"), [
    ("abc", "port must be an integer from 1 to 65535, got 'abc'"),
    ("0", "got 0"),
    ("65536", "got 65536"),
    ("-1", "got -1"),
    ("22.5", "got 22.5"),
    ("true", "got True"),
    ("[22]", "port must be a single value, got a list"),
])
def test_bad_port(tmp_path: Path, value: str, fragment: str) -> None:
    fails(tmp_path, f"hosts:\n  a:\n    port: {value}\n", 3, "host 'a': ", fragment)


@pytest.mark.parametrize("value", ["0", "-1", "abc", "true", ".inf", ".nan"])
def test_bad_connect_timeout(tmp_path: Path, value: str) -> None:
    fails(tmp_path, f"defaults:\n  connect_timeout: {value}\nhosts:\n  a:\n", 2,
          "defaults: connect_timeout must be a positive number of seconds")


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("user", "1000", "user must be a non-empty string, got 1000"),
    ("user", "''", "user must be a non-empty string, got ''"),
    ("address", "{ip: 1}", "address must be a single value, got a mapping"),
    ("key", "[a, b]", "key must be a single value, got a list"),
    ("known_hosts", "{a: 1}", "known_hosts must be a list of names, got a mapping"),
    ("known_hosts", "[1, 2]", "known_hosts must be a list of names, got '1'"),
    ("groups", "[[web]]", "groups must be a list of names, got a list"),
    ("vars", "[1, 2]", "vars must be a mapping, got a list"),
    ("vars", "text", "vars must be a mapping, got 'text'"),
])
def test_wrong_types(tmp_path: Path, key: str, value: str, fragment: str) -> None:
    fails(tmp_path, f"hosts:\n  a:\n    {key}: {value}\n", 3, "host 'a': ", fragment)


def test_group_naming_an_unknown_host(tmp_path: Path) -> None:
    fails(tmp_path, "hosts:\n  db01:\ngroups:\n  prod:\n    - db01\n    - db02\n", 6,
          "group 'prod': unknown host 'db02'", "did you mean 'db01'?")


def test_group_host_list_naming_a_group(tmp_path: Path) -> None:
    fails(tmp_path, "hosts:\n  a:\ngroups:\n  g: [a]\n  h: {hosts: [g]}\n", 5,
          "group 'h': unknown host 'g'", "it is a group: list it under children")


def test_group_range_with_a_missing_host(tmp_path: Path) -> None:
    fails(tmp_path, "hosts:\n  web[01:03]:\ngroups:\n  g: ['web[01:04]']\n", 4, "unknown host 'web04'")


def test_unknown_child_group(tmp_path: Path) -> None:
    fails(tmp_path, "hosts:\n  a: {groups: [web]}\ngroups:\n  prod:\n    children: [wbe]\n", 5,
          "group 'prod': unknown child group 'wbe'", "did you mean 'web'?")


def test_child_naming_a_host(tmp_path: Path) -> None:
    fails(tmp_path, "hosts:\n  a:\ngroups:\n  prod: {children: [a]}\n", 4,
          "unknown child group 'a'", "it is a host: list it under hosts")


@pytest.mark.parametrize(("groups", "line", "cycle"), [
    ("  a: {children: [b]}\n  b: {children: [a]}\n", 5, "a -> b -> a"),
    ("  a: {children: [a]}\n", 4, "a -> a"),
    ("  x: {children: [a]}\n  a: {children: [b]}\n  b: {children: [c]}\n  c: {children: [a]}\n", 7,
     "a -> b -> c -> a"),
])
def test_cycle_in_children_is_named(tmp_path: Path, groups: str, line: int, cycle: str) -> None:
    fails(tmp_path, "hosts:\n  h:\ngroups:\n" + groups, line, f"cycle in group children: {cycle}")


@pytest.mark.parametrize(("text", "line", "fragments"), [
    ("hosts:\n  a:\n  b:\n  a:\n", 4, ["duplicate host 'a'", "first at line 2"]),
    ("hosts:\n  web[01:05]:\n  web03:\n", 3, ["duplicate host 'web03'", "'web[01:05]' on line 2"]),
    ("hosts:\n  w[1:3]:\n  w[3:4]:\n", 3, ["duplicate host 'w3'"]),
    ("hosts:\n  a: {port: 1, port: 2}\n", 2, ["host 'a': duplicate key 'port'"]),
    ("hosts:\n  a:\ngroups:\n  g: [a]\n  g: [a]\n", 5, ["duplicate group 'g'", "first at line 4"]),
    ("hosts:\n  a:\n    vars: {x: 1, x: 2}\n", 3, ["duplicate key 'x'"]),
    ("hosts:\n  a:\nhosts:\n  b:\n", 3, ["duplicate key 'hosts'"]),
])
def test_duplicates(tmp_path: Path, text: str, line: int, fragments: list[str]) -> None:
    fails(tmp_path, text, line, *fragments)


def test_name_both_host_and_group(tmp_path: Path) -> None:
    fails(tmp_path, "hosts:\n  web:\n  db:\ngroups:\n  web: [db]\n", 5, "'web' is both a host and a group")


def test_name_both_host_and_group_from_a_host_list(tmp_path: Path) -> None:
    fails(tmp_path, "hosts:\n  web:\n    groups: [db]\n  db:\n", 3, "'db' is both a host and a group")


@pytest.mark.parametrize(("name", "fragment"), [
    ("web[12:01]", "goes backwards"),
    ("web[a:b]", "malformed range '[a:b]'"),
    ("web[]", "malformed range"),
    ("web[1:2:3]", "malformed range"),
    ("'web[01'", "unbalanced bracket"),
    ("'web]01'", "unbalanced bracket"),
    ("'w[1:2[3]]'", "unbalanced bracket"),
    ("web[0:999999]", "more than 100000 names"),
    ("a[0:999]b[0:999]", "more than 100000 names"),
])
def test_malformed_ranges(tmp_path: Path, name: str, fragment: str) -> None:
    fails(tmp_path, f"hosts:\n  a:\n  {name}:\n", 3, fragment)


@pytest.mark.parametrize(("name", "kind"), [("'a b'", "host"), ("'a,b'", "host"), ("all", "host"),
                                            ("'x*'", "host"), ("'a!b'", "host"), ("'a&b'", "host")])
def test_names_unusable_in_patterns(tmp_path: Path, name: str, kind: str) -> None:
    fails(tmp_path, f"hosts:\n  {name}:\n", 2, f"{kind} name", "not usable in host patterns")


def test_group_named_all(tmp_path: Path) -> None:
    fails(tmp_path, "hosts:\n  a:\ngroups:\n  all: [a]\n", 4, "group name 'all'")


def test_range_cannot_share_an_address(tmp_path: Path) -> None:
    fails(tmp_path, "hosts:\n  web[1:2]:\n    address: 10.0.0.1\n", 3, "cannot share one address")


@pytest.mark.parametrize(("key", "fragment"), [
    ("1234", "the host '1234' is not a string; quote it"),
    ("yes", "the host 'yes' is not a string"),
    ("~", "the host null is not a string"),
    ("[a, b]", "the host a list is not a string"),
    ("{a: 1}", "the host a mapping is not a string"),
])
def test_non_string_keys(tmp_path: Path, key: str, fragment: str) -> None:
    fails(tmp_path, f"hosts:\n  ok:\n  {key}:\n", 3, "hosts: ", fragment)


def test_non_string_var_key(tmp_path: Path) -> None:
    fails(tmp_path, "hosts:\n  a:\n    vars:\n      1: one\n", 4, "vars: the key '1' is not a string")


@pytest.mark.parametrize(("text", "line", "where"), [
    (f"hosts:\n  a:\n    password: {SECRET}\n", 3, "host 'a': "),
    (f"defaults:\n  password: {SECRET}\nhosts:\n  a:\n", 2, "defaults: "),
    (f"hosts:\n  a:\ngroups:\n  g: {{hosts: [a], Password: '{SECRET}'}}\n", 4, "group 'g': "),
    (f"hosts:\n  a:\n    vars:\n      db:\n        PASSWORD: \"{SECRET}\"\n", 5, "vars.db: "),
    (f"password: {SECRET}\nhosts:\n  a:\n", 1, "the top level: "),
    (f"hosts:\n  a:\n    password: &p {SECRET}\n    user: *p\n", 3, "host 'a': "),
    (f"hosts:\n  a:\n    password:\n      - {SECRET}\n", 3, "host 'a': "),
])
def test_literal_password_is_refused_without_echoing_it(
        tmp_path: Path, text: str, line: int, where: str) -> None:
    message = fails(tmp_path, text, line, where, "a literal password is not allowed in the inventory",
                    "set password_env (the name of an environment variable) or password_file "
                    "(a file readable only by you)")
    assert SECRET not in message
    assert SECRET.lower() not in message.lower()


def test_password_env_holding_the_password_is_not_echoed(tmp_path: Path) -> None:
    message = fails(tmp_path, f"hosts:\n  a:\n    password_env: '{SECRET}!'\n", 3,
                    "password_env must be the name of an environment variable")
    assert SECRET not in message


def test_yaml_error_does_not_quote_the_source_line(tmp_path: Path) -> None:
    message = fails(tmp_path, f"hosts:\n  a:\n    password: {SECRET}\n   bad: [\n", 4, "invalid YAML")
    assert SECRET not in message


def test_both_password_sources_at_one_level(tmp_path: Path) -> None:
    fails(tmp_path, "hosts:\n  a:\n    password_env: X\n    password_file: /p\n", 4,
          "set password_env or password_file, not both")


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("hosts:\n  a: !!python/object:os.system {port: 1}\n", 2, "the YAML tag '!!python/object:os.system'"),
    ("hosts:\n  a:\n    vars: {x: !!binary aGVsbG8=}\n", 3, "the YAML tag '!!binary'"),
    ("hosts:\n  a:\n    vars: !!set {x}\n", 3, "the YAML tag '!!set'"),
    ("hosts:\n  a:\n    user: !custom root\n", 3, "the YAML tag '!custom'"),
    ("hosts:\n  a:\n    port: !!int abc\n", 3, "'abc' is not a valid int"),
    ("hosts:\n  a:\n    vars: {x: !!bool maybe}\n", 3, "'maybe' is not a valid bool"),
    ("hosts:\n  a:\n    vars: {x: !!float abc}\n", 3, "'abc' is not a valid float"),
    ("hosts:\n  a:\n    vars: &v {x: *v}\n", 3, "contains itself through a YAML alias"),
    ("hosts:\n  a:\n    vars: &v [1, *v]\n", 3, "contains itself through a YAML alias"),
    ("hosts:\n  a: &h {<<: *h}\n", 2, "contains itself through a YAML alias"),
    ("hosts:\n  a:\n    vars: {x: " + "[" * 150 + "]" * 150 + "}\n", 3, "nested more than 100 levels"),
])
def test_unusual_yaml_is_an_error_not_a_crash(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    fails(tmp_path, text, line, fragment)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert str(caught.value) == f"{path}: cannot read the inventory: No such file or directory; " \
                                "check the path or pass -i FILE"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read the inventory"):
        load_inventory(tmp_path)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "hosts:\n  a:\n")

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert str(caught.value) == f"{path}: cannot read the inventory: Permission denied; " \
                                "check the path or pass -i FILE"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_bytes(b"hosts:\n  caf\xe9:\n")
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert str(caught.value) == f"{path}:2: not UTF-8 text; save the file as UTF-8"


def test_inventory_error_is_a_usage_error() -> None:
    assert issubclass(InventoryError, UsageError)


# --- finding the file -----------------------------------------------------------------------------------


@pytest.fixture
def clean_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $FLEETRUN_INVENTORY, an empty working directory and an empty config home."""
    monkeypatch.delenv("FLEETRUN_INVENTORY", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


def test_find_explicit_wins(clean_places: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETRUN_INVENTORY", "/from/env.yaml")
    write(clean_places / "work", "hosts:\n  a:\n")
    assert find_inventory("/given.yaml") == Path("/given.yaml")


def test_find_env_before_working_directory(clean_places: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETRUN_INVENTORY", "/from/env.yaml")
    write(clean_places / "work", "hosts:\n  a:\n")
    assert find_inventory(None) == Path("/from/env.yaml")


def test_find_working_directory_before_config(clean_places: Path) -> None:
    (clean_places / "home" / ".config" / "fleetrun").mkdir(parents=True)
    write(clean_places / "home" / ".config" / "fleetrun", "hosts:\n  a:\n")
    write(clean_places / "work", "hosts:\n  a:\n")
    assert find_inventory(None) == Path("inventory.yaml")


def test_find_user_config(clean_places: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = clean_places / "home" / ".config" / "fleetrun"
    config.mkdir(parents=True)
    write(config, "hosts:\n  a:\n")
    assert find_inventory(None) == config / "inventory.yaml"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(clean_places / "xdg"))
    (clean_places / "xdg" / "fleetrun").mkdir(parents=True)
    write(clean_places / "xdg" / "fleetrun", "hosts:\n  a:\n")
    assert find_inventory(None) == clean_places / "xdg" / "fleetrun" / "inventory.yaml"


def test_find_nothing_lists_the_places(clean_places: Path) -> None:
    with pytest.raises(UsageError) as caught:
        find_inventory(None)
    message = str(caught.value)
    assert "$FLEETRUN_INVENTORY" in message
    assert "./inventory.yaml" in message
    assert str(clean_places / "home" / ".config" / "fleetrun" / "inventory.yaml") in message
    assert message.endswith("pass -i FILE")
    assert "\n" not in message
