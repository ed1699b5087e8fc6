"""The loopback limit: a bare client that only receives and decodes the firehose.

`python -m kalshi_pipeline.bench.loopback WS_URL FRAMES [--capture PATH --capture-n N]` connects
with the project's `KalshiWebSocket`, subscribes to `ticker`, decodes every ticker frame as the
stream's writer does (`ChunkDecoder`: the bulk decoder on chunks of frames, the per-frame decoder
for any frame it leaves) and stores nothing. It prints one JSON line: frames, seconds from the
first ticker frame to the last, and frames per second; the process's CPU time over the same span
and the bytes that arrived on the socket (compressed, with `--compression`) against the frames'
own bytes. With `--capture` it also writes the first N raw ticker frames (length-prefixed) for
the predecessor's write path to replay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from kalshi_pipeline.kalshi.auth import Signer
from kalshi_pipeline.kalshi.bulk import Columns, ticker_columns
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


class ChunkDecoder:
    """Decodes frames as the writer does: `bulk` on each chunk of `chunk` frames, then
    `one_by_one` on the frames it leaves (False or a FrameDecodeError: an error). Calling it
    keeps the frame; `flush()` decodes what is kept and returns the errors."""

    def __init__(
        self,
        bulk: Callable[[list[bytes]], Columns],
        one_by_one: Callable[[bytes], bool],
        chunk: int = 2_000,
    ) -> None:
        self.bulk = bulk
        self.one_by_one = one_by_one
        self.chunk = chunk
        self.kept: list[bytes] = []
        self.errors = 0

    def __call__(self, data: bytes) -> None:
        self.kept.append(data)
        if len(self.kept) >= self.chunk:
            self.flush()

    def flush(self) -> int:
        kept, self.kept = self.kept, []
        if kept:
            for i in self.bulk(kept).rest:
                try:
                    if not self.one_by_one(kept[i]):
                        self.errors += 1
                except FrameDecodeError:
                    self.errors += 1
        return self.errors


@dataclass
class Received:
    """What a bare client counted: frames of the wanted type, from the first to the last."""

    frames: int = 0
    decode_errors: int = 0
    payload_bytes: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0
    wire_bytes: int = 0
    captured: list[bytes] = field(default_factory=list)

    def per_frame(self, total: float) -> float | None:
        return round(total / self.frames, 2) if self.frames else None

    @property
    def msgs_per_s(self) -> float | None:
        return round(self.frames / self.seconds, 1) if self.seconds > 0 else None


async def receive_frames(
    ws: KalshiWebSocket,
    subscribe: Callable[[], Awaitable[object]],
    prefix: bytes,
    decodes: ChunkDecoder,
    frames: int,
    timeout_s: float,
    capture_n: int = 0,
) -> Received:
    """On a connected socket: subscribe, then receive until `frames` frames starting with
    `prefix` have arrived (others, such as acks and snapshots, are skipped) or `timeout_s`
    passed; each is decoded by `decodes`, the last chunk before the clock stops. The CPU
    time and the socket's bytes are counted from the handshake's end (the subscribe exchange
    adds a few hundred bytes in all, nothing per frame); then closes the socket."""
    out = Received()
    cpu_first = time.process_time()
    wire_first = ws.wire_bytes
    first = last = 0.0
    cpu_last = 0.0
    wire_last = 0

    async def watchdog() -> None:  # one timer for the run, not one per frame
        await asyncio.sleep(timeout_s)
        await ws.close()

    guard = asyncio.create_task(watchdog())
    try:
        await subscribe()
        while out.frames < frames:
            try:
                frame = await ws.recv()
            except KalshiWebSocketError:
                break  # closed by the watchdog or the server
            data = frame.data
            if not data.startswith(prefix):
                continue
            if out.frames == 0:
                first = time.perf_counter()
            out.payload_bytes += len(data)
            decodes(data)
            out.frames += 1
            if len(out.captured) < capture_n:
                out.captured.append(data)
        out.decode_errors = decodes.flush()
        last = time.perf_counter()
        cpu_last = time.process_time()
        wire_last = ws.wire_bytes
    finally:
        guard.cancel()
        await ws.close()
    out.seconds = last - first if out.frames > 1 else 0.0
    out.cpu_s = cpu_last - cpu_first
    out.wire_bytes = wire_last - wire_first
    return out


def dev_socket(url: str, compression: bool) -> KalshiWebSocket:
    """A socket signed with the simulator's dev key."""
    dev = ensure_dev_key(kalshi_home())
    return KalshiWebSocket(
        url, Signer.from_file(dev.key_id, dev.private_key_path), compression=compression
    )


async def receive(
    url: str, frames: int, timeout_s: float, capture_n: int, compression: bool = False
) -> dict[str, object]:
    ws = dev_socket(url, compression)
    await ws.connect()
    got = await receive_frames(
        ws,
        lambda: ws.subscribe(["ticker"]),
        TICKER_PREFIX,
        ChunkDecoder(ticker_columns, lambda data: decode_tick(data) is not None),
        frames,
        timeout_s,
        capture_n,
    )
    return {
        "frames": got.frames,
        "decode_errors": got.decode_errors,
        "seconds": round(got.seconds, 4),
        "msgs_per_s": got.msgs_per_s,
        "complete": got.frames >= frames,
        "compression": ws.compressed,
        "cpu_us_per_tick": got.per_frame(got.cpu_s * 1e6),
        "wire_bytes_per_tick": got.per_frame(got.wire_bytes),
        "payload_bytes_per_tick": got.per_frame(got.payload_bytes),
        "captured": got.captured,
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
