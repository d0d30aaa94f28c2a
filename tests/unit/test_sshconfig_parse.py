"""ssh_config reading: line splitting, patterns, tokens, Include, refusals with file:line, Match exec."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest

from fleetrun.sshconfig import ConfigError, Preset, SshConfigSource, load
from fleetrun.sshconfig import evaluate as evaluate_module
from fleetrun.sshconfig.files import read_file
from fleetrun.sshconfig.lexer import LexError, argv_split, split_line, strdelim
from fleetrun.sshconfig.patterns import match_hostname, match_pattern, match_pattern_list
from fleetrun.sshconfig.tokens import TokenError, convtime, local_info, percent_expand, tilde_expand


def config(tmp_path: Path, text: str, name: str = "ssh_config") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def resolve(path: Path, host: str = "web01", **preset: object):
    return load(SshConfigSource(path=str(path))).resolve(host, Preset(**preset))  # type: ignore[arg-type]


# --- splitting lines -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "words"), [
    ("a b\tc", ["a", "b", "c"]),
    ('"a b" c', ["a b", "c"]),
    ("'a b' \"c d\"", ["a b", "c d"]),
    ('x"y z"w', ["xy zw"]),
    (r"a\ b c", ["a b", "c"]),
    (r'"a\"b"', ['a"b']),
    (r"a\nb", [r"a\nb"]),  # an unknown escape keeps its backslash
    ("a # comment", ["a"]),
    ("a#b c", ["a#b", "c"]),  # only a word that starts with # is a comment
    ("", []),
])
def test_argv_split(text: str, words: list[str]) -> None:
    assert argv_split(text) == words


def test_argv_split_refuses_an_open_quote() -> None:
    with pytest.raises(LexError):
        argv_split('"never closed')


@pytest.mark.parametrize(("line", "split"), [
    ("Port 22", ("Port", "22")),
    ("  Port=22", ("Port", "22")),
    ("Port = 22", ("Port", "22")),
    ("Port  =  22  \r\n", ("Port", "22")),
    ("Port==22", ("Port", "=22")),  # only one '=' is a separator
    ("# a comment", None),
    ("   ", None),
    ("Port", ("Port", "")),
])
def test_split_line(line: str, split: tuple[str, str] | None) -> None:
    assert split_line(line) == split


def test_strdelim_quotes_and_equals() -> None:
    assert strdelim('host="a b" x') == ("host", '"a b" x')
    assert strdelim('"a b" x') == ("a b", "x")
    assert strdelim('"open') == (None, None)


# --- patterns ------------------------------------------------------------------------------------------


def test_patterns() -> None:
    assert match_pattern("web01", "web*") and match_pattern("db1", "db?") and not match_pattern("db12", "db?")
    assert match_pattern("a[1]", "a[1]")  # brackets are literal, unlike fnmatch
    assert not match_pattern("WEB01", "web*")
    assert match_pattern_list("web01", "db*,web*", lower=False) == 1
    assert match_pattern_list("web01", "web*,!web01", lower=False) == -1
    assert match_pattern_list("x", "a,b", lower=False) == 0
    assert match_hostname("WEB01.example", "web*.EXAMPLE")


# --- tokens --------------------------------------------------------------------------------------------


def test_percent_expand() -> None:
    assert percent_expand("%h:%p %%", {"h": "web", "p": "22"}) == "web:22 %"
    with pytest.raises(TokenError, match="unknown token %x"):
        percent_expand("%x", {"h": "web"})
    with pytest.raises(TokenError, match="lone %"):
        percent_expand("50%", {"h": "web"})


def test_dollar_expand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETRUN_T", "v")
    assert percent_expand("${FLEETRUN_T}/x", {}, dollar=True) == "v/x"
    assert percent_expand("${FLEETRUN_T}", {}, dollar=False) == "${FLEETRUN_T}"
    monkeypatch.delenv("FLEETRUN_T")
    with pytest.raises(TokenError, match="not set"):
        percent_expand("${FLEETRUN_T}", {}, dollar=True)


def test_tilde_uses_the_given_home_and_passwd_for_other_users() -> None:
    assert tilde_expand("~/.ssh/x", "/home/me") == "/home/me/.ssh/x"
    assert tilde_expand("~", "/home/me/") == "/home/me/"
    assert tilde_expand("~root/x", "/home/me") == os.path.expanduser("~root") + "/x"
    assert tilde_expand("/abs", "/home/me") == "/abs"
    with pytest.raises(TokenError):
        tilde_expand("~no-such-user-fleetrun/x", "/home/me")


@pytest.mark.parametrize(("text", "seconds"), [("10", 10), ("10s", 10), ("1m30s", 90), ("2h", 7200),
                                               ("1w", 604800), ("1M", 60), ("", None), ("x", None),
                                               ("5y", None), ("-1", None)])
def test_convtime(text: str, seconds: int | None) -> None:
    assert convtime(text) == seconds


def test_identity_and_agent_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = local_info()
    monkeypatch.setenv("FLEETRUN_SOCK", "/run/agent.sock")
    path = config(tmp_path, "Host web01\n  HostName Db.Example\n  Port 2200\n  User bob\n  HostKeyAlias KA\n"
                  "  IdentityFile ~/k_%h_%p_%r_%n_%u_%k_%i_%L_%%\n  IdentityFile %d/c_%C\n"
                  "  IdentityAgent ${FLEETRUN_SOCK}\n  CertificateFile ~/cert_%h\n")
    settings = resolve(path)
    digest = hashlib.sha1(f"{info.hostname}db.example2200bob".encode()).hexdigest()
    assert [identity.path for identity in settings.identity_files] == [
        f"{info.home}/k_db.example_2200_bob_web01_{info.user}_ka_{info.uid}_{info.short_hostname}_%",
        f"{info.home}/c_{digest}",
    ]
    assert [identity.written for identity in settings.identity_files] == [
        "~/k_%h_%p_%r_%n_%u_%k_%i_%L_%%", "%d/c_%C"]
    assert settings.identity_agent == "/run/agent.sock"
    assert [c.path for c in settings.certificate_files] == [f"{info.home}/cert_db.example"]
    assert not settings.identity_files_default


def test_default_identities_and_agent_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = local_info()
    settings = resolve(config(tmp_path, "Host other\n  Port 1\n"))
    assert settings.identity_files_default
    assert [identity.path for identity in settings.identity_files] == [
        f"{info.home}/.ssh/{name}" for name in
        ("id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk", "id_xmss", "id_dsa")]
    assert settings.identity_agent is None
    for value, expected in (("none", "none"), ("SSH_AUTH_SOCK", None), ("~/a.sock", f"{info.home}/a.sock")):
        assert resolve(config(tmp_path, f"IdentityAgent {value}\n")).identity_agent == expected
    monkeypatch.setenv("FLEETRUN_AGENT", "/tmp/x.sock")
    assert resolve(config(tmp_path, "IdentityAgent $FLEETRUN_AGENT\n")).identity_agent == "/tmp/x.sock"
    monkeypatch.delenv("FLEETRUN_AGENT")
    assert resolve(config(tmp_path, "IdentityAgent $FLEETRUN_AGENT\n")).identity_agent == "none"


def test_a_bad_token_names_the_line_that_set_it(tmp_path: Path) -> None:
    path = config(tmp_path, "Host *\n  Port 22\n  IdentityFile ~/.ssh/%z\n")
    with pytest.raises(ConfigError, match=r"ssh_config:3: identityfile: unknown token %z"):
        resolve(path)
    path = config(tmp_path, "Host other\n  IdentityFile ~/.ssh/%z\n")
    assert resolve(path).identity_files_default  # a bad token in a block that does not apply is no error


def test_proxy_command_knows_k(tmp_path: Path) -> None:
    # sshconnect.c expand_proxy_command() expands %k (the lower-cased HostKeyAlias, else the name given);
    # ssh -G prints the command unexpanded, so the oracle only sees that it is accepted.
    path = config(tmp_path, "Host web01\n  HostKeyAlias KA\nHost *\n  ProxyCommand nc %k %n %p\n")
    assert resolve(path).proxy_command == "nc ka web01 22"
    assert resolve(path, "Web02").proxy_command == "nc Web02 Web02 22"
    assert resolve(config(tmp_path, "ProxyJump %k-gw\n"), "WEB01").proxy_jump == ("WEB01-gw",)


def test_last_proxyjump_hop_is_parsed_before_its_tokens_are_expanded(tmp_path: Path) -> None:
    # ssh.c puts the last hop's user and host into the implicit ProxyCommand after parsing it, and the
    # earlier hops (its -J) as written, so their tokens are expanded before they are parsed: %h may be
    # an IPv6 address in the last hop, and an ssh:// user's %-escapes are no tokens there.
    path = config(tmp_path, "Host web01\n  HostName ::1\n  ProxyJump gw-%p,%r@%h:2222\n")
    assert resolve(path).proxy_jump == ("gw-22", f"{local_info().user}@[::1]:2222")
    path = config(tmp_path, "Host web01\n  ProxyJump gw,ssh://a%40b@gw2\n")
    assert resolve(path).proxy_jump == ("gw", "a@b@gw2")
    with pytest.raises(ConfigError, match="unknown token %4"):  # ssh fails the same way when it connects
        resolve(config(tmp_path, "Host web01\n  ProxyJump ssh://a%40b@gw,last\n"))


def test_forward_variables_are_expanded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # misc.c dollar_expand() does not look into a value again (ssh -G accepts this too)
    monkeypatch.setenv("FLEETRUN_T_FWD", "a${x")
    resolve(config(tmp_path, "Host other\n  LocalForward 8080 h${FLEETRUN_T_FWD}:80\n"))
    with pytest.raises(ConfigError, match="bad forwarding specification"):
        resolve(config(tmp_path, "Host other\n  LocalForward 8080 h${FLEETRUN_T_UNSET_FWD}:80\n"))


# --- refusals, with file and line ----------------------------------------------------------------------


def test_errors_name_file_and_line(tmp_path: Path) -> None:
    path = config(tmp_path, "Host *\n\n  Port 70000\n")
    with pytest.raises(ConfigError) as error:
        load(SshConfigSource(path=str(path)))
    assert str(error.value).startswith(f"{path}:3: Port: bad port '70000'")
    assert error.value.exit_status == 2


def test_proxyjump_none_with_a_comment_is_refused(tmp_path: Path) -> None:
    # OpenSSH 9.2 would read a jump host called "none" here; a silent difference is worse than a clear stop.
    with pytest.raises(ConfigError, match="'none' followed by a comment"):
        load(SshConfigSource(path=str(config(tmp_path, "ProxyJump none # direct\n"))))


def test_include_loop_names_both_files(tmp_path: Path) -> None:
    a = config(tmp_path, f"Include {tmp_path}/b.conf\n", "a.conf")
    config(tmp_path, f"Port 1\nInclude {tmp_path}/a.conf\n", "b.conf")
    with pytest.raises(ConfigError) as error:
        load(SshConfigSource(path=str(a)))
    message = str(error.value)
    assert message.startswith(f"{tmp_path}/b.conf:2: Include loop")
    assert f"{tmp_path}/a.conf:1" in message and message.count("a.conf") >= 2


def test_include_of_itself(tmp_path: Path) -> None:
    path = config(tmp_path, f"Include {tmp_path}/*.conf\n", "self.conf")
    with pytest.raises(ConfigError, match="Include loop"):
        load(SshConfigSource(path=str(path)))


def test_deep_include_chain_is_refused(tmp_path: Path) -> None:
    for level in range(20):
        config(tmp_path, f"Include {tmp_path}/{level + 1}.conf\n", f"{level}.conf")
    config(tmp_path, "Port 2\n", "20.conf")
    with pytest.raises(ConfigError, match="nested more than 16"):
        load(SshConfigSource(path=str(tmp_path / "0.conf")))


def test_included_files_must_not_be_writable_by_others(tmp_path: Path) -> None:
    path = config(tmp_path, f"Include {tmp_path}/inc.conf\n")
    included = config(tmp_path, "Port 2\n", "inc.conf")
    included.chmod(0o666)  # group write alone can be fine (see test_include_permissions_match_ssh_G)
    with pytest.raises(ConfigError, match="bad owner or permissions"):
        load(SshConfigSource(path=str(path)))
    included.chmod(0o644)
    assert resolve(path).port == 2


def test_unreadable_include_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        directory = config(tmp_path, "", "dir.conf")
        directory.unlink()
        directory.mkdir()  # a directory matched by the glob reads as empty, as fopen(3) gives ssh
        assert resolve(config(tmp_path, f"Include {tmp_path}/dir.conf\nPort 3\n")).port == 3
        return
    included = config(tmp_path, "Port 2\n", "inc.conf")
    included.chmod(0)
    with pytest.raises(ConfigError, match="cannot open"):
        load(SshConfigSource(path=str(config(tmp_path, f"Include {tmp_path}/inc.conf\n"))))


def test_system_files_may_not_include_from_home(tmp_path: Path) -> None:
    path = config(tmp_path, "Include ~/.ssh/x\n")
    with pytest.raises(ConfigError, match="bad include path"):
        read_file(str(path), user=False, check_permissions=False)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load(SshConfigSource(path=str(tmp_path / "absent")))
    assert load(SshConfigSource(disabled=True)).files == ()


def test_unsupported_match_criteria(tmp_path: Path) -> None:
    for criterion in ("localnetwork 10.0.0.0/8", "tagged x", "address 10.0.0.1"):
        with pytest.raises(ConfigError, match=r"ssh_config:2: Match: unsupported criterion"):
            load(SshConfigSource(path=str(config(tmp_path, f"Host *\nMatch {criterion}\n  Port 1\n"))))


# --- evaluation ----------------------------------------------------------------------------------------


def test_match_exec_runs_each_distinct_command_once(tmp_path: Path) -> None:
    calls: list[str] = []

    def runner(command: str, line: object) -> bool:
        calls.append(command)
        return command in ("check web01", "check all")

    path = config(tmp_path, "Match exec \"check %h\"\n  Port 2\nMatch exec \"check all\"\n  User u\n"
                  "Match final\n  Port 9\n")
    ssh_config = load(SshConfigSource(path=str(path)), exec_runner=runner)
    assert ssh_config.resolve("web01").port == 2
    assert ssh_config.resolve("web02").port == 9
    assert ssh_config.resolve("web01").user == "u"
    # two passes per host (Match final), three hosts: each distinct command still ran once
    assert sorted(calls) == ["check all", "check web01", "check web02"]


def test_match_exec_needs_no_invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "invoke", None)  # what fleetrun.cli does
    path = config(tmp_path, "Match exec \"test %n = web01\"\n  Port 2\n")
    assert resolve(path).port == 2
    assert resolve(path, "web02").port == 22


def test_match_exec_that_hangs_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluate_module, "EXEC_TIMEOUT", 0.5)
    with pytest.raises(ConfigError, match=r"ssh_config:1: Match exec 'sleep 30' did not finish"):
        resolve(config(tmp_path, "Match exec \"sleep 30\"\n  Port 2\n"))


def test_match_exec_killed_by_a_signal(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="killed by signal"):
        resolve(config(tmp_path, "Match exec \"kill -9 $$\"\n  Port 2\n"))


def test_unknown_option_respects_ignore_unknown_set_before_it(tmp_path: Path) -> None:
    assert resolve(config(tmp_path, "IgnoreUnknown UseKeychain\nUseKeychain yes\n")).port == 22
    with pytest.raises(ConfigError, match="unknown option 'usekeychain'"):
        resolve(config(tmp_path, "UseKeychain yes\nIgnoreUnknown UseKeychain\n"))


def test_preset_values_are_what_match_user_sees(tmp_path: Path) -> None:
    path = config(tmp_path, "Match user deploy\n  Port 2\nHost *\n  User other\n")
    assert resolve(path, user="deploy").port == 2
    assert resolve(path).port == 22
    assert resolve(path).user == "other"


def test_preset_proxy_settings_block_the_files(tmp_path: Path) -> None:
    path = config(tmp_path, "Host *\n  ProxyCommand nc %h %p\n  ProxyJump b\n")
    direct = resolve(path, proxy_jump=())
    assert direct.proxy_jump == () and direct.proxy_command is None
    via = resolve(path, proxy_jump=("j1", "u@j2:2222"))
    assert via.proxy_jump == ("j1", "u@j2:2222") and via.proxy_command is None
    command = resolve(path, proxy_command="exec socat - TCP:%h:%p")
    assert command.proxy_command == "exec socat - TCP:web01:22" and command.proxy_jump == ()
    assert resolve(path).proxy_command == "nc web01 22"


def test_proxy_tokens(tmp_path: Path) -> None:
    path = config(tmp_path, "Host web01\n  HostName 10.0.0.5\n  User app\n  ProxyJump %r@%n-gw,%h-gw2\n")
    assert resolve(path).proxy_jump == ("app@web01-gw", "10.0.0.5-gw2")
    with pytest.raises(ConfigError, match="bad port '%p'"):  # ssh: Invalid ProxyJump, checked before tokens
        resolve(config(tmp_path, "ProxyJump gw:%p\n"))
    path = config(tmp_path, "Host *\n  ProxyJump [::1]:2222,ssh://ops@gw\n")
    assert resolve(path).proxy_jump == ("[::1]:2222", "ops@gw")


def test_meaningful_ignored_options_are_reported(tmp_path: Path) -> None:
    path = config(tmp_path, "Host *\n  ControlMaster no\n  ControlPath none\n  LocalForward 8080 x:80\n"
                  "  KnownHostsCommand /bin/kh %H\n  ForwardX11 no\n  CompressionLevel 6\n")
    ignored = {keyword: str(origin) for keyword, _, origin in resolve(path).ignored}
    assert ignored == {"localforward": f"{path}:4", "knownhostscommand": f"{path}:5",
                       "compressionlevel": f"{path}:7"}


def test_canonicalize_hostname_gives_a_second_pass(tmp_path: Path) -> None:
    path = config(tmp_path, "Host web01\n  CanonicalizeHostname yes\nMatch canonical\n  Port 2\n")
    settings = resolve(path)
    assert settings.port == 2 and any(keyword == "canonicalizehostname" for keyword, _, _ in settings.ignored)


@pytest.fixture()
def local_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Which `ssh` the algorithm checks ask (`ssh -Q`): a PATH of our choosing, the answers asked afresh."""
    from fleetrun.sshconfig import localssh

    def use(script: str | None) -> None:
        directory = tmp_path / "bin"
        directory.mkdir(exist_ok=True)
        ssh = directory / "ssh"
        ssh.unlink(missing_ok=True)
        if script is not None:
            ssh.write_text("#!/bin/sh\n" + script)
            ssh.chmod(0o755)
        monkeypatch.setenv("PATH", str(directory))
        for cached in (localssh.known, localssh.known_set, localssh.accepts_line):
            cached.cache_clear()

    yield use
    for cached in (localssh.known, localssh.known_set, localssh.accepts_line):
        cached.cache_clear()


