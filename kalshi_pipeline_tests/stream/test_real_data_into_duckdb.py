"""End to end: a REST page with real data's oddities, polled by the engine, into DuckDB.

The simulator serves only well-formed objects, so a small loopback server stands in for Kalshi
here and serves the page the tolerance strategies built (real shapes, broken the way real data
breaks them). The engine polls it in http mode through the real client, landing log and writer;
every valid market and every odd one must be in DuckDB, odd values flagged in `feed_events`,
unreadable objects counted, and the raw page kept in the landing log.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.stream.config import Mode, StreamConfig
from kalshi_pipeline.stream.engine import Engine
from kalshi_pipeline.stream.landing import Kind, list_segments, read_records
from kalshi_pipeline_tests.helpers import query, wait_for
from kalshi_pipeline_tests.kalshi.test_real_data_tolerance import pages

pytestmark = pytest.mark.timeout(300)


class _PageServer(ThreadingHTTPServer):
    body: bytes = b'{"markets":[],"cursor":""}'


class _Handler(BaseHTTPRequestHandler):
    server: _PageServer

    def do_GET(self) -> None:
        if not self.path.startswith("/trade-api/v2/markets"):
            self.send_error(404)
            return
        body = self.server.body
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def page_server() -> Iterator[_PageServer]:
    server = _PageServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@settings(
    deadline=None,
    max_examples=4,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(page=pages())
def test_a_polled_page_with_odd_markets_stores_every_market_it_can_read(
    page: tuple[list[Any], set[str], set[str], int],
    page_server: _PageServer,
    kalshi_home: Path,
) -> None:
    objects, valid, odd, unreadable = page
    body = json.dumps({"markets": objects, "cursor": ""}).encode()
    page_server.body = body
    rest_url = f"http://127.0.0.1:{page_server.server_address[1]}/trade-api/v2"
    with tempfile.TemporaryDirectory(prefix="kalshi-odd-") as tmp:
        db = Path(tmp) / "k.duckdb"
        config = StreamConfig(
            mode=Mode.HTTP,
            database=db,
            poll_interval_s=60.0,  # one pass is all this needs
            flush_interval_ms=50,
            kalshi=KalshiSettings.for_env("local", rest_url=rest_url, ws_url="ws://127.0.0.1:9"),
        ).validate()
        engine = Engine(config).start()
        try:
            wait_for(
                lambda: query(db, "SELECT count(*) FROM poll_passes")[0][0] >= 1,
                timeout=60,
                what="the first pass stored",
            )
        finally:
            engine.stop()
        stored = {r[0] for r in query(db, "SELECT DISTINCT market_ticker FROM ticks")}
        assert stored == valid | odd
        assert {r[0] for r in query(db, "SELECT market_ticker FROM markets")} == valid | odd
        rows = query(
            db,
            "SELECT settlement_bounds_type, exchange_index FROM markets "
            "WHERE market_ticker LIKE 'KX-VALID-%'",
        )
        assert set(rows) == {("default", 3)}
        flagged = [r[0] for r in query(db, "SELECT detail FROM feed_events WHERE kind='flagged'")]
        assert all(d.split(":")[0] in odd for d in flagged)
        skipped = query(db, "SELECT count(*) FROM feed_events WHERE kind = 'parse_error'")
        assert (skipped[0][0] >= unreadable) and (unreadable > 0 or skipped[0][0] == 0)
        assert engine.stats.objects_skipped >= unreadable
        pages_logged = [
            rec.payload
            for seg in list_segments(config.landing)
            for rec in read_records(seg, 0)[0]
            if rec.kind == Kind.REST_PAGE
        ]
        assert pages_logged and all(p.endswith(b"\n" + body) for p in pages_logged)
