"""The objects one running simulator shares between its REST, WebSocket and control handlers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kalshi_pipeline.kalshi.ratelimit import TokenBucket
from kalshi_pipeline.simulator.auth import KeyRegistry
from kalshi_pipeline.simulator.bookfirehose import BookFirehose
from kalshi_pipeline.simulator.config import READ_BUCKET_SECONDS, READ_REQUEST_COST, SimConfig
from kalshi_pipeline.simulator.faults import Faults
from kalshi_pipeline.simulator.firehose import Firehose
from kalshi_pipeline.simulator.hub import Hub
from kalshi_pipeline.simulator.ledger import Ledger
from kalshi_pipeline.simulator.model import Exchange
from kalshi_pipeline.simulator.trades import TradeTape

if TYPE_CHECKING:
    from kalshi_pipeline.simulator.ws import Session, SessionStats


@dataclass
class Counters:
    rest_requests: int = 0
    rest_401: int = 0
    rest_404: int = 0
    rest_429: int = 0
    rest_5xx: int = 0
    handshakes_accepted: int = 0
    handshakes_unauthorized: int = 0
    handshakes_refused: int = 0
    ticker_frames_sent: int = 0
    book_firehose_frames_sent: int = 0
    snapshot_frames_sent: int = 0
    data_frames_sent: int = 0
    control_frames_sent: int = 0
    malformed_sent: int = 0
    pings_sent: int = 0
    connections_dropped: int = 0


@dataclass
class Runtime:
    config: SimConfig
    exchange: Exchange
    hub: Hub
    ledger: Ledger
    faults: Faults
    keys: KeyRegistry
    firehose: Firehose
    book_firehose: BookFirehose = field(default_factory=BookFirehose)
    tape: TradeTape = field(default_factory=TradeTape)
    counters: Counters = field(default_factory=Counters)
    sessions: dict[int, Session] = field(default_factory=dict)
    """Open WebSocket sessions by connection id."""
    session_stats: list[SessionStats] = field(default_factory=list)
    """Every session ever accepted, open or closed."""
    buckets: dict[str, TokenBucket] = field(default_factory=dict)
    no_sessions: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while no WebSocket session is open (shutdown waits on it)."""
    started_s: int = field(default_factory=lambda: int(time.time()))

    def rest_allowed(self, identity: str) -> bool:
        """Take one request's tokens from the caller's read bucket (key id or client IP)."""
        bucket = self.buckets.get(identity)
        if bucket is None:
            rate = self.config.rest_tokens_per_s
            bucket = self.buckets[identity] = TokenBucket(rate, capacity=READ_BUCKET_SECONDS * rate)
        return bucket.try_acquire(READ_REQUEST_COST)