MODERN = "Host *\n  KexAlgorithms mlkem768x25519-sha256,curve25519-sha256\n"


def test_algorithm_names_are_the_local_ssh_s(tmp_path: Path, local_ssh) -> None:
    """A file written for OpenSSH 9.9+ is refused only where the local ssh would refuse it too."""
    local_ssh('[ "$1 $2" = "-Q kex" ] && printf "mlkem768x25519-sha256\\ncurve25519-sha256\\n"\n')
    load(SshConfigSource(path=str(config(tmp_path, MODERN))))
    local_ssh('[ "$1 $2" = "-Q kex" ] && printf "curve25519-sha256\\n"\n')
    with pytest.raises(ConfigError, match=r"ssh_config:2: KexAlgorithms: bad key exchange algorithm"):
        load(SshConfigSource(path=str(config(tmp_path, MODERN))))


def test_without_an_ssh_client_the_built_in_names_and_ml_kem_are_known(tmp_path: Path, local_ssh) -> None:
    local_ssh(None)
    load(SshConfigSource(path=str(config(tmp_path, MODERN))))
    with pytest.raises(ConfigError, match="bad key exchange algorithm 'bogus'"):
        load(SshConfigSource(path=str(config(tmp_path, "KexAlgorithms bogus\n"))))
    local_ssh("exit 255\n")  # an ssh that cannot say: the same built-in names
    load(SshConfigSource(path=str(config(tmp_path, MODERN))))


