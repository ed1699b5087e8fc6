"""What `make run` shows of `dagster dev`'s output: stack traces folded into one line.

`dagster dev` passes on everything its run workers print, and Dagster prints every failure event
with its whole stack. A stream run that is taken over (a mode switch) or stopped ends with an
interrupt: normal operation, two stack traces of thirty lines each. The terminal keeps the line
that says what happened and the error's own message; the stack stays in the Dagster UI (the
run's event log) and in the run's compute logs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import IO

STACK_STARTS = (b"Stack Trace:", b"Traceback (most recent call last):")
FOLDED = b"  (stack trace left out here: the run's page in the Dagster UI has it)\n"


def fold_stack_traces(lines: Iterable[bytes]) -> Iterator[bytes]:
    """The lines, with each stack trace (its header and the indented or blank lines after it)
    replaced by one line. The error's message, which precedes Dagster's stack and ends
    Python's, is kept."""
    in_stack = False
    for line in lines:
        body = line.rstrip(b"\r\n")
        if body.strip() in STACK_STARTS:
            in_stack = True
            yield FOLDED
            continue
        if in_stack:
            if not body.strip() or body[:1] in (b" ", b"\t"):
                continue
            in_stack = False
        yield line


def pump(source: IO[bytes], sink: IO[bytes]) -> threading.Thread:
    """Copy `source` to `sink` line by line through `fold_stack_traces`, on a daemon thread."""

    def run() -> None:
        try:
            for line in fold_stack_traces(iter(source.readline, b"")):
                sink.write(line)
                sink.flush()
        except (OSError, ValueError):
            pass  # the terminal or the child went away: nothing left to show

    thread = threading.Thread(target=run, name="dev-output", daemon=True)
    thread.start()
    return thread
