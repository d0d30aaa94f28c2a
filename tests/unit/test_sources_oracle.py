"""Ansible INI, YAML and directory inventories: fleetrun reads them exactly as `ansible-inventory --list` does."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible_oracle import (
    ansible_list,
    ansible_list_hosts,
    ansible_patterns,
    ansible_rejects,
    ansible_ssh_commands,
    assert_same,
    openssh_settings,
)

from fleetrun.errors import InventoryError, SelectionError
from fleetrun.selection import select, syntax
from fleetrun.sources import load_sources

INI = """\
# before any section: ungrouped
loose1 a=1 b=010 c='x y' d="[1, 2]" e="{'k': 1}" f=True g=1.5 h=0x1f i="'quoted'"
; a comment of the other kind
loose2:2200 ansible_port=2201 # the inline port beats host:port
[web]
web[01:03] ansible_user=deploy
web[8:10:2].lan
w-[a:c]-[1:2]
web99 ansible_host=10.0.0.99 ansible_ssh_private_key_file=~/.ssh/web99 # trailing comment
[db]
db[0:2]:2222
dbx ansible_ssh_host=10.1.1.1 ansible_host=10.9.9.9 ansible_ssh_port=2022 ansible_ssh_user=pg ansible_user=x
[prod:children]
web
db
later
[later]
l[0:10:5]
[later:vars]
tier=late
[web:vars]
http_port=8080 # a Python comment: the value is 8080
name=web tier # not a comment here: the value keeps it
n=23
[all:vars]
ansible_user=root
level=all
"""

YAML = """\
all:
  vars: {o: 010, b: yes, d: 2024-01-02, f: 1.5, n: ~, h: 0x1f, s: "text", level: all}
  hosts:
    a1:
    a2: {ansible_port: 2201, ansible_host: 127.0.0.2}
  children:
    web:
      vars: {level: web}
      hosts:
        w[1:2]:2222:
        w3: {ansible_user: alice, level: w3}
      children:
        deep:
          hosts: {dd: {list: [1, 2], map: {x: 1}}}
          children:
            deeper:
              hosts: {ddd: }
    empty:
    db:
      hosts: db1
"""

DIRECTORY = {
    "10-hosts.ini": """\
[web]
web1
web2 level=inline
[db]
db1
db2
[app:children]
web
[prod:children]
app
db
[edge]
e1
[edge:vars]
ansible_group_priority=10
level=edge
""",
    "20-more.yml": """\
app:
  hosts:
    app1: {ansible_port: 2200}
db:
  vars: {level: db_inline}
""",
    "group_vars/all.yml": "level: all_file\nallvar: 1\n",
    "group_vars/prod.json": '{"level": "prod_file", "prodvar": true}\n',
    "group_vars/app": "level: app_file\n",
    "group_vars/web/10-main.yml": "level: web_dir\nwebvar: 1\n",
    "group_vars/web/20-over.yaml": "webvar: 2\n",
    "group_vars/web/.hidden.yml": "webvar: hidden\n",
    "group_vars/web/ignored.txt": "webvar: txt\n",
    "group_vars/edge.yml": "ansible_user: edgeuser\n",
    "host_vars/db1.yml": "level: db1_file\nansible_host: 10.0.0.1\n",
    "host_vars/web2": "hv: yes\n",
    "README.md": "not an inventory\n",
}

# A host in two unrelated groups: depth, then ansible_group_priority, then name decide whose vars win.
PRIORITY = """\
[a]
both
[b]
both
[c:children]
b
[a:vars]
who=a
ansible_group_priority=5
[b:vars]
who=b
"""


# Odd but valid shapes: string sections, vars declared before the group, a host in all.hosts and a group.
ODD_YAML = """\
all:
  hosts:
    both: {v: all-level}
  children:
    web:
      hosts: both
    db:
      hosts:
        db1:
      children: web
    "web-x":
      vars: {dashed: true}
      hosts: {wx1: {ansible_port: "2200"}}
