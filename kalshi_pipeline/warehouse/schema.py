"""The warehouse schema, versioned; migrations are idempotent and applied at every start."""

from __future__ import annotations

import duckdb

from kalshi_pipeline.warehouse.books import MACROS as BOOK_MACROS

SCHEMA_VERSION = 5

_V1 = [
    """
    CREATE TABLE IF NOT EXISTS ticks (
        market_ticker   VARCHAR NOT NULL,
        source          VARCHAR NOT NULL,          -- 'websocket' | 'http'
        exchange_ts     TIMESTAMPTZ,               -- from ts_ms; NULL for REST
        received_at     TIMESTAMPTZ NOT NULL,
        stored_at       TIMESTAMPTZ NOT NULL,      -- one value per writer batch
        price           DECIMAL(10,4),
        yes_bid         DECIMAL(10,4),
        yes_ask         DECIMAL(10,4),
        yes_bid_size    DECIMAL(18,2),
        yes_ask_size    DECIMAL(18,2),
        last_trade_size DECIMAL(18,2),
        volume          DECIMAL(18,2),
        open_interest   DECIMAL(18,2),
        landing_segment BIGINT NOT NULL,           -- where the frame sits in the landing log:
        landing_offset  INTEGER NOT NULL           -- (segment, offset, market) is unique
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS markets (
        market_ticker VARCHAR PRIMARY KEY,
        event_ticker  VARCHAR,
        series_ticker VARCHAR,
        title         VARCHAR,
        yes_sub_title VARCHAR,
        status        VARCHAR,
        open_time     TIMESTAMPTZ,
        close_time    TIMESTAMPTZ,
        result        VARCHAR,
        updated_at    TIMESTAMPTZ NOT NULL,
        updated_by    VARCHAR NOT NULL            -- 'http' | 'lifecycle'
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS events (
        event_ticker  VARCHAR PRIMARY KEY,
        series_ticker VARCHAR,
        title         VARCHAR,
        updated_at    TIMESTAMPTZ NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS feed_events (
        occurred_at TIMESTAMPTZ NOT NULL,
        source  VARCHAR NOT NULL,                  -- 'websocket' | 'http' | 'engine' | 'writer'
        kind    VARCHAR NOT NULL,
        detail  VARCHAR NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS poll_passes (
        started_at      TIMESTAMPTZ NOT NULL,
        finished_at     TIMESTAMPTZ NOT NULL,
        purpose         VARCHAR NOT NULL,          -- 'poll' | 'reconcile'
        pages           INTEGER NOT NULL,
        requests        INTEGER NOT NULL,
        retries         INTEGER NOT NULL,
        response_bytes  BIGINT NOT NULL,
        markets_seen    INTEGER NOT NULL,
        markets_changed INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS wire_traffic (
        stored_at TIMESTAMPTZ NOT NULL,            -- one row per source per writer batch
        source    VARCHAR NOT NULL,
        frames    BIGINT NOT NULL,
        bytes     BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS landing_positions (
        segment    VARCHAR PRIMARY KEY,
        position   BIGINT NOT NULL,                -- bytes of the segment already loaded
        updated_at TIMESTAMPTZ NOT NULL
    )
    """,
]

# Kalshi as of OpenAPI 3.34.0 (October 2026): when Kalshi sent each frame (the envelope's
# `sending_ts_ms`), the settlement bounds of a market, and the matching-engine shard
# (`exchange_index`) of markets and events. Added columns go last; writers insert BY NAME.
_V2 = [
    "ALTER TABLE ticks ADD COLUMN IF NOT EXISTS sent_at TIMESTAMPTZ",  # NULL for REST
    "ALTER TABLE markets ADD COLUMN IF NOT EXISTS settlement_bounds_type VARCHAR",
    "ALTER TABLE markets ADD COLUMN IF NOT EXISTS settlement_floor_dollars DECIMAL(10,4)",
    "ALTER TABLE markets ADD COLUMN IF NOT EXISTS settlement_value_dollars DECIMAL(10,4)",
    "ALTER TABLE markets ADD COLUMN IF NOT EXISTS exchange_index INTEGER",
    "ALTER TABLE events ADD COLUMN IF NOT EXISTS exchange_index INTEGER",
]

