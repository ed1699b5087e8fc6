"""SQL behind the report assets: the market snapshot, storage and latency comparisons, checks.

Every function takes a warehouse client (`warehouse.connect()`) and works on an empty
warehouse too: a missing source or an empty table gives empty results, never an error.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import duckdb

from kalshi_pipeline.warehouse import loads
from kalshi_pipeline.warehouse.client import values_table_sql

# A market's status as of now: Kalshi sends no lifecycle event at the scheduled open or close.
EFFECTIVE_STATUS = """
    CASE
      WHEN m.status = 'initialized' AND m.open_time <= now()
           AND (m.close_time IS NULL OR m.close_time > now()) THEN 'active'
      WHEN m.status IN ('initialized', 'active') AND m.close_time <= now() THEN 'closed'
      ELSE m.status
    END
"""

# When each stored state held on the exchange, as far as we can know it: a WebSocket tick at
# its exchange timestamp; a REST row no later than its request was sent, and the start of its
# polling pass (the newest pass that started before the page arrived) is a time no later than
# that. Arrival order would let a page requested before a WebSocket tick, but arriving after
# it, win with the older state. A REST row whose pass is not loaded yet takes the previous
# pass's start (still no later than its request); before any pass, the epoch.
HELD_AT_SQL = """
SELECT t.*,
       CASE WHEN t.source = 'websocket' THEN coalesce(t.exchange_ts, t.received_at)
            ELSE coalesce(p.started_at, TIMESTAMPTZ '1970-01-01 00:00:00+00') END AS held_at
FROM ticks t ASOF LEFT JOIN poll_passes p ON t.received_at >= p.started_at
"""

SNAPSHOT_SQL = f"""
CREATE OR REPLACE TABLE market_snapshot AS
WITH ordered AS ({HELD_AT_SQL}),
latest AS (
    SELECT market_ticker,
           arg_max(struct_pack(price, yes_bid, yes_ask, yes_bid_size, yes_ask_size, volume,
                               open_interest, exchange_ts, received_at, source),
                   struct_pack(held_at, received_at, landing_segment, landing_offset)) AS s
    FROM ordered GROUP BY market_ticker
)
SELECT coalesce(m.market_ticker, l.market_ticker) AS market_ticker,
       m.title, m.yes_sub_title, m.event_ticker, m.series_ticker,
       {EFFECTIVE_STATUS} AS status,
       m.open_time, m.close_time, m.result,
       l.s.price AS price, l.s.yes_bid AS yes_bid, l.s.yes_ask AS yes_ask,
       l.s.yes_bid_size AS yes_bid_size, l.s.yes_ask_size AS yes_ask_size,
       l.s.volume AS volume, l.s.open_interest AS open_interest,
       l.s.exchange_ts AS exchange_ts, l.s.received_at AS last_update, l.s.source AS source,
       now() AS built_at
FROM markets m FULL OUTER JOIN latest l ON l.market_ticker = m.market_ticker
ORDER BY market_ticker
"""


def build_market_snapshot(con: duckdb.DuckDBPyConnection) -> int:
    con.execute(SNAPSHOT_SQL)
    row = con.execute("SELECT count(*) FROM market_snapshot").fetchone()
    return int(row[0]) if row else 0


def fetch_dicts(
    con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
) -> list[dict[str, Any]]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


# --------------------------------------------------------------------------- storage

TICK_COLUMNS = ", ".join(loads.TICK_COLUMNS)


def measure_storage(
    con: duckdb.DuckDBPyConnection, where: str, params: list[Any], columns: str = TICK_COLUMNS
) -> int:
    """Bytes DuckDB needs to store the ticks selected by `where` (their `columns`, all by
    default), measured as `scratch_bytes` does, in the order they were stored."""
    with con.held():
        return scratch_bytes(
            con,
            "ticks_stored",
            columns,
            where,
            params,
            "received_at, landing_segment, landing_offset",
        )


def scratch_bytes(
    con: duckdb.DuckDBPyConnection,
    table: str,
    columns: str,
    where: str = "TRUE",
    params: list[Any] | None = None,
    order: str = "landing_segment, landing_offset",
) -> int:
    """Bytes `columns` of the rows of `table` selected by `where` take in DuckDB, measured, not
    estimated: they are written in `order` to a scratch database with the warehouse's own
    (default, 256 KiB) block size, checkpointed, and its used blocks counted, less those of an
    empty table. Resolution: about one block. (Smaller blocks would resolve finer, but with
    16 KiB blocks DuckDB 2.0 stops bit-packing integers and the count comes out 2-3 times too
    high.) `con` runs several statements on one session: a held client, or the owner's own."""
    with tempfile.TemporaryDirectory(prefix="kalshi-storage-") as tmp:
        path = Path(tmp) / "scratch.duckdb"
        con.execute(f"ATTACH '{path}' AS kp_scratch")
        try:
            con.execute(f"CREATE TABLE kp_scratch.t AS SELECT {columns} FROM {table} LIMIT 0")
            con.execute("CHECKPOINT kp_scratch")
            empty = _used_bytes(con)
            con.execute(
                f"INSERT INTO kp_scratch.t SELECT {columns} FROM {table} WHERE {where} "
                f"ORDER BY {order}",
                params or [],
            )
            con.execute("CHECKPOINT kp_scratch")
            return max(0, _used_bytes(con) - empty)
        finally:
            con.execute("DETACH kp_scratch")