"""
ODD_INI = """\
[later:vars]
a = 1
b= "two words"
[later:children]
inner
[inner]
i1 ansible_host="10.0.0.1"
[later]
l1
[all:vars]
e=
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.mark.parametrize(("name", "text"), [("hosts", INI), ("inventory.ini", INI), ("inv.yml", YAML),
                                            ("prio", PRIORITY), ("odd.yaml", ODD_YAML), ("odd", ODD_INI)])
def test_file_inventories_equal_ansible_inventory_list(tmp_path: Path, home: Path, name: str, text: str) -> None:
    path = write(tmp_path / "inv", {name: text}) / name
    assert_same(load_sources([str(path)]), ansible_list(path, home))


def test_inventory_directory_equals_ansible_inventory_list(tmp_path: Path, home: Path) -> None:
    directory = write(tmp_path / "inv", DIRECTORY)
    inventory = load_sources([str(directory)])
    assert_same(inventory, ansible_list(directory, home))
    # The precedence the corpus is built to show, spelled out:
    assert inventory.hosts["web2"].vars["level"] == "inline"  # host inline beats every group_vars file
    assert inventory.hosts["web1"].vars["level"] == "web_dir"  # the deepest group's file wins
    assert inventory.hosts["db1"].address == "10.0.0.1"  # host_vars beats everything
    assert inventory.hosts["web1"].vars["webvar"] == 2  # files in group_vars/web/ merge in name order
    assert inventory.hosts["e1"].user == "edgeuser"


def test_ini_file_next_to_group_vars_equals_ansible(tmp_path: Path, home: Path) -> None:
    files = {"hosts": INI, "group_vars/web.yml": "level: web_file\n", "group_vars/prod.yml": "level: prod\nx: 1\n",
             "host_vars/web01.yml": "ansible_port: 2022\n"}
    path = write(tmp_path / "inv", files) / "hosts"
    inventory = load_sources([str(path)])
    assert_same(inventory, ansible_list(path, home))
    assert inventory.hosts["web01"].port == 2022 and inventory.hosts["web01"].vars["level"] == "web_file"


def test_several_sources_merge_like_ansible(tmp_path: Path, home: Path) -> None:
    first = write(tmp_path / "one", {"hosts": INI, "group_vars/web.yml": "from: one\n"}) / "hosts"
    second = write(tmp_path / "two", {"inv.yml": YAML, "group_vars/web.yml": "from: two\n"}) / "inv.yml"
    inventory = load_sources([str(first), str(second)])
    both = ansible_list_two(first, second, home)
    assert_same(inventory, both)
    assert inventory.hosts["web01"].vars["from"] == "two"  # the later source's group_vars win


def ansible_list_two(first: Path, second: Path, home: Path) -> dict[str, object]:
    import json
    import subprocess

    from ansible_oracle import env, program

    proc = subprocess.run([program("ansible-inventory"), "-i", str(first), "-i", str(second), "--list"],
                          capture_output=True, text=True, env=env(home), cwd=home, timeout=300, check=True)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


# --- patterns ---------------------------------------------------------------------------------------------

PATTERN_INVENTORY = """\
[web]
web[01:05]
[db]
db[1:3]
[canary]
web01
db1
[prod:children]
web
db
[staging]
web05
stage1
[lb]
lb.example.com
10.0.0.7
"""

PATTERNS = [
    "web:&prod:!web03", "&prod:web:!web03", "!db:web", "web:!db", "web:db", "web,db", "web,&canary",
    "web,!web02", "all:!web", "prod:&staging", "prod:!staging:!canary", "~^db", "~web0[1-3]", "~.*example",
    "web[0]", "web[-1]", "web[1:3]", "web[2:]", "prod[0:1]", "web*:&canary", "*.example.com", "db?:!db2",
    "web[01:03]:db", "canary:staging", "~(web|db)0?[12]:!canary", "all:&lb", "10.0.0.7:db1", "prod:&web[0:2]",
    "ungrouped:web01", "web*[0]", "*[-1]", "db?[1]", "*.com[0]", "web*[0:2]:&canary", "&prod", "&web,&canary",
]
SHARED = ["all", "web", "!staging", "web,db", "prod"]  # the same meaning in both syntaxes; fleetrun's order


