"""What the benchmarks read back: the warehouse compared with the simulator's ledger.

The queries here belong to the benchmarks only (the warehouse layer holds the project's own
SQL). Each function takes an open connection from `Warehouse.connect`, made after the engine has
stopped, and reads the ledger (JSON Lines) and the reader's CSV with DuckDB's file readers.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from kalshi_pipeline.kalshi.errors import FrameDecodeError
from kalshi_pipeline.kalshi.messages import Tick, decode_tick
from kalshi_pipeline.stream.landing import Kind, list_segments, read_records
from kalshi_pipeline.warehouse.loads import TICK_COLUMNS as TICK_COLUMN_NAMES
from kalshi_pipeline.warehouse.reports import (
    frames_stored_twice,
    measure_storage,
    storage_comparison,
)

TICKER_PREFIX = b'{"type":"ticker"'
BLOCK = 256 * 1024  # DuckDB's default block: what a count of used blocks can resolve
LEDGER_COLUMNS = (
    "{'market_ticker': 'VARCHAR', 'ts_ms': 'BIGINT', 'price_dollars': 'DECIMAL(10,4)', "
    "'yes_bid_dollars': 'DECIMAL(10,4)', 'yes_ask_dollars': 'DECIMAL(10,4)', "
    "'yes_bid_size_fp': 'DECIMAL(18,2)', 'yes_ask_size_fp': 'DECIMAL(18,2)', "
    "'volume_fp': 'DECIMAL(18,2)', 'open_interest_fp': 'DECIMAL(18,2)', "
    "'emitted_at_ms': 'BIGINT'}"
)
VISIBLE_COLUMNS = (
    "{'landing_segment': 'BIGINT', 'landing_offset': 'INTEGER', 'market_ticker': 'VARCHAR', "
    "'visible_ms': 'DOUBLE'}"
)


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _r(value: Any, digits: int = 1) -> float | None:
    return None if value is None else round(float(value), digits)


def first_ws_received_ns(con: duckdb.DuckDBPyConnection) -> int | None:
    row = con.execute(
        "SELECT epoch_ns(min(received_at)), count(*) FROM ticks WHERE source = 'websocket'"
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


def stored_deltas(con: duckdb.DuckDBPyConnection) -> dict[str, int | None]:
    """Order-book delta rows: how many, how many distinct (sid, seq) frames, the first and last
    received (ns)."""
    row = con.execute(
        "SELECT count(*), count(DISTINCT (market_ticker, sid, seq)), epoch_ns(min(received_at)), "
        "epoch_ns(max(received_at)) FROM book_deltas_stored"
    ).fetchone()
    assert row is not None
    return {
        "rows": int(row[0]),
        "distinct_frames": int(row[1]),
        "first_received_ns": None if row[2] is None else int(row[2]),
        "last_received_ns": None if row[3] is None else int(row[3]),
    }


def count_ticks(con: duckdb.DuckDBPyConnection, source: str | None = None) -> int:
    if source is None:
        row = con.execute("SELECT count(*) FROM ticks").fetchone()
    else:
        row = con.execute("SELECT count(*) FROM ticks WHERE source = ?", [source]).fetchone()
    return int(row[0]) if row else 0


def latency(
    con: duckdb.DuckDBPyConnection,
    ledger: Path,
    visible_csv: Path | None,
    window_ms: tuple[int, int],
) -> dict[str, Any]:
    """Tick to stored (`stored_at` minus `emitted_at_ms`) and tick to visible (the reader's
    first sight minus `emitted_at_ms`), for the ledger lines published inside the window, joined
    to `ticks` on market, exchange time and every value."""
    visible = (
        f"SELECT * FROM read_csv({_literal(visible_csv)}, header = true, "  # noqa: S608
        f"columns = {VISIBLE_COLUMNS})"
        if visible_csv is not None and visible_csv.exists()
        else "SELECT NULL::BIGINT AS landing_segment, NULL::INTEGER AS landing_offset, "
        "NULL::VARCHAR AS market_ticker, NULL::DOUBLE AS visible_ms WHERE false"
    )
    sql = f"""
    WITH l AS (
        SELECT * FROM read_json({_literal(ledger)}, format = 'newline_delimited',
                                columns = {LEDGER_COLUMNS})
        WHERE emitted_at_ms BETWEEN ? AND ?
    ),
    t AS (
        SELECT market_ticker, epoch_ms(exchange_ts) AS ts_ms, price, yes_bid, yes_ask,
               yes_bid_size, yes_ask_size, volume, open_interest,
               epoch_us(received_at) / 1000.0 AS received_ms,
               epoch_us(stored_at) / 1000.0 AS stored_ms, landing_segment, landing_offset
        FROM ticks WHERE source = 'websocket'
    ),
    v AS ({visible}),
    j AS (
        SELECT l.emitted_at_ms, t.received_ms, t.stored_ms, v.visible_ms
        FROM l JOIN t
          ON t.market_ticker = l.market_ticker AND t.ts_ms = l.ts_ms
         AND t.price IS NOT DISTINCT FROM l.price_dollars
         AND t.yes_bid IS NOT DISTINCT FROM l.yes_bid_dollars
         AND t.yes_ask IS NOT DISTINCT FROM l.yes_ask_dollars
         AND t.yes_bid_size IS NOT DISTINCT FROM l.yes_bid_size_fp
         AND t.yes_ask_size IS NOT DISTINCT FROM l.yes_ask_size_fp
         AND t.volume IS NOT DISTINCT FROM l.volume_fp
         AND t.open_interest IS NOT DISTINCT FROM l.open_interest_fp
        LEFT JOIN v
          ON v.landing_segment = t.landing_segment AND v.landing_offset = t.landing_offset
         AND v.market_ticker = t.market_ticker
    )
    SELECT (SELECT count(*) FROM l), count(*),
           quantile_cont(stored_ms - emitted_at_ms, [0.5, 0.9, 0.99]),
           max(stored_ms - emitted_at_ms),
           count(visible_ms),
           quantile_cont(visible_ms - emitted_at_ms, [0.5, 0.9, 0.99]),
           max(visible_ms - emitted_at_ms),
           quantile_cont(received_ms - emitted_at_ms, [0.5, 0.99]),
           quantile_cont(stored_ms - received_ms, [0.5, 0.99])
    FROM j
    """  # noqa: S608 - the interpolated parts are our own temp paths, quoted
    row = con.execute(sql, list(window_ms)).fetchone()
    assert row is not None
    published, matched, stored_q, stored_max, seen, vis_q, vis_max, recv_q, r2s_q = row
    stored_q = stored_q or [None, None, None]
    vis_q = vis_q or [None, None, None]
    recv_q = recv_q or [None, None]
    r2s_q = r2s_q or [None, None]
    return {
        "published": int(published),
        "matched": int(matched),
        "stored_p50_ms": _r(stored_q[0]),
        "stored_p90_ms": _r(stored_q[1]),
        "stored_p99_ms": _r(stored_q[2]),
        "stored_max_ms": _r(stored_max),
        "visible_seen": int(seen),
        "visible_p50_ms": _r(vis_q[0]),
        "visible_p90_ms": _r(vis_q[1]),
        "visible_p99_ms": _r(vis_q[2]),
        "visible_max_ms": _r(vis_max),
        "emitted_to_received_p50_ms": _r(recv_q[0]),
        "emitted_to_received_p99_ms": _r(recv_q[1]),
        "received_to_stored_p50_ms": _r(r2s_q[0]),
        "received_to_stored_p99_ms": _r(r2s_q[1]),
    }


def stored_bytes(con: duckdb.DuckDBPyConnection, where: str) -> int:
    """Bytes the selected ticks take in DuckDB, measured as the reports measure them."""
    return measure_storage(con, where, [])


def stored_bytes_by_column(con: duckdb.DuckDBPyConnection, where: str) -> dict[str, int]:
    """What each column of the selected ticks takes on its own (measured as `stored_bytes`,
    one column at a time: each to within a block, so they add up to the whole only roughly)."""
    return {c: measure_storage(con, where, [], columns=c) for c in TICK_COLUMN_NAMES}


def storage(con: duckdb.DuckDBPyConnection, seconds: float, db_file: Path) -> dict[str, Any]:
    """Bytes per tick, and the comparison of feeds per hour of this run's activity."""
    ticks = count_ticks(con)
    ws = count_ticks(con, "websocket")
    all_bytes = stored_bytes(con, "TRUE")
    ws_bytes_measured = stored_bytes(con, "source = 'websocket'")
    rows = storage_comparison(con)
    ws_bytes = sum(r["bytes_stored"] for r in rows if r["source"] == "websocket")
    http_bytes = sum(r["bytes_stored"] for r in rows if r["source"] == "http")
    naive_parts = [r["naive_http_bytes"] for r in rows if r["source"] == "http"]
    naive = sum(n for n in naive_parts if n) if any(naive_parts) else None
    con.execute("CHECKPOINT")
    per_hour = 3600.0 / seconds if seconds > 0 else 0.0
    return {
        "ticks": ticks,
        "ticks_websocket": ws,
        "ticks_http": ticks - ws,
        "bytes_per_tick": round(all_bytes / ticks, 2) if ticks else None,
        "bytes_per_tick_websocket": round(ws_bytes_measured / ws, 2) if ws else None,
        "bytes_per_tick_resolution": round(BLOCK / ticks, 2) if ticks else None,
        "db_file_bytes": db_file.stat().st_size if db_file.exists() else None,
        "db_file_bytes_per_tick": round(db_file.stat().st_size / ticks, 1)
        if ticks and db_file.exists()
        else None,
        "seconds": round(seconds, 1),
        "ws_bytes_per_hour": round(ws_bytes * per_hour),
        "http_changes_bytes_per_hour": round(http_bytes * per_hour),
        "naive_http_bytes_per_hour": round(naive * per_hour) if naive is not None else None,
        "ratio_naive_http_vs_ws": round(naive / ws_bytes, 2)
        if ws_bytes and naive is not None
        else None,
        "ratio_http_changes_vs_ws": round(http_bytes / ws_bytes, 3) if ws_bytes else None,
        "by_hour": [{k: (str(v) if k == "hour" else v) for k, v in r.items()} for r in rows],
    }


