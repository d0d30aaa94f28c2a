"""Masking secrets: in text, in whole outputs, in streams cut anywhere, and at the runner's one choke point."""

from __future__ import annotations

import io
import os
import random
import types

import pytest

from fleetrun import secrets
from fleetrun.errors import HostFailure, UsageError
from fleetrun.lines import Lines, LineSplitter
from fleetrun.models import Host, HostResult, Outcome, OutputLine
from fleetrun.redact import MASK, Redactor
from fleetrun.runner import HostContext, RunOptions, _output_callback, execute

SECRET = "s3cr3t-Hunter2"
PASSPHRASE = "correct horse"
WEB1, WEB2 = Host("web01", "10.0.0.1"), Host("web02", "10.0.0.2")


@pytest.fixture(autouse=True)
def _no_remembered_secrets():
    secrets.forget_all()
    yield
    secrets.forget_all()


def test_text_and_bytes_are_masked_longest_first():
    redactor = Redactor([SECRET, "s3cr3t", None, ""])
    assert redactor.text(f"pw={SECRET} short=s3cr3t") == "pw=*** short=***"
    assert redactor.data(f"pw={SECRET}\n".encode()) == b"pw=***\n"
    assert redactor.data(b"\xff" + SECRET.encode() + b"\xfe") == b"\xff***\xfe"  # masked before decoding
    assert Redactor(["pässwörd"]).data("x pässwörd y".encode()) == b"x *** y"


def test_run_options_never_show_their_secrets():
    options = RunOptions(key_passphrase=PASSPHRASE, password=SECRET)
    assert PASSPHRASE not in repr(options) and SECRET not in repr(options)
    assert options.password == SECRET


def test_no_secrets_changes_nothing():
    redactor = Redactor([None, ""])
    assert not redactor
    assert redactor.text("a *** b") == "a *** b"
    result = HostResult(WEB1, Outcome.OK, stdout=b"out")
    assert redactor.result(result) is result
    stream = redactor.stream()
    assert stream.feed(b"abc") == b"abc" and stream.flush() == b""


def test_a_truncated_output_loses_the_piece_of_a_secret_at_its_end():
    redactor = Redactor([SECRET])
    assert redactor.data(b"head " + SECRET[:5].encode(), cut=True) == b"head ***"
    assert redactor.data(b"head " + SECRET[:5].encode()) == b"head " + SECRET[:5].encode()  # not cut: just text
    assert redactor.data(b"head " + SECRET.encode(), cut=True) == b"head ***"
    assert redactor.data(b"nothing here", cut=True) == b"nothing here"


def feed_in_pieces(redactor: Redactor, data: bytes, cuts: list[int]) -> tuple[bytes, int]:
    """(what the stream masker gives back for `data` cut at `cuts`, the most it ever held back)."""
    stream = redactor.stream()
    out, held, start = [], 0, 0
    for cut in [*cuts, len(data)]:
        chunk = data[start:cut]
        given = stream.feed(chunk)
        out.append(given)
        start = cut
        held = max(held, len(stream._pending))
    out.append(stream.flush())
    return b"".join(out), held


def test_a_secret_split_across_chunks_is_masked_at_every_split_point():
    redactor = Redactor([SECRET])
    data = f"user=deploy password={SECRET}\nagain:{SECRET}".encode()
    expected = redactor.data(data)
    assert SECRET.encode() not in expected
    for cut in range(len(data) + 1):
        assert feed_in_pieces(redactor, data, [cut])[0] == expected, cut


def test_streaming_equals_masking_the_whole_under_random_chunking():
    rng = random.Random(8)
    alphabet = b"ab\n*"
    for _ in range(400):
        pool = ["".join(rng.choice("ab*") for _ in range(rng.randint(1, 5))) for _ in range(rng.randint(1, 3))]
        redactor = Redactor(pool)
        data = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        cuts = sorted(rng.sample(range(len(data) + 1), rng.randint(0, min(8, len(data) + 1))))
        masked, held = feed_in_pieces(redactor, data, cuts)
        assert masked == redactor.data(data), (pool, data, cuts)
        assert held <= redactor.longest - 1  # memory stays bounded by the longest secret


