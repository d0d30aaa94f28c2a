"""Masks the secrets a run holds (passwords, passphrases) in text, in whole outputs and in output streams."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from fleetrun.models import HostResult
from fleetrun.spill import Spill, rewrite

MASK = "***"
_MASK_BYTES = MASK.encode()


class Redactor:
    """Replaces every occurrence of each secret by ***; immutable, so one is shared by every worker thread.

    Secrets are matched as their UTF-8 bytes in output (before it is decoded for display, so a secret is
    masked even when it sits next to bytes that are not UTF-8) and as text in messages. When one secret
    contains another, the longer one is masked whole.
    """

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # Longest first: regex alternation takes the first alternative that matches at a position, so a
        # secret that contains another is never left half masked.
        unique = sorted({secret for secret in secrets if secret}, key=len, reverse=True)
        self._text = re.compile("|".join(map(re.escape, unique))) if unique else None
        encoded = sorted({secret.encode() for secret in unique}, key=len, reverse=True)
        self._bytes = re.compile(b"|".join(map(re.escape, encoded))) if encoded else None
        self._encoded = tuple(encoded)
        self._starts = frozenset(secret[0] for secret in encoded)
        self.longest = len(encoded[0]) if encoded else 0

    def __bool__(self) -> bool:
        return self._bytes is not None

    def text(self, text: str) -> str:
        """`text` with every secret masked."""
        return text if self._text is None else self._text.sub(MASK, text)

    def data(self, data: bytes, *, cut: bool = False) -> bytes:
        """`data` with every secret masked. `cut`: the data was truncated, so a secret may have been cut in
        two at its end; the piece of it that is there is masked too."""
        if self._bytes is None:
            return data
        masked = self._bytes.sub(_MASK_BYTES, data) if self._holds_secret(data) else data
        if cut:
            start = self._partial_tail(masked)
            if start < len(masked):
                masked = masked[:start] + _MASK_BYTES
        return masked

    def stream(self) -> StreamRedactor:
        """A masker for one output stream that arrives in chunks."""
        return StreamRedactor(self)

    def result(self, result: HostResult) -> HostResult:
        """`result` with its output, error line and details masked."""
        if self._bytes is None:
            return result
        stdout, stdout_file = self._output(result.stdout, result.stdout_file, result.stdout_truncated)
        stderr, stderr_file = self._output(result.stderr, result.stderr_file, result.stderr_truncated)
        return replace(
            result,
            stdout=stdout,
            stderr=stderr,
            stdout_file=stdout_file,
            stderr_file=stderr_file,
            error=None if result.error is None else self.text(result.error),
            details=tuple(self.text(line) for line in result.details),
        )

    def _output(self, head: bytes, spill: Spill | None, cut: bool) -> tuple[bytes, Spill | None]:
        """One stream masked: in memory as a whole, or a spilled one streamed into a new spill file."""
        if spill is None:
            return self.data(head, cut=cut), None
        mask = self.stream()
        masked = rewrite(head, spill, mask.feed, lambda: mask.flush(cut=cut))
        spill.close()  # the unmasked copy: gone now
        return masked

    def _holds_secret(self, data: bytes) -> bool:
        # A substring test per secret runs at memory speed; the regex alternation of several secrets is ten
        # times slower, and most output holds no secret at all.
        return any(secret in data for secret in self._encoded)

    def _partial_tail(self, data: bytes) -> int:
        """Where the longest end of `data` that is the start of a secret (but not a whole one) begins;
        len(data) when there is none. At most `longest` - 1 bytes from the end."""
        for start in range(max(0, len(data) - self.longest + 1), len(data)):
            if data[start] in self._starts:
                tail = data[start:]
                if any(len(secret) > len(tail) and secret.startswith(tail) for secret in self._encoded):
                    return start
        return len(data)


class StreamRedactor:
    """Masks one stream chunk by chunk: a secret split across chunks is still masked.

    It holds back only the end of what it was given that could be the start of a secret (never more than
    the longest secret less one byte), so memory stays bounded and a line that cannot hide a secret passes
    at once. `flush` at the end of the stream gives back what was held.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        pattern = self._redactor._bytes
        if pattern is None:
            return chunk
        data = self._pending + chunk
        # From `hold` on, the data may be the start of a secret that continues in the next chunk. Before it,
        # every position is decided: a secret starting there lies wholly in `data` or not at all.
        hold = self._redactor._partial_tail(data)
        if not self._redactor._holds_secret(data):
            self._pending = data[hold:]
            return data[:hold]
        parts: list[bytes] = []
        position = 0
        for match in pattern.finditer(data):
            if match.start() >= hold:
                break
            parts += [data[position:match.start()], _MASK_BYTES]
            position = match.end()  # may pass `hold`: that secret is complete
        keep = max(position, hold)
        parts.append(data[position:keep])
        self._pending = data[keep:]
        return b"".join(parts)

    def flush(self, *, cut: bool = False) -> bytes:
        """What was held back, masked; the stream is over (`cut`: it was truncated, see Redactor.data)."""
        pending, self._pending = self._pending, b""
        return self._redactor.data(pending, cut=cut)
