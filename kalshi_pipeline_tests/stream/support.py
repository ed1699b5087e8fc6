"""Helpers of the engine scenario tests: settle the exchange and compare with the ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from kalshi_pipeline.bench.analysis import ledger_key
from kalshi_pipeline.stream.landing import Kind, list_segments, read_records
from kalshi_pipeline_tests.helpers import (
    feed_events,
    read_ledger,
    sent_indices,
    stored_ws_keys,
    wait_for,
)


def settle_and_compare(sim: Any, db: Path, engine: Any) -> tuple[Counter[Any], Counter[Any]]:
    """Pause the exchange, wait until the engine has stored everything it was sent, compare."""
    sim.set_faults(pause_updates=True)
    indices = sent_indices(sim.sessions())
    top = max(indices, default=-1)

    def flushed() -> list[dict[str, Any]] | None:
        lines = read_ledger(sim.ledger_path)
        return lines if len(lines) > top else None

    ledger = wait_for(flushed, timeout=10, what="the ledger flushed")
    expected = Counter(ledger_key(ledger[i]) for i in indices)

    def caught_up() -> bool:
        return sum(stored_ws_keys(db).values()) >= sum(expected.values())

    wait_for(caught_up, timeout=60, interval=0.5, what="every sent frame stored")
    return expected, stored_ws_keys(db)


def kinds(db: Path) -> list[str]:
    return [row[2] for row in feed_events(db)]


def landing_ws_frames(landing: Path) -> list[bytes]:
    """Every WebSocket frame in the landing log's files (what a killed process leaves)."""
    out = []
    for seg in list_segments(landing):
        records, _, _ = read_records(seg, 0, max_bytes=1 << 30)
        out += [r.payload for r in records if r.kind == Kind.WS_FRAME]
    return out


def landing_ticker_frames(landing: Path) -> set[tuple[int, int]]:
    out = set()
    for seg in list_segments(landing):
        records, _, _ = read_records(seg, 0, max_bytes=1 << 30)
        for r in records:
            if r.kind == Kind.WS_FRAME and r.payload.startswith(b'{"type":"ticker"'):
                out.add((seg.segment_id, r.offset))
    return out


def stream_process(
    sim: Any,
    db: Path,
    *flags: str,
    ws_url: str | None = None,
    env: dict[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen[str]:
    """`kalshi-pipeline stream --database db <flags>` against `sim`, in a process of its own
    (stderr captured as text)."""
    environ = dict(os.environ, KALSHI_REST_URL=sim.rest_url, KALSHI_WS_URL=ws_url or sim.ws_url)
    environ.update(env or {})
    cmd = [sys.executable, "-m", "kalshi_pipeline.cli", "stream", "--database", str(db), *flags]
    return subprocess.Popen(cmd, env=environ, stderr=subprocess.PIPE, text=True, **popen)
