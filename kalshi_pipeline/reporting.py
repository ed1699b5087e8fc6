"""The feed comparison report: Markdown tables and a PNG chart, written atomically.

Built from the warehouse's comparison tables; works with whatever exists (a source with no data
is named as missing, never an error). Used by the Dagster report asset and `kalshi-pipeline`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tabulate import tabulate

SOURCES = ("websocket", "http")


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: a reader who has the
    old file open keeps the old one, and nobody ever sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plain(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, datetime):
        return v.astimezone(UTC).isoformat()
    return v


def write_snapshot_json(path: Path, rows: list[dict[str, Any]]) -> None:
    doc = {
        "generated_at": datetime.now(UTC).isoformat(),
        "markets": [{k: plain(v) for k, v in r.items()} for r in rows],
    }
    atomic_write(path, json.dumps(doc, indent=1).encode())


@dataclass(frozen=True)
class Report:
    markdown_path: Path
    chart_path: Path
    markdown: str
    metadata: dict[str, float]
    missing: list[str]


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "_no data yet_"
    body = [[_fmt(r.get(c)) for c in columns] for r in rows]
    return tabulate(body, headers=columns, tablefmt="github", disable_numparse=True)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def report_metadata(
    storage: list[dict[str, Any]], latency: list[dict[str, Any]]
) -> dict[str, float]:
    """Numeric figures under stable keys, so the UI plots them across materializations."""
    meta: dict[str, float] = {}
    for source in SOURCES:
        rows = [r for r in storage if r["source"] == source]
        if rows:
            meta[f"bytes_per_hour_{source}"] = float(
                sum(r["bytes_stored"] for r in rows) / len(rows)
            )
            meta[f"ticks_per_hour_{source}"] = float(
                sum(r["ticks_stored"] for r in rows) / len(rows)
            )
    for r in latency:
        if r["metric"] == "exchange_to_received" or (
            r["metric"] == "received_to_stored" and r["source"] == "http"
        ):
            key = "latency" if r["metric"] == "exchange_to_received" else "store_latency"
            meta[f"{key}_p50_ms_{r['source']}"] = float(r["p50_ms"])
            meta[f"{key}_p99_ms_{r['source']}"] = float(r["p99_ms"])
        if r["metric"] == "polling_later_than_websocket":
            meta["polling_delay_p50_ms"] = float(r["p50_ms"])
            meta["polling_delay_p99_ms"] = float(r["p99_ms"])
    ws = sum(r["bytes_stored"] for r in storage if r["source"] == "websocket")
    naive = sum(r["naive_http_bytes"] or 0 for r in storage if r["source"] == "http")
    changes = sum(r["bytes_stored"] for r in storage if r["source"] == "http")
    if ws and naive:
        meta["storage_ratio_naive_http_vs_ws"] = round(naive / ws, 3)
    if ws and changes:
        meta["storage_ratio_http_changes_vs_ws"] = round(changes / ws, 3)
    return meta


def draw_chart(
    path: Path,
    samples: list[dict[str, Any]],
    storage: list[dict[str, Any]],
    polling_delays: list[float] = (),  # type: ignore[assignment]
) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for source in SOURCES:
        values = sorted(
            float(s["exchange_to_received_ms"])
            for s in samples
            if s["source"] == source and s["exchange_to_received_ms"] is not None
        )
        stored = sorted(float(s["received_to_stored_ms"]) for s in samples if s["source"] == source)
        for data, label in ((values, "exchange→received"), (stored, "received→stored")):
            if data:
                ys = [i / (len(data) - 1 or 1) for i in range(len(data))]
                left.plot(data, ys, label=f"{source}: {label}")
    delays = sorted(polling_delays)
    if delays:
        ys = [i / (len(delays) - 1 or 1) for i in range(len(delays))]
        left.plot(delays, ys, "k--", label="http: later than websocket")
    left.set_xscale("symlog")
    left.set_xlabel("milliseconds")
    left.set_ylabel("fraction of ticks")
    left.set_title("Latency distribution per source")
    if left.lines:
        left.legend(fontsize=8)
    hours = sorted({r["hour"] for r in storage})
    width = 0.4
    for i, source in enumerate(SOURCES):
        by_hour = {r["hour"]: r["bytes_stored"] for r in storage if r["source"] == source}
        xs = [h + (i - 0.5) * width for h in range(len(hours))]
        right.bar(xs, [by_hour.get(h, 0) / 1024 for h in hours], width=width, label=source)
    naive = {r["hour"]: r["naive_http_bytes"] or 0 for r in storage if r["source"] == "http"}
    if any(naive.values()):
        right.plot(
            range(len(hours)),
            [naive.get(h, 0) / 1024 for h in hours],
            "k--",
            marker="o",
            label="http, every market every pass",
        )
    right.set_xticks(range(len(hours)), [h.strftime("%m-%d %H:00") for h in hours], rotation=30)
    right.set_yscale("log")
    right.set_ylabel("KiB stored (log scale)")
    right.set_title("Storage per hour per source")
    right.legend(fontsize=8)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


STORAGE_COLUMNS = [
    "hour",
    "source",
    "ticks_stored",
    "bytes_stored",
    "bytes_per_tick",
    "wire_bytes",
    "poll_passes",
    "markets_seen",
    "naive_http_bytes",
    "ratio_vs_websocket",
    "naive_ratio_vs_websocket",
]
LATENCY_COLUMNS = ["metric", "source", "count", "p50_ms", "p90_ms", "p99_ms", "max_ms"]


def build_report(
    folder: Path,
    storage: list[dict[str, Any]],
    latency: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    polling_delays: list[float] = (),  # type: ignore[assignment]
    *,
    now: datetime | None = None,
) -> Report:
    now = now or datetime.now(UTC)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    chart = folder / f"feed_comparison_{stamp}.png"
    md_path = folder / f"feed_comparison_{stamp}.md"
    draw_chart(chart, samples, storage, polling_delays)
    present = {r["source"] for r in storage}
    missing = [s for s in SOURCES if s not in present]
    metadata = report_metadata(storage, latency)
    lines = [
        f"# Feed comparison, {now.strftime('%Y-%m-%d %H:%M UTC')}",
        "",
        "Measured from this warehouse: bytes stored are DuckDB's own storage of each slice "
        "(written to a scratch database and counted), not estimates from row counts.",
        "",
    ]
    if missing:
        lines += [
            f"**Missing:** no `{'`, `'.join(missing)}` ticks yet. Run "
            "`kalshi-pipeline stream --mode both` to fill both sides.",
            "",
        ]
    lines += ["## Headline", ""]
    lines += [f"- `{k}`: {v:,.3f}" for k, v in sorted(metadata.items())] or ["- no figures yet"]
    lines += [
        "",
        "## Storage per hour and source",
        "",
        markdown_table(storage, STORAGE_COLUMNS),
        "",
        "`naive_http_bytes`: what storing every market on every polling pass would have taken "
        "(markets seen times measured bytes per polled tick).",
        "",
        "## Latency per source (ms)",
        "",
        markdown_table(latency, LATENCY_COLUMNS),
        "",
        "`exchange_to_received` uses the exchange's `ts_ms` (REST markets carry none); "
        "`polling_later_than_websocket` pairs each market state seen by both feeds.",
        "",
        f"![feed comparison]({chart.name})",
        "",
    ]
    markdown = "\n".join(lines)
    atomic_write(md_path, markdown.encode())
    atomic_write(
        folder / "feed_comparison_latest.md", markdown.replace(chart.name, chart.name).encode()
    )
    return Report(md_path, chart, markdown, metadata, missing)
