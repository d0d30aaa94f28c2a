"""OpenSSH 9.2's client keywords: which exist, how each argument is checked, which fleetrun honours."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from typing import Any

from fleetrun.sshconfig.tokens import INT_MAX, convtime, strtonum

_FLAG = {"yes": True, "true": True, "no": False, "false": False}
_YES_NO_ASK = {**_FLAG, "ask": "ask"}
# StrictHostKeyChecking, as readconf.c spells it; the value is the OpenSSH meaning.
_STRICT = {"yes": "yes", "true": "yes", "no": "off", "false": "off", "off": "off", "ask": "ask",
           "accept-new": "accept-new"}
_CONTROL_MASTER = {**_FLAG, "auto": "auto", "ask": "ask", "autoask": "autoask"}
_TUNNEL = {**_FLAG, "ethernet": "ethernet", "point-to-point": "point-to-point"}
_REQUEST_TTY = {**_FLAG, "force": "force", "auto": "auto"}
_SESSION_TYPE = {"none": "none", "subsystem": "subsystem", "default": "default"}
_CANONICALIZE = {**_FLAG, "always": "always"}
_PUBKEY_AUTH = {**_FLAG, "unbound": "unbound", "host-bound": "host-bound"}
_ADDRESS_FAMILY = {"inet": "inet", "inet6": "inet6", "any": "any"}
_ENV_NAME = re.compile(r"[A-Za-z0-9_]+\Z")  # misc.c valid_env_name(): a leading digit is allowed too

Parser = Callable[[list[str], str], Any]


class BadValue(ValueError):
    """An argument readconf.c refuses; the message is the sentence after `file:line: `."""


def _one(args: list[str], keyword: str) -> str:
    if not args or args[0] == "":
        raise BadValue(f"{keyword}: missing argument")
    if len(args) > 1:
        raise BadValue(f"{keyword}: extra arguments at end of line ({' '.join(args[1:])!r}); quote a value "
                       "with spaces")
    return args[0]


def _choice(table: dict[str, Any], keyword: str) -> Parser:
    def parse(args: list[str], rest: str) -> Any:
        word = _one(args, keyword)
        try:
            return table[word.lower()]
        except KeyError:
            allowed = ", ".join(dict.fromkeys(table))
            raise BadValue(f"{keyword}: unsupported value {word!r} (one of: {allowed})") from None
    return parse


def _string(keyword: str) -> Parser:
    return lambda args, rest: _one(args, keyword)


def _time(keyword: str) -> Parser:
    def parse(args: list[str], rest: str) -> int | None:
        word = _one(args, keyword)
        if word == "none":
            return None
        seconds = convtime(word)
        if seconds is None:
            raise BadValue(f"{keyword}: invalid time value {word!r} (seconds, or a time like 30s, 5m, 1h)")
        return seconds
    return parse


def _int(keyword: str) -> Parser:
    def parse(args: list[str], rest: str) -> int:
        word = _one(args, keyword)
        number = strtonum(word, INT_MAX)
        if number is None:
            raise BadValue(f"{keyword}: {word!r} is not a non-negative integer")
        return number
    return parse


def parse_port(word: str) -> int | None:
    """misc.c a2port(): 0-65535 (strtonum: " 22", "+22" too) or a TCP service name; None if neither.

    0 is refused by the callers.
    """
    number = strtonum(word, 65535)
    if number is not None:
        return number
    try:
        return socket.getservbyname(word, "tcp")
    except OSError:
        return None


def _port(args: list[str], rest: str) -> int:
    word = _one(args, "Port")
    port = parse_port(word)
    if port is None or port <= 0:
        raise BadValue(f"Port: bad port {word!r} (1-65535 or a service name such as ssh)")
    return port


def _files(keyword: str) -> Parser:
    def parse(args: list[str], rest: str) -> tuple[str, ...]:
        for index, word in enumerate(args):
            if word == "":
                raise BadValue(f"{keyword}: empty argument")
            if word.lower() == "none" and (index > 0 or len(args) > 1):
                raise BadValue(f'{keyword}: "none" must appear alone')
        return tuple(args)
    return parse


def _agent_path(keyword: str, word: str) -> str:
    """IdentityAgent/ForwardAgent socket paths: `${VAR}` must be complete and set, a `$NAME` a valid name.

    readconf.c dollar_expand()s the path on every line, in blocks that do not apply too: an unset variable
    is refused there, not only when the path is used.
    """
    index = 0
    while (index := word.find("${", index)) != -1:
        end = word.find("}", index + 2)
        if end == -1 or end == index + 2:
            raise BadValue(f"{keyword}: invalid environment expansion {word!r}")
        if word[index + 2 : end] not in os.environ:
            raise BadValue(f"{keyword}: invalid environment expansion {word!r} (${{{word[index + 2 : end]}}} is "
                           "not set)")
        index = end + 1
    if word.startswith("$") and not word.startswith("${") and not _ENV_NAME.match(word[1:]):
        raise BadValue(f"{keyword}: invalid environment name {word!r}")
    return word


def _identity_agent(args: list[str], rest: str) -> str:
    return _agent_path("IdentityAgent", _one(args, "IdentityAgent"))


def _forward_agent(args: list[str], rest: str) -> bool | str:
    word = _one(args, "ForwardAgent")
    if word.lower() in _FLAG:
        return _FLAG[word.lower()]
    return _agent_path("ForwardAgent", word)


def _command(keyword: str) -> Parser:
    # ProxyCommand & co. take the rest of the line as written (readconf.c: str + strspn(str, WHITESPACE "=")).
    def parse(args: list[str], rest: str) -> str:
        text = rest.lstrip(" \t\r\n=")
        if not text:
            raise BadValue(f"{keyword}: missing argument")
        return text
    return parse


def parse_hop(spec: str) -> tuple[str | None, str, int | None]:
    """One ProxyJump hop, `[user@]host[:port]` or `ssh://[user@]host[:port]`, as (user, host, port).

    Follows misc.c parse_user_host_port() and parse_uri(); raises ValueError naming what is wrong. IPv6
    addresses need brackets: `[::1]:2222`.
    """
    uri = spec.startswith("ssh://")
    text, user = spec[len("ssh://") :] if uri else spec, None
    at = text.find("@") if uri else text.rfind("@")
    if at != -1:
        user, text = text[:at], text[at + 1 :]
        user = user.split(";", 1)[0] if uri else user
        if not user:
            raise ValueError(f"empty user name in {spec!r}")
        if uri:
            user = _urldecode(user, spec)
    if text.startswith("["):
        close = text.find("]")
        if close == -1:
            raise ValueError(f"unclosed '[' in {spec!r}")
        host, tail = text[1:close], text[close + 1 :]
        if tail and tail[0] not in ":/":
            raise ValueError(f"unexpected {tail!r} after ']' in {spec!r}")
    else:
        cut = min((i for i in (text.find(":"), text.find("/")) if i != -1), default=len(text))
        host, tail = text[:cut], text[cut:]
    if not host:
        raise ValueError(f"no host name in {spec!r}")
    if uri and not valid_domain(host):
        raise ValueError(f"invalid host name {host!r} in {spec!r} (an ssh:// URI needs a domain name)")
    port_text, path = "", ""
    if tail.startswith(":"):
        port_text, _, path = tail[1:].partition("/") if uri else (tail[1:], "", "")
    elif tail.startswith("/"):
        if not uri:
            raise ValueError(f"a path is not allowed in a jump host: {spec!r}")
        path = tail[1:]
    if path:
        raise ValueError(f"a path is not allowed in a jump host: {spec!r}")
    if not port_text:
        return user, host, None
    port = parse_port(port_text)
    if port is None or port <= 0:
        raise ValueError(f"bad port {port_text!r} in {spec!r}")
    return user, host, port


def valid_domain(name: str) -> bool:
    """misc.c valid_domain(): a letter or digit first; letters, digits, '.', '-' and '_'; no "..";."""
    return bool(name) and name[0].isascii() and name[0].isalnum() and ".." not in name and \
        all(char.isascii() and (char.isalnum() or char in ".-_") for char in name)


def _urldecode(text: str, spec: str) -> str:
    """misc.c urldecode() of an ssh:// URI's user: %XX escapes and '+' for a space."""
    out = bytearray()
    index = 0
    data = text.encode("utf-8", "surrogateescape")
    while index < len(data):
        byte = data[index]
        if byte == ord("%"):
            digits = data[index + 1 : index + 3]
            if len(digits) != 2 or not all(chr(d) in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(f"bad %-escape in the user of {spec!r}")
            out.append(int(digits, 16))
            index += 3
            continue
        out.append(ord(" ") if byte == ord("+") else byte)
        index += 1
    return out.decode("utf-8", "surrogateescape")


def format_hop(user: str | None, host: str, port: int | None) -> str:
    """The `[user@]host[:port]` spelling of a parsed hop (IPv6 addresses in brackets)."""
    text = f"[{host}]" if ":" in host else host
    return f"{user + '@' if user else ''}{text}{f':{port}' if port else ''}"


def _proxy_jump(args: list[str], rest: str) -> tuple[str, ...]:
    """ProxyJump: `none`, or comma-separated hops; every hop's syntax is checked, as readconf.c does."""
    text = rest.lstrip(" \t\r\n=")
    if text.lower() == "none":
        return ()
    text = text.split("#", 1)[0].rstrip()
    if text.lower() == "none":
        # OpenSSH 9.2 compares the whole rest of the line with "none", so with a comment it reads a jump host
        # called "none"; refusing is better than connecting through a host nobody meant.
        raise BadValue("ProxyJump: 'none' followed by a comment is read by OpenSSH as a host named 'none'; "
                       "move the comment to its own line")
    if not text:
        raise BadValue("ProxyJump: missing argument")
    hops = tuple(text.split(","))
    for hop in hops:
        if not hop or any(char in hop for char in " \t\"'"):
            raise BadValue(f"ProxyJump: invalid jump host {hop!r} in {text!r} (write [user@]host[:port],...)")
        try:
            parse_hop(hop)
        except ValueError as error:
            raise BadValue(f"ProxyJump: {error}") from None
    return hops


def _any(args: list[str], rest: str) -> tuple[str, ...]:
    return tuple(args)


def _flag(keyword: str) -> Parser:
    return _choice(_FLAG, keyword)


# Keywords fleetrun reads: canonical name -> parser. Everything else OpenSSH knows is accepted and ignored
# (some with a warning, below), as long as its argument has the right form where that is cheap to check.
PARSERS: dict[str, Parser] = {
    "hostname": _string("HostName"),
    "port": _port,
    "user": _string("User"),
    "identityfile": _string("IdentityFile"),
    "certificatefile": _string("CertificateFile"),
    "identitiesonly": _flag("IdentitiesOnly"),
    "identityagent": _identity_agent,
    "proxyjump": _proxy_jump,
    "proxycommand": _command("ProxyCommand"),
    "connecttimeout": _time("ConnectTimeout"),
    "serveraliveinterval": _time("ServerAliveInterval"),
    "serveralivecountmax": _int("ServerAliveCountMax"),
    "stricthostkeychecking": _choice(_STRICT, "StrictHostKeyChecking"),
    "userknownhostsfile": _files("UserKnownHostsFile"),
    "globalknownhostsfile": _files("GlobalKnownHostsFile"),
    "hashknownhosts": _flag("HashKnownHosts"),
    "hostkeyalias": _string("HostKeyAlias"),
    "forwardagent": _forward_agent,
    "ignoreunknown": _string("IgnoreUnknown"),
    "canonicalizehostname": _choice(_CANONICALIZE, "CanonicalizeHostname"),
    # Read only to warn when they would change what a run means.
    "knownhostscommand": _command("KnownHostsCommand"),
    "localcommand": _command("LocalCommand"),
    "remotecommand": _command("RemoteCommand"),
    "controlmaster": _choice(_CONTROL_MASTER, "ControlMaster"),
    "controlpath": _string("ControlPath"),
    "pkcs11provider": _string("PKCS11Provider"),
    "securitykeyprovider": _string("SecurityKeyProvider"),
    "proxyusefdpass": _flag("ProxyUseFdpass"),
    "tunnel": _choice(_TUNNEL, "Tunnel"),
    "requesttty": _choice(_REQUEST_TTY, "RequestTTY"),
    "sessiontype": _choice(_SESSION_TYPE, "SessionType"),
    "forwardx11": _flag("ForwardX11"),
    "permitlocalcommand": _flag("PermitLocalCommand"),
    "passwordauthentication": _flag("PasswordAuthentication"),
    "pubkeyauthentication": _choice(_PUBKEY_AUTH, "PubkeyAuthentication"),
    "bindaddress": _string("BindAddress"),
    "bindinterface": _string("BindInterface"),
    "revokedhostkeys": _string("RevokedHostKeys"),
    "verifyhostkeydns": _choice(_YES_NO_ASK, "VerifyHostKeyDNS"),
    "addressfamily": _choice(_ADDRESS_FAMILY, "AddressFamily"),
    "connectionattempts": _int("ConnectionAttempts"),
    "preferredauthentications": _string("PreferredAuthentications"),
    # Plain checks, so a file ssh refuses is refused here too.
    "batchmode": _flag("BatchMode"),
    "checkhostip": _flag("CheckHostIP"),
    "compression": _flag("Compression"),
    "tcpkeepalive": _flag("TCPKeepAlive"),
    "gssapiauthentication": _flag("GSSAPIAuthentication"),
    "gssapidelegatecredentials": _flag("GSSAPIDelegateCredentials"),
    "hostbasedauthentication": _flag("HostbasedAuthentication"),
    "kbdinteractiveauthentication": _flag("KbdInteractiveAuthentication"),
    "exitonforwardfailure": _flag("ExitOnForwardFailure"),
    "forwardx11trusted": _flag("ForwardX11Trusted"),
    "gatewayports": _flag("GatewayPorts"),
    "clearallforwardings": _flag("ClearAllForwardings"),
    "enablesshkeysign": _flag("EnableSSHKeysign"),
    "nohostauthenticationforlocalhost": _flag("NoHostAuthenticationForLocalhost"),
    "visualhostkey": _flag("VisualHostKey"),
    "stdinnull": _flag("StdinNull"),
    "forkafterauthentication": _flag("ForkAfterAuthentication"),
    "streamlocalbindunlink": _flag("StreamLocalBindUnlink"),
    "canonicalizefallbacklocal": _flag("CanonicalizeFallbackLocal"),
    "enableescapecommandline": _flag("EnableEscapeCommandline"),
    "updatehostkeys": _choice(_YES_NO_ASK, "UpdateHostKeys"),
    "forwardx11timeout": _time("ForwardX11Timeout"),
    "numberofpasswordprompts": _int("NumberOfPasswordPrompts"),
    "canonicalizemaxdots": _int("CanonicalizeMaxDots"),
    "requiredrsasize": _int("RequiredRSASize"),
    # Debian's GSSAPI key exchange patch
    "gssapikeyexchange": _flag("GSSAPIKeyExchange"),
    "gssapitrustdns": _flag("GSSAPITrustDNS"),
    "gssapirenewalforcesrekey": _flag("GSSAPIRenewalForcesRekey"),
    "gssapiclientidentity": _string("GSSAPIClientIdentity"),
    "gssapiserveridentity": _string("GSSAPIServerIdentity"),
}

# Not typed settings: most are not applied by fleetrun (SendEnv, SetEnv and HostKeyAlgorithms are, from their
# text); checks.py checks their arguments as readconf.c does (most of them), so a file ssh refuses is refused.
OTHERS = frozenset({
    "addkeystoagent", "casignaturealgorithms", "canonicaldomains", "canonicalizepermittedcnames", "ciphers",
    "controlpersist", "dynamicforward", "escapechar", "fingerprinthash", "hostbasedacceptedalgorithms",
    "hostkeyalgorithms", "ipqos", "kbdinteractivedevices", "kexalgorithms", "localforward", "loglevel",
    "logverbose", "macs", "permitremoteopen", "pubkeyacceptedalgorithms", "rekeylimit", "remoteforward",
    "sendenv", "setenv", "streamlocalbindmask", "syslogfacility", "tunneldevice", "xauthlocation",
    "gssapikexalgorithms",  # Debian's GSSAPI key exchange patch (checked in checks.py)
})
STRUCTURE = frozenset({"host", "match", "include"})
# Silently ignored by OpenSSH (oIgnore, oDeprecated); "unsupported" ones get a message from ssh and from us.
IGNORED = frozenset({
    "protocol", "cipher", "fallbacktorsh", "globalknownhostsfile2", "rhostsauthentication",
    "userknownhostsfile2", "useroaming", "usersh", "useprivilegedport",
})
UNSUPPORTED = frozenset({
    "afstokenpassing", "kerberosauthentication", "kerberostgtpassing", "rsaauthentication",
    "rhostsrsaauthentication", "compressionlevel",
})
ALIASES = {
    "identityfile2": "identityfile",
    "keepalive": "tcpkeepalive",
    "challengeresponseauthentication": "kbdinteractiveauthentication",
    "skeyauthentication": "kbdinteractiveauthentication",
    "tisauthentication": "kbdinteractiveauthentication",
    "dsaauthentication": "pubkeyauthentication",
    "smartcarddevice": "pkcs11provider",
    "hostbasedkeytypes": "hostbasedacceptedalgorithms",
    "pubkeyacceptedkeytypes": "pubkeyacceptedalgorithms",
    # Debian's keepalive patch: both are ServerAliveInterval there (SetupTimeout is not ConnectTimeout)
    "protocolkeepalives": "serveraliveinterval",
    "setuptimeout": "serveraliveinterval",
}
# Options that add to a list instead of keeping the first value.
ACCUMULATE = frozenset({"identityfile", "certificatefile", "localforward", "remoteforward", "dynamicforward",
                        "sendenv"})


def _not_none(value: Any) -> bool:
    return isinstance(value, str) and value.lower() != "none"


# Options fleetrun does not apply although they change what a connection does: a warning, once per run, when
# one of them takes effect for a host with a value that is not a no-op. keyword -> (is it active?, why).
MEANINGFUL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "canonicalizehostname": (lambda v: v in (True, "always"),
                             "host names are not canonicalized through DNS (CanonicalDomains); Match canonical "
                             "and final still get their second pass"),
    "knownhostscommand": (_not_none, "the command is not run: host keys come from the known_hosts files only"),
    "pkcs11provider": (_not_none, "PKCS#11 keys are not offered"),
    "securitykeyprovider": (lambda v: isinstance(v, str) and v != "internal",
                            "security-key (FIDO) identities are not offered"),
    "proxyusefdpass": (lambda v: v is True, "the ProxyCommand's output is used as the connection instead"),
    "controlmaster": (lambda v: v not in (False,), "connections are not shared through a control socket"),
    "controlpath": (_not_none, "connections are not shared through a control socket"),
    "remotecommand": (_not_none, "fleetrun runs the command it is given"),
    "localcommand": (_not_none, "the local command is not run"),
    "localforward": (lambda v: True, "ports are not forwarded"),
    "remoteforward": (lambda v: True, "ports are not forwarded"),
    "dynamicforward": (lambda v: True, "ports are not forwarded"),
    "tunnel": (lambda v: v not in (False,), "no tun/tap device is forwarded"),
    "requesttty": (lambda v: v in (True, "force"), "no terminal is requested"),
    "sessiontype": (lambda v: v != "default", "a normal command session is opened"),
    "forwardx11": (lambda v: v is True, "X11 is not forwarded"),
    "bindaddress": (lambda v: True, "the connection's source address is chosen by the system"),
    "bindinterface": (lambda v: True, "the connection's source address is chosen by the system"),
    "revokedhostkeys": (_not_none, "the file is not read: revoke keys with @revoked lines in known_hosts"),
    "verifyhostkeydns": (lambda v: v in (True, "ask"), "host keys are not looked up in DNS (SSHFP)"),
    "addressfamily": (lambda v: v != "any", "the address family is whatever the host name resolves to"),
    "connectionattempts": (lambda v: isinstance(v, int) and v > 1, "each host is tried once"),
    "passwordauthentication": (lambda v: v is False, "a password, when one is given, is still tried"),
    "pubkeyauthentication": (lambda v: v is False, "keys are still offered"),
    "preferredauthentications": (lambda v: True, "methods are tried in fleetrun's order (see the README)"),
}


def is_keyword(word: str) -> bool:
    """True if OpenSSH 9.2 (as Debian builds it) knows this lower-cased keyword."""
    name = ALIASES.get(word, word)
    return name in PARSERS or name in OTHERS or name in STRUCTURE or name in IGNORED or name in UNSUPPORTED


def parse_value(keyword: str, args: list[str], rest: str) -> Any:
    """The checked argument of `keyword` (canonical name); raises BadValue like readconf.c would."""
    parser = PARSERS.get(keyword)
    if parser is None:
        return tuple(args)
    return parser(args, rest)


def environment_agent(word: str) -> str | None:
    """IdentityAgent `SSH_AUTH_SOCK` and `$NAME`: the socket named by that variable (None if unset)."""
    if word == "SSH_AUTH_SOCK":
        return os.environ.get("SSH_AUTH_SOCK")
    if word.startswith("$") and not word.startswith("${"):
        return os.environ.get(word[1:])
    return word
