"""Analysts on the live warehouse: client processes query while the stream writes and serves.

Pass or fail is decided by what is in DuckDB, the ledger and the clients' own reports, never by
timing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kalshi_pipeline.warehouse import connect
from kalshi_pipeline_tests.helpers import query, wait_for, wait_for_ticks
from kalshi_pipeline_tests.stream.conftest import config_for
from kalshi_pipeline_tests.stream.support import landing_ticker_frames, settle_and_compare

pytestmark = pytest.mark.timeout(300)
REPO = Path(__file__).resolve().parents[2]


def analysts(db: Path, n: int = 5) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [sys.executable, "-m", "kalshi_pipeline.bench.analyst", str(db), "--seconds", "240"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]


def finish(procs: list[subprocess.Popen[str]]) -> list[dict[str, object]]:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr
        out.append(json.loads(stdout))
    return out


def test_five_clients_query_while_the_stream_writes_and_every_tick_is_stored_once(
    sim_factory, engines, tmp_path
):
    sim = sim_factory(markets=500, rate=1000)
    db = tmp_path / "data" / "k.duckdb"
    engine = engines(config_for(sim, db))
    wait_for(lambda: engine.stats.ticks_stored_ws > 1000, timeout=60, what="first ticks")
    procs = analysts(db)
    try:
        start = engine.stats.ticks_stored_ws
        wait_for(
            lambda: engine.stats.ticks_stored_ws > start + 15_000,
            timeout=120,
            interval=0.5,
            what="15,000 more ticks stored while the clients query",
        )
    finally:
        reports = finish(procs)
    for r in reports:
        assert r["errors"] == 0, r["error_samples"]
        assert r["queries"] > 20 and r["count_went_down"] == 0
    assert engine.error is None
    expected, stored = settle_and_compare(sim, db, engine)
    assert stored == expected


def test_the_stream_killed_and_restarted_under_clients_and_they_carry_on(sim_factory, tmp_path):
    sim = sim_factory(markets=500, rate=500)
    db = tmp_path / "data" / "k.duckdb"
    env = dict(os.environ, KALSHI_REST_URL=sim.rest_url, KALSHI_WS_URL=sim.ws_url)
    cmd = [sys.executable, "-m", "kalshi_pipeline.cli", "stream", "--mode", "websocket"]
    cmd += ["--database", str(db), "--quiet"]
    first = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    procs: list[subprocess.Popen[str]] = []
    try:
        wait_for_ticks(db, 500, "ticks stored by the first stream")
        procs = analysts(db)
        wait_for(
            lambda: query(db, "SELECT count(*) FROM ticks")[0][0] > 3000,
            timeout=60,
            interval=0.5,
            what="more ticks while the clients query",
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    before = query(db, "SELECT count(*) FROM ticks")[0][0]
    logged = landing_ticker_frames(db.parent / "landing")  # what the killed stream received
    second = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:

        def stored_all_logged() -> bool:
            rows = query(db, "SELECT landing_segment, landing_offset FROM ticks")
            return logged <= {(s, o) for s, o in rows}

        wait_for(stored_all_logged, timeout=180, interval=1, what="the killed stream's log stored")
        wait_for(
            lambda: query(db, "SELECT count(*) FROM ticks")[0][0] > before + 1000,
            timeout=120,
            interval=0.5,
            what="the restarted stream storing new ticks",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        _out, err = second.communicate(timeout=90)
    assert second.returncode == 0, err
    reports = finish(procs)
    for r in reports:
        assert r["errors"] == 0, r["error_samples"]
        assert r["count_went_down"] == 0
        assert r["max_ticks_seen"] > before, "a client stopped seeing the restarted stream"
    logged = landing_ticker_frames(db.parent / "landing")  # now with the second stream's too
    stored = query(
        db,
        "SELECT landing_segment, landing_offset, count(*) FROM ticks "
        "WHERE source='websocket' GROUP BY 1, 2",
    )
    assert all(n == 1 for _s, _o, n in stored), "a frame was stored twice"
    assert logged <= {(s, o) for s, o, _n in stored}, "a logged frame was never stored"


def test_a_client_query_that_would_exhaust_memory_fails_alone_and_the_stream_streams(
    sim_factory, engines, tmp_path
):
    sim = sim_factory(markets=500, rate=500)
    db = tmp_path / "k.duckdb"
    engine = engines(config_for(sim, db))
    wait_for(lambda: engine.stats.ticks_stored_ws > 500, timeout=60, what="first ticks")
    hog = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from kalshi_pipeline.warehouse import connect\n"
            "con = connect(sys.argv[1], read_only=True)\n"
            "con.execute('SELECT list(range) FROM range(400000000)').fetchall()\n",
            str(db),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert hog.returncode != 0 and "allocate" in hog.stderr, hog.stderr[-2000:]
    stored = engine.stats.ticks_stored_ws
    wait_for(lambda: engine.stats.ticks_stored_ws > stored + 1000, timeout=60, what="streaming")
    assert engine.error is None
    with connect(db, read_only=True) as con:
        assert con.execute("SELECT count(*) > 0 FROM ticks").fetchone() == (True,)
    expected, stored_keys = settle_and_compare(sim, db, engine)
    assert stored_keys == expected
