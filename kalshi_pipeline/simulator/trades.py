"""Trades: the `trade` channel payload and the recent-trades tape behind `GET /markets/trades`."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from kalshi_pipeline.simulator.wire import DOLLARS, count_fp, dumps, rfc3339

TAPE_LENGTH = 100_000


@dataclass(slots=True, frozen=True)
class Trade:
    seq: int
    trade_id: str
    ticker: str
    price: int
    size: int
    taker_bought_yes: bool
    ts_us: int

    def _sides(self) -> tuple[str, str]:
        # A taker buying YES lifts an offer with a bid; a taker selling YES (buying NO) hits it
        # with an ask, which is how the §3.9 example pairs "no" with "ask".
        return ("yes", "bid") if self.taker_bought_yes else ("no", "ask")

    def ws_msg(self) -> bytes:
        outcome, book = self._sides()
        ts_ms = self.ts_us // 1000
        return dumps(
            {
                "trade_id": self.trade_id,
                "market_ticker": self.ticker,
                "yes_price_dollars": DOLLARS[self.price],
                "no_price_dollars": DOLLARS[100 - self.price],
                "count_fp": count_fp(self.size),
                "taker_side": outcome,
                "taker_outcome_side": outcome,
                "taker_book_side": book,
                "is_block_trade": False,
                "ts": ts_ms // 1000,
                "ts_ms": ts_ms,
            }
        )

    def rest_json(self) -> dict[str, Any]:
        outcome, book = self._sides()
        return {
            "count_fp": count_fp(self.size),
            "created_time": rfc3339(self.ts_us),
            "is_block_trade": False,
            "no_price_dollars": DOLLARS[100 - self.price],
            "taker_book_side": book,
            "taker_outcome_side": outcome,
            "taker_side": outcome,
            "ticker": self.ticker,
            "trade_id": self.trade_id,
            "yes_price_dollars": DOLLARS[self.price],
        }


class TradeTape:
    """The most recent trades, oldest first; `seq` grows by one per trade."""

    def __init__(self, maxlen: int = TAPE_LENGTH) -> None:
        self.trades: deque[Trade] = deque(maxlen=maxlen)
        self.next_seq = 1

    def add(
        self, trade_id: str, ticker: str, price: int, size: int, bought: bool, ts_us: int
    ) -> Trade:
        t = Trade(self.next_seq, trade_id, ticker, price, size, bought, ts_us)
        self.next_seq += 1
        self.trades.append(t)
        return t