def test_patterns_equal_ansible_list_hosts(tmp_path: Path, home: Path) -> None:
    path = write(tmp_path, {"hosts": PATTERN_INVENTORY}) / "hosts"
    inventory = load_sources([str(path)])
    expected = ansible_patterns(path, PATTERNS, home)
    for pattern in PATTERNS:
        got = [host.name for host in select(inventory, pattern)]
        assert got == expected[pattern], pattern  # the same hosts, in the same order


def test_patterns_both_syntaxes_share_select_the_same_hosts(tmp_path: Path, home: Path) -> None:
    path = write(tmp_path, {"hosts": PATTERN_INVENTORY}) / "hosts"
    inventory = load_sources([str(path)])
    expected = ansible_patterns(path, SHARED, home)
    for pattern in SHARED:
        assert syntax(inventory, pattern) == "fleetrun"
        assert {host.name for host in select(inventory, pattern)} == set(expected[pattern]), pattern


def test_the_one_process_oracle_agrees_with_the_ansible_cli(tmp_path: Path, home: Path) -> None:
    path = write(tmp_path, {"hosts": PATTERN_INVENTORY}) / "hosts"
    checked = ["web:&prod:!web03", "web[1:3]", "~^db"]
    expected = ansible_patterns(path, checked, home)
    for pattern in checked:
        assert ansible_list_hosts(path, pattern, home) == expected[pattern]


@pytest.mark.parametrize(("pattern", "expected"), [
    ("web:&prod", "ansible"), ("web,!db", "ansible"), ("~^db", "ansible"), ("web[0]", "ansible"),
    ("web", "fleetrun"), ("web,db", "fleetrun"), ("!db,web", "fleetrun"), ("web&prod!web03", "fleetrun"),
    ("web[01:03]", "fleetrun"), ("web[01-03]", "fleetrun"), ("fe80::1", "fleetrun"), ("web01:22", "fleetrun"),
    ("web*[0]", "ansible"), ("&prod", "ansible"), ("web0*[1]", "fleetrun"),  # web0*1 matches web01
])
def test_which_syntax_a_pattern_is_read_in(tmp_path: Path, pattern: str, expected: str) -> None:
    inventory = load_sources([str(write(tmp_path, {"hosts": PATTERN_INVENTORY}) / "hosts")])
    assert syntax(inventory, pattern) == expected


def test_fleetrun_syntax_keeps_left_to_right(tmp_path: Path) -> None:
    inventory = load_sources([str(write(tmp_path, {"hosts": PATTERN_INVENTORY}) / "hosts")])
    left_to_right = {h.name for h in select(inventory, "!db,web")}  # (all - db) + web
    assert "stage1" in left_to_right and "db1" not in left_to_right
    assert {h.name for h in select(inventory, "!db:web")} == {f"web0{i}" for i in range(1, 6)}  # Ansible: web - db


def test_an_ansible_term_matching_nothing_is_refused(tmp_path: Path) -> None:
    inventory = load_sources([str(write(tmp_path, {"hosts": PATTERN_INVENTORY}) / "hosts")])
    with pytest.raises(SelectionError, match=r"no host or group matches 'dbb'.*did you mean db"):
        select(inventory, "all:!dbb")
    with pytest.raises(SelectionError, match="position 9"):
        select(inventory, "db[9]:web")


# --- values Ansible tags: `!unsafe` and `!vault` --------------------------------------------------------------

TAGGED = """\
all:
  hosts:
    u1:
      ansible_host: !unsafe 10.0.0.5
      ansible_user: !unsafe deploy
      raw: !unsafe '{{ not a template }}'
      items: !unsafe [a, '{{ b }}']
      secret: !vault |
        $ANSIBLE_VAULT;1.1;AES256
        62313365396662343061393464336163383764373764613633653634306231386433626436623361
"""


