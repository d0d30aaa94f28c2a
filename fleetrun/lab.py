"""A throwaway local fleet of real OpenSSH sshd processes on loopback, for demos, tests and benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import re
import shlex
import shutil
import socket
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetrun.errors import LabError
from fleetrun.lab_process import is_ours, log_tail, spawn_detached, terminate, wait_ready

SSHD_FALLBACK = "/usr/sbin/sshd"
STATE_FILE = "lab.json"
MAX_HOSTS = 10_000
_HEADER = "# fleetrun lab:"
# Ports below Linux's ephemeral range (32768+), so no client socket can be holding the one we pick.
_PORTS = (20_000, 32_000)
# Second octet of 127.B.x.y; 127.0.x.x is left alone because systems use it (127.0.0.53, 127.0.1.1).
_BLOCKS = range(16, 255)
_ATTEMPTS = 4
_rng = random.Random()  # module-level so a test can make the choice of block and port predictable
# sshd_config, YAML and the cmdline check all take these paths unquoted; '%' would be an sshd token.
_SAFE_PATH = re.compile(r"[\w./@+,=-]+")
_SIZE = re.compile(r"[1-9][0-9]*[kmgKMG%]?")
# Python ignores SIGPIPE and a caller may ignore others; sshd and the shells it starts need the defaults.
_SSHD_CONFIG = """\
# fleetrun lab host {name}; rewritten on every start
ListenAddress {address}:{port}
HostKey {host_key}
{extra_host_keys}PidFile none
{authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication {password_auth}
KbdInteractiveAuthentication no
# Without PAM sshd also runs unprivileged; StrictModes would reject a lab under a shared temp dir.
UsePAM no
StrictModes no
UseDNS no
PermitRootLogin prohibit-password
# Benchmarks open hundreds of connections to one host at once.
MaxStartups 200:30:400
MaxSessions 64
LoginGraceTime 30
LogLevel ERROR
PrintMotd no
PrintLastLog no
# Every lab host runs on this machine: this is how a command tells which one it is on. SHLVL=1 stops
# bash from sourcing ~/.bashrc for each command (as it does when run by sshd): a developer's rc file
# (pyenv init, ...) would otherwise cost every lab command 0.2-2 s and swamp tests and benchmarks.
SetEnv FLEETRUN_LAB_HOST={name} SHLVL=1
# Push and pull work wherever the distribution put sftp-server.
Subsystem sftp internal-sftp
"""


@dataclass(frozen=True)
class LabHost:
    """One lab host: an sshd listening on its own loopback address."""

    name: str
    address: str
    port: int
    pid: int
    host_key: Path  # private key; the public one is host_key.with_suffix(".pub")


@dataclass(frozen=True)
class Lab:
    """A running lab and the files a client needs to reach it."""

    directory: Path
    hosts: tuple[LabHost, ...]
    inventory: Path
    known_hosts: Path
    client_key: Path
    user: str
    private_srv: bool


def _find_tool(name: str, package: str, fallback: str) -> str:
    found = shutil.which(name) or (fallback if os.access(fallback, os.X_OK) else None)
    if found is None:
        raise LabError(f"{name} not found: install the {package} package (apt-get install {package})")
    # sshd re-executes itself for every connection and refuses to start from a relative path.
    return os.path.abspath(found)


def _run(argv: list[str], what: str, advice: str) -> None:
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        detail = " ".join(done.stderr.decode(errors="replace").split()) or f"status {done.returncode}"
        raise LabError(f"{what} ({detail}): {advice}")


def _free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as sshd does, so TIME_WAIT is no clash
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def _pick_block(count: int) -> tuple[list[str], int]:
    """Loopback addresses and a port that no other lab or service is using right now."""
    for _ in range(50):
        block, port = _rng.choice(_BLOCKS), _rng.randrange(*_PORTS)
        addresses = [f"127.{block}.{i // 254}.{i % 254 + 1}" for i in range(count)]
        if all(_free(address, port) for address in addresses):
            return addresses, port
    raise LabError("no free block of loopback addresses for the lab: stop other labs (fleetrun lab down)")


HOST_KEY_TYPES = ("ed25519", "rsa")


def _host_key(path: Path, comment: str, key_type: str = "ed25519") -> None:
    # In-process: one ssh-keygen exec per host costs ~13 ms of CPU, which is 13 s for a 1000-host lab.
    key = rsa.generate_private_key(65537, 2048) if key_type == "rsa" else Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    path.unlink(missing_ok=True)  # O_CREAT keeps an old file's mode; sshd rejects a readable host key
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(private)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    path.with_suffix(".pub").write_bytes(public + f" {comment}\n".encode())


def _keyword(line: str) -> str:
    words = line.split(None, 1)
    return words[0].lower() if words and not words[0].startswith("#") else ""


def _with_extra(config: str, extra: str) -> str:
    """The lab's sshd_config with each keyword of `extra` replacing the lab's line for it.

    Replaced, not just added: sshd keeps the first value of most keywords but the last of some (MaxStartups).
    """
    extra_lines = [line.strip() for line in extra.splitlines() if _keyword(line)]
    replaced = {_keyword(line) for line in extra_lines}
    kept = [line for line in config.splitlines() if _keyword(line) not in replaced]
    return "\n".join([*kept, *extra_lines]) + "\n"


def extra_host_key_path(directory: Path, keytype: str) -> Path:
    """Where a lab's extra host key of one type lives, shared by all its hosts (the public key adds `.pub`)."""
    return directory / f"lab_host_{keytype}_key"


def _srv_script(srv_size: str, then: list[str], binds: tuple[tuple[str, str], ...] = (), owner: str = "") -> str:
    mounts = "".join(f"mount --bind {shlex.quote(source)} {shlex.quote(target)} && " for target, source in binds)
    return (f"mkdir -p /srv && mount -t tmpfs -o size={srv_size},mode=0755{owner} tmpfs /srv && {mounts}"
            f"exec {shlex.join(then)}")


def _sshd_argv(sshd: str, config: Path, log: Path, unshare: str | None, srv_size: str,
               binds: tuple[tuple[str, str], ...] = (), owner: str = "") -> list[str]:
    argv = [sshd, "-D", "-e", "-f", str(config), "-E", str(log)]
    if unshare is None:
        return argv
    # exec, so the pid we record is sshd itself and all it starts shares its private /srv.
    return [unshare, "-m", "--propagation", "private", "/bin/sh", "-c", _srv_script(srv_size, argv, binds, owner)]


def _authorized_keys(directory: Path, user: str | None) -> str:
    """sshd_config lines for the lab's one authorized key.

    sshd reads an AuthorizedKeysFile as the user logging in, who (another account than the lab's owner) may not
    reach the lab directory: for `user`, root's `cat` hands the key over instead (AuthorizedKeysCommand).
    """
    path = directory / "authorized_keys"
    if user is None:
        return f"AuthorizedKeysFile {path}"
    cat = shutil.which("cat") or "/bin/cat"
    return (f"AuthorizedKeysFile none\nAuthorizedKeysCommand {os.path.realpath(cat)} {path}\n"
            "AuthorizedKeysCommandUser root")


def _write_files(lab: Lab, started: str) -> None:
    names = [host.name for host in lab.hosts]
    lines = [
        f"{_HEADER} {len(names)} hosts on loopback, started {started}",
        "defaults:",
        f"  user: {lab.user}",
        f"  key: {lab.client_key}",  # plain YAML: start_lab only takes paths of plain characters
        f"  known_hosts: {lab.known_hosts}",
        "  connect_timeout: 10",
        "hosts:",
        *(f"  {host.name}: {{address: {host.address}, port: {host.port}}}" for host in lab.hosts),
        "groups:",
        f"  lab: [{', '.join(names)}]",
        f"  odd: [{', '.join(names[0::2])}]",
        f"  even: [{', '.join(names[1::2])}]",
    ]
    lab.inventory.write_text("\n".join(lines) + "\n")
    known = []
    for host in lab.hosts:
        key_type, key = host.host_key.with_suffix(".pub").read_text().split()[:2]
        where = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
        known.append(f"{where} {key_type} {key}\n")
    lab.known_hosts.write_text("".join(known))


def _write_state(lab: Lab, started: str, srv_size: str) -> None:
    hosts = [
        {**vars(host), "host_key": str(host.host_key), "config": f"{lab.directory / host.name}.sshd_config"}
        for host in lab.hosts
    ]
    state = {"version": 1, "started": started, "user": lab.user, "private_srv": lab.private_srv}
    state |= {"srv_size": srv_size, "client_key": str(lab.client_key), "hosts": hosts}
    temporary = lab.directory / f"{STATE_FILE}.tmp"
    temporary.write_text(json.dumps(state, indent=1) + "\n")
    temporary.replace(lab.directory / STATE_FILE)  # never a half-written state file for `lab down`


def _read_state(directory: Path) -> dict[str, Any]:
    path = directory / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabError(f"no lab in {directory}: start one there first (fleetrun lab up)") from None
    except (OSError, ValueError) as error:
        raise LabError(f"cannot read {path} ({error}): stop its sshd by hand, then delete it") from None
    return state


def load_lab(directory: Path) -> Lab:
    """The lab recorded in `directory`, as start_lab returned it."""
    directory = Path(directory).absolute()
    state = _read_state(directory)
    hosts = tuple(
        LabHost(h["name"], h["address"], int(h["port"]), int(h["pid"]), Path(h["host_key"])) for h in state["hosts"]
    )
    files = directory / "inventory.yaml", directory / "known_hosts", Path(state["client_key"])
    return Lab(directory, hosts, *files, state["user"], bool(state["private_srv"]))


def stop_lab(directory: Path) -> int:
    """Stop the sshd processes of the lab in `directory`; returns how many were still running."""
    directory = Path(directory).absolute()
    if not (directory / STATE_FILE).exists():
        with contextlib.suppress(OSError), (directory / "inventory.yaml").open() as inventory:
            if inventory.readline().startswith(_HEADER):
                return 0  # a lab that was stopped already: stopping twice is harmless
    state = _read_state(directory)
    stopped = terminate([(int(host["pid"]), host["config"]) for host in state["hosts"]])
    (directory / STATE_FILE).unlink(missing_ok=True)
    return stopped


def shown_path(path: Path) -> str:
    """`path` as the user would type it: relative when under the current directory (shorter to copy)."""
    cwd = Path.cwd().resolve()
    return os.path.relpath(path) if path.resolve().is_relative_to(cwd) else str(path)


def _check_login(user: str) -> None:
    # Without PAM, sshd refuses an account whose password is locked with '!', even for key logins.
    with contextlib.suppress(OSError), open("/etc/shadow") as shadow:
        for line in shadow:
            if line.startswith(f"{user}:") and line.split(":")[1].startswith("!"):
                advice = f"allow key logins with: usermod -p '*' {user}"
                raise LabError(f"account {user} is locked and sshd without PAM refuses it: {advice}")


def _prepare(directory: Path, private_srv: bool, srv_size: str) -> str | None:
    """Check and set up what the lab needs before anything starts; the unshare path if /srv is private."""
    root, unshare = os.geteuid() == 0, None
    if private_srv:
        if not root:
            raise LabError("a private /srv per lab host needs root: run as root or go without it")
        if not _SIZE.fullmatch(srv_size):
            raise LabError(f"bad /srv size {srv_size!r}: give a tmpfs size such as 256m or 1g")
        unshare = _find_tool("unshare", "util-linux", "/usr/bin/unshare")
        # One trial mount now gives one clear error, rather than every host failing the same way.
        probe = [unshare, "-m", "--propagation", "private", "/bin/sh", "-c", _srv_script(srv_size, ["true"])]
        _run(probe, "cannot give lab hosts a private /srv", "allow mount namespaces or go without it")
    if root:
        _check_login(pwd.getpwuid(0).pw_name)
        # sshd running as root confines its pre-auth child to this (empty, root-owned) directory.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask
    if (directory / STATE_FILE).exists():
        running = load_lab(directory)
        if any(is_ours(host.pid, f"{directory / host.name}.sshd_config") for host in running.hosts):
            where = shown_path(directory)
            raise LabError(f"a lab is already running in {where}: stop it with 'fleetrun lab down --dir {where}', "
                           "or give this one another --dir")
    return unshare


def start_lab(
    count: int,
    directory: Path,
    *,
    private_srv: bool | None = None,
    srv_size: str = "256m",
    password_auth: bool = False,
    host_key_type: str = "ed25519",
    extra_config: str = "",
    extra_host_key_types: tuple[str, ...] = (),
    bind_files: dict[str, Path] | None = None,
    user: str | None = None,
) -> Lab:
    """Start `count` sshd processes on loopback, each its own host, and write the files to reach them.

    `password_auth` also lets accounts log in with their system password (tests of password auth).
    `host_key_type` is "ed25519" or "rsa". `extra_config` is sshd_config text whose keywords replace the lab's
    own (e.g. "MaxStartups 1", "KexAlgorithms diffie-hellman-group14-sha1"); it must not hold a Match block.
    `extra_host_key_types` (ssh-keygen -t names: "ecdsa", "rsa") gives the hosts more host keys besides their
    own Ed25519 one: one key per type at `extra_host_key_path`, shared by all hosts (an RSA key per host would
    cost seconds). The lab's known_hosts still lists the Ed25519 keys only.
    `bind_files` ({"/etc/hosts": path}) shows the hosts other files in place of system ones, in their private
    mount namespace (needs the private /srv, so root): a bastion that alone can resolve its targets' names.
    `user` (root only): the account the inventory logs in as, instead of the one running the lab; its
    private /srv is that user's (for sudo tests, with throwaway accounts).
    """
    if not 1 <= count <= MAX_HOSTS:
        raise LabError(f"a lab has 1 to {MAX_HOSTS} hosts, not {count}: pick a count in that range")
    if host_key_type not in HOST_KEY_TYPES:
        raise LabError(f"host key type {host_key_type!r} is not one of {', '.join(HOST_KEY_TYPES)}")
    if re.search(r"^\s*match\b", extra_config, re.IGNORECASE | re.MULTILINE):
        raise LabError("extra_config must not hold a Match block: it would swallow the lab's own settings")
    directory = Path(directory).absolute()
    if not _SAFE_PATH.fullmatch(str(directory)):
        raise LabError(f"lab directory {directory} has spaces or special characters: use a plain path")
    sshd = _find_tool("sshd", "openssh-server", SSHD_FALLBACK)
    keygen = _find_tool("ssh-keygen", "openssh-client", "/usr/bin/ssh-keygen")
    private_srv = os.geteuid() == 0 if private_srv is None else private_srv
    binds = tuple((target, str(source)) for target, source in (bind_files or {}).items())
    if binds and not private_srv:
        raise LabError("bind_files needs the hosts' private mount namespace (private_srv, as root)")
    unshare = _prepare(directory, private_srv, srv_size)
    owner = ""
    if user is None:
        user = pwd.getpwuid(os.geteuid()).pw_name
        login = None
    else:
        if os.geteuid() != 0:
            raise LabError(f"a lab logging in as {user} needs root (sshd must switch to that account)")
        try:
            account = pwd.getpwnam(user)
        except KeyError:
            raise LabError(f"no account {user!r} on this machine: create it first (useradd)") from None
        _check_login(user)
        owner, login = f",uid={account.pw_uid},gid={account.pw_gid}", user

    client_key = directory / "id_ed25519"
    for stale in (client_key, client_key.with_suffix(".pub")):
        stale.unlink(missing_ok=True)  # ssh-keygen would otherwise ask before overwriting
    argv = [keygen, "-q", "-t", "ed25519", "-C", "fleetrun-lab-client", "-f", str(client_key), "-N", ""]
    _run(argv, f"ssh-keygen failed for {client_key}", "check that ssh-keygen works")
    (directory / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    width = max(2, len(str(count)))
    names = [f"lab{i:0{width}d}" for i in range(1, count + 1)]
    host_keys = [directory / f"{name}_host_{host_key_type}_key" for name in names]
    for name, host_key in zip(names, host_keys, strict=True):
        _host_key(host_key, f"fleetrun-{name}", host_key_type)
    extra_host_keys = ""
    for keytype in extra_host_key_types:
        path = extra_host_key_path(directory, keytype)
        for stale in (path, path.with_suffix(".pub")):
            stale.unlink(missing_ok=True)
        argv = [keygen, "-q", "-t", keytype, "-C", f"fleetrun-lab-{keytype}", "-f", str(path), "-N", ""]
        _run(argv, f"ssh-keygen -t {keytype} failed for {path}", "pick a key type ssh-keygen knows")
        extra_host_keys += f"HostKey {path}\n"

    for attempt in range(1, _ATTEMPTS + 1):
        addresses, port = _pick_block(count)
        started = datetime.now().astimezone().isoformat(timespec="seconds")
        spawned: list[tuple[int, str]] = []
        hosts: list[LabHost] = []
        try:
            for name, address, host_key in zip(names, addresses, host_keys, strict=True):
                config, log = directory / f"{name}.sshd_config", directory / f"{name}.log"
                fields = {"name": name, "address": address, "port": port, "host_key": host_key}
                yes_no = "yes" if password_auth else "no"
                settings = {"authorized_keys": _authorized_keys(directory, login), "password_auth": yes_no,
                            "extra_host_keys": extra_host_keys}
                text = _SSHD_CONFIG.format(**settings, **fields)
                config.write_text(_with_extra(text, extra_config))
                pid = spawn_detached(_sshd_argv(sshd, config, log, unshare, srv_size, binds, owner), log)
                spawned.append((pid, str(config)))
                hosts.append(LabHost(name, address, port, pid, host_key))
            files = directory / "inventory.yaml", directory / "known_hosts", client_key
            lab = Lab(directory, tuple(hosts), *files, user, private_srv)
            # Recorded before waiting, so `lab down` can clean up after an interrupted start.
            _write_state(lab, started, srv_size)
            failure = wait_ready(hosts, 15 + 0.03 * count)
        except BaseException as error:
            terminate(spawned)
            (directory / STATE_FILE).unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise LabError(
                    f"cannot start the lab ({error}): free processes or disk, or start fewer hosts"
                ) from None
            raise
        if failure is None:
            _write_files(lab, started)
            return lab
        terminate(spawned)
        (directory / STATE_FILE).unlink(missing_ok=True)
        host, reason = failure
        tail = log_tail(directory / f"{host.name}.log")
        # Another lab may have taken the address between our probe and sshd's bind: try another block.
        if attempt < _ATTEMPTS and ("Address already in use" in tail or "Cannot bind any address" in tail):
            continue
        where = f"lab host {host.name} ({host.address}:{host.port})"
        raise LabError(f"{where} did not start: {reason}; its log {directory / host.name}.log ends: {tail}")
    raise AssertionError("unreachable: the last attempt returns or raises")
