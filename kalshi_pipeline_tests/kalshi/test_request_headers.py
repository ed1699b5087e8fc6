"""What the client puts on the wire besides the signature: never `Accept-Language`.

Since August 2026 Kalshi answers `Accept-Language: es-MX` or `pt-BR` with translated titles and
rules; the warehouse keeps English text, so neither REST requests nor the WebSocket handshake
may carry the header. A small local server records the headers each one really sent.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request

from kalshi_pipeline.kalshi.auth import HEADER_KEY, HEADER_SIGNATURE
from kalshi_pipeline.kalshi.rest import RestClient
from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.kalshi.websocket import KalshiWebSocket
from kalshi_pipeline_tests.kalshi.support import run

pytestmark = pytest.mark.timeout(60)


class RecordingServer:
    """An HTTP server on loopback that answers `{}` and keeps every request's headers."""

    def __init__(self) -> None:
        seen: list[dict[str, str]] = []
        self.seen = seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(dict(self.headers.items()))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/trade-api/v2"


@pytest.fixture
def recorder() -> Iterator[RecordingServer]:
    server = RecordingServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def lower_keys(headers: dict[str, str]) -> set[str]:
    return {k.lower() for k in headers}


def test_rest_requests_carry_no_accept_language(
    recorder: RecordingServer, kalshi_home: object
) -> None:
    settings = KalshiSettings.for_env("local", rest_url=recorder.rest_url)
    with RestClient(settings) as client:
        client.get_raw("/portfolio/balance")
        client.get_raw("/markets", params={"limit": 1})

    assert len(recorder.seen) == 2
    for headers in recorder.seen:
        assert "accept-language" not in lower_keys(headers)
        # the recorder sees real requests: signed, with the client's own headers
        assert {HEADER_KEY.lower(), HEADER_SIGNATURE.lower()} <= lower_keys(headers)
        assert headers["Accept"] == "application/json"


def test_a_session_handed_in_with_accept_language_does_not_send_it(
    recorder: RecordingServer,
) -> None:
    session = requests.Session()
    session.headers["Accept-Language"] = "es-MX"
    settings = KalshiSettings.for_env("local", rest_url=recorder.rest_url)
    with RestClient(settings, sign=False, session=session) as client:
        client.get_raw("/markets")

    assert len(recorder.seen) == 1
    assert "accept-language" not in lower_keys(recorder.seen[0])


def test_the_websocket_handshake_carries_no_accept_language(kalshi_home: object) -> None:
    seen: list[dict[str, str]] = []

    def record(connection: ServerConnection, request: Request) -> None:
        seen.append(dict(request.headers.raw_items()))

    async def handler(connection: ServerConnection) -> None:
        await connection.wait_closed()

    async def scenario() -> None:
        async with serve(handler, "127.0.0.1", 0, process_request=record) as server:
            port = server.sockets[0].getsockname()[1]
            url = f"ws://127.0.0.1:{port}/trade-api/ws/v2"
            ws = KalshiWebSocket(url, KalshiSettings.for_env("local", ws_url=url).signer())
            await ws.connect()
            await ws.close()

    run(scenario())
    assert len(seen) == 1
    assert "accept-language" not in lower_keys(seen[0])
    assert HEADER_SIGNATURE.lower() in lower_keys(seen[0])