# Full-depth order books and trades, stored as received. NO levels are bids at NO-leg prices (the
# stream subscribes with use_yes_price false, explicitly): a NO bid at p is a YES offer at 1 - p.
# `seq` is the subscription's (`sid`) counter, shared by all its markets.
#
# Which deltas follow which snapshot: sids are per connection (a new connection starts again at
# sid 1), and during a handover two engines receive the same books on two connections. A row's
# `landing_segment` names its engine: its low 22 bits are the pid of the process that landed the
# frame (the high bits the segment's start, in ms), and (landing_segment, landing_offset) orders
# one engine's frames exactly. An engine holds one WebSocket connection at a time and Kalshi sends
# a market's snapshot before its deltas on every subscription, so a snapshot's deltas are the same
# engine's deltas of that market with the same sid after the snapshot's position, up to the next
# snapshot (warehouse/books.py rebuilds books that way; its macros are created below).
_V3 = [
    """
    CREATE TABLE IF NOT EXISTS book_snapshots (    -- one row per orderbook_snapshot frame
        market_ticker   VARCHAR NOT NULL,
        sid             INTEGER,
        seq             BIGINT,
        -- the bids as Kalshi sent them, [] for an empty side; NO bids at NO-leg prices
        yes_levels      STRUCT(price DECIMAL(10,4), size DECIMAL(18,2))[] NOT NULL,
        no_levels       STRUCT(price DECIMAL(10,4), size DECIMAL(18,2))[] NOT NULL,
        received_at     TIMESTAMPTZ NOT NULL,
        sent_at         TIMESTAMPTZ,               -- the envelope's sending_ts_ms
        landing_segment BIGINT NOT NULL,
        landing_offset  INTEGER NOT NULL
    )
    """,
    # Deltas are most of the rows, so their times are stored narrow: Kalshi's ts_ms and
    # sending_ts_ms as whole milliseconds before the receive time (a few bits each, where a
    # timestamp costs 2-3 bytes); the view `book_deltas` gives them back as TIMESTAMPTZ, exactly.
    """
    CREATE TABLE IF NOT EXISTS book_deltas_stored (  -- one row per orderbook_delta frame
        market_ticker   VARCHAR NOT NULL,
        sid             INTEGER,
        seq             BIGINT,
        side            VARCHAR NOT NULL,          -- 'yes' | 'no'
        price           DECIMAL(10,4),
        delta           DECIMAL(18,2),             -- signed change of the resting count
        received_at     TIMESTAMPTZ NOT NULL,
        exchange_lag_ms BIGINT,                    -- received_at's whole ms minus ts_ms
        sent_lag_ms     BIGINT,                    -- received_at's whole ms minus sending_ts_ms
        landing_segment BIGINT NOT NULL,
        landing_offset  INTEGER NOT NULL
    )
    """,
    """
    CREATE OR REPLACE VIEW book_deltas AS
    SELECT market_ticker, sid, seq, side, price, delta,
           date_trunc('millisecond', received_at) - to_milliseconds(exchange_lag_ms)
               AS exchange_ts,                     -- ts_ms: when the book changed
           received_at,
           date_trunc('millisecond', received_at) - to_milliseconds(sent_lag_ms)
               AS sent_at,                         -- sending_ts_ms
           landing_segment, landing_offset
    FROM book_deltas_stored
    """,
    # Derived, to find a book without reading a day of deltas: every KEYFRAME_S of receive time,
    # the writer stores each book that changed in it (the book after its last delta by then, at
    # that delta's landing_segment/offset, on its connection) as if it were a snapshot
    # (stream/keyframes.py, books.KEYFRAME_SQL). The book at T reads the deltas after the newest
    # keyframe only; `snapshot_at` is the real snapshot the run started from (a gap since then
    # still makes the book invalid).
    """
    CREATE TABLE IF NOT EXISTS book_keyframes (
        market_ticker   VARCHAR NOT NULL,
        sid             INTEGER,
        yes_levels      STRUCT(price DECIMAL(10,4), size DECIMAL(18,2))[] NOT NULL,
        no_levels       STRUCT(price DECIMAL(10,4), size DECIMAL(18,2))[] NOT NULL,
        snapshot_at     TIMESTAMPTZ NOT NULL,
        received_at     TIMESTAMPTZ NOT NULL,      -- of the delta it follows
        landing_segment BIGINT NOT NULL,
        landing_offset  INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS trades (
        trade_id           VARCHAR NOT NULL,
        market_ticker      VARCHAR NOT NULL,
        source             VARCHAR NOT NULL,       -- 'websocket' | 'http' (a backfill)
        yes_price          DECIMAL(10,4),
        no_price           DECIMAL(10,4),
        count              DECIMAL(18,2),
        taker_side         VARCHAR,
        taker_outcome_side VARCHAR,
        taker_book_side    VARCHAR,
        is_block_trade     BOOLEAN,
        exchange_ts        TIMESTAMPTZ,
        received_at        TIMESTAMPTZ NOT NULL,
        sent_at            TIMESTAMPTZ,
        sid                INTEGER,
        seq                BIGINT,
        landing_segment    BIGINT NOT NULL,
        landing_offset     INTEGER NOT NULL
    )
    """,
    *BOOK_MACROS,
]

