"""fleetrun.become's negotiation against a scripted channel: the prompt, the marker, the one write, chunk cuts."""

from __future__ import annotations

import shlex

import pytest

from fleetrun import become
from fleetrun.become import BecomeRequest, CrlfToLf, negotiate, sudo_words
from fleetrun.ssh.wrapper import wrap_command

ID = "0123456789abcdef"
PROMPT = f"[fleetrun-sudo:{ID}] ".encode()
MARKER = f"\x1efleetrun-become-ok-{ID}\n".encode()
PTY_MARKER = f"\x1efleetrun-become-ok-{ID}\r\n".encode()


class Scripted:
    """A channel that delivers a scripted list of events, one step per read; `write`s are recorded.

    Each step is a list of (stream, bytes), or "end" (the command ended), or a callable that gets the writes
    so far and returns a step (to answer what was written)."""

    def __init__(self, *steps: object) -> None:
        self.steps = list(steps)
        self.writes: list[bytes] = []
        self.is_ended = False
        self.clock = 0.0

    def read(self) -> list[tuple[str, bytes]]:
        while self.steps:
            step = self.steps.pop(0)
            if callable(step):
                step = step(self.writes)
            if step == "end":
                self.is_ended = True
                return []
            return list(step)  # type: ignore[call-overload]
        return []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def wait(self, timeout: float) -> None:
        self.clock += 1.0 if not self.steps else 0.0

    def ended(self) -> bool:
        return self.is_ended

    def cancelled(self) -> bool:
        return False


def request(password: str | None = "hunter2", **options: object) -> BecomeRequest:
    return BecomeRequest(user="root", run_id=ID, password=password, **options)  # type: ignore[arg-type]


def test_password_written_once_after_the_prompt_then_marker_and_output_are_separated():
    channel = Scripted([("stderr", b"lecture\n" + PROMPT)],
                       lambda writes: [("stderr", MARKER + b"warning\n"), ("stdout", b"0\n")])
    result = negotiate(channel, request())
    assert result.status == become.OK and result.written
    assert channel.writes == [b"hunter2\n"]
    assert result.output == (("stderr", b"lecture\n"), ("stderr", b"warning\n"), ("stdout", b"0\n"))


def test_nothing_is_written_before_the_prompt_arrives_even_in_pieces():
    cut = len(PROMPT) // 2
    steps = [[("stderr", PROMPT[:cut])], [], [("stderr", PROMPT[cut:])], [("stderr", MARKER)]]
    channel = Scripted(*steps)
    writes_at: list[int] = []
    original = channel.read

    def read() -> list[tuple[str, bytes]]:
        writes_at.append(len(channel.writes))
        return original()

    channel.read = read  # type: ignore[method-assign]
    result = negotiate(channel, request())
    assert result.status == become.OK and channel.writes == [b"hunter2\n"]
    assert writes_at[:3] == [0, 0, 0]  # the half prompt and the silence got no answer
    assert result.output == ()  # neither half of the prompt is output


@pytest.mark.parametrize("cut", range(1, len(MARKER)))
def test_the_marker_cut_anywhere_is_still_removed(cut):
    channel = Scripted([("stderr", b"x" + MARKER[:cut])], [("stderr", MARKER[cut:] + b"out")])
    result = negotiate(channel, request(password=None))
    assert result.status == become.OK and not channel.writes
    assert b"".join(data for _, data in result.output) == b"xout"


def test_marker_without_prompt_nopasswd_writes_nothing():
    result = negotiate(channel := Scripted([("stderr", MARKER)]), request())
    assert result.status == become.OK and channel.writes == [] and not result.written


def test_the_prompt_again_is_a_rejected_password_and_nothing_more_is_written():
    channel = Scripted([("stderr", PROMPT)], [("stderr", b"Sorry, try again.\n" + PROMPT)])
    result = negotiate(channel, request())
    assert result.status == become.REJECTED and channel.writes == [b"hunter2\n"]
    assert result.last_line == "Sorry, try again."


def test_a_translated_sudo_changes_nothing():
    channel = Scripted([("stderr", PROMPT)], [("stderr", b"Entschuldigung, versuchen Sie es noch einmal.\n"
                                              + PROMPT)])
    assert negotiate(channel, request()).status == become.REJECTED


def test_a_prompt_without_a_password_is_password_required_and_nothing_is_written():
    channel = Scripted([("stderr", PROMPT)])
    result = negotiate(channel, request(password=None))
    assert result.status == become.PASSWORD_REQUIRED and channel.writes == []


def test_ended_after_the_password_is_rejected_and_before_any_prompt_is_no_prompt():
    after = negotiate(Scripted([("stderr", PROMPT)], [("stderr", b"1 incorrect password attempt\n")], "end"),
                      request())
    assert after.status == become.REJECTED
    before = negotiate(Scripted([("stderr", b"sudo: sorry, you must have a tty to run sudo\n")], "end"), request())
    assert before.status == become.NO_PROMPT and before.last_line == "sudo: sorry, you must have a tty to run sudo"


def test_silence_is_a_timeout_within_the_become_timeout():
    channel = Scripted(*[[] for _ in range(100)])
    result = negotiate(channel, request(timeout=3), clock=lambda: channel.clock)
    assert result.status == become.TIMEOUT and channel.writes == []
    assert channel.clock <= 4


def test_a_prompt_like_line_after_the_marker_is_the_commands_output():
    # `echo '[sudo] password:'; cat`, or even our own prompt text: once the marker is seen nothing is watched
    channel = Scripted([("stderr", MARKER + PROMPT + b"[sudo] password: ")])
    result = negotiate(channel, request())
    assert result.status == become.OK and channel.writes == []
    assert result.output == (("stderr", PROMPT + b"[sudo] password: "),)


def test_on_a_pty_one_stream_carries_it_all_and_sudos_newline_after_the_password_is_dropped():
    channel = Scripted([("stdout", PROMPT)], [("stdout", b"\r")], [("stdout", b"\n" + PTY_MARKER + b"0\r\n")])
    result = negotiate(channel, request(pty=True))
    assert result.status == become.OK and channel.writes == [b"hunter2\n"]
    assert result.output == (("stdout", b"0\r\n"),)


def test_crlf_back_to_lf_across_chunks():
    crlf = CrlfToLf()
    out = crlf.feed(b"a\r") + crlf.feed(b"\nb\r\n") + crlf.feed(b"c\r") + crlf.feed(b"x") + crlf.feed(b"\r")
    assert out + crlf.flush() == b"a\nb\nc\rx\r"


def test_the_remote_line_has_no_password_and_sudo_outside_the_wrapper():
    req = request()
    assert "%" not in req.prompt.decode()  # sudo -p expands %u %h
    line = wrap_command("id -u", become=req)
    assert "hunter2" not in line and "hunter2" not in repr(req)
    outer = shlex.split(line)
    assert outer[:3] == ["exec", "sh", "-c"] and outer[4:] == ["fleetrun", "id -u"]
    words = shlex.split(outer[3])
    assert words[:9] == ["exec", *sudo_words(req)]
    assert words[9:11] == ["sh", "-c"] and words[12:] == ["fleetrun", "$1", "$PPID"]
    assert words[11].startswith("L=$2; ")  # the wrapper's lifeline: the sshd pid the outer sh passed
    assert "fleetrun-become-ok-" in words[11]


def test_run_ids_are_unique_hex():
    ids = {become.new_run_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 16 and int(i, 16) >= 0 for i in ids)
