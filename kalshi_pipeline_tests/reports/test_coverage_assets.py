"""The `feed_coverage` asset, its last-hour check and the report's first sentence, materialized
in-process on a warehouse whose feed events a test wrote: a stream that lost its socket for five
minutes 30 minutes ago and stopped 20 s ago. The gap since the stop grows while the test runs,
so figures that include it are checked within a minute's slack."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from kalshi_pipeline import status
from kalshi_pipeline.defs.ingest.assets import raw_ticks
from kalshi_pipeline.defs.reports import definitions as reports_defs
from kalshi_pipeline.defs.reports.checks import coverage_threshold
from kalshi_pipeline.defs.resources import WarehouseResource
from kalshi_pipeline.warehouse import connect
from kalshi_pipeline_tests.helpers import query

pytestmark = pytest.mark.timeout(120)
START = "mode=websocket fallback_to_http=False scope=all env=local database=x pid=7"


def warehouse_with_a_gap(db: Path) -> datetime:
    now = datetime.now(UTC)

    def ago(minutes: float) -> datetime:
        return now - timedelta(minutes=minutes)

    events = [
        (ago(120), "engine", "start", START),
        (ago(120) + timedelta(seconds=1), "websocket", "subscribe", "ticker (all markets)"),
        (ago(30), "websocket", "disconnect", "closed by the server"),
        (ago(25), "websocket", "subscribe", "ticker (all markets)"),
        (ago(24.9), "http", "reconcile", "pass 9: 1 pages"),  # 6 s reconciling
        (now - timedelta(seconds=20), "engine", "stop", "requested"),
    ]
    with connect(db, create=True) as con:
        for row in events:
            con.execute(
                "INSERT INTO feed_events (occurred_at, source, kind, detail) VALUES (?, ?, ?, ?)",
                list(row),
            )
    return now


def materialize(db: Path) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [raw_ticks, *reports_defs.defs.assets, *reports_defs.defs.asset_checks],
        resources={"warehouse": WarehouseResource(path=str(db))},
        selection=dg.AssetSelection.assets("feed_coverage", "feed_comparison_report")
        | dg.AssetSelection.checks_for_assets(dg.AssetKey("feed_coverage")),
    )


def test_the_check_fails_below_the_threshold_with_the_gaps_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "data" / "kalshi.duckdb"
    warehouse_with_a_gap(db)
    monkeypatch.delenv("KALSHI_COVERAGE_THRESHOLD", raising=False)
    result = materialize(db)
    assert result.success

    meta = result.asset_materializations_for_node("feed_coverage")[0].metadata
    stopped_s = 3600 * (1 - meta["coverage_last_hour"].value) - 300  # 20 s, and the test's time
    assert 20 <= stopped_s < 80
    assert meta["down_s_last_day_disconnect"].value == pytest.approx(300, abs=0.5)
    assert meta["down_s_last_day_no_run"].value == pytest.approx(1 + stopped_s, abs=5)
    assert meta["down_s_last_day_crash"].value == 0.0
    assert meta["gap_count_last_day"].value == 3  # the start-up second, the disconnect, now
    assert meta["longest_gap_s_last_day"].value == pytest.approx(300, abs=0.5)
    rows = query(
        db, "SELECT state, reason, ended_at IS NULL FROM feed_coverage ORDER BY started_at"
    )
    assert rows == [
        ("down", "no_run", False),
        ("live", None, False),
        ("down", "disconnect", False),
        ("degraded", "disconnect", False),
        ("live", None, False),
        ("down", "no_run", True),
    ]

    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == "feed_coverage_last_hour" and not check.passed
    gaps = check.metadata["gaps"].value
    assert [(g["sources"], g["reason"]) for g in gaps] == [
        ("websocket", "disconnect"),
        ("websocket", "no_run"),
    ]
    assert gaps[0]["seconds"] == pytest.approx(300, abs=0.5) and gaps[1]["end"] is None
    assert check.metadata["threshold"].value == 0.99
    assert "Below the threshold 0.99. Gaps: " in check.description
    assert f"{gaps[0]['start']} to {gaps[0]['end']} websocket disconnect" in check.description

    # the report's first sentence says how complete the data is
    report = result.asset_materializations_for_node("feed_comparison_report")[0].metadata
    opening = report["report"].value.splitlines()[2]
    assert re.match(
        r"The market data was covered 9[45]\.\d % of the last 24 h \(2\.0 h recorded; the "
        r"WebSocket feed live 9[45]\.\d %\); 3 gaps, longest 5\.0 min \(disconnect\)\. No "
        r"ticks are stored yet",
        opening,
    ), opening


def test_a_lower_threshold_passes_and_a_bad_one_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "data" / "kalshi.duckdb"
    warehouse_with_a_gap(db)
    monkeypatch.setenv("KALSHI_COVERAGE_THRESHOLD", "90%")
    assert coverage_threshold() == 0.9
    (check,) = materialize(db).get_asset_check_evaluations()
    assert check.passed and check.metadata["threshold"].value == 0.9
    for bad in ("lots", "1.5", "-0.1"):
        monkeypatch.setenv("KALSHI_COVERAGE_THRESHOLD", bad)
        with pytest.raises(ValueError, match=rf"KALSHI_COVERAGE_THRESHOLD='{bad}' is not a"):
            coverage_threshold()


def test_status_shows_coverage_of_the_last_hour_and_day_when_no_stream_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "data" / "kalshi.duckdb"
    warehouse_with_a_gap(db)
    args = ["--dagster-home", str(tmp_path / "none"), "--database", str(db), "--no-exchange"]
    status.main([*args, "--json"])
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    hour, day = report["coverage"]["last_hour"], report["coverage"]["last_day"]
    assert 3600 - 380 < hour["covered"] * 3600 <= 3600 - 320
    assert (hour["gaps"], hour["longest_gap_reason"]) == (2, "disconnect")
    assert hour["longest_gap_s"] == pytest.approx(300, abs=0.5)
    assert 7200 - 381 < day["covered"] * 7200 <= 7200 - 321 + 1  # 2 h recorded

    status.main(args)
    lines = capsys.readouterr().out.splitlines()
    (first,) = [n for n, line in enumerate(lines) if line.startswith("coverage     last hour  ")]
    assert re.fullmatch(
        r"coverage     last hour  9\d\.\d % covered \(the WebSocket feed live 9\d\.\d %\); "
        r"2 gaps, longest 5\.0 min \(disconnect\)",
        lines[first],
    ), lines[first]
    assert re.fullmatch(
        r" {13}last day   9\d\.\d % covered \(2\.0 h recorded; the WebSocket feed live "
        r"9\d\.\d %\); 3 gaps, longest 5\.0 min \(disconnect\)",
        lines[first + 1],
    ), lines[first + 1]