def test_unsafe_and_vault_values_read_directly_and_through_ansible_inventory(tmp_path: Path, home: Path) -> None:
    """--list prints `!unsafe` as {"__ansible_unsafe": text}: read through --ansible-inventory, that is the text
    (it used to stay a dict, and `ansible_host: !unsafe …` was refused as "not a string")."""
    path = write(tmp_path / "inv", {"tagged.yml": TAGGED}) / "tagged.yml"
    listed = ansible_list(path, home)
    assert listed["_meta"]["hostvars"]["u1"]["ansible_host"] == {"__ansible_unsafe": "10.0.0.5"}  # the oracle's shape
    direct = load_sources([str(path)])
    through = load_sources([], (str(path),))
    for inventory in (direct, through):
        assert_same(inventory, listed)
        host = inventory.hosts["u1"]
        assert (host.address, host.user) == ("10.0.0.5", "deploy")
        assert host.vars["items"] == ["a", "{{ b }}"] and host.vars["secret"].startswith("$ANSIBLE_VAULT;1.1;")


# --- a file whose name says one format and whose text is another ----------------------------------------------

@pytest.mark.parametrize(("name", "text"), [
    ("hosts.yml", "[web]\nw1 a=1\n[db]\nd1\n"),  # INI in a .yml: Ansible's ini plugin reads it after yaml fails
    ("hosts.yaml", "web1\n"),  # a YAML scalar, and an INI host line
    ("one.yml", "# one host, and INI\nweb1 ansible_port=2200\n"),
    ("hosts.json", "[web]\nw1\n"),  # not JSON: INI
    ("inv.json", '{"all": {"hosts": {"a": null}, "children": {"web": {"hosts": {"w1": {"x": 1}}}}}}'),
])
def test_a_file_is_read_as_ansible_reads_it_whatever_its_name(tmp_path: Path, home: Path, name: str,
                                                              text: str) -> None:
    """fleetrun used to refuse the first four ("invalid YAML", "not a mapping", "not valid JSON"), and did not
    read group_vars/host_vars beside a YAML inventory written as JSON."""
    files = {name: text, "group_vars/all.yml": "gv: 1\n", "group_vars/web.yml": "wv: 2\n",
             "host_vars/w1.yml": "hv: 3\n"}
    path = write(tmp_path / "inv", files) / name
    assert_same(load_sources([str(path)]), ansible_list(path, home))


def test_a_yaml_file_neither_yaml_nor_ini_shows_the_yaml_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"bad\.yml:3: invalid YAML"):
        load_sources([str(write(tmp_path, {"bad.yml": "all:\n  hosts: [\n"}) / "bad.yml")])
    with pytest.raises(InventoryError, match=r"list\.yml:1: the inventory is not a mapping"):
        load_sources([str(write(tmp_path, {"list.yml": "- a\n"}) / "list.yml")])
    with pytest.raises(InventoryError, match=r"bad\.json:1: not valid JSON"):
        load_sources([str(write(tmp_path, {"bad.json": "{nope: 1}\n"}) / "bad.json")])
    # A deliberate difference (README): Ansible reads an empty .yml as an empty INI inventory; fleetrun refuses it.
    with pytest.raises(InventoryError, match=r"empty\.yml:1: the inventory is empty"):
        load_sources([str(write(tmp_path, {"empty.yml": "# nothing yet\n"}) / "empty.yml")])


# --- YAML children whose value is not a group definition ------------------------------------------------------

@pytest.mark.parametrize("text", [
    "web:\n  hosts: {w1: null}\nprod:\n  children:\n    web: 5\n",  # names a group defined before: a child
    "all:\n  hosts: {h1: null}\n  children:\n    g:\n      children:\n        h1: true\n",  # a host: a member
])
def test_a_child_that_is_not_a_mapping_is_linked_as_ansible_links_it(tmp_path: Path, home: Path, text: str) -> None:
    path = write(tmp_path, {"inv.yml": text}) / "inv.yml"
    assert_same(load_sources([str(path)]), ansible_list(path, home))


