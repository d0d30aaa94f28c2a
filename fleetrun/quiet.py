"""Keep paramiko's own noise (log records, deaths of its helper threads) off the operator's stderr."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType, TracebackType

# paramiko logs every failed handshake with a full traceback at ERROR through `logging`. With no handler
# configured, Python's last-resort handler prints those: 18-21 lines per host. fleetrun already reports each
# failure as one line in the host's result, so the records add nothing for the operator.
_LOGGER = "paramiko"

ExceptHook = Callable[[threading.ExceptHookArgs], object]


def install(debug: bool) -> None:
    """Silence paramiko's logger and its helper threads' tracebacks, unless `debug` (FLEETRUN_DEBUG) asks for them.

    Called once by the console entry point: a library user keeps control of their own logging. Most runs never
    import paramiko (the lean client); its logger is set up when it is imported, so they do not pay for `logging`.
    """
    if not debug:
        threading.excepthook = quiet_paramiko_threads(threading.excepthook)
    if _LOGGER in sys.modules:
        _configure_logger(debug)
    elif not any(isinstance(finder, _WhenParamikoLoads) for finder in sys.meta_path):
        sys.meta_path.insert(0, _WhenParamikoLoads(debug))


class _WhenParamikoLoads:
    """A meta path finder that configures paramiko's logger as soon as paramiko's package has been imported
    (importing it logs nothing), and then steps aside."""

    def __init__(self, debug: bool) -> None:
        self.debug = debug

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != _LOGGER:
            return None
        sys.meta_path.remove(self)  # once: the finders after it find paramiko, as they would have
        spec = next((found for finder in sys.meta_path if hasattr(finder, "find_spec")
                     and (found := finder.find_spec(fullname, path, target)) is not None), None)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        load = loader.exec_module
        debug = self.debug

        def exec_module(module: ModuleType) -> None:
            load(module)
            _configure_logger(debug)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _configure_logger(debug: bool) -> None:
    import logging

    logger = logging.getLogger(_LOGGER)
    if debug:
        # Everything paramiko says, on stderr: what a bug report needs.
        if not any(getattr(handler, "fleetrun", False) for handler in logger.handlers):
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("paramiko: %(threadName)s: %(message)s"))
            handler.fleetrun = True  # type: ignore[attr-defined]
            logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        return
    if not any(isinstance(handler, logging.NullHandler) for handler in logger.handlers):
        logger.addHandler(logging.NullHandler())  # a handler is found, so the last-resort one is not used
    logger.propagate = False  # nor a root handler someone configured


def quiet_paramiko_threads(previous: ExceptHook) -> ExceptHook:
    """An excepthook that drops exceptions ending a thread paramiko started for itself, and passes others on.

    paramiko's SFTP prefetch thread dies with "Socket is closed" when a transfer is abandoned (a full local
    disk, a cancelled pull); the transfer itself reports that failure on its host. A thread of anyone else,
    fleetrun's own included, still gets the previous hook: its crash is a bug to see.
    """
    if getattr(previous, "fleetrun_quiet", False):
        return previous  # installed already

    def hook(args: threading.ExceptHookArgs) -> object:
        if _started_by_paramiko(args.exc_traceback):
            return None
        return previous(args)

    hook.fleetrun_quiet = True  # type: ignore[attr-defined]
    return hook


def _started_by_paramiko(trace: TracebackType | None) -> bool:
    """Whether the thread's own code (its outermost frame past threading.py) is paramiko's."""
    while trace is not None:
        module = str(trace.tb_frame.f_globals.get("__name__", ""))
        if module != "threading":
            return module == _LOGGER or module.startswith(_LOGGER + ".")
        trace = trace.tb_next
    return False
