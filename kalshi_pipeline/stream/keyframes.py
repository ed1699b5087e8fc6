"""Keyframes: the books the writer rebuilds as it loads, stored now and then so that the book of
a market at time T reads an hour of deltas at most, not the day since its snapshot.

Kalshi sends a market's snapshot once per subscription; its deltas may follow for days. While the
writer decodes frames it applies each delta to the book of its run (one engine's connection: the
landing segment's pid, the sid, the market; see warehouse/schema.py on order books) and, when
KEYFRAME_S of receive time have passed since the run's last snapshot or keyframe, adds the book
after that delta to the batch, in the same transaction as the delta. Only runs whose snapshot
this writer decoded get keyframes (a predecessor's run picked up half-way has no known book);
their books are then found from the snapshot, more slowly, but the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kalshi_pipeline.kalshi.messages import BookDelta, BookSnapshot
from kalshi_pipeline.stream.landing import Record, SegmentFile

KEYFRAME_S = 1800.0
MAX_RUNS = 500_000  # markets x connections remembered; past it, forget all (books go on, slower)


@dataclass(slots=True)
class _Run:
    yes: dict[Decimal, Decimal]
    no: dict[Decimal, Decimal]
    snapshot_ns: int
    due_ns: int


class Keyframes:
    def __init__(self, every_s: float = KEYFRAME_S) -> None:
        self.every_ns = int(every_s * 1e9)
        self._runs: dict[tuple[int, int | None, str], _Run] = {}

    def snapshot(self, snap: BookSnapshot, rec: Record, seg: SegmentFile) -> None:
        """A run starts (or starts again, after a resync) from this snapshot."""
        if len(self._runs) >= MAX_RUNS:
            self._runs.clear()
        yes: dict[Decimal, Decimal] = {}
        no: dict[Decimal, Decimal] = {}
        for levels, side in ((yes, snap.yes), (no, snap.no)):
            for price, size in side:
                levels[price] = levels.get(price, Decimal(0)) + size
        self._runs[(seg.pid, snap.sid, snap.market_ticker)] = _Run(
            yes, no, rec.received_ns, rec.received_ns + self.every_ns
        )

    def delta(self, d: BookDelta, rec: Record, seg: SegmentFile) -> dict[str, Any] | None:
        """Apply `d` to its run's book; the keyframe row when one is due, else None."""
        run = self._runs.get((seg.pid, d.sid, d.market_ticker))
        if run is None or d.price is None or d.delta is None:
            return None
        levels = run.yes if d.side == "yes" else run.no if d.side == "no" else None
        if levels is None:
            return None
        size = levels.get(d.price, Decimal(0)) + d.delta
        if size:
            levels[d.price] = size
        else:
            levels.pop(d.price, None)
        if rec.received_ns < run.due_ns:
            return None
        run.due_ns = rec.received_ns + self.every_ns
        return {
            "market_ticker": d.market_ticker,
            "sid": d.sid,
            "yes_levels": [{"price": p, "size": n} for p, n in sorted(run.yes.items())],
            "no_levels": [{"price": p, "size": n} for p, n in sorted(run.no.items())],
            "snapshot_at": run.snapshot_ns,
            "received_at": rec.received_ns,
            "landing_segment": seg.segment_id,
            "landing_offset": rec.offset,
        }