@pytest.mark.parametrize("text", ["all:\n  children:\n    g: 5\n", "all:\n  children:\n    g: [a]\n"])
def test_a_child_that_is_not_a_mapping_and_not_known_is_refused_as_by_ansible(tmp_path: Path, home: Path,
                                                                              text: str) -> None:
    """Ansible's whole inventory fails there ("g is not a known host nor group"); fleetrun used to skip it."""
    path = write(tmp_path, {"inv.yml": text}) / "inv.yml"
    assert ansible_rejects(path, home)
    with pytest.raises(InventoryError, match=r"inv\.yml:3: child 'g' of group 'all' is neither a group definition"):
        load_sources([str(path)])


# --- names and values YAML makes that are not plain strings ----------------------------------------------------

ODD_VALUES = {
    "inv.yml": """\
all:
  vars: {2: two, 1.5: half, ~: nothing}  # not 1: Python would take it and True (on:) for one key
  hosts:
    h:
      on: yes
      d: 2024-01-02
      dt: 2024-01-02 10:00:00
      dz: 2024-01-02T10:00:00Z
      frac: 2001-12-14t21:59:43.10-05:00
      s: !!set {a: null}  # one item: Ansible lists a set in hash order
      o: !!omap [a: 1, b: [2]]
""",
    "group_vars/all.yml": "no: b\nwhen: 2023-05-06 07:08:09\n",
    "more.ini": "[ini]\nh =empty-name\n",
}


def test_non_string_names_and_timestamps_equal_ansible(tmp_path: Path, home: Path) -> None:
    """Ansible takes `on:` or `1:` as a variable name (--list prints "true", "1"; INI `=x` is ""), where fleetrun
    refused them; a datetime is printed in ISO 8601 and a set or omap as lists, where fleetrun kept the text
    written and Python sets/tuples."""
    directory = write(tmp_path / "inv", ODD_VALUES)
    inventory = load_sources([str(directory)])
    assert_same(inventory, ansible_list(directory, home))
    assert inventory.hosts["h"].vars["dz"] == "2024-01-02T10:00:00+00:00" and inventory.hosts["h"].vars["true"]


def test_an_ini_number_too_long_for_python_stays_text_as_in_ansible(tmp_path: Path, home: Path) -> None:
    """Past 4300 digits int() refuses: literal_eval fails in Ansible and the value is text; fleetrun crashed."""
    path = write(tmp_path, {"hosts": f"[g]\nh a={'1' * 5000} b=-{'2' * 5000} c=7\n"}) / "hosts"
    inventory = load_sources([str(path)])
    assert_same(inventory, ansible_list(path, home))
    assert inventory.hosts["h"].vars["a"] == "1" * 5000 and inventory.hosts["h"].vars["c"] == 7


HOST_PORTS = """\
[g]
web_1:2222
web-:2223
_x:22
h.example.com.:24
-lead:25
ä.example:26
h[1:2]-:27
web:0
web3:007
h..x:28
1.2.3.400:30
::ffff:1.2.3.4
[::ffff:1.2.3.4]:31
fe80::1%eth0
foo@bar:32
"""


def test_host_port_splitting_equals_ansible(tmp_path: Path, home: Path) -> None:
    """Only a valid name is split from its port (`web-:2223` is one odd host name); `:0` sets no port, as
    Ansible's Host() tests the port for truth (fleetrun refused port 0); a second `[addr]:port` of a known
    host adds no port."""
    path = write(tmp_path, {"hosts": HOST_PORTS}) / "hosts"
    inventory = load_sources([str(path)])
    assert_same(inventory, ansible_list(path, home))
    assert inventory.hosts["web"].port == 22 and "web-:2223" in inventory.hosts


# --- YAML merge keys and repeated keys: one dict, as Ansible's loader builds it ----------------------------------

