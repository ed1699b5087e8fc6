"""Process faults: SIGKILL and restart, a database held by another program.

Pass or fail is decided by what is in DuckDB and the ledger, never by timing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest

from kalshi_pipeline.warehouse import Warehouse, connect
from kalshi_pipeline.warehouse.coverage import build_feed_coverage
from kalshi_pipeline.warehouse.paths import landing_folder
from kalshi_pipeline_tests.helpers import (
    Holder,
    feed_events,
    query,
    wait_for,
    wait_for_ticks,
)
from kalshi_pipeline_tests.stream.conftest import config_for
from kalshi_pipeline_tests.stream.support import kinds, landing_ticker_frames, settle_and_compare

pytestmark = pytest.mark.timeout(240)


def test_sigkill_mid_stream_then_restart_stores_everything_logged_once(sim_factory, tmp_path):
    sim = sim_factory(markets=500, rate=300)
    db = tmp_path / "data" / "k.duckdb"
    env = dict(os.environ, KALSHI_REST_URL=sim.rest_url, KALSHI_WS_URL=sim.ws_url)
    cmd = [
        sys.executable,
        "-m",
        "kalshi_pipeline.cli",
        "stream",
        "--mode",
        "websocket",
        "--database",
        str(db),
        "--quiet",
    ]
    first = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for_ticks(db, 500, "ticks stored by the first process")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    logged = landing_ticker_frames(landing_folder(db))
    second = subprocess.Popen([*cmd, "--seconds", "6"], env=env, stderr=subprocess.PIPE, text=True)
    _out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    stored = query(
        db,
        "SELECT landing_segment, landing_offset, count(*) FROM ticks "
        "WHERE source='websocket' GROUP BY 1, 2",
    )
    assert all(n == 1 for _s, _o, n in stored), "a frame was stored twice"
    assert logged <= {(s, o) for s, o, _n in stored}, "a logged frame was never stored"

    # coverage: down with reason `crash` from the killed process's last record to the restart
    with connect(db) as con:
        build_feed_coverage(con, stream_alive=False)
    starts = [e[0] for e in feed_events(db) if (e[1], e[2]) == ("engine", "start")]
    assert len(starts) == 2
    last_seen = query(
        db,
        "SELECT greatest((SELECT max(received_at) FROM ticks WHERE received_at < ?), "
        "(SELECT max(occurred_at) FROM feed_events WHERE occurred_at < ?))",
        [starts[1], starts[1]],
    )[0][0]
    rows = query(
        db, "SELECT state, reason, started_at, ended_at FROM feed_coverage ORDER BY started_at"
    )
    (crash,) = [r for r in rows if r[1] == "crash"]
    assert crash[0] == "down" and crash[2] == last_seen and crash[3] > starts[1]
    assert rows[-1][:2] == ("down", "no_run") and rows[-1][3] is None  # the second one stopped


def test_a_database_held_before_the_stream_starts_loses_nothing(sim_factory, engines, tmp_path):
    sim = sim_factory(markets=500, rate=300)
    db = tmp_path / "k.duckdb"
    Warehouse(db).migrate()
    hold = (  # an analyst who opened the file directly while no stream ran, for a while
        "import sys, time, duckdb\n"
        "con = duckdb.connect(sys.argv[1])\n"
        "print('held', flush=True); sys.stdin.readline()\n"
    )
    with Holder(hold, db) as holder:
        assert holder.ready == "held"
        rss_before = psutil.Process().memory_info().rss
        engine = engines(config_for(sim, db))
        wait_for(
            lambda: engine.stats.backlog_bytes > 1_000_000,
            timeout=60,
            interval=1,
            what="a backlog while the database is held",
        )
        assert engine.stats.ticks_stored == 0
        peak = psutil.Process().memory_info().rss
        holder.release()
    # drained: back to what arrives between two flushes (never exactly 0 while ticks keep
    # coming, on a loaded machine); settle_and_compare then checks every frame was stored
    wait_for(lambda: engine.stats.backlog_bytes < 200_000, timeout=120, what="backlog drained")
    expected, stored = settle_and_compare(sim, db, engine)
    assert stored == expected
    assert peak - rss_before < 200 * 1024 * 1024, "memory grew with the backlog"
    assert {"database_busy", "database_free"} <= set(kinds(db))


def test_plain_duckdb_on_the_live_file_is_refused_and_the_stream_never_waits(
    sim_factory, engines, tmp_path
):
    sim = sim_factory(markets=500, rate=300)
    db = tmp_path / "k.duckdb"
    engine = engines(config_for(sim, db))
    wait_for(lambda: engine.stats.ticks_stored_ws > 0, timeout=30, what="first ticks")
    tries = subprocess.run(
        [sys.executable, "-c", "import sys, duckdb; duckdb.connect(sys.argv[1])", str(db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tries.returncode != 0 and "lock" in tries.stderr
    stored = engine.stats.ticks_stored_ws
    wait_for(lambda: engine.stats.ticks_stored_ws > stored + 300, timeout=30, what="more ticks")
    expected, stored_keys = settle_and_compare(sim, db, engine)
    assert stored_keys == expected
    assert engine.stats.db_busy_since is None


def test_the_stream_process_keeps_pandas_out(sim_factory, tmp_path):
    """DuckDB and pyarrow would import pandas (~30 MB) on first use; the store process never
    hands them a pandas object, so it keeps pandas out (`stream/lean.py`) and still stores
    everything, through Arrow; the engine's own process, which only receives, loads none of
    DuckDB, Arrow or pandas."""
    sim = sim_factory(markets=200, rate=300)
    db = tmp_path / "data" / "k.duckdb"
    env = dict(os.environ, KALSHI_REST_URL=sim.rest_url, KALSHI_WS_URL=sim.ws_url)
    cmd = [sys.executable, "-m", "kalshi_pipeline.cli", "stream", "--database", str(db), "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_ticks(db, 300, "ticks stored by the stream")
        engine = psutil.Process(proc.pid)
        (store,) = engine.children()
        maps = {m.path for m in store.memory_maps()}
        engine_maps = {m.path for m in engine.memory_maps()}
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert any("/pyarrow/" in p for p in maps)  # the batches did go through Arrow
    assert not [p for p in maps if "/pandas/" in p or "/numpy" in p]
    # nor pyarrow.dataset, which would bring Parquet and S3 with it
    assert not [p for p in maps if "/pyarrow/_dataset" in p or "libarrow_s3" in p]
    assert not [p for p in engine_maps if any(n in p for n in ("/pandas/", "/pyarrow/", "duckdb"))]


def test_a_lean_process_puts_arrow_on_the_system_allocator_and_still_stores(tmp_path):
    """`lean()` (the stream's start): Arrow's buffers from the system allocator, pandas kept out,
    and an Arrow table still goes into DuckDB."""
    script = (
        "import pyarrow as pa, duckdb\n"
        "from kalshi_pipeline.stream.lean import lean\n"
        "before = pa.default_memory_pool().backend_name\n"
        "lean()\n"
        "t = pa.table({'a': pa.array(range(100_000), pa.int64())})\n"
        "con = duckdb.connect()\n"
        "print(before, pa.default_memory_pool().backend_name, pa.total_allocated_bytes() > 0,\n"
        "      con.execute('SELECT sum(a) FROM t').fetchone()[0])\n"
        "import pandas\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    before, after, allocated, total = run.stdout.split()
    assert before != "system" and after == "system" and allocated == "True"
    assert int(total) == sum(range(100_000))
    assert run.returncode == 1 and "pandas is kept out" in run.stderr


def test_a_lean_process_stores_arrow_into_duckdb_without_numpy(tmp_path):
    """`lean()` keeps numpy and pyarrow.dataset out of the store process: Arrow arrays of every
    type the writer builds still go into DuckDB (as a table, a record batch or a reader; DuckDB
    would import pyarrow.dataset to scan them), parameters still bind, and an import of numpy
    says why."""
    script = (
        "from kalshi_pipeline.stream.lean import lean\n"
        "lean()\n"
        "import datetime, decimal, sys, duckdb, pyarrow as pa, pyarrow.compute as pc\n"
        "t = pa.table({'n': pa.array([1, None, 3], pa.int64()),\n"
        "              's': pa.array(['a', 'b', None]),\n"
        "              'd': pa.array(['0.5600', '1.0000', None]),\n"
        "              'b': pa.array([True, False, None]),\n"
        "              'ts': pa.array([1_700_000_000_000_000, None, 2], pa.timestamp('us'))})\n"
        "con = duckdb.connect()\n"
        "con.execute('CREATE TABLE x (n BIGINT, s VARCHAR, d DECIMAL(10,4), b BOOLEAN, '\n"
        "            'ts TIMESTAMP)')\n"
        "con.execute('INSERT INTO x SELECT n, s, d::DECIMAL(10,4), b, ts FROM t')\n"
        "rows = con.execute('SELECT * FROM x WHERE n >= ? ORDER BY n', [1]).fetchall()\n"
        "assert rows[0][2] == decimal.Decimal('0.5600') and len(rows) == 2, rows\n"
        "assert pc.sum(t['n']).as_py() == 4\n"
        "b, r = t.to_batches()[0], t.to_reader()\n"
        "assert con.execute('SELECT count(*) FROM b').fetchone() == (3,)\n"
        "assert con.execute('SELECT sum(n) FROM r').fetchone() == (4,)\n"
        "try:\n"
        "    import pyarrow.dataset\n"
        "except ImportError as exc:\n"
        "    assert 'pyarrow.dataset is kept out' in str(exc), exc\n"
        "print('numpy' in sys.modules, 'pyarrow.dataset' in sys.modules, flush=True)\n"
        "import numpy\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.stdout.split() == ["False", "False"], run.stderr
    assert run.returncode == 1 and "numpy is kept out" in run.stderr


def test_pandas_kept_out_fails_with_a_message_that_says_why(tmp_path):
    script = (
        "from kalshi_pipeline.stream.lean import keep_pandas_out\n"
        "assert keep_pandas_out()\n"
        "import duckdb\n"
        "con = duckdb.connect()\n"
        "assert con.execute('SELECT ?::INTEGER + 1', [41]).fetchall() == [(42,)]\n"
        "import pandas\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "pandas is kept out of this streaming process" in run.stderr
