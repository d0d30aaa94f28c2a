"""Frozen records passed between the stages: hosts, per-host results and the run summary."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, BinaryIO

from fleetrun.spill import Spill
from fleetrun.status import ExitStatus

OriginPair = tuple[str, tuple[str, ...]]


class Origins(Mapping[str, tuple[str, ...]]):
    """Where a host's settings came from, as (field, sources) pairs: a read-only mapping for `hosts --explain`.

    A tuple of pairs instead of a dict per host: most pairs ("user" from "inventory defaults", "hash_known_hosts"
    from /etc/ssh/ssh_config:52) are then the same objects for every host of a run, so 1000 hosts cost 1000
    small tuples, not 1000 dicts (fleetrun.inventory_reader and fleetrun.resolve share them). Few keys, so a
    lookup walking the pairs is as quick as hashing.
    """

    __slots__ = ("pairs",)

    def __init__(self, pairs: Iterable[OriginPair] = ()) -> None:
        self.pairs: tuple[OriginPair, ...] = tuple(pairs)  # each field once

    @classmethod
    def of(cls, origins: Mapping[str, tuple[str, ...]], share: dict[OriginPair, OriginPair] | None = None) -> Origins:
        """The pairs of a mapping, each looked up in `share` first (and added to it) so that equal pairs are one."""
        if share is None:
            return cls(origins.items())
        return cls(share.setdefault(pair, pair) for pair in origins.items())

    def __getitem__(self, key: str) -> tuple[str, ...]:
        for name, sources in self.pairs:
            if name == key:
                return sources
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:  # Mapping.get would raise and catch a KeyError
        for name, sources in self.pairs:
            if name == key:
                return sources
        return default

    def __contains__(self, key: object) -> bool:
        return any(name == key for name, _ in self.pairs)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return repr(dict(self.pairs))

    def __reduce__(self) -> tuple[type[Origins], tuple[tuple[OriginPair, ...]]]:
        return (Origins, (self.pairs,))


@dataclass(frozen=True, slots=True)
class Host:
    """One host to act on, with every connection setting already resolved from the inventory."""

    name: str
    address: str
    port: int = 22
    user: str | None = None  # None: the local user
    key: str | None = None  # path to a private key file
    password_env: str | None = None
    password_file: str | None = None
    connect_timeout: float | None = None
    known_hosts: tuple[str, ...] = ()  # extra known_hosts files, besides ~/.ssh/known_hosts
    groups: tuple[str, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # Which connection settings the inventory (or the command line) set for this host; the others may still
    # come from ssh_config, which ranks below the inventory (issue 9). Field names, e.g. {"port", "user"}.
    explicit: frozenset[str] = field(default=frozenset(), compare=False)
    # Where each setting came from, for `fleetrun hosts --explain`: field -> one source per value, e.g.
    # {"port": ("inventory groups.web",), "identity_files": ("~/.ssh/config:3", "default")}.
    origins: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False, hash=False)
    # ProxyJump hops ("[user@]host[:port]", tokens expanded), visited first to last; () means direct. Before
    # resolution None means "not set here" (ssh_config may set it). Exclusive with proxy_command (issue 9).
    jump: tuple[str, ...] | None = None
    # Run through the user's shell with `exec`, tokens expanded; "none" before resolution means direct.
    proxy_command: str | None = None
    # --- Filled in by fleetrun.resolve from ssh_config (issue 9); the defaults mean "not resolved". ---
    lookup_name: str | None = None  # the name ssh_config matched (inventory address, else name): %n
    # Every private key file to try, in order: the inventory/--key file first, then ssh_config's IdentityFile
    # lines; when none is named, ssh's defaults (identity_files_default: absent ones are skipped quietly).
    identity_files: tuple[str, ...] = ()
    identity_files_default: bool = False
    identities_only: bool = False  # only these files (and their agent copies): no other agent keys
    certificate_files: tuple[str, ...] = ()
    identity_agent: str | None = None  # None: $SSH_AUTH_SOCK; "none": no agent; else the agent's socket
    host_key_checking: str | None = None  # "yes" | "accept-new" | "no" (fleetrun's policies); None: the run's
    user_known_hosts: tuple[str, ...] | None = None  # UserKnownHostsFile (expanded; accept-new writes the first)
    global_known_hosts: tuple[str, ...] = ()  # GlobalKnownHostsFile, read-only
    hash_known_hosts: bool = False  # accept-new writes |1| hashed names
    host_key_alias: str | None = None  # check and record the host key under this name instead of the host's
    server_alive_interval: float = 0.0  # seconds between keepalive probes; 0: off
    server_alive_count_max: int = 3  # unanswered probes before the connection counts as lost
    forward_agent: bool | str = False  # ForwardAgent: True forwards the agent in use; a str is a socket path
    send_env: tuple[str, ...] = ()  # SendEnv patterns: local variables sent as `env` requests, as ssh sends them
    set_env: tuple[str, ...] = ()  # SetEnv NAME=value, sent as `env` requests after them
    host_key_algorithms: str | None = None  # HostKeyAlgorithms as written, +/-/^ too; None: ssh's default
    # The resolved ProxyJump hops (each a Host with its own settings), first to last: fleetrun.route fills it
    # in from `jump`; () means no bastion.
    via: tuple[Host, ...] = field(default=(), compare=False)
    # sudo (issue 10): run the command as become_user through sudo; the password from one of the two sources.
    become: bool = False
    become_user: str | None = None
    become_password_env: str | None = None
    become_password_file: str | None = None
    # Environment variables exported to the remote command (issue 14).
    env: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)


class Outcome(str, Enum):
    """What happened on one host; the value is what the user sees."""

    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    AUTH_FAILED = "auth failed"
    HOST_KEY = "host key"
    CANCELLED = "cancelled"
    NOT_STARTED = "not started"

    @property
    def exit_status(self) -> ExitStatus:
        return _OUTCOME_STATUS[self]


_OUTCOME_STATUS: dict[Outcome, ExitStatus] = {
    Outcome.OK: ExitStatus.OK,
    Outcome.FAILED: ExitStatus.COMMAND_FAILED,
    Outcome.TIMEOUT: ExitStatus.TIMEOUT,
    Outcome.UNREACHABLE: ExitStatus.UNREACHABLE,
    Outcome.AUTH_FAILED: ExitStatus.UNREACHABLE,
    Outcome.HOST_KEY: ExitStatus.HOST_KEY,
    # Cancelled and not-started hosts are explained by the interrupt's own status.
    Outcome.CANCELLED: ExitStatus.OK,
    Outcome.NOT_STARTED: ExitStatus.OK,
}


@dataclass(frozen=True, slots=True)
class HostResult:
    """Exactly one of these per selected host, whatever happened."""

    host: Host
    outcome: Outcome
    exit_code: int | None = None
    signal: str | None = None  # e.g. "KILL" when the remote command died from a signal
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration: float = 0.0
    error: str | None = None  # one line, for every outcome but ok
    changed: bool | None = None  # push/pull: whether anything was written
    details: tuple[str, ...] = ()  # push/pull: one line per file, shown with -v
    # True: known_hosts vouched for the host's key. False: the key was not verified (--host-key-checking no,
    # accept-new recording it now, or refused). None: the connection never got as far as the key.
    host_key_verified: bool | None = None
    # Why a host was not started or was cancelled: "rollout stopped", "stopped by the operator", "interrupted",
    # "terminated", "deadline" (issue 11). None for hosts that ran to their own end.
    reason: str | None = None
    # A stream longer than fleetrun.spill.SPILL_AT: `stdout`/`stderr` hold its first SPILL_AT bytes and this file
    # all of it. Read the whole stream with output(); closed by the runner once every renderer had the result.
    stdout_file: Spill | None = field(default=None, compare=False, repr=False)
    stderr_file: Spill | None = field(default=None, compare=False, repr=False)
    # exec under sudo (issue 10): whom the command ran as and how the negotiation went; None without become.
    become: BecomeStatus | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def output(self, stream: str) -> bytes:
        """The whole of "stdout" or "stderr" (read back from its spill file if it has one)."""
        spill = self.stdout_file if stream == "stdout" else self.stderr_file
        if spill is not None:
            return spill.read()
        return self.stdout if stream == "stdout" else self.stderr

    def output_size(self, stream: str) -> int:
        spill = self.stdout_file if stream == "stdout" else self.stderr_file
        return spill.size if spill is not None else len(self.stdout if stream == "stdout" else self.stderr)

    def output_head(self, stream: str, length: int) -> bytes:
        """The first `length` bytes of a stream, without reading the rest."""
        spill = self.stdout_file if stream == "stdout" else self.stderr_file
        data = self.stdout if stream == "stdout" else self.stderr
        if spill is not None and length > len(data):
            return spill.read(0, length)
        return data[:length]

    def output_tail(self, stream: str, length: int) -> bytes:
        """The last `length` bytes of a stream, without reading the rest."""
        spill = self.stdout_file if stream == "stdout" else self.stderr_file
        if spill is not None:
            return spill.tail(length)
        data = self.stdout if stream == "stdout" else self.stderr
        return data[-length:] if length else b""

    def release(self) -> None:
        """Close the spill files (the collector, once every renderer had this result)."""
        for spill in (self.stdout_file, self.stderr_file):
            if spill is not None:
                spill.close()


@dataclass(frozen=True, slots=True)
class BecomeStatus:
    """A host's sudo: the user become, and "ok", "rejected", "password-required", "tty-required", "timeout",
    "error", or None when the host never got as far as sudo."""

    user: str
    status: str | None


@dataclass(frozen=True, slots=True)
class OutputLine:
    """One whole line of live output from a host (without its newline), for the stream renderer."""

    host: Host
    stream: str  # "stdout" or "stderr"
    text: bytes  # the line; b"" when it was too long to keep in memory and `spill` holds it
    # A private temporary file holding a line longer than fleetrun.lines.MAX_LINE; closed after rendering.
    spill: BinaryIO | None = field(default=None, compare=False)

    def chunks(self, size: int = 1 << 16) -> Iterator[bytes]:
        """The line's bytes in pieces of at most `size`, whether in memory or spilled; may be read again."""
        if self.spill is None:
            yield self.text
            return
        self.spill.seek(0)
        while chunk := self.spill.read(size):
            yield chunk


@dataclass(frozen=True)
class BatchSummary:
    """One batch of a rolling run: its 1-based position, how many hosts it had and how they ended."""

    index: int
    size: int
    counts: Mapping[Outcome, int]


@dataclass(frozen=True)
class RolloutStop:
    """Why a rolling run stopped dispatching: `reason` is a stable word, `message` the sentence shown."""

    reason: str  # "max-fail", "canary", "batch-failed" or "operator"
    after_batch: int  # 1-based: the batch whose results (or whose end, for "operator") stopped it
    message: str  # "rollout stopped after batch 3: 3 failures > --max-fail 2 (20% of 12)"


@dataclass(frozen=True)
class RunSummary:
    """Counts and timing for a finished (or interrupted) run."""

    total: int
    counts: Mapping[Outcome, int]
    elapsed: float
    exit_status: ExitStatus
    interrupted: bool = False
    changed: int = 0  # push/pull: ok hosts where something was written
    unchanged: int = 0  # push/pull: ok hosts that already had it all
    batches: tuple[BatchSummary, ...] = ()  # in dispatch order; one batch of every host without --batch
    stopped: RolloutStop | None = None  # set when the rollout stopped before every host was started