MERGED = """\
base: &base
  vars: {v: base, w: base}
  hosts: {b1: null}
all:
  children:
    web:
      <<: *base
      hosts: {w1: null}
    db:
      <<: [*base]
      vars: {v: db}
    twice:
      hosts: {t1: null}
    twice:
      hosts: {t2: {x: 2}}
"""


def test_merge_keys_and_repeated_keys_replace_as_in_ansible(tmp_path: Path, home: Path) -> None:
    """`<<: *base` then `hosts:` is one `hosts` (the explicit one), and a group written twice is its last
    definition; fleetrun used to read both (web got b1 as well, twice got t1 and t2)."""
    path = write(tmp_path, {"merged.yml": MERGED}) / "merged.yml"
    inventory = load_sources([str(path)])
    assert_same(inventory, ansible_list(path, home))
    assert inventory.groups["web"] == ("w1",) and inventory.groups["twice"] == ("t2",)


def test_a_name_that_is_both_host_and_group_selects_the_host_as_in_ansible(tmp_path: Path, home: Path) -> None:
    """fleetrun's own syntax took the group (web and w1) for `web`; Ansible, and now fleetrun, the host."""
    path = write(tmp_path, {"hosts": "[web]\nweb\nw1\n[db]\nweb\nd1\n[g:children]\nweb\n"}) / "hosts"
    inventory = load_sources([str(path)])
    patterns = ["web", "web:db", "db:&web", "g"]
    expected = ansible_patterns(path, patterns, home)
    for pattern in patterns:
        assert [host.name for host in select(inventory, pattern)] == expected[pattern], pattern
    assert expected["web"] == ["web"]
    assert any("means the host" in warning for warning in inventory.warnings)


@pytest.mark.parametrize(("name", "text"), [
    ("hosts", "[db]\nd1\n[web]\ndb ansible_user=alice\nw1\n"),
    ("inv.yml", "all:\n  children:\n    db:\n      hosts: {d1: }\n"
                "    web:\n      hosts:\n        db: {ansible_user: alice}\n"),
    ("inv.yml", "all:\n  hosts:\n    db: {v: 1}\n  children:\n    db:\n      hosts: {d1: }\n"),
])
def test_a_variable_for_a_name_that_is_also_a_group_goes_to_the_group_as_in_ansible(
        tmp_path: Path, home: Path, name: str, text: str) -> None:
    """Ansible's set_variable (and its add_child to ungrouped) look for a group of that name first."""
    path = write(tmp_path, {name: text}) / name
    inventory = load_sources([str(path)])
    listed = ansible_list(path, home)
    if "hosts:\n    db:" not in text:  # (a host only in `all`, as there, is in no group --list shows)
        assert_same(inventory, listed)
    assert {name: inventory.hosts[name].user for name in listed["_meta"]["hostvars"]} == {
        name: values.get("ansible_user") for name, values in listed["_meta"]["hostvars"].items()}
    patterns = ["ungrouped", "db", "web", "all", "ungrouped:db"]
    expected = ansible_patterns(path, patterns, home)
    for pattern in patterns:
        if not expected[pattern]:  # matching nothing is an error here (on purpose: README)
            with pytest.raises(SelectionError):
                select(inventory, pattern)
            continue
        assert [host.name for host in select(inventory, pattern)] == expected[pattern], pattern


def test_slices_regexes_and_empty_terms_at_the_edges_equal_ansible(tmp_path: Path, home: Path) -> None:
    path = write(tmp_path, {"hosts": "[g]\nh1\nh2\n[one]\nh3\n[web]\nweb01\nweb02\nweb03\n"}) / "hosts"
    inventory = load_sources([str(path)])
    patterns = ["one[1:]:g", "g:!one[1:]", "one[0:]", "g[1:]", "one[0:0]", "!~h1", "!~web0[12]", "&~web",
                "web:", ":web", "!web:", "web::g"]
    expected = ansible_patterns(path, patterns, home)
    for pattern in patterns:
        assert syntax(inventory, pattern) == "ansible", pattern
        assert [host.name for host in select(inventory, pattern)] == expected[pattern], pattern


