"""The loopback limit: a bare client that only receives and decodes the firehose.

`python -m kalshi_pipeline.bench.loopback WS_URL FRAMES [--capture PATH --capture-n N]` connects
with the project's `KalshiWebSocket`, subscribes to `ticker`, decodes every ticker frame with
`decode_tick` and stores nothing. It prints one JSON line: frames, seconds from the first ticker
frame to the last, and frames per second; the process's CPU time over the same span and the bytes
that arrived on the socket (compressed, with `--compression`) against the frames' own bytes. With
`--capture` it also writes the first N raw ticker frames (length-prefixed) for the predecessor's
write path to replay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from pathlib import Path

from kalshi_pipeline.kalshi.auth import Signer
from kalshi_pipeline.kalshi.devkey import ensure_dev_key, kalshi_home
from kalshi_pipeline.kalshi.errors import FrameDecodeError, KalshiWebSocketError
from kalshi_pipeline.kalshi.messages import decode_tick
from kalshi_pipeline.kalshi.websocket import KalshiWebSocket

TICKER_PREFIX = b'{"type":"ticker"'
LENGTH = struct.Struct("<I")


def write_frames(path: Path, frames: list[bytes]) -> None:
    with path.open("wb") as f:
        for frame in frames:
            f.write(LENGTH.pack(len(frame)))
            f.write(frame)


def read_frames(path: Path) -> list[bytes]:
    data = path.read_bytes()
    out: list[bytes] = []
    pos = 0
    while pos + LENGTH.size <= len(data):
        (n,) = LENGTH.unpack_from(data, pos)
        pos += LENGTH.size
        out.append(data[pos : pos + n])
        pos += n
    return out


async def receive(
    url: str, frames: int, timeout_s: float, capture_n: int, compression: bool = False
) -> dict[str, object]:
    dev = ensure_dev_key(kalshi_home())
    ws = KalshiWebSocket(
        url, Signer.from_file(dev.key_id, dev.private_key_path), compression=compression
    )
    await ws.connect()
    # from here on (the handshake done) the CPU and the bytes are the feed's: the subscribe
    # exchange adds a few hundred bytes in all, nothing per tick
    cpu_first = time.process_time()
    wire_first = ws.wire_bytes
    captured: list[bytes] = []
    n = errors = payload = 0
    first = last = 0.0
    cpu_last = 0.0
    wire_last = 0

    async def watchdog() -> None:  # one timer for the run, not one per frame
        await asyncio.sleep(timeout_s)
        await ws.close()

    guard = asyncio.create_task(watchdog())
    try:
        await ws.subscribe(["ticker"])
        while n < frames:
            try:
                frame = await ws.recv()
            except KalshiWebSocketError:
                break  # closed by the watchdog or the server
            data = frame.data
            if not data.startswith(TICKER_PREFIX):
                continue
            if n == 0:
                first = time.perf_counter()
            payload += len(data)
            try:
                decode_tick(data)
            except FrameDecodeError:
                errors += 1
            n += 1
            if len(captured) < capture_n:
                captured.append(data)
        last = time.perf_counter()
        cpu_last = time.process_time()
        wire_last = ws.wire_bytes
    finally:
        guard.cancel()
        await ws.close()
    seconds = last - first if n > 1 else 0.0
    return {
        "frames": n,
        "decode_errors": errors,
        "seconds": round(seconds, 4),
        "msgs_per_s": round(n / seconds, 1) if seconds > 0 else None,
        "complete": n >= frames,
        "compression": ws.compressed,
        "cpu_us_per_tick": round((cpu_last - cpu_first) / n * 1e6, 2) if n else None,
        "wire_bytes_per_tick": round((wire_last - wire_first) / n, 1) if n else None,
        "payload_bytes_per_tick": round(payload / n, 1) if n else None,
        "captured": captured,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kalshi_pipeline.bench.loopback")
    p.add_argument("ws_url")
    p.add_argument("frames", type=int)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--capture", type=Path)
    p.add_argument("--capture-n", type=int, default=0)
    p.add_argument("--compression", action="store_true", help="offer permessage-deflate")
    args = p.parse_args(argv)
    result = asyncio.run(
        receive(args.ws_url, args.frames, args.timeout, args.capture_n, args.compression)
    )
    captured = result.pop("captured")
    if args.capture is not None:
        write_frames(args.capture, captured)  # type: ignore[arg-type]
        result["captured_frames"] = len(captured)  # type: ignore[arg-type]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
