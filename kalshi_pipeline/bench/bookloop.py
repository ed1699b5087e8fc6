"""The loopback limit for order-book delta frames: a bare client that only receives and decodes
the simulator's order-book firehose.

`python -m kalshi_pipeline.bench.bookloop WS_URL REST_URL FRAMES` lists the order-book firehose's
markets (series `KXSIMBOOK`) over REST, connects with the project's `KalshiWebSocket`
(uncompressed, as the firehose scenarios run), subscribes to `orderbook_delta` for all of them
as the stream does (`use_yes_price: false`, one command), decodes every `orderbook_delta` frame
with `decode_frame` (the stream's decoder) and stores nothing. It prints one JSON line as the
ticker loopback does: delta frames, seconds from the first delta frame to the last, frames per
second, the CPU time per frame over the same span, and the bytes per frame on the socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from kalshi_pipeline.kalshi.auth import Signer
from kalshi_pipeline.kalshi.devkey import ensure_dev_key, kalshi_home
from kalshi_pipeline.kalshi.errors import FrameDecodeError, KalshiWebSocketError
from kalshi_pipeline.kalshi.messages import BookDelta, decode_frame
from kalshi_pipeline.kalshi.rest import RestClient
from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.kalshi.websocket import KalshiWebSocket
from kalshi_pipeline.simulator.universe import BOOK_FIREHOSE_SERIES

DELTA_PREFIX = b'{"type":"orderbook_delta"'


class NoBookFirehoseError(RuntimeError):
    """The simulator lists no order-book firehose markets."""


def firehose_tickers(rest_url: str, ws_url: str) -> list[str]:
    """The order-book firehose's markets, as the simulator lists them."""
    dev = ensure_dev_key(kalshi_home())
    settings = KalshiSettings.for_env("local", rest_url=rest_url, ws_url=ws_url)
    client = RestClient(settings, signer=Signer.from_file(dev.key_id, dev.private_key_path))
    tickers = sorted(m.ticker for m in client.get_markets(series_ticker=BOOK_FIREHOSE_SERIES))
    if not tickers:
        raise NoBookFirehoseError(
            f"{rest_url} lists no {BOOK_FIREHOSE_SERIES} markets: start the simulator with "
            "--book-firehose N (N >= 2)"
        )
    return tickers


async def receive(url: str, tickers: list[str], frames: int, timeout_s: float) -> dict[str, object]:
    dev = ensure_dev_key(kalshi_home())
    ws = KalshiWebSocket(url, Signer.from_file(dev.key_id, dev.private_key_path), compression=False)
    await ws.connect()
    cpu_first = time.process_time()
    wire_first = ws.wire_bytes
    n = errors = payload = 0
    first = last = 0.0
    cpu_last = 0.0
    wire_last = 0

    async def watchdog() -> None:  # one timer for the run, not one per frame
        await asyncio.sleep(timeout_s)
        await ws.close()

    guard = asyncio.create_task(watchdog())
    try:
        await ws.subscribe(["orderbook_delta"], market_tickers=tickers, use_yes_price=False)
        while n < frames:
            try:
                frame = await ws.recv()
            except KalshiWebSocketError:
                break  # closed by the watchdog or the server
            data = frame.data
            if not data.startswith(DELTA_PREFIX):
                continue  # snapshots and acks
            if n == 0:
                first = time.perf_counter()
            payload += len(data)
            try:
                if not isinstance(decode_frame(data), BookDelta):
                    errors += 1
            except FrameDecodeError:
                errors += 1
            n += 1
        last = time.perf_counter()
        cpu_last = time.process_time()
        wire_last = ws.wire_bytes
    finally:
        guard.cancel()
        await ws.close()
    seconds = last - first if n > 1 else 0.0
    return {
        "frames": n,
        "markets": len(tickers),
        "decode_errors": errors,
        "seconds": round(seconds, 4),
        "msgs_per_s": round(n / seconds, 1) if seconds > 0 else None,
        "complete": n >= frames,
        "cpu_us_per_delta": round((cpu_last - cpu_first) / n * 1e6, 2) if n else None,
        "wire_bytes_per_delta": round((wire_last - wire_first) / n, 1) if n else None,
        "payload_bytes_per_delta": round(payload / n, 1) if n else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kalshi_pipeline.bench.bookloop")
    p.add_argument("ws_url")
    p.add_argument("rest_url")
    p.add_argument("frames", type=int)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    try:
        tickers = firehose_tickers(args.rest_url, args.ws_url)
    except NoBookFirehoseError as exc:
        print(f"bookloop: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(asyncio.run(receive(args.ws_url, tickers, args.frames, args.timeout))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
