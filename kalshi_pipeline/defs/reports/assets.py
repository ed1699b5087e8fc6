"""Report assets: the market snapshot, the two feed comparisons, feed coverage, the report.

Each asset reaches the warehouse through the `warehouse` resource (attached to the stream's
writer while it serves, else opening the file itself), works on whatever exists (an empty
warehouse gives empty tables and says what is missing), and returns numeric metadata under
stable keys so the UI plots them over time.
"""

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from kalshi_pipeline.defs.ingest.assets import raw_ticks
from kalshi_pipeline.defs.resources import WarehouseResource
from kalshi_pipeline.reporting import (
    LATENCY_COLUMNS,
    STORAGE_COLUMNS,
    build_report,
    markdown_table,
    write_snapshot_json,
)
from kalshi_pipeline.warehouse import coverage, reports
from kalshi_pipeline.warehouse.schema import migrate

GROUP = "reports"
LOCK_WAIT_S = 300.0  # a report run waits this long for a file another process holds unserved


def data_dir(warehouse: WarehouseResource) -> Path:
    return Path(warehouse.path).resolve().parent


@dg.asset(
    deps=[raw_ticks],
    group_name=GROUP,
    kinds={"duckdb"},
    description="Latest state of every market (L1 prices and sizes, volume, open interest, last "
    "update, source) with its metadata, as table `market_snapshot` and as "
    "data/latest_market_snapshot.json (written atomically).",
)
def market_snapshot(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    with warehouse.connect(timeout_s=LOCK_WAIT_S) as con:
        migrate(con)
        count = reports.build_market_snapshot(con)
        rows = reports.fetch_dicts(con, "SELECT * FROM market_snapshot")
        by_status = dict(
            con.execute(
                "SELECT coalesce(status, 'unknown'), count(*) FROM market_snapshot GROUP BY 1"
            ).fetchall()
        )
        no_ticks = con.execute(
            "SELECT count(*) FROM market_snapshot WHERE last_update IS NULL"
        ).fetchone()
    path = data_dir(warehouse) / "latest_market_snapshot.json"
    write_snapshot_json(path, rows)
    context.log.info("market snapshot: %d markets written to %s", count, path)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": count,
            "markets_active": int(by_status.get("active", 0)),
            "markets_without_ticks": int(no_ticks[0]) if no_ticks else 0,
            "json": dg.MetadataValue.path(str(path)),
        }
    )


def _build_table(
    warehouse: WarehouseResource,
    compute: Callable[[Any], list[dict[str, Any]]],
    table: str,
    columns: list[str],
) -> list[dict[str, Any]]:
    """Compute a comparison on a short connection and replace its table with the rows."""
    with warehouse.connect(timeout_s=LOCK_WAIT_S) as con:
        migrate(con)
        rows = compute(con)
        reports.write_table(con, table, rows, columns)
    return rows


