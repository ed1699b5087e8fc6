"""The progress display while the benchmark runs: one bar per scenario and a live status.

On a terminal it is a rich progress display (bars fill by expected duration); elsewhere (CI,
pytest) it prints one line when a scenario starts, every 15 s while it runs, and when it ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

PLAIN_EVERY_S = 15.0


class Display:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description:<11}"),
            BarColumn(bar_width=24),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            disable=not self.live,
        )
        self._task: TaskID | None = None
        self._name = ""
        self._started = 0.0
        self._expected = 1.0
        self._last_plain = 0.0
        self._failed = False

    def __enter__(self) -> Display:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    @contextmanager
    def scenario(self, name: str, expected_s: float) -> Iterator[None]:
        self._name = name
        self._started = time.monotonic()
        self._expected = max(1.0, expected_s)
        self._last_plain = self._started
        self._task = self.progress.add_task(name, total=self._expected, status="starting")
        if not self.live:
            self.console.print(f"bench: {name}: started (about {expected_s:.0f}s)")
        self._failed = False
        ok = False
        try:
            yield
            ok = not self._failed
        finally:
            took = time.monotonic() - self._started
            self.progress.update(
                self._task, completed=self._expected, status="done" if ok else "[red]failed"
            )
            if not self.live:
                self.console.print(f"bench: {name}: {'done' if ok else 'failed'} in {took:.0f}s")
            self._task = None

    def status(self, text: str) -> None:
        """Show what the running scenario is doing now; cheap enough to call in wait loops."""
        now = time.monotonic()
        text = escape(text)
        if self._task is not None:
            done = min(self._expected * 0.99, now - self._started)
            self.progress.update(self._task, completed=done, status=text)
        if not self.live and now - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain = now
            self.console.print(f"bench: {self._name}: {text}")

    def failed(self, text: str) -> None:
        """The running scenario failed (the suite goes on with the next)."""
        self._failed = True
        self.note(f"[red]{self._name} failed:[/] {escape(text)}")

    def note(self, text: str) -> None:
        if self.live:
            self.progress.console.print(text)
        else:
            self.console.print(f"bench: {text}")
