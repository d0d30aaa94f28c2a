"""exec's per-host plan: --template, FLEETRUN_* and --env variables, --script's interpreter (no network)."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from fleetrun.commandplan import (
    ExecSpec,
    check,
    command_for,
    host_env,
    interpreter_of,
    load_script,
    parse_env_options,
    render,
)
from fleetrun.errors import UsageError
from fleetrun.models import Host
from fleetrun.ssh.wrapper import wrapper_script

WEB = Host("web01", "10.0.0.1", vars={"role": "primary", "it's": "a b", "n": 5, "on": True, "list": [1, "x"],
                                       "deep": {"k": "v"}, "none": None})

TRICKY = ["two  spaces", "it's \"quoted\"", "$HOME `id` $(id)", "line1\nline2", "back\\slash", "", "*", "-n"]


def test_template_fields_are_replaced_and_shell_quoted():
    assert render("echo {host} {address} {vars.role}", WEB) == "echo web01 10.0.0.1 primary"
    assert render("echo {vars.it's}", WEB) == "echo 'a b'"
    assert render("echo {vars.n} {vars.on} {vars.list} {vars.deep.k} {vars.none}", WEB) == \
        "echo 5 true '[1, \"x\"]' v null"
    assert render("awk '{{print $1}}' {{}}", WEB) == "awk '{print $1}' {}"


@pytest.mark.parametrize("value", TRICKY)
def test_template_values_round_trip_through_the_shell(value):
    host = Host("h", "10.0.0.9", vars={"x": value})
    out = subprocess.run(["sh", "-c", render("printf %s {vars.x}", host)], capture_output=True, text=True,
                         check=True).stdout
    assert out == value


@pytest.mark.parametrize(("text", "message"), [
    ("echo {vars.missing}", "host web01 has no {vars.missing}"),
    ("echo {hostname}", "has no {hostname}"),
    ("echo }", "a single '}'"),
    ("echo {", "a single '{'"),
])
def test_unknown_template_keys_are_usage_errors_naming_the_host(text, message):
    with pytest.raises(UsageError) as error:
        check(ExecSpec(text, template=True), [Host("db01", "10.0.0.2", vars={"missing": 1}), WEB])
    assert message in str(error.value)


def test_without_template_braces_are_left_alone():
    assert command_for(ExecSpec("echo {host} ${HOME}"), WEB) == ("echo {host} ${HOME}", ())


def test_variables_fleetrun_ones_then_inventory_env_then_env_option():
    host = Host("web01", "10.0.0.1", vars={"role": "db", "max-conn": 10, "tags": ["a"]},
                env={"APP": "inventory", "KEEP": "k"})
    env = host_env(host, {"APP": "flag"})
    assert env == {"FLEETRUN_HOST": "web01", "FLEETRUN_ADDRESS": "10.0.0.1", "FLEETRUN_VAR_MAX_CONN": "10",
                   "FLEETRUN_VAR_ROLE": "db", "FLEETRUN_VAR_TAGS": '["a"]', "APP": "flag", "KEEP": "k"}


@pytest.mark.parametrize("value", TRICKY)
def test_exported_values_round_trip_exactly(value):
    script = wrapper_script(env={"V": value})
    exports = script[script.index("export "):script.index("( { exec sh")]
    out = subprocess.run(["sh", "-c", exports + 'printf %s "$V"'], capture_output=True, text=True, check=True).stdout
    assert out == value


@pytest.mark.parametrize(("option", "message"), [
    ("NOEQUALS", "write NAME=VALUE"),
    ("1X=a", "not a variable name"),
    ("A-B=a", "not a variable name"),
    ("FLEETRUN_HOST=x", "set by fleetrun itself"),
    ("FLEETRUN_VAR_ROLE=x", "set by fleetrun itself"),
])
def test_bad_env_options(option, message):
    with pytest.raises(UsageError) as error:
        parse_env_options([option])
    assert message in str(error.value)


def test_env_options_keep_everything_after_the_first_equals():
    assert parse_env_options(["A=b=c", "E=", "A=last"]) == {"A": "last", "E": ""}


@pytest.mark.parametrize(("first_line", "interpreter"), [
    (b"#!/bin/bash\n", ("/bin/bash",)),
    (b"#! /usr/bin/env python3\r\n", ("/usr/bin/env", "python3")),
    (b"#!/usr/bin/env -S python3 -u\n", ("/usr/bin/env", "-S python3 -u")),  # one argument, as the kernel gives
    (b"#!/bin/sh -e\n", ("/bin/sh", "-e")),
    (b"echo no shebang\n", ("/bin/sh",)),
])
def test_interpreter_is_read_as_execve_reads_it(first_line, interpreter):
    assert interpreter_of(first_line + b"rest\n", "s") == interpreter


def test_script_files_that_cannot_be_used(tmp_path):
    with pytest.raises(UsageError, match="cannot read it"):
        load_script(str(tmp_path / "missing.sh"), [])
    with pytest.raises(UsageError, match="is a directory"):
        load_script(str(tmp_path), [])
    (tmp_path / "empty.sh").write_bytes(b"#!\n")
    with pytest.raises(UsageError, match="names no interpreter"):
        load_script(str(tmp_path / "empty.sh"), [])


def test_script_arguments_are_templated_raw_as_whole_words(tmp_path):
    (tmp_path / "s.sh").write_bytes(b"#!/bin/sh\n")
    spec = ExecSpec("", script=load_script(str(tmp_path / "s.sh"), ["{host}", "it's {vars.role}"]), template=True)
    assert command_for(spec, WEB)[1] == ("web01", "it's primary")
    assert shlex.split(shlex.join(command_for(spec, WEB)[1])) == ["web01", "it's primary"]
