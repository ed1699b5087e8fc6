"""Overlap: when two engines landed frames at the same time, and which segments a writer loads.

Each engine appends to segments of its own (named `<start_ms>-<pid>-<n>`). A writer loads its own
segments and those of engines that are gone (a crashed run, a predecessor that handed over); the
segments of another live engine are that engine's to load. Two engines receive the same feed while
a successor waits to take over (a handover), so frames received in such a window may be in the
log twice: the writer marks the ticks it decodes from inside a window, and `warehouse/loads.py`
stores each of them only if it is not stored already. Outside windows nothing is compared, so the
steady state pays nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil

from kalshi_pipeline.stream.landing import SegmentFile
from kalshi_pipeline.warehouse.identity import engine_pid

# Receive times of one frame in two processes differ by milliseconds; segment times are coarser
# (a file's mtime, a name's start): widen each window by this much on both sides.
MARGIN_NS = 10_000_000_000
START_SLACK_S = 2.0  # psutil's create time vs the segment name's clock
ALIVE_CACHE_S = 1.0


@dataclass(frozen=True, slots=True)
class Window:
    start_ns: int
    end_ns: int

    def __contains__(self, at_ns: int) -> bool:
        return self.start_ns <= at_ns <= self.end_ns


class Engines:
    """Which landing writers are alive, cached for a second (asked every write cycle)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, int], tuple[float, bool]] = {}

    def alive(self, pid: int, since_ms: int) -> bool:
        """Whether the process that started writing at `since_ms` as `pid` still runs (a reused
        pid, younger than the segment, does not count)."""
        if pid == engine_pid():
            return True
        now = time.monotonic()
        hit = self._cache.get((pid, since_ms))
        if hit is not None and now - hit[0] < ALIVE_CACHE_S:
            return hit[1]
        try:
            proc = psutil.Process(pid)
            alive = (
                proc.create_time() <= since_ms / 1000 + START_SLACK_S
                and proc.status() != psutil.STATUS_ZOMBIE
            )
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            alive = False
        except psutil.AccessDenied:
            alive = True
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[(pid, since_ms)] = (now, alive)
        return alive

    def loadable(self, segments: list[SegmentFile]) -> list[SegmentFile]:
        """This process's segments and those of engines that are gone."""
        return [s for s in segments if s.pid == engine_pid() or not self.alive(s.pid, s.start_ms)]

    def windows(self, segments: list[SegmentFile]) -> list[Window]:
        """Times in which two or more engines were landing frames, widened by MARGIN_NS."""
        spans: dict[int, list[int]] = {}
        now_ns = time.time_ns()
        for seg in segments:
            start = seg.start_ms * 1_000_000
            if self.alive(seg.pid, seg.start_ms):
                end = now_ns
            else:
                try:
                    end = seg.path.stat().st_mtime_ns
                except FileNotFoundError:
                    continue
            span = spans.setdefault(seg.pid, [start, end])
            span[0] = min(span[0], start)
            span[1] = max(span[1], end)
        if len(spans) < 2:
            return []
        ordered = sorted(spans.values())
        found: list[Window] = []
        for i, (a_start, a_end) in enumerate(ordered):
            for b_start, b_end in ordered[i + 1 :]:
                start, end = max(a_start, b_start), min(a_end, b_end)
                if start <= end:
                    found.append(Window(start - MARGIN_NS, end + MARGIN_NS))
        found.sort(key=lambda w: w.start_ns)
        merged: list[Window] = []
        for w in found:
            if merged and w.start_ns <= merged[-1].end_ns:
                last = merged[-1]
                merged[-1] = Window(last.start_ns, max(last.end_ns, w.end_ns))
            else:
                merged.append(w)
        return merged


def in_any(windows: list[Window], at_ns: int) -> bool:
    return any(at_ns in w for w in windows)