def test_a_host_whose_value_is_falsy_has_no_vars_as_in_ansible(tmp_path: Path, home: Path) -> None:
    """Ansible reads a host's value as `value or {}`: `a: 0`, `b: ''`, `c: false`, `d: []` are hosts without
    vars (fleetrun refused them); `a: 1` is still refused by both."""
    path = write(tmp_path, {"inv.yml": "all:\n  hosts:\n    a: 0\n    b: ''\n    c: false\n    d: []\n    e: {}\n"})
    assert_same(load_sources([str(path / "inv.yml")]), ansible_list(path / "inv.yml", home))
    truthy = write(tmp_path / "t", {"inv.yml": "all:\n  hosts:\n    a: 1\n"}) / "inv.yml"
    assert ansible_rejects(truthy, home)
    with pytest.raises(InventoryError, match=r"inv\.yml:3: host 'a': its value must be a mapping"):
        load_sources([str(truthy)])


# --- ssh arguments: the command line Ansible's ssh plugin builds, read as OpenSSH reads it -------------------------

SSH_ARGUMENTS = """\
[g]
a1 ansible_ssh_args='-C -o ControlMaster=auto -o ProxyJump=early' ansible_ssh_common_args='-J common'
a2 ansible_ssh_args='-o Port=2200 -l early -i /k/e' ansible_port=22 ansible_user=var ansible_ssh_private_key_file=/v
a3 ansible_ssh_common_args='-o Port=2201 -l common -J c1,c2' ansible_port=22
a4 ansible_ssh_common_args='-p 2202' ansible_ssh_extra_args='-p 2203 -o ProxyCommand="nc %h %p"'
a5 ansible_ssh_args='-o ProxyJump=none' ansible_ssh_common_args='-J later'
a6 ansible_ssh_extra_args='-J extra' ansible_ssh_common_args='-J common' ansible_user=var
a7 ansible_port=2204
"""


def test_ssh_arguments_map_as_openssh_reads_ansibles_command_line(tmp_path: Path, home: Path) -> None:
    """ansible_ssh_args comes first on Ansible's ssh command line (before the variables' own -o Port/User/
    IdentityFile, then common and extra args), and OpenSSH takes the first value: fleetrun ignored it, so a
    host behind `ansible_ssh_args='-o ProxyJump=b'` was connected to directly."""
    path = write(tmp_path, {"hosts": SSH_ARGUMENTS}) / "hosts"
    inventory = load_sources([str(path)])
    hostvars = ansible_list(path, home)["_meta"]["hostvars"]
    commands = ansible_ssh_commands({name: hostvars.get(name, {}) for name in inventory.hosts}, home)
    for name, host in inventory.hosts.items():
        mine = {"port": host.port, "user": host.user, "key": host.key, "jump": host.jump,
                "proxy_command": host.proxy_command}
        assert mine == openssh_settings(commands[name]), (name, commands[name])
    assert inventory.hosts["a1"].jump == ("early",) and inventory.hosts["a2"].port == 2200


@pytest.mark.parametrize("text", ['[g]\nh1 a=1 msg="{{ {} }}"\n', "[g]\nh1\n[g:vars]\nb={[1]}\n"])
def test_a_value_literal_eval_chokes_on_is_refused_as_by_ansible(tmp_path: Path, home: Path, text: str) -> None:
    """literal_eval raises TypeError on `{{ {} }}` (a set holding a dict): Ansible's ini plugin catches only
    ValueError and SyntaxError, so the whole file fails there; fleetrun kept the text."""
    path = write(tmp_path, {"hosts": text}) / "hosts"
    assert ansible_rejects(path, home)
    with pytest.raises(InventoryError, match=r"hosts:[24]: the value .* breaks Python's literal_eval \(TypeError"):
        load_sources([str(path)])


