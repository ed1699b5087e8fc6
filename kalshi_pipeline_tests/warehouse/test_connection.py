from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from kalshi_pipeline.warehouse import Warehouse, WarehouseBusyError, WarehouseError
from kalshi_pipeline.warehouse.schema import SCHEMA_VERSION
from kalshi_pipeline_tests.helpers import wait_for

HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_migrations_are_idempotent_and_versioned(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "k.duckdb")
    assert wh.migrate() == SCHEMA_VERSION
    assert wh.migrate() == SCHEMA_VERSION
    with wh.connect(read_only=True) as con:
        versions = con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    assert {"ticks", "markets", "feed_events", "poll_passes", "landing_positions"} <= tables


def test_a_foreign_holder_is_waited_for_then_reported_by_name(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    Warehouse(db).migrate()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with pytest.raises(WarehouseBusyError) as err, Warehouse(db).connect(timeout_s=0.5):
            pass
        assert str(db) in str(err.value)
        assert "kalshi_analytics.duckdb" in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    with Warehouse(db).connect(timeout_s=30) as con:
        assert con.execute("SELECT 1").fetchone() == (1,)


def test_a_connection_waits_while_the_holder_releases_within_the_timeout(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    Warehouse(db).migrate()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db), "1.5"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with Warehouse(db).connect(timeout_s=60) as con:
            assert con.execute("SELECT count(*) FROM ticks").fetchone() == (0,)
        # we got in because the holder let go, not because it was pushed aside
        assert holder.wait(timeout=10) == 0
    finally:
        holder.kill()
        holder.wait()


def test_read_only_on_a_missing_database_says_to_start_the_stream(tmp_path: Path) -> None:
    with (
        pytest.raises(WarehouseError, match="start the stream"),
        Warehouse(tmp_path / "none.duckdb").connect(read_only=True),
    ):
        pass


def test_an_unusable_database_path_is_a_clear_error_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(WarehouseError) as err:
        Warehouse(blocker / "k.duckdb").check_writable()
    assert str(blocker) in str(err.value)
    assert "KALSHI_DUCKDB_PATH" in str(err.value)


def test_waiting_for_our_own_lock_is_bounded(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    wh = Warehouse(db)
    wh.migrate()
    code = (
        "import sys,time\nfrom filelock import FileLock\n"
        "l=FileLock(sys.argv[1]); l.acquire(); print('locked', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(wh.lock_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        wait_for(lambda: holder.stdout.readline().strip() == "locked", timeout=30, what="lock")
        with (
            pytest.raises(WarehouseBusyError, match="locked by another"),
            wh.connect(timeout_s=0.3),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_a_version_1_database_gains_the_october_2026_columns_keeping_its_rows(
    tmp_path: Path,
) -> None:
    import duckdb

    from kalshi_pipeline.warehouse.schema import MIGRATIONS

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description VARCHAR, "
        "applied_at TIMESTAMPTZ)"
    )
    for sql in MIGRATIONS[0][2]:
        con.execute(sql)
    con.execute("INSERT INTO schema_version VALUES (1, 'initial schema', now())")
    con.execute(
        "INSERT INTO ticks VALUES ('KX-1', 'websocket', now(), now(), now(), 0.5, 0.4, 0.6, "
        "1, 2, 3, 4, 5, 1, 0)"
    )
    con.execute(
        "INSERT INTO markets VALUES ('KX-1', 'E', 'S', 't', 'y', 'active', NULL, NULL, "
        "NULL, now(), 'http')"
    )
    con.close()

    assert Warehouse(path).migrate() == SCHEMA_VERSION
    with Warehouse(path).connect(read_only=True) as con:
        tick = con.execute("SELECT market_ticker, price, sent_at FROM ticks").fetchall()
        market = con.execute(
            "SELECT market_ticker, settlement_bounds_type, settlement_floor_dollars, "
            "exchange_index FROM markets"
        ).fetchall()
        event_cols = {r[0] for r in con.execute("DESCRIBE events").fetchall()}
    assert tick == [("KX-1", Decimal("0.5000"), None)]
    assert market == [("KX-1", None, None, None)]
    assert "exchange_index" in event_cols
