"""OpenSSH client configuration, read and resolved exactly as `ssh -G` does (pure: no paramiko, no network).

    config = load(SshConfigSource.default())   # ~/.ssh/config then /etc/ssh/ssh_config, read once per run
    settings = config.resolve("web01", Preset(user="deploy"))   # what `ssh -l deploy web01` would use

Preset values play the part of ssh's command-line options: they come first, so they win, and `Match user`
and the %r/%p tokens see them.
"""

from fleetrun.sshconfig.api import Preset, SshConfig, SshConfigSource, load
from fleetrun.sshconfig.keywords import parse_hop
from fleetrun.sshconfig.model import ConfigError, Origin, display_path
from fleetrun.sshconfig.settings import Identity, Settings

__all__ = ["ConfigError", "Identity", "Origin", "Preset", "Settings", "SshConfig", "SshConfigSource",
           "display_path", "load", "parse_hop"]
