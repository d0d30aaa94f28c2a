"""Several renderers fed the same events (screen, progress, --out-dir, --junit); --quiet's filter."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fleetrun.models import Host, HostResult, OutputLine, RunSummary
from fleetrun.output.base import Renderer


class Fanout:
    """Passes every event to each renderer in order. One that raises (a closed pipe on stdout) is dropped
    and its error re-raised after the others had the event: files still get written when the screen is gone."""

    def __init__(self, renderers: Sequence[Renderer]) -> None:
        self.renderers = list(renderers)
        self.wants_lines = any(renderer.wants_lines for renderer in self.renderers)
        self.wants_started = any(getattr(renderer, "wants_started", True) for renderer in self.renderers)
        self._line_renderers = [renderer for renderer in self.renderers if renderer.wants_lines]

    def on_start(self, hosts: Sequence[Host]) -> None:
        self._each(lambda renderer: renderer.on_start(hosts))

    def on_started(self, host: Host) -> None:
        self._each(lambda renderer: renderer.on_started(host))

    def on_line(self, line: OutputLine) -> None:
        for renderer in self._line_renderers:  # the hot path at 2 million lines: no closure per call
            try:
                renderer.on_line(line)
            except BaseException:
                self._drop(renderer)
                raise

    def on_result(self, result: HostResult) -> None:
        self._each(lambda renderer: renderer.on_result(result))

    def on_finish(self, summary: RunSummary) -> None:
        self._each(lambda renderer: renderer.on_finish(summary))

    def _each(self, call: Callable[[Renderer], None]) -> None:
        failure: BaseException | None = None
        for renderer in list(self.renderers):
            try:
                call(renderer)
            except BaseException as error:
                self._drop(renderer)
                failure = failure or error
        if failure is not None:
            raise failure

    def _drop(self, renderer: Renderer) -> None:
        self.renderers = [r for r in self.renderers if r is not renderer]
        self._line_renderers = [r for r in self._line_renderers if r is not renderer]


class OnlyProblems:
    """--quiet: the wrapped renderer sees only hosts that did not end ok, and no live lines."""

    wants_lines = False
    wants_started = False

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer

    def on_start(self, hosts: Sequence[Host]) -> None:
        self.renderer.on_start(hosts)

    def on_started(self, host: Host) -> None:
        pass

    def on_line(self, line: OutputLine) -> None:
        pass

    def on_result(self, result: HostResult) -> None:
        if not result.ok:
            self.renderer.on_result(result)

    def on_finish(self, summary: RunSummary) -> None:
        self.renderer.on_finish(summary)
