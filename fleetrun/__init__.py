"""fleetrun: run commands and move files across a fleet of hosts over SSH, in parallel."""

__version__ = "0.1.0"