@dg.asset(
    deps=[raw_ticks],
    group_name=GROUP,
    kinds={"duckdb"},
    description="Per source and hour: ticks and bytes stored (DuckDB's measured storage), bytes "
    "on the wire, what storing every market on every poll would cost, and the ratios.",
)
def feed_storage_comparison(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    rows = _build_table(
        warehouse,
        reports.storage_comparison,
        "feed_storage_comparison",
        [*STORAGE_COLUMNS, "wire_messages"],
    )
    sources = {r["source"] for r in rows}
    missing = [s for s in ("websocket", "http") if s not in sources]
    if missing:
        context.log.warning(
            "no %s ticks in the last 48 h: those rows are missing", " or ".join(missing)
        )
    meta: dict[str, Any] = {"table": dg.MetadataValue.md(markdown_table(rows, STORAGE_COLUMNS))}
    for source in ("websocket", "http"):
        mine = [r for r in rows if r["source"] == source]
        meta[f"bytes_stored_{source}"] = int(sum(r["bytes_stored"] for r in mine))
        meta[f"ticks_stored_{source}"] = int(sum(r["ticks_stored"] for r in mine))
    meta["missing_sources"] = ", ".join(missing) or "none"
    return dg.MaterializeResult(metadata=meta)


@dg.asset(
    deps=[raw_ticks],
    group_name=GROUP,
    kinds={"duckdb"},
    description="Per source: exchange to received (from ts_ms) and received to stored; when both "
    "feeds ran, how much later polling saw each change the socket saw. p50/p90/p99/max, counts.",
)
def feed_latency_comparison(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    rows = _build_table(
        warehouse, reports.latency_comparison, "feed_latency_comparison", LATENCY_COLUMNS
    )
    meta: dict[str, Any] = {"table": dg.MetadataValue.md(markdown_table(rows, LATENCY_COLUMNS))}
    for r in rows:
        meta[f"{r['metric']}_{r['source']}_p50_ms"] = float(r["p50_ms"])
        meta[f"{r['metric']}_{r['source']}_p99_ms"] = float(r["p99_ms"])
    if not rows:
        context.log.warning("no ticks yet: the latency comparison is empty")
    return dg.MaterializeResult(metadata=meta)


HOUR_S = 3600.0
DAY_S = 86400.0


def coverage_metadata(hour: coverage.Coverage, day: coverage.Coverage) -> dict[str, Any]:
    """Numeric figures under stable keys: coverage as fractions (0 to 1; -1 when nothing was
    recorded in the window), the live share per source, and the seconds of the last day's gaps
    per reason (every reason, 0 when it did not occur)."""
    meta: dict[str, Any] = {
        "coverage_last_hour": -1.0 if hour.covered is None else round(hour.covered, 6),
        "coverage_last_day": -1.0 if day.covered is None else round(day.covered, 6),
        "gap_count_last_day": len(day.gaps),
        "longest_gap_s_last_day": round(day.longest.seconds, 1) if day.longest else 0.0,
    }
    for source in coverage.SOURCES:
        meta[f"live_last_day_{source}"] = round(day.live.get(source, 0.0), 6)
    for reason in coverage.REASONS:
        meta[f"down_s_last_day_{reason}"] = round(day.down_s.get(reason, 0.0), 1)
    return meta


def coverage_of_last(con: Any, seconds: float, database: Path) -> coverage.Coverage:
    """Coverage of the last `seconds`, computed now from what the stream recorded (so a check
    evaluated on its own never judges a table built an hour ago)."""
    return coverage.coverage_over(con, seconds, stream_alive=coverage.stream_serving(database))


def gaps_table(gaps: list[coverage.Gap]) -> str:
    rows = [g.as_dict() for g in gaps]
    for r in rows:
        r["end"] = r["end"] or "still open"
    return markdown_table(rows, ["start", "end", "seconds", "sources", "reason"])


@dg.asset(
    deps=[raw_ticks],
    group_name=GROUP,
    kinds={"duckdb"},
    description="Per source (websocket, http) and channel: contiguous intervals in which the "
    "feed was live, degraded (fallback polling, reconciling, rate-limited) or down, with the "
    "reason (disconnect, silence, refused, rate_limit, handover, crash, no_run), over the last "
    "48 h, derived from what the stream recorded; table `feed_coverage`, `ended_at` NULL while "
    "open.",
)
def feed_coverage(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    alive = coverage.stream_serving(Path(warehouse.path))
    now = datetime.now(UTC)
    with warehouse.connect(timeout_s=LOCK_WAIT_S) as con:
        migrate(con)
        intervals = coverage.build_feed_coverage(con, stream_alive=alive, now=now)
    hour = coverage.summarize(intervals, now - timedelta(seconds=HOUR_S), now)
    day = coverage.summarize(intervals, now - timedelta(seconds=DAY_S), now)
    if day.covered is None:
        context.log.warning("no feed recorded in the last day: coverage is unknown")
    return dg.MaterializeResult(
        metadata={
            **coverage_metadata(hour, day),
            "dagster/row_count": len(intervals),
            "headline": day.headline("24 h"),
            "gaps_last_day": dg.MetadataValue.md(gaps_table(day.gaps)),
        }
    )


@dg.asset(
    deps=[feed_storage_comparison, feed_latency_comparison, feed_coverage],
    group_name=GROUP,
    kinds={"python"},
    description="The feed comparison report: Markdown tables and a PNG chart under data/reports/.",
)
def feed_comparison_report(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    with warehouse.connect(timeout_s=LOCK_WAIT_S) as con:
        migrate(con)
        storage = (
            reports.fetch_dicts(con, "SELECT * FROM feed_storage_comparison")
            if _has(con, "feed_storage_comparison")
            else []
        )
        latency = (
            reports.fetch_dicts(con, "SELECT * FROM feed_latency_comparison")
            if _has(con, "feed_latency_comparison")
            else []
        )
        samples = reports.latency_samples(con)
        delays = reports.polling_delay_samples(con)
        summary = reports.period_summary(con)
        day = coverage_of_last(con, DAY_S, Path(warehouse.path))
    report = build_report(
        data_dir(warehouse) / "reports",
        storage,
        latency,
        samples,
        delays,
        summary=summary,
        coverage=day.headline("24 h"),
    )
    png = base64.b64encode(report.chart_path.read_bytes()).decode()
    if report.missing:
        context.log.warning("report built without %s data", " and ".join(report.missing))
    return dg.MaterializeResult(
        metadata={
            **report.metadata,
            "report": dg.MetadataValue.md(
                report.markdown.replace(
                    f"![feed comparison]({report.chart_path.name})",
                    f"![feed comparison](data:image/png;base64,{png})",
                )
            ),
            "report_path": dg.MetadataValue.path(str(report.markdown_path)),
            "chart_path": dg.MetadataValue.path(str(report.chart_path)),
            "missing_sources": ", ".join(report.missing) or "none",
            "coverage_last_day": -1.0 if day.covered is None else round(day.covered, 6),
        }
    )


def _has(con: Any, table: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]
    ).fetchone()
    return bool(row and row[0])
