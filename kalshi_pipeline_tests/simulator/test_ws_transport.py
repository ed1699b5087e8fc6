"""The WebSocket transport as Kalshi runs it since autumn 2026: permessage-deflate when the client
offers it (and only then), and commands in binary frames as well as text."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.helpers import wait_for
from kalshi_pipeline_tests.simulator.support import (
    WS_PATH,
    TestSigner,
    error_code,
    expand,
    recv,
    recv_until,
    strip_emitted,
    ws_connect,
)

DEFLATE_TAIL = b"\x00\x00\xff\xff"


def subscribe(channels: list[str], cid: int = 1) -> dict[str, Any]:
    return {"id": cid, "cmd": "subscribe", "params": {"channels": channels}}


# A minimal client that reads frames off the socket itself, so a test can see the RSV1 bit (set
# on compressed messages, RFC 7692) instead of trusting a library that decompresses silently.


class RawSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.headers: dict[str, str] = {}

    @classmethod
    async def open(cls, ws_url: str, signer: TestSigner, offer_deflate: bool) -> RawSocket:
        url = urlsplit(ws_url)
        assert url.hostname is not None and url.port is not None
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        lines = [
            f"GET {WS_PATH} HTTP/1.1",
            f"Host: {url.hostname}:{url.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in signer.ws_headers().items()),
        ]
        if offer_deflate:
            lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status, *header_lines = raw.decode().split("\r\n")
        assert status.startswith("HTTP/1.1 101"), raw
        sock = cls(reader, writer)
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                sock.headers[name.strip().lower()] = value.strip()
        return sock

    async def send(self, payload: bytes, opcode: int = 0x1) -> None:
        """One final, masked client frame."""
        mask = os.urandom(4)
        n = len(payload)
        head = bytes((0x80 | opcode,))
        if n < 126:
            head += bytes((0x80 | n,))
        else:
            head += bytes((0x80 | 126,)) + struct.pack("!H", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + mask + masked)
        await self.writer.drain()

    async def frame(self) -> tuple[bool, int, bytes]:
        """The next server frame: (RSV1 set, opcode, payload as sent)."""
        b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), 10)
        assert b0 & 0x80, "the simulator sends every message in one frame"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return bool(b0 & 0x40), b0 & 0x0F, await self.reader.readexactly(n)

    async def messages(self, count: int) -> list[tuple[bool, bytes]]:
        """`count` text messages (pings skipped), each with its RSV1 bit and raw payload."""
        out: list[tuple[bool, bytes]] = []
        while len(out) < count:
            rsv1, opcode, payload = await self.frame()
            if opcode == 0x1:
                out.append((rsv1, payload))
        return out

    def close(self) -> None:
        self.writer.close()


def test_deflate_is_negotiated_when_the_client_offers_it(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(markets=100, rate=200)

    async def run() -> list[tuple[bool, bytes]]:
        sock = await RawSocket.open(sim.ws_url, signer, offer_deflate=True)
        try:
            assert sock.headers["sec-websocket-extensions"].startswith("permessage-deflate")
            await sock.send(json.dumps(subscribe(["ticker"])).encode())
            return await sock.messages(30)
        finally:
            sock.close()

    frames = asyncio.run(run())
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    inflated = []
    for rsv1, payload in frames:
        assert rsv1, "a message on a deflate connection goes out compressed"
        inflated.append(inflate.decompress(payload + DEFLATE_TAIL))
    decoded = [json.loads(text) for text in inflated]
    assert decoded[0] == {"type": "subscribed", "id": 1, "msg": {"channel": "ticker", "sid": 1}}
    tickers = [f for f in decoded[1:] if f["type"] == "ticker"]
    assert tickers and all(isinstance(f["sending_ts_ms"], int) for f in tickers)
    # Compressed on the wire: the same frames are larger once inflated.
    assert sum(len(p) for _, p in frames) < sum(len(text) for text in inflated)


def test_no_compression_when_the_client_does_not_offer_it(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    sim = start_sim(markets=100, rate=200)

    async def run() -> list[tuple[bool, bytes]]:
        sock = await RawSocket.open(sim.ws_url, signer, offer_deflate=False)
        try:
            assert "sec-websocket-extensions" not in sock.headers
            await sock.send(json.dumps(subscribe(["ticker"])).encode())
            return await sock.messages(30)
        finally:
            sock.close()

    frames = asyncio.run(run())
    assert not any(rsv1 for rsv1, _ in frames)
    decoded = [json.loads(p) for _, p in frames]
    assert decoded[0]["type"] == "subscribed"
    assert {f["type"] for f in decoded[1:]} == {"ticker"}


def test_a_library_client_offering_deflate_reads_every_frame_as_in_the_ledger(
    start_sim: Callable[..., SimulatorProcess], signer: TestSigner
) -> None:
    """websockets offers deflate by default; the firehose and live updates both arrive whole."""
    sim = start_sim(markets=100, rate=100, firehose=2000)
    received: list[dict[str, Any]] = []

    async def run() -> str | None:
        ws = await ws_connect(sim.ws_url, signer, compression="deflate")
        try:
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
            await ws.send(json.dumps(subscribe(["ticker"])))
            while len(received) < 2100:
                frame = await recv(ws, 10)
                if frame["type"] == "ticker":
                    received.append(frame["msg"])
            await ws.send(json.dumps({"id": 2, "cmd": "unsubscribe", "params": {"sids": [1]}}))
            _, rest = await recv_until(ws, lambda f: f["type"] == "unsubscribed", 10)
            received.extend(f["msg"] for f in rest if f["type"] == "ticker")
            return extensions
        finally:
            await ws.close()

    extensions = asyncio.run(run())
    assert extensions is not None and extensions.startswith("permessage-deflate")
    session = wait_for(
        lambda: [s for s in sim.sessions() if s["closed_at_ms"] is not None],
        timeout=10,
        what="session closed",
    )[0]
    indexes = expand(session["sent_ranges"])
    ledger = wait_for(
        lambda: (lines := sim.read_ledger()) and len(lines) > indexes[-1] and lines,
        timeout=10,
        what="ledger flushed",
    )
    assert [strip_emitted(ledger[i]) for i in indexes] == received


def test_commands_in_binary_frames_are_answered_like_text(
    sim: SimulatorProcess, signer: TestSigner
) -> None:
    async def run() -> None:
        ws = await ws_connect(sim.ws_url, signer)
        try:
            await ws.send(json.dumps(subscribe(["market_lifecycle_v2"], 1)).encode())
            frame, _ = await recv_until(ws, lambda f: f.get("id") == 1, 10)
            assert frame == {
                "type": "subscribed",
                "id": 1,
                "msg": {"channel": "market_lifecycle_v2", "sid": 1},
            }
            await ws.send(json.dumps({"id": 2, "cmd": "list_subscriptions"}).encode())
            frame, _ = await recv_until(ws, lambda f: f.get("id") == 2, 10)
            assert frame == {
                "type": "ok",
                "id": 2,
                "msg": [{"channel": "market_lifecycle_v2", "sid": 1}],
            }
            # A binary frame that is not JSON (here not even UTF-8) is error 1, as in text.
            await ws.send(b"\xff\xfe{not json")
            frame, _ = await recv_until(ws, lambda f: f["type"] == "error", 10)
            assert error_code(frame) == 1
            await ws.send(json.dumps({"id": 3, "cmd": "unsubscribe", "params": {"sids": [1]}}))
            frame, _ = await recv_until(ws, lambda f: f.get("id") == 3, 10)
            assert frame["type"] == "unsubscribed" and frame["sid"] == 1
        finally:
            await ws.close()

    asyncio.run(run())