def test_a_line_that_cannot_start_a_secret_passes_at_once():
    stream = Redactor([SECRET]).stream()
    assert stream.feed(b"progress 10%\n") == b"progress 10%\n"  # nothing held: the line shows live
    assert stream.feed(b"pw=s3c") == b"pw="  # could be the start of the secret: held back
    assert stream.feed(b"ond\n") == b"s3cond\n"
    assert stream.feed(b"tail s3") == b"tail "
    assert stream.flush() == b"s3"  # end of stream: it was not a secret after all


def test_a_result_is_masked_everywhere_it_can_carry_text():
    redactor = Redactor([SECRET, PASSPHRASE])
    result = HostResult(WEB1, Outcome.FAILED, exit_code=1, stdout=f"a {SECRET}\n".encode(),
                        stderr=f"b {PASSPHRASE}".encode()[:-3], stderr_truncated=True,
                        error=f"exit status 1 ({SECRET})", details=(f"/etc/{PASSPHRASE}: failed",))
    masked = redactor.result(result)
    assert masked.stdout == b"a ***\n"
    assert masked.stderr == b"b ***"
    assert masked.error == "exit status 1 (***)"
    assert masked.details == ("/etc/***: failed",)
    assert (masked.exit_code, masked.outcome, masked.host) == (1, Outcome.FAILED, WEB1)


class Sink:
    def __init__(self) -> None:
        self.chunks: list[tuple[str, bytes]] = []
        self.closed = False

    def write(self, stream: str, chunk: bytes) -> None:
        assert not self.closed
        self.chunks.append((stream, chunk))

    def close(self) -> None:
        self.closed = True


def test_output_tap_masks_before_the_sink_and_the_line_splitters():
    events: list[object] = []
    sink = Sink()
    splitters = {name: LineSplitter(WEB1, name, events.append) for name in ("stdout", "stderr")}
    tap = _output_callback(splitters, sink, Redactor([SECRET]))
    assert tap is not None
    tap("stdout", b"pw=" + SECRET[:4].encode())
    tap("stderr", SECRET.encode() + b"\n")
    tap("stdout", SECRET[4:].encode() + b"\nend " + SECRET[:2].encode())
    tap.finish()
    for splitter in splitters.values():
        splitter.flush()
    raw = {name: b"".join(chunk for stream, chunk in sink.chunks if stream == name) for name in ("stdout", "stderr")}
    assert raw == {"stdout": b"pw=***\nend " + SECRET[:2].encode(), "stderr": b"***\n"}
    lines = [(line.stream, line.text) for event in events if isinstance(event, Lines) for line in event.lines]
    assert lines == [("stderr", b"***"), ("stdout", b"pw=***"), ("stdout", b"end " + SECRET[:2].encode())]


class Collect:
    wants_lines = True

    def __init__(self) -> None:
        self.lines: list[OutputLine] = []
        self.results: dict[str, HostResult] = {}

    def on_start(self, hosts): pass

    def on_started(self, host): pass

    def on_line(self, line):
        self.lines.append(line)

    def on_result(self, result):
        self.results[result.host.name] = result

    def on_finish(self, summary): pass


class FakeSession:
    host_key_verified = True

    def close(self) -> None:
        pass


