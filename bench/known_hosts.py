"""Time fleetrun's known_hosts reader: load a 10,000-line file, then judge 1,000 hosts (`python bench/known_hosts.py`).

The file mixes Ed25519, ECDSA and RSA keys under `[address]:port,name` lines, 100 wildcard lines and 1,000
hashed lines (the costly kind: every lookup hashes the name once per hashed line). Best of three runs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import subprocess
import tempfile
import time
from pathlib import Path

from fleetrun.hostkeys import KnownHosts


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        keys = []
        for keytype in ("ed25519", "ecdsa", "rsa"):
            subprocess.run(["ssh-keygen", "-q", "-t", keytype, "-N", "", "-f", str(work / keytype)], check=True)
            keys.append(" ".join((work / f"{keytype}.pub").read_text().split()[:2]))
        lines = [f"[10.{i // 250 % 250}.{i % 250}.1]:2222,host{i}.fleet {keys[i % 3]}" for i in range(8900)]
        lines += [f"*.zone{i}.fleet {keys[0]}" for i in range(100)]
        for i in range(1000):
            salt = hashlib.sha1(str(i).encode()).digest()
            digest = hmac.digest(salt, f"hashed{i}".encode(), "sha1")
            lines.append(f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()} {keys[i % 3]}")
        path = work / "known_hosts"
        path.write_text("\n".join(lines) + "\n")
        blob = base64.b64decode(keys[0].split()[1])
        load = check = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            known = KnownHosts.load([path])
            load = min(load, time.perf_counter() - started)
            started = time.perf_counter()
            for i in range(0, 3000, 3):
                names = [f"host{i}.fleet", f"[10.{i // 250 % 250}.{i % 250}.1]:2222"]
                known.check(names, "ssh-ed25519", blob)
            check = min(check, time.perf_counter() - started)
        print(f"load {len(lines)} lines: {load * 1000:.0f} ms; judge 1000 hosts: {check * 1000:.0f} ms")


if __name__ == "__main__":
    main()
