"""Report assets materialized against a warehouse filled by the real engine in `both` mode."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from kalshi_pipeline.defs.ingest.assets import raw_ticks
from kalshi_pipeline.defs.reports import definitions as reports_defs
from kalshi_pipeline.defs.resources import WarehouseResource
from kalshi_pipeline.kalshi.devkey import ensure_dev_key
from kalshi_pipeline.kalshi.rest import RestClient
from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.ports import free_port
from kalshi_pipeline.stream.config import Mode, StreamConfig
from kalshi_pipeline.stream.engine import Engine
from kalshi_pipeline.warehouse import Warehouse
from kalshi_pipeline.warehouse.reports import measure_storage
from kalshi_pipeline_tests.helpers import query, wait_for

pytestmark = pytest.mark.timeout(300)
SELECTION = dg.AssetSelection.groups("reports") | dg.AssetSelection.checks_for_assets(raw_ticks.key)


def materialize(db: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [raw_ticks, *reports_defs.defs.assets, *reports_defs.defs.asset_checks],
        resources={"warehouse": WarehouseResource(path=str(db))},
        selection=SELECTION,
    )


def checks(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def meta(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    return result.asset_materializations_for_node(asset)[0].metadata


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """30 s of `both` mode against the simulator, then the exchange paused and all stored."""
    from kalshi_pipeline.simulator.process import SimulatorProcess

    tmp = tmp_path_factory.mktemp("reports")
    home = tmp / "kalshi-home"
    ensure_dev_key(home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KALSHI_HOME", str(home))
        mp.setenv("KALSHI_WAREHOUSE_PORT", str(free_port()))  # module scope: before the autouse
        with SimulatorProcess(markets=300, rate=200, seed=11, kalshi_home=home) as sim:
            db = tmp / "data" / "kalshi.duckdb"
            config = StreamConfig(
                mode=Mode.BOTH,
                database=db,
                poll_interval_s=0.5,
                flush_interval_ms=100,
                kalshi=KalshiSettings.for_env("local", rest_url=sim.rest_url, ws_url=sim.ws_url),
            )
            engine = Engine(config).start()
            try:
                wait_for(
                    lambda: (
                        engine.stats.ticks_stored_ws > 3000 and engine.stats.ticks_stored_http > 500
                    ),
                    timeout=120,
                    interval=1,
                    what="ticks from both feeds",
                )
                sql = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "kalshi_pipeline.cli",
                        "sql",
                        "--database",
                        str(db),
                        "--format",
                        "json",
                        "SELECT source, count(*) AS n FROM ticks GROUP BY 1",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                live = materialize(db)  # while the stream owns and serves the file
                sim.set_faults(pause_updates=True)
                passes = query(db, "SELECT count(*) FROM poll_passes")[0][0]
                wait_for(
                    lambda: query(db, "SELECT count(*) FROM poll_passes")[0][0] >= passes + 3,
                    timeout=60,
                    what="three passes after the pause",
                )
                with RestClient(config.kalshi, sign=False, requests_per_s=100) as client:
                    exchange = {m.ticker: m for m in client.get_markets(status="open")}
            finally:
                engine.stop()
            yield {
                "db": db,
                "exchange": exchange,
                "sql": sql,
                "live": live,
                "result": materialize(db),  # no stream: on the file itself
            }


def test_sql_answers_while_the_stream_is_running(filled: dict[str, Any]) -> None:
    run = filled["sql"]
    assert run.returncode == 0, run.stderr
    counts = {r["source"]: r["n"] for r in json.loads(run.stdout)}
    assert counts.get("websocket", 0) > 0 and counts.get("http", 0) > 0


def test_reports_materialize_while_the_stream_runs(filled: dict[str, Any]) -> None:
    live = filled["live"]
    assert live.success
    assert meta(live, "market_snapshot")["dagster/row_count"].value >= 250
    assert meta(live, "feed_storage_comparison")["missing_sources"].value == "none"
    assert checks(live)["raw_ticks_no_frame_twice"].passed
    # both feeds running since the start: the market data was covered all along
    coverage = checks(live)["feed_coverage_last_hour"]
    assert coverage.passed and coverage.metadata["coverage_last_hour"].value == 1.0
    assert meta(live, "feed_coverage")["down_s_last_day_no_run"].value == 0.0


def test_every_asset_materializes_and_every_check_passes_on_good_data(
    filled: dict[str, Any],
) -> None:
    result = filled["result"]
    assert result.success
    assert {k: v.passed for k, v in checks(result).items()} == {
        "raw_ticks_fresh": True,
        "raw_ticks_prices_valid": True,
        "raw_ticks_no_frame_twice": True,
        "snapshot_has_every_active_market": True,
        "feed_coverage_last_hour": False,  # the stream stopped: no feed since, and it says so
    }
    gaps = checks(result)["feed_coverage_last_hour"].metadata["gaps"].value
    assert (gaps[-1]["reason"], gaps[-1]["end"]) == ("no_run", None)


def test_snapshot_equals_the_exchanges_final_state(filled: dict[str, Any]) -> None:
    db, exchange = filled["db"], filled["exchange"]
    snap = {
        r[0]: r[1:]
        for r in query(
            db,
            "SELECT market_ticker, yes_bid, yes_ask, yes_bid_size, yes_ask_size, "
            "price, volume, open_interest, status FROM market_snapshot",
        )
    }
    assert len(exchange) >= 250
    for ticker, m in exchange.items():
        assert snap[ticker] == (
            m.yes_bid,
            m.yes_ask,
            m.yes_bid_size,
            m.yes_ask_size,
            m.last_price,
            m.volume,
            m.open_interest,
            "active",
        ), ticker
    doc = json.loads((db.parent / "latest_market_snapshot.json").read_text())
    assert len(doc["markets"]) == len(snap)
    by_ticker = {m["market_ticker"]: m for m in doc["markets"]}
    some = next(iter(exchange))
    assert by_ticker[some]["yes_bid"] == str(exchange[some].yes_bid)


def test_storage_comparison_bytes_agree_with_the_database_file(filled: dict[str, Any]) -> None:
    db = filled["db"]
    rows = query(
        db,
        "SELECT source, sum(ticks_stored), sum(bytes_stored), "
        "sum(naive_http_bytes) FROM feed_storage_comparison GROUP BY 1",
    )
    by_source = {r[0]: r[1:] for r in rows}
    assert set(by_source) == {"websocket", "http"}
    total_slices = sum(int(r[1]) for r in by_source.values())
    with Warehouse(db).connect() as con:
        whole = measure_storage(con, "TRUE", [])
        ticks = con.execute("SELECT count(*) FROM ticks").fetchone()[0]
    assert sum(int(r[0]) for r in by_source.values()) == ticks
    assert abs(total_slices - whole) <= 0.25 * whole + 2 * 256 * 1024  # a block each side
    assert whole <= db.stat().st_size
    assert by_source["http"][2] > by_source["http"][1], "every market every pass costs more"


def test_latency_comparison_shows_polling_later_than_the_socket(filled: dict[str, Any]) -> None:
    rows = {
        (r[0], r[1]): r[2:]
        for r in query(
            filled["db"],
            "SELECT metric, source, count, p50_ms, p99_ms FROM feed_latency_comparison",
        )
    }
    count, p50, _p99 = rows[("polling_later_than_websocket", "http")]
    assert count > 50 and p50 > 0
    assert ("exchange_to_received", "websocket") in rows
    assert ("exchange_to_received", "http") not in rows  # REST carries no exchange time
    assert rows[("received_to_stored", "http")][0] > 0


def test_report_file_and_chart_exist_with_numeric_metadata(filled: dict[str, Any]) -> None:
    m = meta(filled["result"], "feed_comparison_report")
    for key in (
        "covered_s",
        "ticks_per_hour_websocket",
        "ticks_per_hour_http",
        "latency_p50_ms_websocket",
        "latency_p99_ms_websocket",
        "polling_delay_p50_ms",
        "wire_ratio_http_vs_ws",
        "storage_resolution_bytes",
    ):
        assert isinstance(m[key].value, float), key
    # Rates are over the time covered (tens of seconds here), not per hour bucket.
    covered = m["covered_s"].value
    assert 10 < covered < 600
    ticks_ws = query(filled["db"], "SELECT count(*) FROM ticks WHERE source = 'websocket'")[0][0]
    assert m["ticks_per_hour_websocket"].value == pytest.approx(ticks_ws / covered * 3600, 0.01)
    # A slice of a few blocks is below the measuring resolution: no storage ratio is made up.
    assert "storage_ratio_http_changes_vs_ws" not in m
    png = Path(m["chart_path"].value).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


def test_the_report_opens_with_what_it_covers_and_the_numbers_that_matter(
    filled: dict[str, Any],
) -> None:
    m = meta(filled["result"], "feed_comparison_report")
    md = Path(m["report_path"].value).read_text()
    title, blank, opening = md.splitlines()[:3]
    assert title.startswith("# Feed comparison") and blank == ""
    assert opening.startswith("The market data was covered ")  # how complete, first
    assert "(no_run, still open)." in opening  # built after the stream stopped
    assert "collected in both mode (both feeds side by side)" in opening
    assert "This report covers " in opening and " UTC" in opening
    assert "both feeds stored ticks in every one of the" in opening
    # a 30-second run: the block resolution is said, never hidden behind a bare ratio
    assert "below the measuring resolution" in opening or "bytes are counted in" in opening
    delay = m["polling_delay_p50_ms"].value / 1000
    assert f"Polling saw a change a median {delay:.2f} s later than the socket" in opening
    assert "On the wire polling downloaded" in opening and "times as many bytes" in opening
    # tables with one format per kind of number: no raw keys, no three-decimal counts
    assert "ticks_per_hour_http" not in md and ".000" not in md
    assert "| polling later than websocket | http" in md
    assert "ticks per hour (over " in md
    assert md.index("## Over the period") < md.index("## Per hour") < md.index("## Chart")


def test_checks_fail_naming_rows_on_data_made_bad(filled: dict[str, Any], tmp_path: Path) -> None:
    db = tmp_path / "bad.duckdb"
    db.write_bytes(filled["db"].read_bytes())
    with Warehouse(db).connect() as con:
        con.execute("""INSERT INTO ticks_stored (market_ticker, source, exchange_ts, received_at,
                       stored_at, price, yes_bid, yes_ask, yes_bid_size, yes_ask_size,
                       last_trade_size, volume, open_interest, landing_segment, landing_offset)
                       SELECT 'KXBAD-1', source, exchange_ts, received_at,
                       stored_at, 1.5, 0.9, 0.2, yes_bid_size, yes_ask_size, last_trade_size,
                       volume, open_interest, landing_segment, landing_offset + 1000000000
                       FROM ticks LIMIT 1""")
        con.execute(
            "INSERT INTO ticks_stored BY NAME SELECT * FROM ticks WHERE source = 'websocket' "
            "LIMIT 1"
        )
        con.execute("""INSERT INTO markets (market_ticker, event_ticker, series_ticker, title,
                       yes_sub_title, status, open_time, close_time, result, updated_at,
                       updated_by) VALUES ('KXMISSING-1', 'KXMISSING', 'KXMISSING',
                       't', 's', 'active', now() - INTERVAL 1 HOUR, now() + INTERVAL 1 HOUR,
                       NULL, now(), 'http')""")
    with Warehouse(db).connect() as con:
        con.execute("UPDATE ticks_stored SET received_at = received_at - INTERVAL 2 HOUR")
    result = dg.materialize(
        [raw_ticks, *reports_defs.defs.assets[:1], *reports_defs.defs.asset_checks],
        resources={"warehouse": WarehouseResource(path=str(db))},
        selection=dg.AssetSelection.checks_for_assets(raw_ticks.key),
    )
    found = checks(result)
    assert not found["raw_ticks_prices_valid"].passed
    assert "KXBAD-1" in json.dumps(found["raw_ticks_prices_valid"].metadata["examples"].value)
    assert not found["raw_ticks_no_frame_twice"].passed
    assert found["raw_ticks_no_frame_twice"].metadata["frames_stored_twice"].value == 1
    assert not found["raw_ticks_fresh"].passed
    from kalshi_pipeline.defs.reports.checks import snapshot_has_every_active_market

    missing = snapshot_has_every_active_market(WarehouseResource(path=str(db)))
    assert not missing.passed
    assert "KXMISSING-1" in json.dumps(missing.metadata["examples"].value)


def test_an_empty_warehouse_still_materializes_and_says_what_is_missing(tmp_path: Path) -> None:
    result = materialize(tmp_path / "data" / "empty.duckdb")
    assert result.success
    assert meta(result, "feed_storage_comparison")["missing_sources"].value == "websocket, http"
    assert meta(result, "feed_comparison_report")["missing_sources"].value == "websocket, http"
    assert meta(result, "market_snapshot")["dagster/row_count"].value == 0
    assert not checks(result)["raw_ticks_fresh"].passed


def test_a_reader_of_the_old_snapshot_never_sees_a_half_written_file(tmp_path: Path) -> None:
    from kalshi_pipeline.reporting import write_snapshot_json

    path = tmp_path / "latest_market_snapshot.json"
    write_snapshot_json(path, [{"market_ticker": f"OLD-{i}"} for i in range(5000)])
    with open(path) as old:
        write_snapshot_json(path, [{"market_ticker": f"NEW-{i}"} for i in range(10)])
        assert len(json.load(old)["markets"]) == 5000
    assert len(json.loads(path.read_text())["markets"]) == 10
