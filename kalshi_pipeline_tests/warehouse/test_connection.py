"""The warehouse file without an owner: schema, foreign holders, bad files, missing parts."""

from __future__ import annotations

import struct
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from kalshi_pipeline.warehouse import (
    Warehouse,
    WarehouseBusyError,
    WarehouseError,
    WarehouseVersionError,
    connect,
)
from kalshi_pipeline.warehouse.owner import Owner
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
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views()").fetchall()}
        types = dict(
            con.execute("SELECT column_name, column_type FROM (DESCRIBE ticks)").fetchall()
        )
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
    assert {"ticks_stored", "markets", "feed_events", "poll_passes", "landing_positions"} <= tables
    assert {"ticks", "book_deltas"} <= views
    # what analysts read: prices as exact decimals, whatever the storage
    assert {types[c] for c in ("price", "yes_bid", "yes_ask")} == {"DECIMAL(10,4)"}
    assert types["volume"] == "DECIMAL(18,2)" and types["received_at"] == "TIMESTAMP WITH TIME ZONE"


def test_a_foreign_holder_is_reported_at_once_with_what_to_use_instead(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    Warehouse(db).migrate()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with pytest.raises(WarehouseBusyError) as err, connect(db, timeout_s=5) as con:
            con.execute("SELECT 1")
        assert str(db) in str(err.value)
        assert "kalshi-pipeline shell" in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    with connect(db) as con:
        assert con.execute("SELECT 1").fetchone() == (1,)


# A process in the middle of exiting, as a stream killed with SIGKILL is for a moment: its
# main thread has exited (so /proc/<pid>/exe reads as gone) while another thread still holds
# the database open; that thread lets go a few seconds later and the process ends.
EXITING = """
import ctypes, sys, threading, time, duckdb
con = duckdb.connect(sys.argv[1])
def let_go():
    time.sleep(float(sys.argv[2]))
    con.close()
    ctypes.CDLL(None).syscall(231, 0)  # exit_group: the whole process ends
threading.Thread(target=let_go).start()
print("holding", flush=True)
ctypes.CDLL(None).syscall(60, 0)  # exit: only the main thread ends
"""


@pytest.mark.skipif(sys.platform != "linux", reason="the exiting holder is made with Linux calls")
def test_a_holder_that_is_exiting_is_waited_for_not_reported(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    Warehouse(db).migrate()
    with connect(db) as con:
        con.execute("CREATE TABLE kept AS SELECT 7 AS n")
    holder = subprocess.Popen(
        [sys.executable, "-c", EXITING, str(db), "3"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(str(db), read_only=True)  # it does hold the file
        with connect(db, read_only=True, timeout_s=60) as con:
            assert con.execute("SELECT n FROM kept").fetchall() == [(7,)]
    finally:
        holder.kill()
        holder.wait()


def test_read_only_on_a_missing_database_says_to_start_the_stream(tmp_path: Path) -> None:
    with pytest.raises(WarehouseError, match="start the stream"):
        connect(tmp_path / "none.duckdb", read_only=True)
    assert not (tmp_path / "none.duckdb").exists()


def test_an_unusable_database_path_is_a_clear_error_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(WarehouseError) as err:
        Warehouse(blocker / "k.duckdb").check_writable()
    assert str(blocker) in str(err.value)
    assert "KALSHI_DUCKDB_PATH" in str(err.value)


def test_waiting_for_a_holder_that_serves_nothing_is_bounded(tmp_path: Path) -> None:
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
            pytest.raises(WarehouseBusyError, match="serves no endpoint"),
            connect(db, timeout_s=0.3) as con,
        ):
            con.execute("SELECT 1")
    finally:
        holder.kill()
        holder.wait()


def v2_file(tmp_path: Path) -> Path:
    """A file whose header says DuckDB 2.0.1 wrote it (storage version 65).

    No DuckDB 2.x can be installed beside 1.5.5 to write a real one, so this takes a real 1.5.5
    file and rewrites the two header fields the check reads: the storage version number at
    byte 12 and the creating library's version at byte 52 (DuckDB's MainHeader layout)."""
    path = tmp_path / "old" / "kalshi.duckdb"
    path.parent.mkdir()
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (i INTEGER)")
    con.close()
    data = bytearray(path.read_bytes())
    data[12:20] = struct.pack("<Q", 65)
    data[52:84] = b"v2.0.1".ljust(32, b"\0")
    path.write_bytes(bytes(data))
    return path


def test_a_file_written_by_duckdb_2_is_refused_with_the_way_to_convert_it(tmp_path: Path) -> None:
    path = v2_file(tmp_path)
    before = path.read_bytes()
    with pytest.raises(WarehouseVersionError) as err:
        Owner(path).connection(timeout_s=5)
    text = str(err.value)
    assert "v2.0.1" in text and str(path) in text
    assert f"mv {path} {path.parent / 'kalshi.v2.duckdb'}" in text
    assert "STORAGE_VERSION 'v1.5.0'" in text and "COPY FROM DATABASE" in text
    client = connect(path)
    with pytest.raises(WarehouseVersionError):
        client.execute("SELECT 1")
    assert path.read_bytes() == before, "the old file was touched"
    # the owner and the client (still open) let go of the lock: after moving the file aside,
    # a new owner starts at once
    path.rename(path.parent / "kalshi.v2.duckdb")
    owner = Owner(path)
    try:
        owner.connection(timeout_s=10)
        assert owner.endpoint is not None
    finally:
        owner.close()
        client.close()


def test_a_missing_extension_wheel_is_named_with_the_install_command(tmp_path: Path) -> None:
    # the wheel is installed here; a child process that cannot see it stands for one without it
    code = (
        "import importlib.util, sys\n"
        "_f = importlib.util.find_spec\n"
        "importlib.util.find_spec = "
        "lambda n, *a: None if n == 'duckdb_extension_quack' else _f(n, *a)\n"
        "from pathlib import Path\n"
        "from kalshi_pipeline.warehouse.owner import Owner\n"
        "Owner(Path(sys.argv[1])).connection(timeout_s=5)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "k.duckdb")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "ExtensionMissingError" in run.stderr
    assert "pip install 'duckdb==1.5.5' 'duckdb-extension-quack==1.5.5'" in run.stderr


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


def test_a_version_4_database_keeps_every_tick_price_exactly_in_the_narrower_storage(
    tmp_path: Path,
) -> None:
    """Version 5 stores the three prices as DOUBLE (ALP compresses them to whole cents' bits);
    the `ticks` view gives them back as DECIMAL(10,4): every stored price, sub-penny and extreme
    ones included, reads back as it was, and new ticks go in as before."""
    import duckdb

    from kalshi_pipeline.warehouse.schema import MIGRATIONS

    path = tmp_path / "v4.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description VARCHAR, "
        "applied_at TIMESTAMPTZ)"
    )
    for version, description, statements in MIGRATIONS[:4]:
        for sql in statements:
            con.execute(sql)
        con.execute("INSERT INTO schema_version VALUES (?, ?, now())", [version, description])
    prices = ["0.0001", "0.0100", "0.1234", "0.5600", "0.9999", "1.0000", "999999.9999"]
    for n, p in enumerate(prices):
        con.execute(
            "INSERT INTO ticks (market_ticker, source, received_at, stored_at, price, yes_bid, "
            "yes_ask, volume, landing_segment, landing_offset) "
            "VALUES ('KX-1', 'websocket', now(), now(), ?, ?, ?, 12.34, 1, ?)",
            [Decimal(p), Decimal(p), Decimal(p), n],
        )
    con.close()

    assert Warehouse(path).migrate() == SCHEMA_VERSION
    with Warehouse(path).connect() as con:
        con.execute(
            "INSERT INTO ticks_stored BY NAME SELECT 'KX-2' AS market_ticker, 'http' AS source, "
            "now() AS received_at, now() AS stored_at, 0.4321::DECIMAL(10,4) AS price, "
            "1 AS landing_segment, 0 AS landing_offset"
        )
        old = con.execute(
            "SELECT price, yes_bid, yes_ask, volume FROM ticks WHERE market_ticker = 'KX-1' "
            "ORDER BY landing_offset"
        ).fetchall()
        new = con.execute("SELECT price FROM ticks WHERE market_ticker = 'KX-2'").fetchall()
    assert old == [(Decimal(p), Decimal(p), Decimal(p), Decimal("12.34")) for p in prices]
    assert new == [(Decimal("0.4321"),)]