VAULTED_FILE = """\
$ANSIBLE_VAULT;1.1;AES256
62313365396662343061393464336163383764373764613633653634306231386433626436623361
6134333665353966363534333632666535333761666131620a663537646436643839616531643561
"""


@pytest.mark.parametrize("name", ["hosts", "hosts.ini", "hosts.yml"])
def test_a_vault_encrypted_inventory_file_is_refused_not_read_as_ini(tmp_path: Path, home: Path, name: str) -> None:
    """Without the vault password Ansible cannot read it either; fleetrun used to read each ciphertext line as
    an INI host name (three hosts called '$ANSIBLE_VAULT;1.1;AES256', '6231…', '6134…')."""
    path = write(tmp_path, {name: VAULTED_FILE}) / name
    assert ansible_rejects(path, home)
    with pytest.raises(InventoryError, match=rf"{name}:1: this inventory file is vault-encrypted.*--ansible-inventory"):
        load_sources([str(path)])
    with pytest.raises(InventoryError, match="vault-encrypted"):  # in a directory too: its hosts would be missing
        load_sources([str(write(tmp_path / "dir", {"a": "[g]\nh\n", name: VAULTED_FILE}))])


# --- -i 'a,b:2222,': Ansible's host_list source --------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["a,", "a,b:2222,[::1]:23,web[1:3],10.0.0.1:24, c ,,fe80::1,web[1:3]:25,h-:26"])
def test_a_comma_separated_host_list_equals_ansible(tmp_path: Path, home: Path, spec: str) -> None:
    """fleetrun said "cannot read the inventory: No such file" for `-i 'web1,web2,'`."""
    assert_same(load_sources([spec]), ansible_list(Path(spec), home))


def test_a_host_list_after_a_file_leaves_its_hosts_alone(tmp_path: Path, home: Path) -> None:
    path = write(tmp_path, {"hosts": "[web]\nweb01 ansible_port=2200\n"}) / "hosts"
    import json
    import subprocess

    from ansible_oracle import env, program

    proc = subprocess.run([program("ansible-inventory"), "-i", str(path), "-i", "web01:2300,new1", "--list"],
                          capture_output=True, text=True, env=env(home), cwd=home, timeout=300, check=True)
    inventory = load_sources([str(path), "web01:2300,new1"])
    assert_same(inventory, json.loads(proc.stdout))
    assert inventory.hosts["web01"].port == 2200 and inventory.hosts["new1"].groups == ("ungrouped",)


def test_a_binary_value_is_refused_as_ansible_inventory_fails_on_it(tmp_path: Path, home: Path) -> None:
    """`!!binary` makes bytes: `ansible-inventory --list` fails on them, and fleetrun's JSON export failed with
    an internal error; now the value is refused at its line."""
    path = write(tmp_path, {"inv.yml": "all:\n  hosts:\n    h:\n      b: !!binary aGVsbG8=\n"}) / "inv.yml"
    assert ansible_rejects(path, home)
    with pytest.raises(InventoryError, match=r"inv\.yml:4: cannot read this value: a !!binary value is bytes"):
        load_sources([str(path)])


@pytest.mark.parametrize(("text", "line"), [
    ("all:\n  hosts:\n    2024-01-01:\n", 3),  # Ansible: host pattern must be a string
    ("all:\n  children:\n    2024-01-01:\n      hosts: {a: null}\n", 3),
    ("all:\n  hosts:\n    a: {2024-01-01: x}\n", 3),  # Ansible: --list cannot print a date as a name
])
def test_a_name_yaml_reads_as_a_date_is_refused_as_by_ansible(tmp_path: Path, home: Path, text: str,
                                                              line: int) -> None:
    path = write(tmp_path, {"inv.yml": text}) / "inv.yml"
    assert ansible_rejects(path, home)
    with pytest.raises(InventoryError, match=rf"inv\.yml:{line}: the name '2024-01-01' is a date in YAML; quote it"):
        load_sources([str(path)])