def test_the_runner_masks_output_results_errors_and_warnings(mocker, monkeypatch):
    """execute() with the SSH edge faked: every path by which a host's text reaches a renderer is masked."""
    monkeypatch.setenv("FLEET_PW", SECRET + "\nnot part of it")

    def connect(host, settings, password, cancel, lean=False):
        assert password == SECRET  # the first line only
        if host.name == "web02":
            raise HostFailure(Outcome.AUTH_FAILED, f"server said: bad password {password}")
        return FakeSession()

    mocker.patch("fleetrun.ssh.connect", side_effect=connect)
    def settings(hosts, options, warn, passwords=None):
        warn(f"known_hosts: odd line mentioning {PASSPHRASE}")
        return types.SimpleNamespace(gateways=None)

    mocker.patch("fleetrun.runner.connect_settings", side_effect=settings)

    def task(session, host: Host, context: HostContext) -> HostResult:
        assert context.on_output is not None
        context.on_output("stdout", b"conf: " + SECRET[:6].encode())
        context.on_output("stdout", SECRET[6:].encode() + b"\n")
        context.on_output("stderr", PASSPHRASE.encode())
        return HostResult(host, Outcome.FAILED, exit_code=3, stdout=f"conf: {SECRET}\n".encode(),
                          stderr=PASSPHRASE.encode(), error=f"exit status 3 {SECRET}")

    def crash(session, host, context):
        raise RuntimeError(f"bug holding {SECRET}")

    hosts = [Host("web01", "10.0.0.1", password_env="FLEET_PW"), Host("web02", "10.0.0.2", password_env="FLEET_PW")]
    renderer, err = Collect(), io.StringIO()
    summary = execute(hosts, task, RunOptions(key_passphrase=PASSPHRASE), renderer, err)
    assert summary.total == 2
    assert "FLEET_PW" not in os.environ  # taken: no child process inherits it
    web01, web02 = renderer.results["web01"], renderer.results["web02"]
    assert (web01.stdout, web01.stderr, web01.error) == (b"conf: ***\n", b"***", "exit status 3 ***")
    assert web02.error == "server said: bad password ***"
    assert [(line.stream, line.text) for line in renderer.lines] == [("stdout", b"conf: ***"), ("stderr", b"***")]
    assert err.getvalue() == f"fleetrun: warning: known_hosts: odd line mentioning {MASK}\n"

    crashed = Collect()
    execute(hosts[:1], crash, RunOptions(), crashed, io.StringIO())
    assert crashed.results["web01"].error == "internal error: RuntimeError: bug holding ***"


@pytest.mark.parametrize(("error", "debug", "code", "line"), [
    (RuntimeError, "", 70, "fleetrun: internal error: RuntimeError: bug near *** and *** "
                           "(set FLEETRUN_DEBUG=1 for a traceback)"),
    (RuntimeError, "1", 70, "fleetrun: internal error: RuntimeError: bug near *** and ***"),
    (UsageError, "", 2, "fleetrun: error: bug near *** and ***"),
])
def test_error_lines_and_tracebacks_never_show_a_secret(tmp_path, mocker, monkeypatch, capsys, error, debug, code,
                                                         line):
    from fleetrun import runner
    from fleetrun.cli import main

    inventory = tmp_path / "inv.yaml"
    inventory.write_text("hosts:\n  h1: {address: 127.0.0.1, port: 9, password_env: FLEET_PW}\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("FLEET_PW", SECRET)
    monkeypatch.setenv("KEY_PASS", PASSPHRASE)
    monkeypatch.setenv("FLEETRUN_DEBUG", debug)

    def fails(hosts, *args, **kwargs):
        runner.resolve_passwords(hosts, None)  # what the real one does first
        raise error(f"bug near {SECRET} and {PASSPHRASE}")

    mocker.patch("fleetrun.runner.execute", side_effect=fails)
    with pytest.raises(SystemExit) as done:
        main(["exec", "-i", str(inventory), "true", "-H", "all", "--key-passphrase-env", "KEY_PASS"])
    assert done.value.code == code
    err = capsys.readouterr().err
    assert SECRET not in err and PASSPHRASE not in err
    assert err.splitlines()[-1] == line
    if debug:
        assert "Traceback (most recent call last)" in err and 'raise error(f"bug near' in err
