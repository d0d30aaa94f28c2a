"""What a run reads before its first connection: known_hosts files, keys and certificates, once each; the gateways."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fleetrun.cancel import Cancel
from fleetrun.models import Host

if TYPE_CHECKING:
    from fleetrun.runner import RunOptions
    from fleetrun.ssh import ConnectSettings


def connect_settings(
    hosts: Sequence[Host], options: RunOptions, warn: Callable[[str], None],
    passwords: Mapping[str, str] | None = None,
) -> ConnectSettings:
    """Load every known_hosts file, key and certificate the hosts and their bastions use, once, before any
    connection (bad input is exit 2 here); the run's shared gateways open later, on first use."""
    from fleetrun.hostkeys import KnownHosts, host_key_files
    from fleetrun.route import hops_of
    from fleetrun.ssh import ConnectSettings, agent_blobs, connect, load_certificates, load_identities, load_keys
    from fleetrun.ssh.auth import CERT_SUFFIX

    hops = hops_of(hosts)
    everyone = [*hosts, *hops]
    # Each host's own files (inventory known_hosts, UserKnownHostsFile, GlobalKnownHostsFile), read once each.
    files = dict.fromkeys(path for host in everyone for path in host_key_files(host)[0])
    known = KnownHosts.load(list(files))
    for warning in known.warnings:
        warn(f"known_hosts: {warning}")
    # The inventory's key and --key must work (exit 2 otherwise); ssh_config's and ssh's default identity
    # files are skipped when unusable, as ssh skips them.
    secrets = passwords if passwords is not None else {}
    keys = load_keys([host.key for host in everyone if host.key], options.key_passphrase)
    others = [path for host in everyone for path in host.identity_files if path not in keys]
    configured = {path for host in everyone if not host.identity_files_default for path in host.identity_files}
    held: set[bytes] | None = None

    def agent_has(blob: bytes) -> bool:
        nonlocal held
        if held is None:
            held = agent_blobs(None) if options.use_agent else set()
        return blob in held

    more, encrypted = load_identities(others, configured, options.key_passphrase, agent_has, warn)
    # CertificateFile; without one, ssh also offers `<identity>-cert.pub` when it exists.
    named_certificates = {path for host in everyone for path in host.certificate_files}
    beside = [path + CERT_SUFFIX for host in everyone if not host.certificate_files
              for path in (host.identity_files or ((host.key,) if host.key else ()))]
    certificates = load_certificates([*named_certificates, *beside], named_certificates, warn)
    _warn_forwarding(hosts, warn)
    gateways = None
    if hops:  # bastions are paramiko's: without any, a run need not import it (see fleetrun.ssh.lean)
        from fleetrun.ssh.gateway import Gateways, Opened

        def opened(hop: Host, upstream: Any, cancel: Cancel) -> Opened:
            session = connect(hop, settings, secrets.get(hop.name), cancel, through=upstream)
            return Opened(session.transport, session.close, session.lost_reason)

        gateways = Gateways(opened, options.max_per_gateway or options.forks)
    settings = ConnectSettings(
        known_hosts=known,
        host_key_checking=options.host_key_checking,
        connect_timeout=options.connect_timeout,
        keys={**keys, **more},
        encrypted_identities=encrypted,
        certificates=certificates,
        use_agent=options.use_agent,
        gateways=gateways,
        warn=warn,
    )
    return settings


def _warn_forwarding(hosts: Sequence[Host], warn: Callable[[str], None]) -> None:
    """ForwardAgent: say once what it gives away; and when there is no agent to forward."""
    forwarding = [host for host in hosts if host.forward_agent]
    if not forwarding:
        return
    from fleetrun.ssh.agentfwd import agent_socket

    usable = [host for host in forwarding if agent_socket(host.forward_agent, host.identity_agent)]
    if usable:
        count = f"{len(usable)} host{'s' if len(usable) != 1 else ''}"
        warn(f"forwarding your ssh-agent to {count} (ForwardAgent): while the run lasts, root there can use "
             "every key it holds")
    if len(usable) < len(forwarding):
        warn("ForwardAgent is set but there is no agent to forward ($SSH_AUTH_SOCK unset, or IdentityAgent none) "
             f"for {len(forwarding) - len(usable)} host(s): nothing forwarded there")
