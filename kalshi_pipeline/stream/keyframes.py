"""Keyframes: when to store the books rebuilt so far, so that the book of a market at time T
reads half an hour of deltas at most, not the day since its snapshot.

Kalshi sends a market's snapshot once per subscription; its deltas may follow for days. Every
KEYFRAME_S of receive time (on the clock: :00 and :30), for each engine whose frames the writer
loads, the books that changed in the half hour just ended are stored as keyframes
(`warehouse/books.py`, KEYFRAME_SQL, run in the same transaction as the batch that passed the
boundary). An engine's WebSocket frames land in the order they were received, so once the writer
has decoded one of its frames received after K, every frame of that engine up to K is in the
batch or committed before it. The books are rebuilt in DuckDB from the stored rows (nothing is
kept in memory here), so a predecessor's runs picked up half-way get keyframes too.
"""

from __future__ import annotations

from kalshi_pipeline.stream.landing import Record, SegmentFile

KEYFRAME_S = 1800.0


class KeyframeClock:
    """Per engine (the pid in its segments' names), the next boundary to store keyframes at."""

    def __init__(self, every_s: float = KEYFRAME_S) -> None:
        self.every_ns = int(every_s * 1e9)
        self._next: dict[int, int] = {}
        self._seen: dict[int, int] = {}

    def frame(self, rec: Record, seg: SegmentFile) -> None:
        """A WebSocket frame of `seg`'s engine was decoded into the batch."""
        if seg.pid not in self._next:  # the engine's first frame here: its next boundary
            self._next[seg.pid] = (rec.received_ns // self.every_ns + 1) * self.every_ns
        if rec.received_ns > self._seen.get(seg.pid, 0):
            self._seen[seg.pid] = rec.received_ns

    def due(self) -> list[tuple[int, int, int]]:
        """Windows (engine pid, start ns, end ns] whose keyframes are due: every engine's
        boundaries passed by the frames decoded since the last call, oldest first."""
        out: list[tuple[int, int, int]] = []
        for pid, seen in self._seen.items():
            boundary = self._next[pid]
            while seen > boundary:
                out.append((pid, boundary - self.every_ns, boundary))
                boundary += self.every_ns
            self._next[pid] = boundary
        self._seen.clear()
        return sorted(out, key=lambda w: (w[2], w[0]))
