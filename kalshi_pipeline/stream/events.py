"""Feed events: every connect, subscribe, disconnect, fallback, reconciliation, stretch and error.

They go through the landing log like frames, so they are stored exactly once and in order,
even while the database is busy, and they reach the process log too.
"""

from __future__ import annotations

import logging

import msgspec

from kalshi_pipeline.stream.landing import Kind, LandingLog, Source
from kalshi_pipeline.stream.stats import EngineStats

log = logging.getLogger("kalshi_pipeline.feed")

_SOURCES = {
    "websocket": Source.WEBSOCKET,
    "http": Source.HTTP,
    "engine": Source.ENGINE,
    "writer": Source.WRITER,
}
_ENCODER = msgspec.json.Encoder()


class FeedEvents:
    def __init__(self, landing: LandingLog, stats: EngineStats) -> None:
        self.landing = landing
        self.stats = stats

    def emit(self, source: str, kind: str, detail: str = "") -> tuple[str, int]:
        self.stats.last_event = f"{source} {kind}"
        log.info("%s %s %s", source, kind, detail)
        payload = _ENCODER.encode({"kind": kind, "detail": detail})
        return self.landing.append(Kind.FEED_EVENT, _SOURCES.get(source, Source.ENGINE), payload)
