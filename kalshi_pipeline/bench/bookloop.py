"""The loopback limit for order-book delta frames: a bare client that only receives and decodes
the simulator's order-book firehose.

`python -m kalshi_pipeline.bench.bookloop WS_URL REST_URL FRAMES` lists the order-book firehose's
markets (series `KXSIMBOOK`) over REST, connects with the project's `KalshiWebSocket`
(uncompressed, as the firehose scenarios run), subscribes to `orderbook_delta` for all of them
as the stream does (`use_yes_price: false`, one command), decodes every `orderbook_delta` frame
as the stream's writer does (the bulk decoder on chunks, `decode_frame` for what it leaves) and
stores nothing. It prints one JSON line as the
ticker loopback does: delta frames, seconds from the first delta frame to the last, frames per
second, the CPU time per frame over the same span, and the bytes per frame on the socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from kalshi_pipeline.bench.loopback import ChunkDecoder, dev_socket, receive_frames
from kalshi_pipeline.kalshi.auth import Signer
from kalshi_pipeline.kalshi.bulk import delta_columns
from kalshi_pipeline.kalshi.devkey import ensure_dev_key, kalshi_home
from kalshi_pipeline.kalshi.messages import BookDelta, decode_frame
from kalshi_pipeline.kalshi.rest import RestClient
from kalshi_pipeline.kalshi.settings import KalshiSettings
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
    ws = dev_socket(url, compression=False)
    await ws.connect()
    got = await receive_frames(
        ws,
        lambda: ws.subscribe(["orderbook_delta"], market_tickers=tickers, use_yes_price=False),
        DELTA_PREFIX,
        ChunkDecoder(delta_columns, lambda data: isinstance(decode_frame(data), BookDelta)),
        frames,
        timeout_s,
    )
    return {
        "frames": got.frames,
        "markets": len(tickers),
        "decode_errors": got.decode_errors,
        "seconds": round(got.seconds, 4),
        "msgs_per_s": got.msgs_per_s,
        "complete": got.frames >= frames,
        "cpu_us_per_delta": got.per_frame(got.cpu_s * 1e6),
        "wire_bytes_per_delta": got.per_frame(got.wire_bytes),
        "payload_bytes_per_delta": got.per_frame(got.payload_bytes),
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
