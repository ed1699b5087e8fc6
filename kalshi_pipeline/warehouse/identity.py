"""Which process the warehouse's files name: the stream engine's, even from its store process.

The engine stores through a process of its own (`stream/store.py`): that process holds the file
and serves it, but the endpoint file, the start announcement and the landing segments it loads
name the engine's pid, the one a successor asks to hand over, the one whose segments are its own,
the one an operator sees in `status`. The store process lives and dies with its engine (it ends
when its engine's end of their pipe closes; the engine ends when the store process dies), so a
client that sees the engine's pid gone sees the owner gone.
"""

from __future__ import annotations

import os

_acting_for: int | None = None


def engine_pid() -> int:
    """The pid this process writes into the warehouse's files and counts as its own."""
    return _acting_for if _acting_for is not None else os.getpid()


def act_for(pid: int) -> None:
    """From now on this process stands for the engine `pid` (the store process, at start)."""
    global _acting_for
    _acting_for = pid
