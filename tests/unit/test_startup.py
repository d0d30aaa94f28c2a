"""Start-up work kept out of runs that do not need it, and done once before worker processes fork (issue 13).

Each check runs in a fresh interpreter, the only place where "what is imported" means anything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_a_fleetrun_inventory_is_read_without_the_ansible_readers(tmp_path: Path):
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts:\n  web1: {address: 127.0.0.1}\n  web2: {address: 127.0.0.2}\n")
    code = ("import sys; from fleetrun.sources import load_sources; "
            f"inventory = load_sources([{str(inventory)!r}]); "
            "print(sorted(inventory.hosts), sorted(m for m in sys.modules if m.startswith('fleetrun.sources.')))")
    assert _python(code) == "['web1', 'web2'] ['fleetrun.sources.yamlload']"


def test_an_ansible_inventory_still_loads_its_readers(tmp_path: Path):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[web]\nweb1 ansible_host=127.0.0.1\n")
    code = ("from fleetrun.sources import load_sources; "
            f"inventory = load_sources([{str(inventory)!r}]); print(sorted(inventory.hosts), inventory.ansible)")
    assert _python(code) == "['web1'] True"


def test_after_warm_a_lean_connection_computes_its_kex_list_without_importing_anything():
    """What warm() does in the parent, each worker process would otherwise do again (cryptography's OpenSSL
    backend, ~30 ms per process)."""
    code = ("import sys; from fleetrun.ssh import lean; lean.warm(); before = set(sys.modules); "
            "kex = lean.paramiko_kex(); "
            "print('curve25519-sha256@libssh.org' in kex, sorted(set(sys.modules) - before))")
    assert _python(code) == "True []"


def test_paramiko_is_quieted_when_it_is_imported_after_install():
    """install() no longer imports `logging` (~7 ms of every run): paramiko's logger is set up when paramiko
    itself is imported, as it was before when install() ran after it."""
    code = ("import sys; from fleetrun import quiet; quiet.install(debug=False); had = 'logging' in sys.modules; "
            "import paramiko, logging; logger = logging.getLogger('paramiko'); "
            "print(had, [type(h).__name__ for h in logger.handlers], logger.propagate, "
            "any(type(f).__name__ == '_WhenParamikoLoads' for f in sys.meta_path))")
    assert _python(code) == "False ['NullHandler'] False False"


def test_debug_still_shows_everything_paramiko_says():
    code = ("from fleetrun import quiet; quiet.install(debug=True); import paramiko, logging; "
            "logger = logging.getLogger('paramiko'); "
            "print(logger.level == logging.DEBUG, [getattr(h, 'fleetrun', False) for h in logger.handlers])")
    assert _python(code) == "True [True]"


def test_paramiko_imported_before_install_is_quieted_at_once():
    code = ("import paramiko, logging; from fleetrun import quiet; quiet.install(debug=False); "
            "logger = logging.getLogger('paramiko'); print([type(h).__name__ for h in logger.handlers])")
    assert _python(code) == "['NullHandler']"


def test_a_run_imports_neither_logging_nor_secrets_nor_the_idna_codec(tmp_path: Path):
    """A run on the lean client, refused at once by a closed loopback port: what its start-up imported
    (nor the words for failures it did not meet, nor the certificate reader without a certificate)."""
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts:\n  web1: {address: 127.0.0.1, port: 1}\n")
    code = ("import sys; from fleetrun.cli import main\n"
            "try:\n"
            f"    main(['exec', 'true', '--inventory', {str(inventory)!r}, '--hosts', 'web1', '--format', 'json',"
            " '--no-journal'])\n"
            "except SystemExit as exit:\n"
            "    print(exit.code, sorted(m for m in ('logging', 'secrets', 'encodings.idna', 'difflib', 'paramiko', "
            "'fleetrun.ssh.diagnose', 'fleetrun.hostcert')"
            " if m in sys.modules), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.stderr.strip().splitlines()[-1] == "4 []", done.stderr


_PROGRAM = "import sys; sys.argv = ['fleetrun', *sys.argv[1:]]; from fleetrun.cli import main; main()"


def test_the_program_skips_the_interpreter_teardown_but_runs_atexit_handlers_and_keeps_its_status():
    """Python's own exit frees every object one by one (~25 ms of every run); fleetrun ends with os._exit once
    the atexit handlers ran and the streams are flushed. An object only the teardown would finalise stays
    silent; a handler registered by anyone still runs, after fleetrun's own output."""
    code = ("import atexit\n"
            "class Noisy:\n"
            "    def __del__(self):\n"
            "        print('torn down', flush=True)\n"
            "kept = Noisy()\n"
            "atexit.register(print, 'handler ran')\n" + _PROGRAM.replace("; ", "\n"))
    done = subprocess.run([sys.executable, "-c", code, "hosts", "-i", "/nonexistent.yaml"], capture_output=True,
                          text=True)
    assert done.returncode == 2, done.stderr
    assert "fleetrun: error:" in done.stderr and "/nonexistent.yaml" in done.stderr
    assert done.stdout == "handler ran\n"
    # The same program without fleetrun's exit is torn down: the check above would see it.
    plain = subprocess.run([sys.executable, "-c", code.replace("main()", "pass")], capture_output=True, text=True)
    assert plain.stdout == "handler ran\ntorn down\n"


def test_the_program_waits_for_a_thread_that_is_not_done_as_python_would():
    code = ("import threading, time\n"
            "threading.Thread(target=lambda: (time.sleep(0.3), print('thread done', flush=True))).start()\n"
            + _PROGRAM.replace("; ", "\n"))
    done = subprocess.run([sys.executable, "-c", code, "--version"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "thread done"


def test_everything_a_program_prints_reaches_a_pipe_before_it_ends(tmp_path: Path):
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts:\n" + "".join(f"  web{n:04}: {{address: 127.0.{n // 250}.{n % 250 + 1}}}\n"
                                             for n in range(3000)))
    done = subprocess.run([sys.executable, "-c", _PROGRAM, "hosts", "-i", str(inventory), "--names"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [f"web{n:04}" for n in range(3000)]


def test_main_called_with_arguments_raises_systemexit_and_gives_the_collector_back_as_it_was():
    import gc

    from fleetrun.cli import main

    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            try:
                main(["--version"])
            except SystemExit as done:
                assert done.code == 0
            else:
                raise AssertionError("main(argv) must end in SystemExit")
            assert gc.isenabled() is enabled
        finally:
            gc.enable()