def poll_passes(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows = con.execute(
        "SELECT purpose, pages, requests, retries, markets_seen, "
        "epoch(finished_at) - epoch(started_at) FROM poll_passes ORDER BY started_at"
    ).fetchall()
    return [
        {
            "purpose": r[0],
            "pages": r[1],
            "requests": r[2],
            "retries": r[3],
            "markets_seen": r[4],
            "seconds": round(float(r[5]), 3),
        }
        for r in rows
    ]


def landing_passes(landing: Path) -> list[dict[str, Any]]:
    """The poller's figures of each pass, read from the landing log (so they are there even
    when the writer has not loaded them yet)."""
    out = []
    for seg in list_segments(landing):
        pos = 0
        while True:
            records, nxt, _problem = read_records(seg, pos)
            if not records:
                break
            for r in records:
                if r.kind == Kind.POLL_PASS:
                    p = json.loads(r.payload)
                    out.append(
                        {
                            "purpose": p["purpose"],
                            "pages": p["pages"],
                            "requests": p["requests"],
                            "seconds": round((p["finished_ns"] - p["started_ns"]) / 1e9, 3),
                        }
                    )
            pos = nxt
    return out


def feed_events(con: duckdb.DuckDBPyConnection) -> list[tuple[float, str, str, str]]:
    rows = con.execute(
        "SELECT epoch(occurred_at), source, kind, detail FROM feed_events ORDER BY occurred_at"
    ).fetchall()
    return [(float(r[0]), r[1], r[2], r[3]) for r in rows]


# --------------------------------------------------------------------------- chaos


def _d(value: Any) -> Decimal | None:
    return None if value in (None, "") else Decimal(str(value))


def ledger_key(line: dict[str, Any]) -> tuple[Any, ...]:
    """What a stored WebSocket tick must reproduce of a ledger line."""
    return (
        line["market_ticker"],
        line.get("ts_ms"),
        _d(line.get("price_dollars")),
        _d(line.get("yes_bid_dollars")),
        _d(line.get("yes_ask_dollars")),
        _d(line.get("yes_bid_size_fp")),
        _d(line.get("yes_ask_size_fp")),
        _d(line.get("volume_fp")),
        _d(line.get("open_interest_fp")),
    )


def stored_ws_keys(con: duckdb.DuckDBPyConnection) -> Counter[tuple[Any, ...]]:
    rows = con.execute(
        "SELECT market_ticker, epoch_ms(exchange_ts), price, yes_bid, yes_ask, yes_bid_size, "
        "yes_ask_size, volume, open_interest FROM ticks WHERE source = 'websocket'"
    ).fetchall()
    return Counter(tuple(r) for r in rows)


def sent_lines(sessions: Iterable[dict[str, Any]]) -> dict[int, int]:
    """Ledger line index -> the connection it was sent on (the last one, if several)."""
    out: dict[int, int] = {}
    for s in sessions:
        for first, last in s.get("sent_ranges", []):
            for i in range(first, last + 1):
                out[i] = s["conn_id"]
    return out


def read_ledger_lines(path: Path, wanted: set[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    with path.open("rb") as f:
        for i, line in enumerate(f):
            if i in wanted:
                try:
                    out[i] = json.loads(line)
                except ValueError:
                    break  # a line being written
    return out


def landing_frames_not_stored(con: duckdb.DuckDBPyConnection, landing: Path) -> dict[str, int]:
    """Ticker frames in the landing log (so received) that decode but are not in `ticks`.

    A frame is stored when a tick points at its place in the log, or, when two engines received
    the same feed during a handover, when a tick equal in every value (`ledger_key`) is stored
    from the other engine's copy (`received_twice` counts those copies)."""
    stored = {
        (int(s), int(o))
        for s, o in con.execute(
            "SELECT landing_segment, landing_offset FROM ticks WHERE source = 'websocket'"
        ).fetchall()
    }
    keys = stored_ws_keys(con)
    logged = missing = undecodable = twice = 0
    for seg in list_segments(landing):
        pos = 0
        while True:
            records, nxt, _problem = read_records(seg, pos)
            if not records:
                break
            for r in records:
                if r.kind != Kind.WS_FRAME or not r.payload.startswith(TICKER_PREFIX):
                    continue
                try:
                    tick = decode_tick(r.payload)
                except FrameDecodeError:
                    undecodable += 1
                    continue
                logged += 1
                if (seg.segment_id, r.offset) in stored:
                    continue
                if tick_key(tick) in keys:
                    twice += 1
                else:
                    missing += 1
            pos = nxt
    return {
        "logged": logged,
        "not_stored": missing,
        "undecodable": undecodable,
        "received_twice": twice,
    }


def tick_key(tick: Tick) -> tuple[Any, ...]:
    """The same tuple as `ledger_key`, from a decoded frame."""
    return (
        tick.market_ticker,
        tick.exchange_ts_ms,
        tick.price,
        tick.yes_bid,
        tick.yes_ask,
        tick.yes_bid_size,
        tick.yes_ask_size,
        tick.volume,
        tick.open_interest,
    )


def duplicates(con: duckdb.DuckDBPyConnection) -> int:
    return frames_stored_twice(con)[0]
