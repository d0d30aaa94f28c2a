"""Argument checks for the OpenSSH 9.2 options fleetrun does not apply, so that a file ssh refuses is refused.

fleetrun ignores these options' values (ciphers, forwardings, logging, ...), but readconf.c checks their
syntax on every line, in blocks that do not apply too, and refuses the whole file over one bad value. Each
check follows the readconf.c case of its keyword; algorithm names are the local ssh's (sshconfig.localssh).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from fleetrun.sshconfig.keywords import parse_port, valid_domain
from fleetrun.sshconfig.localssh import GSS_KEX_PREFIXES, kex_valid, key_type_valid, known, known_set
from fleetrun.sshconfig.patterns import match_pattern
from fleetrun.sshconfig.tokens import convtime, strtonum


class CheckError(ValueError):
    """An argument readconf.c refuses; the message is the sentence after `file:line: `."""


LOG_LEVELS = frozenset({"quiet", "fatal", "error", "info", "verbose", "debug", "debug1", "debug2", "debug3"})
LOG_FACILITIES = frozenset({"daemon", "user", "auth", "authpriv", *(f"local{n}" for n in range(8))})
DIGESTS = frozenset({"md5", "sha1", "sha256", "sha384", "sha512"})  # ssh_digest_alg_by_name (strcasecmp)
IPQOS = frozenset({"none", "af11", "af12", "af13", "af21", "af22", "af23", "af31", "af32", "af33", "af41",
                   "af42", "af43", "cs0", "cs1", "cs2", "cs3", "cs4", "cs5", "cs6", "cs7", "ef", "le", "lowdelay",
                   "throughput", "reliability"})
_NI_MAXHOST = 1025
_PATH_MAX_SUN = 108  # sizeof(struct sockaddr_un.sun_path) on Linux
_TUNID_MAX = 0x7FFFFFFF - 2  # SSH_TUNID_MAX
_STRTOL_ANY_BASE = re.compile(r"[ \t\n\v\f\r]*[+-]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\Z")
_SCALED = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]*)(?:\.([0-9]*))?(?:([bBkKmMgGtTpPeE])(?![A-Za-z0-9]).*)?\Z",
                     re.DOTALL)
_SCALE = {"b": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}

Check = Callable[[str, list[str]], None]


def _arguments(keyword: str, args: list[str], most: int) -> None:
    """readconf.c: a missing first argument, and anything after the last one it reads, are errors."""
    if not args or args[0] == "":
        raise CheckError(f"{keyword}: missing argument")
    if len(args) > most:
        raise CheckError(f"{keyword}: extra arguments at end of line ({' '.join(args[most:])!r})")


def _names_until_empty(spec: str) -> list[str]:
    # The *_valid() functions strsep() on commas and stop at the first empty name ("a,,b" checks only a).
    names = []
    for name in spec.split(","):
        if name == "":
            break
        names.append(name)
    return names


def _algorithms(valid: Callable[[str], bool], what: str) -> Check:
    def check(keyword: str, args: list[str]) -> None:
        _arguments(keyword, args, 1)
        spec = args[0]
        if spec.startswith("-"):
            return  # removals are not checked (readconf.c: *arg != '-')
        names = spec[1:] if spec[0] in "+^" else spec
        if not names or not all(valid(name) for name in _names_until_empty(names)):
            raise CheckError(f"{keyword}: bad {what} {spec!r} (`ssh -Q {_QUERY[what]}` lists them)")
    return check


_QUERY = {"cipher spec": "cipher", "MAC spec": "mac", "key exchange algorithm": "kex", "key types": "key-sig"}


def _gss_kex(keyword: str, args: list[str]) -> None:
    # Debian's kex_gss_names_valid(): no +/-/^ modifiers; each name starts with a GSSAPI method prefix.
    _arguments(keyword, args, 1)
    if not all(name.startswith(GSS_KEX_PREFIXES) for name in _names_until_empty(args[0])):
        raise CheckError(f"{keyword}: bad GSSAPI key exchange algorithms {args[0]!r} (`ssh -Q kex-gss` lists them)")


def _choice(table: frozenset[str], what: str) -> Check:
    def check(keyword: str, args: list[str]) -> None:
        _arguments(keyword, args, 1)
        if args[0].lower() not in table:
            raise CheckError(f"{keyword}: unsupported {what} {args[0]!r}")
    return check


def _one(keyword: str, args: list[str]) -> None:
    _arguments(keyword, args, 1)


def _escape_char(keyword: str, args: list[str]) -> None:
    _arguments(keyword, args, 1)
    arg = args[0]
    if arg == "none" or len(arg.encode()) == 1:
        return
    if len(arg) == 2 and arg[0] == "^" and 64 <= ord(arg[1]) < 128:
        return
    raise CheckError(f"{keyword}: bad escape character {arg!r} (one character, ^X, or none)")


def _control_persist(keyword: str, args: list[str]) -> None:
    _arguments(keyword, args, 1)
    if args[0] not in ("yes", "true", "no", "false") and convtime(args[0]) is None:
        raise CheckError(f"{keyword}: bad argument {args[0]!r} (yes, no, or a time like 10m)")


def _add_keys_to_agent(keyword: str, args: list[str]) -> None:
    _arguments(keyword, args, 2)
    state = args[0].lower()
    known = state in ("yes", "no", "true", "false", "ask", "confirm")
    if state == "confirm" and len(args) == 2:
        if convtime(args[1]) is None:
            raise CheckError(f"{keyword}: invalid time value {args[1]!r}")
    elif (not known and (len(args) == 2 or convtime(args[0]) is None)) or (known and len(args) == 2):
        raise CheckError(f"{keyword}: unsupported option {' '.join(args)!r} (yes, no, ask, confirm [time], "
                         "or a time)")


def _tun_id(text: str) -> bool:
    return text.lower() == "any" or strtonum(text, _TUNID_MAX) is not None


def _tunnel_device(keyword: str, args: list[str]) -> None:
    _arguments(keyword, args, 1)
    local, colon, remote = args[0].partition(":")
    if not _tun_id(local) or (colon and not _tun_id(remote)):
        raise CheckError(f"{keyword}: bad tun device {args[0]!r} (local[:remote], each a number or any)")


def _bind_mask(keyword: str, args: list[str]) -> None:
    _arguments(keyword, args, 1)
    # strtol(arg, &end, 8) with only "nothing read" and the range checked: trailing text is ignored.
    match = re.match(r"[ \t\n\v\f\r]*([+-]?)([0-7]+)", args[0])
    mask = 0 if match is None else int(match.group(2), 8) * (-1 if match.group(1) == "-" else 1)
    if match is None or not 0 <= mask <= 0o777:
        raise CheckError(f"{keyword}: bad mask {args[0]!r} (octal, 0 to 0777)")


def _strtol_base0(text: str) -> int | None:
    """strtol(text, &end, 0) when it reads the whole text: decimal, 0x hex or 0 octal."""
    match = _STRTOL_ANY_BASE.match(text)
    if match is None:
        return None
    digits = match.group(1)
    number = int(digits, 16) if digits[:2] in ("0x", "0X") else int(digits, 8) if digits.startswith("0") \
        else int(digits)
    return -number if text.lstrip(" \t\n\v\f\r").startswith("-") else number


def _ipqos_valid(text: str) -> bool:
    # misc.c parse_ipqos(): a name, else an integer 0-255 in any base strtol() reads
    number = _strtol_base0(text)
    return text.lower() in IPQOS or (number is not None and 0 <= number <= 255)


def _ipqos(keyword: str, args: list[str]) -> None:
    _arguments(keyword, args, 2)
    for arg in args:
        if not _ipqos_valid(arg):
            raise CheckError(f"{keyword}: bad IPQoS value {arg!r}")


def _rekey_limit(keyword: str, args: list[str]) -> None:
    _arguments(keyword, args, 2)
    if args[0] != "default":
        match = _SCALED.match(args[0])
        if match is None:
            raise CheckError(f"{keyword}: bad number {args[0]!r}")
        sign, whole, fraction, unit = match.groups()
        shift = _SCALE[unit.lower()] if unit else 0
        value = int(whole or "0") << shift
        if fraction and unit:
            value += (int(fraction) << shift) // 10 ** len(fraction)
        value = -value if sign == "-" else value
        if value != 0 and value < 16:
            raise CheckError(f"{keyword}: RekeyLimit too small ({args[0]!r}; at least 16 bytes)")
    if len(args) == 2 and args[1] != "none" and convtime(args[1]) is None:
        raise CheckError(f"{keyword}: invalid time value {args[1]!r}")


def _send_env(keyword: str, args: list[str]) -> None:
    for arg in args:
        if arg == "" or "=" in arg:
            raise CheckError(f"{keyword}: invalid environment name {arg!r} (names or patterns, no '=')")


def _set_env(keyword: str, args: list[str]) -> None:
    for arg in args:
        if "=" not in arg:
            raise CheckError(f"{keyword}: invalid SetEnv {arg!r} (NAME=value)")


def _none_alone(keyword: str, args: list[str], words: tuple[str, ...] = ("none",)) -> None:
    for index, arg in enumerate(args):
        if arg.lower() in words and (index > 0 or len(args) > 1):
            raise CheckError(f'{keyword}: "{arg}" must appear alone')


def _log_verbose(keyword: str, args: list[str]) -> None:
    if any(arg == "" for arg in args):
        raise CheckError(f"{keyword}: empty argument")
    _none_alone(keyword, args)


def _canonical_domains(keyword: str, args: list[str]) -> None:
    if any(arg == "" for arg in args):
        raise CheckError(f"{keyword}: empty argument")
    _none_alone(keyword, args)
    for arg in args:
        if not valid_domain(arg):
            raise CheckError(f"{keyword}: bad domain name {arg!r}")


def _permitted_cnames(keyword: str, args: list[str]) -> None:
    _none_alone(keyword, args)
    for arg in args:
        if arg.lower() == "none" or arg == "*":
            continue
        _, colon, target = arg.partition(":")
        if not colon or target == "":
            raise CheckError(f"{keyword}: invalid permitted CNAME {arg!r} (source_domains:target_domains)")


def _permit_remote_open(keyword: str, args: list[str]) -> None:
    if not args:
        raise CheckError(f"{keyword}: missing specification")
    _none_alone(keyword, args, ("none", "any"))
    for arg in args:
        if arg.lower() in ("none", "any"):
            continue
        host, port = _hpdelim(arg)
        if host is None:
            raise CheckError(f"{keyword}: missing host in {arg!r}")
        if port is None or (port != "*" and not _port_ok(port)):
            raise CheckError(f"{keyword}: bad port number in {arg!r}")


def _port_ok(text: str) -> bool:
    port = parse_port(text)
    return port is not None and port > 0


def _hpdelim(text: str) -> tuple[str | None, str | None]:
    """misc.c hpdelim(): host (brackets allowed) and what follows the first ':' or '/' (None if nothing)."""
    if text.startswith("["):
        close = text.find("]")
        if close == -1 or (close + 1 < len(text) and text[close + 1] not in ":/"):
            return None, None
        return text[1:close], (text[close + 2 :] if close + 1 < len(text) else None)
    cut = min((i for i in (text.find(":"), text.find("/")) if i != -1), default=-1)
    return (text, None) if cut == -1 else (text[:cut], text[cut + 1 :])


def _forward_fields(spec: str) -> list[tuple[str, bool]] | None:
    """readconf.c parse_fwd_field() over a whole spec: (field, is a path) up to four, None if malformed."""
    fields: list[tuple[str, bool]] = []
    rest = spec.lstrip(" \t\n\v\f\r")
    while rest and len(fields) < 4:
        if rest.startswith("["):  # used literally up to the ']', which must end the field
            close = rest.find("]")
            if close == -1 or (close + 1 < len(rest) and rest[close + 1] != ":"):
                return None
            fields.append((rest[1:close], "/" in rest[1:close]))
            rest = rest[close + 2 :]
            continue
        chars: list[str] = []
        is_path, index = False, 0
        while index < len(rest) and rest[index] != ":":
            char = rest[index]
            if char == "\\":  # the next character is taken as it is (not a separator, not a path's '/')
                if index + 1 == len(rest):
                    return None
                index += 1
                char = rest[index]
            elif char == "/":
                is_path = True
            chars.append(char)
            index += 1
        fields.append(("".join(chars), is_path))
        rest = rest[index + 1 :]
    return None if rest else fields  # anything after a fourth field is trailing garbage


_Paths = tuple[str | None, str | None]


def _parse_forward(spec: str, dynamic: bool, remote: bool) -> _Paths | None:
    """readconf.c parse_forward(): (listen path, connect path) of a valid spec, None if ssh refuses it."""
    fields = _forward_fields(spec)
    if fields is None:
        return None
    count = len(fields)

    def port(text: str) -> int:
        value = parse_port(text)
        return -1 if value is None else value

    listen_path = connect_path = None
    listen_host = connect_host = None
    listen_port = connect_port = 0
    if count == 1:
        if fields[0][1]:
            listen_path = fields[0][0]
        else:
            listen_port = port(fields[0][0])
    elif count == 2:
        if fields[0][1] and fields[1][1]:
            listen_path, connect_path = fields[0][0], fields[1][0]
        elif fields[1][1]:
            listen_port, connect_path = port(fields[0][0]), fields[1][0]
        else:
            listen_host, listen_port = fields[0][0], port(fields[1][0])
    elif count == 3:
        if fields[0][1]:
            listen_path, connect_host, connect_port = fields[0][0], fields[1][0], port(fields[2][0])
        elif fields[2][1]:
            listen_host, listen_port, connect_path = fields[0][0], port(fields[1][0]), fields[2][0]
        else:
            listen_port, connect_host, connect_port = port(fields[0][0]), fields[1][0], port(fields[2][0])
    elif count == 4:
        listen_host, listen_port = fields[0][0], port(fields[1][0])
        connect_host, connect_port = fields[2][0], port(fields[3][0])
    else:
        return None
    if dynamic:
        if count not in (1, 2):
            return None
    else:
        if count not in (3, 4) and connect_path is None and listen_path is None:
            return None
        if connect_port <= 0 and connect_path is None:
            return None
    if (listen_port < 0 and listen_path is None) or (not remote and listen_port == 0 and listen_path is None):
        return None
    if any(host is not None and len(host) >= _NI_MAXHOST for host in (listen_host, connect_host)) or \
            any(path is not None and len(path) >= _PATH_MAX_SUN for path in (listen_path, connect_path)):
        return None
    return listen_path, connect_path


def _dollar_expand(keyword: str, spec: str) -> str:
    """misc.c dollar_expand() of a forwarding spec: an unset, empty or unclosed ${VAR} makes the spec bad."""
    out: list[str] = []
    index = 0
    while (start := spec.find("${", index)) != -1:
        end = spec.find("}", start + 2)
        name = spec[start + 2 : end] if end != -1 else ""
        value = os.environ.get(name) if name else None
        if value is None:
            raise CheckError(f"{keyword}: bad forwarding specification (invalid or unset ${{...}} in {spec!r})")
        out += [spec[index:start], value]
        index = end + 1
    return "".join(out) + spec[index:]


def _forward_spec(keyword: str, args: list[str]) -> _Paths:
    name = keyword.lower()
    dynamic, remote = name == "dynamicforward", name == "remoteforward"
    _arguments(keyword, args, 1 if dynamic else 2)
    if not dynamic and (len(args) < 2 or args[1] == ""):
        if not remote:
            raise CheckError(f"{keyword}: missing target argument ([bind_address:]port host:hostport)")
        dynamic = True
    spec = args[0] if dynamic else f"{args[0]}:{args[1]}"
    paths = _parse_forward(_dollar_expand(keyword, spec), dynamic, remote)
    if paths is None:
        raise CheckError(f"{keyword}: bad forwarding specification {' '.join(args)!r}")
    return paths


def _forward(keyword: str, args: list[str]) -> None:
    _forward_spec(keyword, args)


def forward_paths(keyword: str, args: tuple[str, ...]) -> tuple[str, ...]:
    """The Unix socket paths of a (checked) forwarding: ssh.c expands %-tokens in these, and only these."""
    return tuple(path for path in _forward_spec(keyword, list(args)) if path is not None)


CHECKS: dict[str, tuple[str, Check]] = {
    "ciphers": ("Ciphers", _algorithms(lambda name: name in known_set("cipher"), "cipher spec")),
    "macs": ("MACs", _algorithms(lambda name: name in known_set("mac"), "MAC spec")),
    "kexalgorithms": ("KexAlgorithms", _algorithms(kex_valid, "key exchange algorithm")),
    "hostkeyalgorithms": ("HostKeyAlgorithms", _algorithms(key_type_valid, "key types")),
    "casignaturealgorithms": ("CASignatureAlgorithms", _algorithms(key_type_valid, "key types")),
    "pubkeyacceptedalgorithms": ("PubkeyAcceptedAlgorithms", _algorithms(key_type_valid, "key types")),
    "hostbasedacceptedalgorithms": ("HostbasedAcceptedAlgorithms", _algorithms(key_type_valid, "key types")),
    "gssapikexalgorithms": ("GSSAPIKexAlgorithms", _gss_kex),
    "loglevel": ("LogLevel", _choice(LOG_LEVELS, "log level")),
    "syslogfacility": ("SyslogFacility", _choice(LOG_FACILITIES, "log facility")),
    "fingerprinthash": ("FingerprintHash", _choice(DIGESTS, "hash algorithm")),
    "escapechar": ("EscapeChar", _escape_char),
    "controlpersist": ("ControlPersist", _control_persist),
    "addkeystoagent": ("AddKeysToAgent", _add_keys_to_agent),
    "tunneldevice": ("TunnelDevice", _tunnel_device),
    "streamlocalbindmask": ("StreamLocalBindMask", _bind_mask),
    "ipqos": ("IPQoS", _ipqos),
    "rekeylimit": ("RekeyLimit", _rekey_limit),
    "sendenv": ("SendEnv", _send_env),
    "setenv": ("SetEnv", _set_env),
    "logverbose": ("LogVerbose", _log_verbose),
    "canonicaldomains": ("CanonicalDomains", _canonical_domains),
    "canonicalizepermittedcnames": ("CanonicalizePermittedCNAMEs", _permitted_cnames),
    "permitremoteopen": ("PermitRemoteOpen", _permit_remote_open),
    "localforward": ("LocalForward", _forward),
    "remoteforward": ("RemoteForward", _forward),
    "dynamicforward": ("DynamicForward", _forward),
    "xauthlocation": ("XAuthLocation", _one),
    "kbdinteractivedevices": ("KbdInteractiveDevices", _one),
}


def assembled_error(keyword: str, args: tuple[str, ...]) -> str | None:
    """Why kex_assemble_names() refuses the HostKeyAlgorithms in effect, or None if it does not.

    ssh expands HostKeyAlgorithms once the files are read (for ssh -G too), for the value in effect only,
    and stops on an error: a `!` pattern is refused (except in a `-` list), and a list without `+`/`^`
    must match some algorithm, so `HostKeyAlgorithms RSA` passes the line check but fails here. (The
    other algorithm lists fail there with only a message, and ssh -G carries on, so they are not checked.)
    """
    if keyword != "hostkeyalgorithms" or not args or args[0].startswith("-"):
        return None
    spec = args[0]
    patterns = (spec[1:] if spec[:1] in ("+", "^") else spec).split(",")
    if any(pattern.startswith("!") for pattern in patterns):
        return f"HostKeyAlgorithms: a negated algorithm ('!') is only allowed in a '-' list: {spec!r}"
    if spec[:1] in ("+", "^") or any(match_pattern(algorithm, pattern) for pattern in patterns if pattern
                                     for algorithm in known("key-sig")):
        return None
    return f"HostKeyAlgorithms: {spec!r} matches no algorithm this OpenSSH has (`ssh -Q key-sig` lists them)"


def check_arguments(keyword: str, args: list[str]) -> None:
    """Raise CheckError if readconf.c would refuse these arguments of `keyword` (canonical, lower-case)."""
    entry = CHECKS.get(keyword)
    if entry is not None:
        entry[1](entry[0], args)