NEWER_SSH = """case "$*" in
  "-F /dev/null -G -o ObscureKeystrokeTiming "*) exit 0 ;;
  *) echo "command-line line 0: Bad configuration option" >&2; exit 255 ;;
esac
"""


def test_an_option_of_a_newer_local_ssh_is_accepted_and_named_as_not_applied(tmp_path: Path, local_ssh) -> None:
    """OpenSSH 9.5's ObscureKeystrokeTiming: refused where ssh is 9.2 (as ssh refuses it), accepted where the
    local ssh knows it, with a warning that fleetrun does not apply it."""
    text = "Host *\n  ObscureKeystrokeTiming interval:20\n  Port 2222\n"
    local_ssh(NEWER_SSH)
    settings = resolve(config(tmp_path, text))
    assert settings.port == 2222
    assert [(keyword, origin.line) for keyword, why, origin in settings.ignored] == [("obscurekeystroketiming", 2)]
    assert "knows it, fleetrun does not" in settings.ignored[0][1]
    with pytest.raises(ConfigError, match=r"ssh_config:2: unknown option 'hostnme'"):
        resolve(config(tmp_path, "Host *\n  Hostnme web\n"))  # a typo: the local ssh refuses it too
    local_ssh(None)  # no ssh client to ask: OpenSSH 9.2's keywords
    with pytest.raises(ConfigError, match=r"unknown option 'obscurekeystroketiming'"):
        resolve(config(tmp_path, text))
