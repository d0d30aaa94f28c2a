"""paramiko's log records and its helper threads' deaths stay off stderr; everyone else's crash still shows."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import paramiko
import pytest

from fleetrun import quiet


@pytest.fixture
def pristine_logging() -> Iterator[logging.Logger]:
    """paramiko's logger as Python leaves it (no handler), restored after the test."""
    logger = logging.getLogger("paramiko")
    saved = (list(logger.handlers), logger.propagate, logger.level, threading.excepthook)
    logger.handlers.clear()
    logger.propagate = True
    try:
        yield logger
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]
        threading.excepthook = saved[3]


def log_like_a_failed_handshake() -> None:
    logging.getLogger("paramiko.transport").error("Exception (client): Error reading SSH protocol banner")


def test_install_keeps_paramikos_records_from_every_handler(pristine_logging, caplog, capsys):
    # Under pytest the root logger has handlers of its own; the CLI-level tests show the stderr side.
    quiet.install(debug=False)
    log_like_a_failed_handshake()
    assert caplog.records == [] and capsys.readouterr().err == ""
    assert not pristine_logging.propagate
    assert any(isinstance(handler, logging.NullHandler) for handler in pristine_logging.handlers)


def test_debug_shows_everything_paramiko_logs(pristine_logging, capsys):
    quiet.install(debug=True)
    logging.getLogger("paramiko.transport").debug("kex algos: curve25519-sha256")
    assert "paramiko: MainThread: kex algos: curve25519-sha256" in capsys.readouterr().err


def run_thread(target: object, *args: object) -> None:
    thread = threading.Thread(target=target, args=args)  # type: ignore[arg-type]
    thread.start()
    thread.join(10)


def test_a_thread_paramiko_started_dies_quietly_others_still_reach_the_previous_hook():
    seen: list[str] = []
    previous = threading.excepthook
    threading.excepthook = quiet.quiet_paramiko_threads(lambda args: seen.append(str(args.exc_value)))
    try:
        # paramiko code as a thread's own target, raising: what its SFTP prefetch thread does on a closed socket.
        run_thread(paramiko.util.inflate_long, None)  # TypeError inside paramiko
        assert seen == []

        def ours() -> None:
            raise RuntimeError("a bug of ours")

        run_thread(ours)
        assert seen == ["a bug of ours"]

        def ours_calling_paramiko() -> None:
            paramiko.util.inflate_long(None)  # fails inside paramiko, but the thread is ours: it shows

        run_thread(ours_calling_paramiko)
        assert len(seen) == 2
    finally:
        threading.excepthook = previous


def test_the_hook_is_installed_once():
    hook = quiet.quiet_paramiko_threads(threading.excepthook)
    assert quiet.quiet_paramiko_threads(hook) is hook
