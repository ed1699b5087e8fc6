"""The clock of the simulated exchange: Poisson ticker updates and the hourly rollover.

Updates arrive as a Poisson process at `rate` per second over all live active markets
(exponential gaps), processed in batches on each wake-up so thousands per second stay cheap. Each
update is one step of the market's order book (book.py): its order-book deltas, then its ticker,
then its trades are published, all stamped with the same time. The
rollover follows kalshi-protocol.md §3.9: the next event is `created` shortly before the current
one closes and opens at that close, so an hourly market is always open; `determined` and
`settled` follow the close; no lifecycle event marks the scheduled open or close.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import time
from collections.abc import Callable

from kalshi_pipeline.simulator import lifecycle
from kalshi_pipeline.simulator.book import diff, initial_quote, step
from kalshi_pipeline.simulator.model import (
    ACTIVE,
    CLOSED,
    DETERMINED,
    FINALIZED,
    INITIALIZED,
    Event,
    Market,
    encode_ticker,
    new_market_id,
)
from kalshi_pipeline.simulator.runtime import Runtime
from kalshi_pipeline.simulator.universe import Builder, HourlySeries

MAX_BACKLOG_S = 1.0
"""Past this much lag (an overloaded loop) the missed updates are skipped, not replayed."""
MAX_SLEEP_S = 0.25


def now_us() -> int:
    return time.time_ns() // 1000


class Engine:
    def __init__(
        self, rt: Runtime, builder: Builder, hourly: HourlySeries, seed: int | None
    ) -> None:
        self.rt = rt
        self.builder = builder
        self.hourly = hourly
        self.rng = random.Random(None if seed is None else seed + 1)
        self._agenda: list[tuple[int, int, Callable[[int], None]]] = []
        self._order = itertools.count()

    # Set-up.

    def bootstrap(self, long_lived: int, start_us: int) -> None:
        """List the starting universe and publish each active market's opening ticker."""
        b = self.builder
        b.long_lived(long_lived, start_us)
        b.extras(start_us)
        h = self.hourly
        life = h.lifetime_us
        close = h.first_close(start_us)
        previous = h.build(close - life, close - 2 * life - h.lead_us, ACTIVE)
        determined_at = min(close - life + h.determine_after_us, start_us)
        self._determine_event(previous, determined_at)
        self._settle_event(
            previous, min(determined_at + h.settle_after_us, start_us), publish=False
        )
        current = h.build(close, close - life - h.lead_us, ACTIVE)
        for m in current.markets:
            m.updated_us = max(m.open_us, m.created_us)
        self._plan_close(current, close)
        self._at(close - h.lead_us, lambda t: self._create(close + life, t))
        self._run_agenda(start_us)
        for m in self.rt.exchange.markets.values():
            if m.status == ACTIVE and m.live:
                self._publish(m, start_us)

    def _at(self, when_us: int, action: Callable[[int], None]) -> None:
        heapq.heappush(self._agenda, (when_us, next(self._order), action))

    def _run_agenda(self, now: int) -> None:
        agenda = self._agenda
        while agenda and agenda[0][0] <= now:
            _, _, action = heapq.heappop(agenda)
            action(now)

    # Rollover.

    def _create(self, close: int, now: int) -> None:
        h = self.hourly
        event = h.build(close, now, INITIALIZED)
        hub = self.rt.hub
        hub.publish_lifecycle(lifecycle.EVENT_LIFECYCLE, lifecycle.event_created(event))
        for m in event.markets:
            hub.publish_lifecycle(lifecycle.MARKET_LIFECYCLE, lifecycle.created(m))
            hub.record_book(m, now // 1000)
        self._at(close - h.lifetime_us, lambda t: self._open(event, t))
        self._plan_close(event, close)
        self._at(close - h.lead_us, lambda t: self._create(close + h.lifetime_us, t))

    def _plan_close(self, event: Event, close: int) -> None:
        h = self.hourly
        determine_at = close + h.determine_after_us
        self._at(close, lambda t: self._close(event, t))
        self._at(determine_at, lambda t: self._determine_event(event, t, publish=True))
        self._at(determine_at + h.settle_after_us, lambda t: self._settle_event(event, t))

    def _open(self, event: Event, now: int) -> None:
        ex = self.rt.exchange
        for m in event.markets:
            strike = m.floor_strike or 50.0
            fair = int(min(max(50 - (strike - 50) * 5, 3), 97))
            before = m.quote.book
            m.quote = initial_quote(self.builder.rng, fair, traded=False)
            ex.set_status(m, ACTIVE, now)
            # the opening orders arrive as deltas on an order book that was empty
            self.rt.hub.publish_book(m, diff(before, m.quote.book), now)
            self._publish(m, now)

    def _close(self, event: Event, now: int) -> None:
        ex = self.rt.exchange
        for m in event.markets:
            if m.status == ACTIVE:
                ex.set_status(m, CLOSED, now)

    def _determine_event(self, event: Event, now: int, publish: bool = False) -> None:
        ex = self.rt.exchange
        value = 50 + self.builder.rng.uniform(-12, 12)
        for m in event.markets:
            if m.status in (ACTIVE, INITIALIZED):
                ex.set_status(m, CLOSED, now)
            m.result = "yes" if value > (m.floor_strike or 0.0) else "no"
            m.settlement_c = 100 if m.result == "yes" else (m.settlement_floor_c or 0)
            m.determination_us = now
            ex.set_status(m, DETERMINED, now)
            if publish:
                self.rt.hub.publish_lifecycle(lifecycle.MARKET_LIFECYCLE, lifecycle.determined(m))

    def _settle_event(self, event: Event, now: int, publish: bool = True) -> None:
        ex = self.rt.exchange
        for m in event.markets:
            m.settled_us = now
            ex.set_status(m, FINALIZED, now)
            if publish:
                self.rt.hub.publish_lifecycle(lifecycle.MARKET_LIFECYCLE, lifecycle.settled(m))

    # Ticker updates.

    def _publish(self, m: Market, now: int) -> None:
        msg = encode_ticker(m.market_id, m.ticker, m.quote, now)
        m.msg = msg
        m.msg_index = self.rt.hub.publish_ticker(m.ticker, msg, now // 1000)

    def update_one(self, now: int) -> None:
        live = self.rt.exchange.live_active()
        if not live:
            return
        rng = self.rng
        m = live[rng.randrange(len(live))]
        if m.exchange_index in self.rt.faults.paused_shards:
            return  # no trading on a paused shard, so nothing moves there
        change = step(m.quote, rng, self.rt.config.book_depth_events)
        hub = self.rt.hub
        hub.publish_book(m, change.deltas, now)
        self._publish(m, now)
        for fill in change.fills:
            trade = self.rt.tape.add(
                new_market_id(rng.getrandbits(128)),
                m.ticker,
                fill.price,
                fill.size,
                fill.taker_bought_yes,
                now,
            )
            hub.publish_trade(m.ticker, trade.ws_msg(), now // 1000)

    async def run(self, rate: float) -> None:
        rng = self.rng
        max_batch = max(1000, int(rate * 0.1))
        next_update = time.monotonic() + (rng.expovariate(rate) if rate > 0 else math.inf)
        while True:
            mono = time.monotonic()
            now = now_us()
            self._run_agenda(now)
            if mono - next_update > MAX_BACKLOG_S or self.rt.faults.pause_updates:
                next_update = mono
            budget = max_batch
            while next_update <= mono and budget and not self.rt.faults.pause_updates:
                self.update_one(now)
                next_update += rng.expovariate(rate)
                budget -= 1
            delay = MAX_SLEEP_S
            if next_update != math.inf:
                delay = min(delay, next_update - time.monotonic())
            if self._agenda:
                delay = min(delay, (self._agenda[0][0] - now_us()) / 1e6)
            await asyncio.sleep(max(delay, 0.0))
