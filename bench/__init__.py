"""The benchmark harness: fleetrun against its peers on a lab of real sshd hosts (see run.py)."""