def _used_bytes(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute(
        "SELECT used_blocks * block_size FROM pragma_database_size() "
        "WHERE database_name = 'kp_scratch'"
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def storage_comparison(con: duckdb.DuckDBPyConnection, hours: int = 48) -> list[dict[str, Any]]:
    """Per source and hour: ticks and bytes stored, bytes on the wire, and for polling what
    storing every market on every pass would have cost; ratios against the WebSocket feed."""
    slices = fetch_dicts(
        con,
        """
        SELECT date_trunc('hour', received_at) AS hour, source, count(*) AS ticks_stored
        FROM ticks WHERE received_at >= now() - to_hours(CAST(? AS BIGINT))
        GROUP BY ALL ORDER BY hour, source
        """,
        [hours],
    )
    wire = {
        (r["hour"], r["source"]): r
        for r in fetch_dicts(
            con,
            """
            SELECT date_trunc('hour', stored_at) AS hour, source,
                   sum(bytes)::BIGINT AS wire_bytes, sum(frames)::BIGINT AS wire_messages
            FROM wire_traffic GROUP BY ALL
            """,
        )
    }
    polls = {
        r["hour"]: r
        for r in fetch_dicts(
            con,
            """
            SELECT date_trunc('hour', started_at) AS hour, count(*) AS passes,
                   sum(markets_seen)::BIGINT AS markets_seen,
                   sum(markets_changed)::BIGINT AS markets_changed
            FROM poll_passes GROUP BY ALL
            """,
        )
    }
    rows: list[dict[str, Any]] = []
    for s in slices:
        stored = measure_storage(
            con,
            "date_trunc('hour', received_at) = ? AND source = ?",
            [s["hour"], s["source"]],
        )
        w = wire.get((s["hour"], s["source"]), {})
        p = polls.get(s["hour"], {})
        bpt = stored / s["ticks_stored"] if s["ticks_stored"] else None
        naive = None
        if s["source"] == "http" and bpt and p.get("markets_seen"):
            naive = round(p["markets_seen"] * bpt)
        rows.append(
            {
                "hour": s["hour"],
                "source": s["source"],
                "ticks_stored": s["ticks_stored"],
                "bytes_stored": stored,
                "bytes_per_tick": round(bpt, 2) if bpt else None,
                "wire_bytes": w.get("wire_bytes"),
                "wire_messages": w.get("wire_messages"),
                "poll_passes": p.get("passes") if s["source"] == "http" else None,
                "markets_seen": p.get("markets_seen") if s["source"] == "http" else None,
                "naive_http_bytes": naive,
            }
        )
    ws_bytes = {r["hour"]: r["bytes_stored"] for r in rows if r["source"] == "websocket"}
    for r in rows:
        base = ws_bytes.get(r["hour"])
        r["ratio_vs_websocket"] = (
            round(r["bytes_stored"] / base, 3) if base and r["source"] == "http" else None
        )
        r["naive_ratio_vs_websocket"] = (
            round(r["naive_http_bytes"] / base, 3) if base and r["naive_http_bytes"] else None
        )
    return rows


# --------------------------------------------------------------------------- the period

# A measured slice smaller than this many blocks is "below the measuring resolution": one block
# either way would move it by more than a tenth.
RESOLVED_BLOCKS = 10


def block_size(con: duckdb.DuckDBPyConnection) -> int:
    """The warehouse's block size: the resolution of every bytes-stored figure."""
    row = con.execute(
        "SELECT block_size FROM pragma_database_size() WHERE database_name = current_database()"
    ).fetchone()
    return int(row[0]) if row and row[0] else 256 * 1024


def period_summary(con: duckdb.DuckDBPyConnection, hours: int = 48) -> dict[str, Any]:
    """What the report's opening paragraph says: the period the ticks cover, the feed modes the
    engine ran in, per source the ticks, the minutes with at least one tick, bytes stored for the
    whole period (one measurement, so the block resolution matters less than per hour), bytes
    on the wire, and for polling what storing every market on every pass would have cost."""
    since = "received_at >= now() - to_hours(CAST(? AS BIGINT))"
    sources = fetch_dicts(
        con,
        f"""
        SELECT source, count(*) AS ticks, min(received_at) AS first, max(received_at) AS last,
               count(DISTINCT date_trunc('minute', received_at)) AS minutes_with_ticks
        FROM ticks WHERE {since} GROUP BY source ORDER BY source
        """,
        [hours],
    )
    if not sources:
        return {"sources": {}, "first": None, "last": None, "modes": [], "block_size": 0}
    first = min(r["first"] for r in sources)
    last = max(r["last"] for r in sources)
    wire = dict(
        con.execute(
            "SELECT source, sum(bytes)::BIGINT FROM wire_traffic "
            "WHERE stored_at BETWEEN ? AND ? + INTERVAL 1 MINUTE GROUP BY source",
            [first, last],
        ).fetchall()
    )
    seen_row = con.execute(
        "SELECT sum(markets_seen)::BIGINT, count(*) FROM poll_passes "
        "WHERE started_at BETWEEN ? AND ?",
        [first, last],
    ).fetchone()
    markets_seen, passes = (seen_row or (None, 0))[0], (seen_row or (None, 0))[1]
    modes = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT regexp_extract(detail, 'mode=(\\w+)', 1) AS mode FROM feed_events "
            "WHERE source = 'engine' AND kind = 'start' AND occurred_at BETWEEN "
            "? - INTERVAL 1 MINUTE AND ? ORDER BY mode",
            [first, last],
        ).fetchall()
        if r[0]
    ]
    out: dict[str, Any] = {}
    for r in sources:
        stored = measure_storage(con, f"{since} AND source = ?", [hours, r["source"]])
        per_tick = stored / r["ticks"] if r["ticks"] else None
        naive = None
        if r["source"] == "http" and per_tick and markets_seen:
            naive = round(int(markets_seen) * per_tick)
        out[r["source"]] = {
            **r,
            "bytes_stored": stored,
            "wire_bytes": wire.get(r["source"]),
            "naive_http_bytes": naive,
            "poll_passes": int(passes or 0) if r["source"] == "http" else None,
        }
    return {
        "sources": out,
        "first": first,
        "last": last,
        "modes": modes,
        "block_size": block_size(con),
    }


