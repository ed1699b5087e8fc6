"""Order-book payloads: the `orderbook_snapshot` and `orderbook_delta` msgs of the WebSocket
channel and the `orderbook_fp` object of REST (kalshi-protocol.md §3.8, §4.4).

Both sides are bids. NO levels are NO-leg prices unless the subscription asked for
`use_yes_price`, which reports a NO bid at n cents as its YES price, 100 - n.

Where the notes are silent the simulator chooses: snapshot levels are ascending by the price as
reported (REST's order, best YES bid last; with `use_yes_price` the NO side's best level, the
lowest YES price, comes first); a snapshot of a market the exchange does not list is
`{"market_ticker": T, "market_id": ""}`, as one capture of an unknown market shows.
"""

from __future__ import annotations

from kalshi_pipeline.simulator.book import NO, YES, Book, Delta
from kalshi_pipeline.simulator.wire import DOLLARS, count_fp, rfc3339


def signed_fp(centi: int) -> str:
    """A signed change in hundredths as a 2-dp string: -350 -> `-3.50`."""
    return ("-" if centi < 0 else "") + count_fp(abs(centi))


def _levels(book: Book, side: str, yes_scale: bool) -> list[list[str]]:
    levels = book.levels(side)
    if side == NO and yes_scale:
        return [[DOLLARS[100 - p], count_fp(s)] for p, s in reversed(levels)]
    return [[DOLLARS[p], count_fp(s)] for p, s in levels]


def snapshot_msg(ticker: str, market_id: str, book: Book | None, yes_scale: bool) -> bytes:
    """The `orderbook_snapshot` msg; a side's key is left out when that side is empty."""
    parts = [f'"market_ticker":"{ticker}","market_id":"{market_id}"']
    if book is not None:
        for side, key in ((YES, "yes_dollars_fp"), (NO, "no_dollars_fp")):
            levels = _levels(book, side, yes_scale)
            if levels:
                inner = ",".join(f'["{p}","{s}"]' for p, s in levels)
                parts.append(f'"{key}":[{inner}]')
    return ("{" + ",".join(parts) + "}").encode()


def delta_msg(ticker: str, market_id: str, delta: Delta, ts_us: int, yes_scale: bool) -> bytes:
    """The `orderbook_delta` msg: signed `delta_fp` at one price, `ts` (RFC3339) and `ts_ms`."""
    side, price, d = delta
    shown = 100 - price if side == NO and yes_scale else price
    return (
        f'{{"market_ticker":"{ticker}","market_id":"{market_id}",'
        f'"price_dollars":"{DOLLARS[shown]}","delta_fp":"{signed_fp(d)}","side":"{side}",'
        f'"ts":"{rfc3339(ts_us)}","ts_ms":{ts_us // 1000}}}'
    ).encode()


def rest_book(book: Book, depth: int) -> dict[str, list[list[str]]]:
    """REST's `orderbook_fp`: both sides ascending, best last; `depth` > 0 keeps that many best
    levels per side (still worst to best), 0 keeps all (§4.4: the conflicting third-party report
    that depth hides the top of the book is not followed; Kalshi's own demo kept the best)."""
    out: dict[str, list[list[str]]] = {}
    for side, key in ((YES, "yes_dollars"), (NO, "no_dollars")):
        levels = book.levels(side)
        if depth:
            levels = levels[-depth:]
        out[key] = [[DOLLARS[p], count_fp(s)] for p, s in levels]
    return out
