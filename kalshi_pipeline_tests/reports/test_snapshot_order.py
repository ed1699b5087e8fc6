"""The snapshot orders states by when they held on the exchange, not by when they arrived."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.stream.config import Mode, StreamConfig
from kalshi_pipeline.stream.engine import Engine
from kalshi_pipeline.warehouse import Warehouse
from kalshi_pipeline.warehouse.reports import build_market_snapshot
from kalshi_pipeline_tests.helpers import query, read_ledger, wait_for

pytestmark = pytest.mark.timeout(240)
T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


def _tick(con: Any, ticker: str, source: str, price: str, received: datetime, **kw: Any) -> None:
    exchange_ts = kw.get("exchange_ts")
    offset = int(received.timestamp() * 1000) % 2_000_000_000
    con.execute(
        """INSERT INTO ticks_stored BY NAME SELECT ? AS market_ticker, ? AS source,
                  ?::TIMESTAMPTZ AS exchange_ts, ?::TIMESTAMPTZ AS received_at,
                  ?::TIMESTAMPTZ AS stored_at, ?::DECIMAL(10,4) AS price,
                  0.1 AS yes_bid, 0.9 AS yes_ask, 1 AS yes_bid_size, 1 AS yes_ask_size,
                  0 AS last_trade_size, 1 AS volume, 1 AS open_interest,
                  1 AS landing_segment, ? AS landing_offset""",
        [ticker, source, exchange_ts, received, received, price, offset],
    )


def _pass(con: Any, started: datetime, finished: datetime) -> None:
    con.execute(
        "INSERT INTO poll_passes VALUES (?, ?, 'poll', 1, 1, 0, 1000, 2, 2)", [started, finished]
    )


def _snapshot_prices(db: Path) -> dict[str, Decimal]:
    with Warehouse(db).connect() as con:
        build_market_snapshot(con)
        return dict(con.execute("SELECT market_ticker, price FROM market_snapshot").fetchall())


def test_a_page_requested_before_a_socket_tick_loses_though_it_arrived_after(tmp_path):
    db = tmp_path / "k.duckdb"
    Warehouse(db).migrate()
    s = timedelta(seconds=1)
    with Warehouse(db).connect() as con:
        # The pass starts at T0; the exchange changes A at T0+1 s (the socket has it at once);
        # the slow page, requested before that change, arrives at T0+2 s with the older state.
        _pass(con, T0, T0 + 3 * s)
        _tick(con, "A", "websocket", "0.60", T0 + 1.01 * s, exchange_ts=T0 + s)
        _tick(con, "A", "http", "0.50", T0 + 2 * s)
        # B changes at T0-5 s; the pass at T0 sees a newer state the socket missed.
        _tick(con, "B", "websocket", "0.30", T0 - 4.99 * s, exchange_ts=T0 - 5 * s)
        _tick(con, "B", "http", "0.35", T0 + 2 * s)
        # C: polling only, two passes; the later pass wins.
        _pass(con, T0 + 10 * s, T0 + 11 * s)
        _tick(con, "C", "http", "0.20", T0 + 2 * s)
        _tick(con, "C", "http", "0.25", T0 + 10.5 * s)
    assert _snapshot_prices(db) == {
        "A": Decimal("0.6000"),
        "B": Decimal("0.3500"),
        "C": Decimal("0.2500"),
    }


def test_a_page_whose_pass_is_not_loaded_yet_orders_by_the_previous_pass(tmp_path):
    db = tmp_path / "k.duckdb"
    Warehouse(db).migrate()
    s = timedelta(seconds=1)
    with Warehouse(db).connect() as con:
        _pass(con, T0, T0 + s)
        _tick(con, "C", "http", "0.20", T0 + 0.5 * s)
        _tick(con, "C", "http", "0.25", T0 + 5 * s)  # its pass's record comes after its pages
        _tick(con, "D", "http", "0.70", T0 - 60 * s)  # before any pass was recorded
    assert _snapshot_prices(db) == {"C": Decimal("0.2500"), "D": Decimal("0.7000")}


@contextlib.contextmanager
def delaying_proxy(upstream: str, delay_s: float) -> Iterator[str]:
    """A loopback TCP proxy that holds every byte from the server for `delay_s` before passing
    it on: a response computed at once arrives late, as over a slow network. Yields its URL."""
    parts = urlsplit(upstream)
    target = (parts.hostname or "127.0.0.1", parts.port or 80)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    sockets: list[socket.socket] = [listener]

    def pump(src: socket.socket, dst: socket.socket, delay: float) -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                chunk = src.recv(65536)
                arrived = time.monotonic()
                if not chunk:
                    break
                time.sleep(max(0.0, arrived + delay - time.monotonic()))
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                client, _ = listener.accept()
                server = socket.create_connection(target)
                sockets.extend((client, server))
                for args in ((client, server, 0.0), (server, client, delay_s)):
                    threading.Thread(target=pump, args=args, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    try:
        yield urlunsplit((parts.scheme, f"127.0.0.1:{port}", parts.path, "", ""))
    finally:
        stop.set()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.close()


LEDGER_FIELDS = {
    "price": "price_dollars",
    "yes_bid": "yes_bid_dollars",
    "yes_ask": "yes_ask_dollars",
    "yes_bid_size": "yes_bid_size_fp",
    "yes_ask_size": "yes_ask_size_fp",
    "volume": "volume_fp",
    "open_interest": "open_interest_fp",
}


def test_both_mode_snapshot_equals_the_ledgers_final_state_while_slow_pages_arrive(
    sim_factory, tmp_path
):
    with contextlib.ExitStack() as stack:
        _run_both_mode_against_the_ledger(sim_factory, tmp_path, stack)


def _run_both_mode_against_the_ledger(sim_factory: Any, tmp_path: Path, stack: Any) -> None:
    # REST responses held in transit: a page the exchange answered before it paused arrives
    # after the socket delivered the final state of every market that changed meanwhile.
    sim = sim_factory(markets=200, rate=150)
    db = tmp_path / "data" / "kalshi.duckdb"
    slow_rest = stack.enter_context(delaying_proxy(sim.rest_url, 0.8))
    config = StreamConfig(
        mode=Mode.BOTH,
        database=db,
        poll_interval_s=0.2,
        flush_interval_ms=100,
        kalshi=KalshiSettings.for_env("local", rest_url=slow_rest, ws_url=sim.ws_url),
    )
    engine = Engine(config).start()
    try:
        wait_for(
            lambda: engine.stats.ticks_stored_ws > 1500 and engine.stats.ticks_stored_http > 200,
            timeout=120,
            interval=0.5,
            what="ticks from both feeds",
        )
        paused_at = datetime.now(UTC)
        sim.set_faults(pause_updates=True)
        # The socket delivers the final state within moments: wait until its count settles.
        seen: list[int] = []

        def settled() -> bool:
            seen.append(engine.stats.ticks_stored_ws)
            return len(seen) >= 5 and len(set(seen[-5:])) == 1

        wait_for(settled, timeout=60, interval=0.2, what="the socket's ticks to settle")
        # A pass in flight across the pause: requested before it, stored after the socket's ticks.
        wait_for(
            lambda: query(
                db,
                "SELECT count(*) FROM poll_passes WHERE started_at < ? AND finished_at > ?",
                [paused_at, paused_at],
            )[0][0],
            timeout=60,
            what="a polling pass that spans the pause",
        )
        with Warehouse(db).connect() as con:
            build_market_snapshot(con)
            cols = ", ".join(LEDGER_FIELDS)
            snap = {
                r[0]: dict(zip(LEDGER_FIELDS, r[1:], strict=True))
                for r in con.execute(
                    f"SELECT market_ticker, {cols} FROM market_snapshot"
                ).fetchall()
            }
    finally:
        engine.stop()
    final: dict[str, dict[str, Any]] = {}
    for line in read_ledger(sim.ledger_path):
        final[line["market_ticker"]] = line
    assert len(final) > 100
    wrong = {
        ticker: (snap.get(ticker), msg)
        for ticker, msg in final.items()
        if snap.get(ticker) != {k: Decimal(msg[f]) for k, f in LEDGER_FIELDS.items()}
    }
    assert not wrong, f"{len(wrong)} of {len(final)} markets differ: {next(iter(wrong.items()))}"