# --------------------------------------------------------------------------- latency

STATES_CTE = """
states AS (
    SELECT source, market_ticker,
           coalesce(price, -1) AS p, coalesce(yes_bid, -1) AS b, coalesce(yes_ask, -1) AS a,
           coalesce(yes_bid_size, -1) AS bs, coalesce(yes_ask_size, -1) AS az,
           coalesce(volume, -1) AS v, coalesce(open_interest, -1) AS oi,
           min(received_at) AS first_seen
    FROM ticks GROUP BY ALL
),
polling_delay AS (
    SELECT 'http' AS source, 'polling_later_than_websocket' AS metric,
           epoch_ms(h.first_seen) - epoch_ms(w.first_seen) AS ms
    FROM states w JOIN states h
      ON w.source = 'websocket' AND h.source = 'http' AND w.market_ticker = h.market_ticker
     AND w.p = h.p AND w.b = h.b AND w.a = h.a AND w.bs = h.bs AND w.az = h.az
     AND w.v = h.v AND w.oi = h.oi
    WHERE h.first_seen >= w.first_seen
)
"""

LATENCY_SQL = f"""
WITH
{STATES_CTE},
exchange_to_received AS (
    SELECT source, 'exchange_to_received' AS metric,
           epoch_ms(received_at) - epoch_ms(exchange_ts) AS ms
    FROM ticks WHERE exchange_ts IS NOT NULL
),
sent_to_received AS (
    -- the honest feed lag: Kalshi's sending_ts_ms to our receive time (ts_ms is when the
    -- market changed, which may be well before the frame was sent)
    SELECT source, 'sent_to_received' AS metric,
           epoch_ms(received_at) - epoch_ms(sent_at) AS ms
    FROM ticks WHERE sent_at IS NOT NULL
),
received_to_stored AS (
    SELECT source, 'received_to_stored' AS metric,
           epoch_ms(stored_at) - epoch_ms(received_at) AS ms
    FROM ticks
),
samples AS (
    SELECT * FROM exchange_to_received
    UNION ALL SELECT * FROM sent_to_received
    UNION ALL SELECT * FROM received_to_stored
    UNION ALL SELECT * FROM polling_delay
)
SELECT metric, source, count(*) AS count,
       quantile_cont(ms, 0.5) AS p50_ms, quantile_cont(ms, 0.9) AS p90_ms,
       quantile_cont(ms, 0.99) AS p99_ms, max(ms) AS max_ms
FROM samples GROUP BY ALL ORDER BY metric, source
"""


