"""Start-up: the methods `@dataclass` writes for fleetrun's classes, compiled once and kept like a .pyc.

Python 3.11's dataclasses write each class's `__init__`, `__repr__`, `__eq__` (and for frozen classes
`__setattr__`, `__delattr__`, `__hash__`) as source text and compile it at import time: ~280 small compiles,
~50 ms of every run's ~0.3 s start-up (README, *Performance*). The text
depends only on the class's fields and options, so the compiled code can be kept between runs exactly as
Python keeps a module's bytecode: in the package's `__pycache__`, keyed by the text itself (a changed class
has new text, so nothing can be stale), written only where Python would write bytecode (not with
PYTHONDONTWRITEBYTECODE, not where the directory is read-only), and ignored when it is missing, damaged or
from another Python. Only classes of fleetrun's own modules go through it; everything else compiles as usual.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import dataclasses
import marshal
import os
import sys
from importlib._bootstrap_external import MAGIC_NUMBER  # the bytecode version: code objects are specific to it
from types import CodeType
from typing import Any

_HEADER = MAGIC_NUMBER + b"fleetrun dataclass methods 1\n"
_MAX_ENTRIES = 4000  # beyond this (classes changed many times), keep only what this process used
_PACKAGE = __name__.partition(".")[0]


class _Cache:
    """Compiled method code by source text, loaded from one file and written back when it learnt something."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.codes: dict[str, CodeType] = {}
        self.used: set[str] = set()
        self.learnt = False
        self.owner = os.getpid()  # a forked worker process never writes the file
        with contextlib.suppress(OSError, ValueError, EOFError, TypeError):
            with open(path, "rb") as file:
                data = file.read()
            if data.startswith(_HEADER):
                codes = marshal.loads(data[len(_HEADER):])
                if isinstance(codes, dict):
                    self.codes = codes

    def exec(self, source: Any, globals: dict[str, Any] | None = None, locals: Any = None) -> None:
        """`exec` as dataclasses calls it; source text of a fleetrun module's class comes from the cache."""
        if isinstance(source, str) and globals is not None and _is_ours(globals):
            code = self.codes.get(source)
            if code is None:
                code = compile(source, "<string>", "exec")
                self.codes[source] = code
                self.learnt = True
            self.used.add(source)
            source = code
        builtins.exec(source, globals, locals)

    def save(self) -> None:
        if not self.learnt or os.getpid() != self.owner or sys.dont_write_bytecode:
            return
        codes = self.codes if len(self.codes) <= _MAX_ENTRIES else {s: self.codes[s] for s in self.used}
        temporary = f"{self.path}.{os.getpid()}.tmp"
        with contextlib.suppress(OSError, ValueError):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            try:
                with open(temporary, "xb") as file:
                    file.write(_HEADER + marshal.dumps(codes))
                os.replace(temporary, self.path)  # whole or not at all, whoever else writes it at the same time
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
        self.learnt = False


def _is_ours(globals: dict[str, Any]) -> bool:
    name = globals.get("__name__")
    return isinstance(name, str) and (name == _PACKAGE or name.startswith(_PACKAGE + "."))


def install() -> None:
    """Route dataclasses' compiles through the cache (once per process) and save what was learnt at exit."""
    if isinstance(getattr(getattr(dataclasses, "exec", None), "__self__", None), _Cache):
        return  # already installed (a second import of the package, e.g. under another name)
    if getattr(sys.implementation, "cache_tag", None) is None:  # typeshed says str; PEP 421 allows None
        return  # an implementation that keeps no bytecode: nothing to key the file by
    directory = os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__")
    cache = _Cache(os.path.join(directory, f"dataclass-methods.{sys.implementation.cache_tag}.bin"))
    # dataclasses calls `exec` by its global name: a module attribute of that name comes before the builtin.
    setattr(dataclasses, "exec", cache.exec)  # noqa: B010
    atexit.register(cache.save)