# The engine whose feed recorded an event (its pid, as the low 22 bits of `landing_segment`), so a
# gap one engine saw during a handover breaks that engine's books, not the other's; NULL for the
# writer's own events and for events recorded before version 4 (those break every engine's).
_V4 = ["ALTER TABLE feed_events ADD COLUMN IF NOT EXISTS engine INTEGER"]

# Ticks are most of the rows, and a price took 2.4 bytes a tick as a DECIMAL(10,4) (stored as the
# integer of ten-thousandths, 100 to 9,900 for 0.01 to 0.99: 14 bits under DuckDB's bit-packing).
# Stored as a DOUBLE, DuckDB compresses it with ALP, which finds the decimal digits again: 7 bits
# for whole cents, measured 1.3 bytes a tick for each of the three prices (24.7 -> 21.5 bytes a
# tick on the bench's firehose). `ticks` becomes a view that gives them back as DECIMAL(10,4),
# exactly: every DECIMAL(10,4) value is within half a ten-thousandth of its nearest double, and
# the cast back rounds to the nearest ten-thousandth (tested for every price from -1,000 to
# 1,000 dollars). Writers insert into `ticks_stored` BY NAME, as before into `ticks`.
TICKS_VIEW = """
    CREATE OR REPLACE VIEW ticks AS
    SELECT market_ticker, source, exchange_ts, received_at, stored_at,
           price::DECIMAL(10,4) AS price,
           yes_bid::DECIMAL(10,4) AS yes_bid,
           yes_ask::DECIMAL(10,4) AS yes_ask,
           yes_bid_size, yes_ask_size, last_trade_size, volume, open_interest,
           landing_segment, landing_offset, sent_at
    FROM ticks_stored
"""
_V5 = [
    "ALTER TABLE ticks RENAME TO ticks_stored",
    "ALTER TABLE ticks_stored ALTER price TYPE DOUBLE",
    "ALTER TABLE ticks_stored ALTER yes_bid TYPE DOUBLE",
    "ALTER TABLE ticks_stored ALTER yes_ask TYPE DOUBLE",
    TICKS_VIEW,
]

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "initial schema", _V1),
    (2, "Kalshi OpenAPI 3.34.0: sent_at, settlement bounds, exchange_index", _V2),
    (3, "order books and trades", _V3),
    (4, "feed_events.engine", _V4),
    (5, "ticks: prices stored as DOUBLE, the view gives DECIMAL(10,4)", _V5),
]


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Bring the database to SCHEMA_VERSION; safe to run on every start and concurrently-locked."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        "version INTEGER PRIMARY KEY, description VARCHAR, applied_at TIMESTAMPTZ)"
    )
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    current = int(row[0]) if row else 0
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema version {current} is newer than this kalshi_pipeline "
            f"({SCHEMA_VERSION}); upgrade kalshi_pipeline"
        )
    for version, description, statements in MIGRATIONS:
        if version <= current:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for sql in statements:
                con.execute(sql)
            con.execute("INSERT INTO schema_version VALUES (?, ?, now())", [version, description])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return SCHEMA_VERSION


def refresh_macros(con: duckdb.DuckDBPyConnection) -> None:
    """The query macros as this version defines them (each `CREATE OR REPLACE`), in one
    transaction: a database made by an older version keeps its tables, and its macros follow
    today's rules (the Python queries in `books.py` and the macros must agree). Run by whoever
    opens the file to write (the owner, or a client that opened it directly)."""
    con.execute("BEGIN TRANSACTION")
    try:
        for sql in BOOK_MACROS:
            con.execute(sql)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