def latency_comparison(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows = fetch_dicts(con, LATENCY_SQL)
    for r in rows:
        for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
            if r[k] is not None:
                r[k] = round(float(r[k]), 1)
    return rows


def polling_delay_samples(con: duckdb.DuckDBPyConnection, limit: int = 200_000) -> list[float]:
    """How much later polling saw each state the socket saw, in ms (bounded sample)."""
    rows = con.execute(
        f"WITH {STATES_CTE} SELECT ms FROM polling_delay USING SAMPLE {int(limit)} ROWS"
    ).fetchall()
    return [float(r[0]) for r in rows]


def latency_samples(con: duckdb.DuckDBPyConnection, limit: int = 200_000) -> list[dict[str, Any]]:
    """Raw samples for the report's distribution chart: a uniform sample over the whole period
    (bounded), so the chart shows the same distribution as the latency table."""
    return fetch_dicts(
        con,
        f"""
        SELECT source, epoch_ms(received_at) - epoch_ms(exchange_ts) AS exchange_to_received_ms,
               epoch_ms(stored_at) - epoch_ms(received_at) AS received_to_stored_ms
        FROM ticks USING SAMPLE reservoir({int(limit)} ROWS) REPEATABLE (7)
        """,
    )


def write_table(
    con: duckdb.DuckDBPyConnection, name: str, rows: list[dict[str, Any]], columns: list[str]
) -> None:
    """Replace a small report table with these rows (types inferred by DuckDB), in one
    statement: it runs whole on the warehouse's owner when one is serving."""
    con.execute(values_table_sql(name, rows, columns))


# --------------------------------------------------------------------------- checks


def out_of_range_prices(
    con: duckdb.DuckDBPyConnection, limit: int = 20
) -> tuple[int, list[dict[str, Any]]]:
    where = (
        "price NOT BETWEEN 0 AND 1 OR yes_bid NOT BETWEEN 0 AND 1 OR yes_ask NOT BETWEEN 0 AND 1 "
        "OR (yes_bid > yes_ask AND yes_bid > 0 AND yes_ask < 1)"
    )
    total = con.execute(f"SELECT count(*) FROM ticks WHERE {where}").fetchone()
    rows = fetch_dicts(
        con,
        f"SELECT market_ticker, source, received_at, price, yes_bid, yes_ask, landing_segment, "
        f"landing_offset FROM ticks WHERE {where} ORDER BY received_at DESC LIMIT {int(limit)}",
    )
    return (int(total[0]) if total else 0), rows


def frames_stored_twice(
    con: duckdb.DuckDBPyConnection, limit: int = 20
) -> tuple[int, list[dict[str, Any]]]:
    dup = (
        "SELECT landing_segment, landing_offset, market_ticker, count(*) AS copies FROM ticks "
        "GROUP BY ALL HAVING count(*) > 1"
    )
    total = con.execute(f"SELECT count(*) FROM ({dup})").fetchone()
    return (int(total[0]) if total else 0), fetch_dicts(con, f"{dup} LIMIT {int(limit)}")


def active_markets_missing_from_snapshot(
    con: duckdb.DuckDBPyConnection, limit: int = 20
) -> tuple[int, list[dict[str, Any]]]:
    missing = f"""
        SELECT m.market_ticker, m.status, m.event_ticker FROM markets m
        WHERE ({EFFECTIVE_STATUS}) = 'active'
          AND m.market_ticker NOT IN (SELECT market_ticker FROM market_snapshot)
    """
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'market_snapshot'"
    ).fetchone()
    if not exists or not exists[0]:
        missing = missing.replace(
            "AND m.market_ticker NOT IN (SELECT market_ticker FROM market_snapshot)", ""
        )
    total = con.execute(f"SELECT count(*) FROM ({missing})").fetchone()
    return (int(total[0]) if total else 0), fetch_dicts(con, f"{missing} LIMIT {int(limit)}")


def newest_tick_age_s(con: duckdb.DuckDBPyConnection) -> float | None:
    row = con.execute("SELECT epoch(now()) - epoch(max(received_at)) FROM ticks").fetchone()
    return float(row[0]) if row and row[0] is not None else None
