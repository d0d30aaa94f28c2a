"""Installs the peers where we may (bench/.venv from PyPI, pdsh and pssh from Debian) and records versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from bench.peers import BENCH_VENV, Tools

# PyPI distribution -> the peer keys that need it.
PYPI = {"clustershell": ("clush",), "parallel-ssh": ("pssh-lib",), "fabric": ("fabric",),
        "ansible-core": ("ansible",)}  # fmt: skip
DEBIAN = {"pdsh": ("pdsh", ("pdsh",)), "pssh": ("parallel-ssh", ("pssh", "pscp"))}  # package: (binary, peers)


def _run(argv: list[str], timeout: float = 900) -> tuple[int, str]:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                              check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        return 1, str(error)
    return done.returncode, (done.stdout + done.stderr).strip()


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("WARNING: Location")]
    return lines[-1][:200] if lines else "no output"


def install(log: list[str]) -> dict[str, str]:
    """Install what is missing; returns peer key -> why it could not be installed."""
    failed: dict[str, str] = {}
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        code, text = _run([base, "-m", "venv", str(BENCH_VENV)])
        log.append(f"python -m venv {BENCH_VENV}: exit {code}")
        if code != 0:
            for peers in PYPI.values():
                failed.update(dict.fromkeys(peers, f"cannot create {BENCH_VENV}: {_last_line(text)}"))
    if python.exists():
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        for package, peers in PYPI.items():
            # One at a time, so one package that will not install does not take the others with it.
            code, text = _run([*pip, package])
            log.append(f"pip install {package}: exit {code}")
            if code != 0:
                failed.update(dict.fromkeys(peers, f"pip install {package} failed: {_last_line(text)}"))
    wanted = [package for package, (binary, _) in DEBIAN.items() if shutil.which(binary) is None]
    if wanted:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            for package in wanted:
                failed.update(dict.fromkeys(DEBIAN[package][1], f"{package} is not installed and we cannot apt-get "
                                                                "it (not root or no apt-get)"))  # fmt: skip
        else:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600, check=False)
            for package in wanted:
                done = subprocess.run(["apt-get", "install", "-y", "-qq", package], env=env, capture_output=True,
                                      text=True, timeout=600, check=False)  # fmt: skip
                log.append(f"apt-get install {package}: exit {done.returncode}")
                if done.returncode != 0:
                    why = f"apt-get install {package} failed: {_last_line(done.stderr)}"
                    failed.update(dict.fromkeys(DEBIAN[package][1], why))
    return failed


def check_fleetrun_push(tools: Tools) -> None:
    """Record whether `fleetrun push` exists yet (another engineer is writing it) and its --help text."""
    code, text = _run([str(tools.fleetrun), "push", "--help"], timeout=60)
    if code == 0:
        tools.push_help = text
    else:
        tools.missing["fleetrun-push"] = f"`fleetrun push --help` failed ({_last_line(text)})"


def _first(argv: list[str], pattern: str = "") -> str:
    code, text = _run(argv, timeout=60)
    lines = [line.strip() for line in text.splitlines() if pattern in line and line.strip()]
    return lines[0] if code == 0 and lines else "?"


def versions(tools: Tools) -> dict[str, str]:
    """Versions of everything measured, and of the machine."""
    found: dict[str, str] = {}
    found["fleetrun"] = _first([str(tools.fleetrun), "--version"])
    found["OpenSSH"] = _first(["ssh", "-V"])
    if shutil.which("pdsh"):
        found["pdsh"] = _first(["pdsh", "-V"], "pdsh")
    if shutil.which("parallel-ssh"):
        found["parallel-ssh (Debian pssh)"] = _first(["parallel-ssh", "--version"])
    if tools.bench_python.exists():
        probe = (
            "import importlib.metadata as m\n"
            "for d in ('paramiko', 'ClusterShell', 'parallel-ssh', 'ssh2-python', 'fabric', 'ansible-core'):\n"
            "    try: print(d, m.version(d))\n"
            "    except m.PackageNotFoundError: pass\n"
        )
        code, text = _run([str(tools.bench_python), "-c", probe], timeout=60)
        for line in text.splitlines() if code == 0 else ():
            name, _, version = line.partition(" ")
            found[f"{name} (bench venv)"] = version
    main = subprocess.run([sys.executable, "-c", "import paramiko; print(paramiko.__version__)"],
                          capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    found["paramiko (fleetrun venv)"] = main or "?"
    return found


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "?"
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kib / (1 << 20):.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    os_name = "?"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {"CPU": f"{os.cpu_count()} × {model}", "memory": memory, "OS": os_name,
            "kernel": platform.release(), "Python": platform.python_version()}  # fmt: skip
