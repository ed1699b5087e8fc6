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
from matplotlib.ticker import FuncFormatter
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


# --------------------------------------------------------------------------- number formats
# One format per kind of number, everywhere in the report: counts with thousands separators,
# bytes in binary units, milliseconds as whole numbers, ratios with a "x".


def fmt_count(v: Any) -> str:
    return "" if v is None else f"{int(v):,}"


def fmt_bytes(v: Any) -> str:
    if v is None:
        return ""
    n = float(v)
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} B"


def fmt_ms(v: Any) -> str:
    return "" if v is None else f"{float(v):,.0f}"


def fmt_ratio(v: Any) -> str:
    if v is None:
        return ""
    r = float(v)
    return f"{r:,.1f}x" if r >= 10 else f"{r:.2f}x"


def fmt_seconds(v: float) -> str:
    """A duration in words: 45 s, 12.5 min, 3.2 h."""
    if v < 120:
        return f"{v:.0f} s"
    if v < 7200:
        return f"{v / 60:.1f} min"
    return f"{v / 3600:.1f} h"


def fmt_hour(v: Any) -> str:
    return v.astimezone(UTC).strftime("%Y-%m-%d %H:00") if isinstance(v, datetime) else str(v)


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """The rows as a GitHub table; numbers formatted by what their column holds."""
    if not rows:
        return "_no data yet_"
    body = [[_fmt(c, r.get(c)) for c in columns] for r in rows]
    return tabulate(body, headers=columns, tablefmt="github", disable_numparse=True)


def _fmt(column: str, v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    if column.endswith("_ms"):
        return fmt_ms(v)
    if "ratio" in column:
        return fmt_ratio(v)
    if column == "bytes_per_tick":
        return f"{float(v):,.1f}"
    if isinstance(v, int | Decimal) or (isinstance(v, float) and v.is_integer()):
        return fmt_count(v)
    if isinstance(v, float):
        return f"{v:,.1f}"
    return str(v)


# --------------------------------------------------------------------------- the figures


@dataclass(frozen=True)
class SourceFigures:
    """One source over the period covered, with what the measurement can resolve."""

    source: str
    ticks: int
    covered_s: float
    minutes_with_ticks: int
    bytes_stored: int
    wire_bytes: int | None
    naive_http_bytes: int | None
    poll_passes: int | None
    resolved: bool  # bytes_stored spans enough blocks for a ratio to mean something
    block_size: int = 0

    def bounds(self) -> tuple[float, float]:
        """bytes_stored one block either way: what the measurement can tell apart."""
        return max(0.0, self.bytes_stored - self.block_size), self.bytes_stored + self.block_size

    def naive_bounds(self) -> tuple[float, float] | None:
        """The every-market-every-pass estimate scales the measured bytes, and their bounds."""
        if not self.naive_http_bytes or not self.bytes_stored:
            return None
        k = self.naive_http_bytes / self.bytes_stored
        lo, hi = self.bounds()
        return k * lo, k * hi

    def per_hour(self, value: float) -> float:
        return value / self.covered_s * 3600 if self.covered_s > 0 else 0.0


@dataclass(frozen=True)
class Period:
    first: datetime | None
    last: datetime | None
    modes: list[str]
    block_size: int
    minutes: int  # clock minutes from the first tick's to the last tick's, both counted
    sources: dict[str, SourceFigures]

    @property
    def covered_s(self) -> float:
        if self.first is None or self.last is None:
            return 0.0
        return (self.last - self.first).total_seconds()

    @classmethod
    def of(cls, summary: dict[str, Any], resolved_blocks: int = 10) -> Period:
        first, last = summary.get("first"), summary.get("last")
        block = int(summary.get("block_size") or 0)
        minutes = 0
        if first is not None and last is not None:
            start = first.replace(second=0, microsecond=0)
            minutes = int((last - start).total_seconds() // 60) + 1
        covered = (last - first).total_seconds() if first is not None and last else 0.0
        sources = {
            name: SourceFigures(
                source=name,
                ticks=int(r["ticks"]),
                covered_s=covered,
                minutes_with_ticks=int(r["minutes_with_ticks"]),
                bytes_stored=int(r["bytes_stored"]),
                wire_bytes=None if r.get("wire_bytes") is None else int(r["wire_bytes"]),
                naive_http_bytes=r.get("naive_http_bytes"),
                poll_passes=r.get("poll_passes"),
                resolved=block > 0 and int(r["bytes_stored"]) >= resolved_blocks * block,
                block_size=block,
            )
            for name, r in (summary.get("sources") or {}).items()
        }
        return cls(first, last, list(summary.get("modes") or []), block, minutes, sources)


def _latency(latency: list[dict[str, Any]], metric: str, source: str) -> dict[str, Any] | None:
    return next((r for r in latency if r["metric"] == metric and r["source"] == source), None)


def report_metadata(period: Period, latency: list[dict[str, Any]]) -> dict[str, float]:
    """Numeric figures under stable keys, so the UI plots them across materializations.

    Rates are over the time the ticks cover (`covered_s`), scaled to an hour. A ratio of bytes
    stored is left out when either side is below the measuring resolution (`RESOLVED_BLOCKS`
    blocks of `storage_resolution_bytes`), rather than reported as a block-size artifact."""
    meta: dict[str, float] = {}
    if period.covered_s > 0:
        meta["covered_s"] = round(period.covered_s, 1)
    if period.block_size:
        meta["storage_resolution_bytes"] = float(period.block_size)
    for name, f in period.sources.items():
        meta[f"ticks_per_hour_{name}"] = round(f.per_hour(f.ticks), 1)
        if f.resolved:
            meta[f"bytes_per_hour_{name}"] = round(f.per_hour(f.bytes_stored), 1)
        if f.wire_bytes is not None:
            meta[f"wire_bytes_per_hour_{name}"] = round(f.per_hour(f.wire_bytes), 1)
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
    ws, http = period.sources.get("websocket"), period.sources.get("http")
    if ws and http and ws.resolved:
        if http.naive_http_bytes:
            meta["storage_ratio_naive_http_vs_ws"] = round(
                http.naive_http_bytes / ws.bytes_stored, 3
            )
        if http.resolved:
            meta["storage_ratio_http_changes_vs_ws"] = round(http.bytes_stored / ws.bytes_stored, 3)
    if ws and http and ws.wire_bytes and http.wire_bytes:
        meta["wire_ratio_http_vs_ws"] = round(http.wire_bytes / ws.wire_bytes, 3)
    return meta


# --------------------------------------------------------------------------- the words


def ratio_with_range(
    value: float, value_bounds: tuple[float, float], base: SourceFigures
) -> tuple[float, float, float] | None:
    """value / base's bytes, with the lowest and highest ratio the block resolution allows;
    None when the base could be nothing at all (under one block)."""
    lo_base, hi_base = base.bounds()
    if lo_base <= 0 or base.bytes_stored <= 0:
        return None
    return value / base.bytes_stored, value_bounds[0] / hi_base, value_bounds[1] / lo_base


def _storage_sentence(period: Period, ws: SourceFigures, http: SourceFigures) -> str:
    block = fmt_bytes(period.block_size)
    naive = http.naive_bounds()
    whole = None if naive is None else ratio_with_range(http.naive_http_bytes or 0, naive, ws)
    changes = ratio_with_range(http.bytes_stored, http.bounds(), ws)
    if whole is None or changes is None:
        return (
            f"Bytes stored (WebSocket {fmt_bytes(ws.bytes_stored)}, polling "
            f"{fmt_bytes(http.bytes_stored)}) are below the measuring resolution "
            f"({block} blocks), so no storage ratio is given; run longer for one."
        )
    exact = ws.resolved and http.resolved

    def said(r: tuple[float, float, float], why: bool) -> str:
        if exact:
            return f"{_times(r[0])}{' as much' if 'times' in _times(r[0]) else ''}"
        because = f": bytes are counted in {block} blocks" if why else ""
        return f"about {r[0]:.1f} times as much ({r[1]:.1f} to {r[2]:.1f} times{because})"

    return (
        f"Polling would have stored {said(whole, True)} as the WebSocket feed had it kept "
        f"every market on every pass ({fmt_bytes(http.naive_http_bytes)} against "
        f"{fmt_bytes(ws.bytes_stored)}); keeping only the markets that changed, it stored "
        f"{said(changes, False)}."
    ).replace("as much as much", "as much")


def _times(ratio: float) -> str:
    if ratio >= 10:
        return f"{ratio:,.0f} times"
    if 0.95 <= ratio <= 1.05:
        return "about the same amount"
    return f"{ratio:.1f} times"


def opening_paragraph(
    period: Period, latency: list[dict[str, Any]], coverage: str | None = None
) -> str:
    """The report's first paragraph: what it covers and the few numbers that matter, in words.
    `coverage`, when given, is its first sentence: how complete the data is (from
    `feed_coverage`)."""
    lead = f"{coverage} " if coverage else ""
    if not period.sources:
        return lead + (
            "No ticks are stored yet, so there is nothing to compare. Run "
            "`kalshi-pipeline stream --mode both` (or launch `kalshi_ingest` with mode `both`) "
            "for a few minutes, then build the report again."
        )
    assert period.first is not None and period.last is not None
    span = (
        f"{period.first.astimezone(UTC):%Y-%m-%d %H:%M} to {period.last.astimezone(UTC):%H:%M} UTC"
        if period.first.date() == period.last.date()
        else f"{period.first.astimezone(UTC):%Y-%m-%d %H:%M} to "
        f"{period.last.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    )
    modes = " and ".join(period.modes) if period.modes else "an unrecorded"
    mode_words = {
        "both": "both feeds side by side",
        "websocket": "the WebSocket feed, polling only as fallback",
        "http": "REST polling only",
    }
    explained = "; ".join(mode_words.get(m, m) for m in period.modes)
    out = [
        f"This report covers {fmt_seconds(period.covered_s)} of stored ticks, {span}, "
        f"collected in {modes} mode" + (f" ({explained})." if explained else ".")
    ]
    names = {"websocket": "the WebSocket feed", "http": "polling"}
    ordered = sorted(period.sources.items(), reverse=True)
    if all(f.minutes_with_ticks == period.minutes for _n, f in ordered):
        whom = "both feeds" if len(ordered) == 2 else names.get(ordered[0][0], "the feed")
        out.append(
            f"Minutes with a tick stored: {whom} stored ticks in every one of "
            f"the {period.minutes} clock minutes."
        )
    else:
        minutes = ", ".join(
            f"{names.get(n, n)} in {f.minutes_with_ticks} of {period.minutes}" for n, f in ordered
        )
        out.append(
            "Minutes with a tick stored: "
            f"{minutes}; a quiet market stores nothing, so the gaps, with their reasons, are "
            "in `feed_coverage`."
        )
    ws, http = period.sources.get("websocket"), period.sources.get("http")
    if ws and http:
        out.append(_storage_sentence(period, ws, http))
        delay = _latency(latency, "polling_later_than_websocket", "http")
        if delay and delay["count"]:
            out.append(
                f"Polling saw a change a median {float(delay['p50_ms']) / 1000:.2f} s later than "
                f"the socket (p99 {float(delay['p99_ms']) / 1000:.2f} s, over "
                f"{fmt_count(delay['count'])} changes both feeds saw)."
            )
        if ws.wire_bytes and http.wire_bytes:
            out.append(
                f"On the wire polling downloaded {_times(http.wire_bytes / ws.wire_bytes)} as "
                f"many bytes ({fmt_bytes(http.wire_bytes)} against {fmt_bytes(ws.wire_bytes)})."
            )
    elif ws or http:
        only = "websocket" if ws else "http"
        out.append(
            f"Only {names[only]} stored ticks in this period, so the two feeds cannot be "
            "compared; run `kalshi-pipeline stream --mode both` for a comparison."
        )
    socket = _latency(latency, "exchange_to_received", "websocket")
    if socket and socket["count"]:
        out.append(
            f"The socket delivered a change a median {fmt_ms(socket['p50_ms'])} ms after the "
            f"exchange's timestamp (p99 {fmt_ms(socket['p99_ms'])} ms)."
        )
    return lead + " ".join(out)


def period_table(period: Period) -> str:
    covered = fmt_seconds(period.covered_s)
    headers = [
        "source",
        "ticks stored",
        f"ticks per hour (over {covered})",
        "minutes with ticks",
        "bytes stored",
        "bytes per tick",
        "bytes on the wire",
        f"wire per hour (over {covered})",
    ]
    body = []
    for name, f in sorted(period.sources.items(), reverse=True):
        body.append(
            [
                name,
                fmt_count(f.ticks),
                fmt_count(round(f.per_hour(f.ticks))),
                f"{f.minutes_with_ticks} of {period.minutes}",
                fmt_bytes(f.bytes_stored)
                + ("" if f.resolved else f" (± {fmt_bytes(period.block_size)})"),
                f"{f.bytes_stored / f.ticks:,.1f}"
                if f.resolved and f.ticks
                else "below resolution",
                fmt_bytes(f.wire_bytes),
                fmt_bytes(f.per_hour(f.wire_bytes)) if f.wire_bytes is not None else "",
            ]
        )
    http = period.sources.get("http")
    if http and http.naive_http_bytes:
        body.append(
            [
                "http, every market every pass (had it stored them)",
                fmt_count(round(http.naive_http_bytes / (http.bytes_stored / http.ticks)))
                if http.ticks and http.bytes_stored
                else "",
                "",
                "",
                fmt_bytes(http.naive_http_bytes)
                + (
                    ""
                    if http.resolved or not http.ticks
                    else " (± "
                    + fmt_bytes(
                        period.block_size * http.naive_http_bytes / max(1, http.bytes_stored)
                    )
                    + ")"
                ),
                "",
                "",
                "",
            ]
        )
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


HOUR_HEADERS = {
    "hour": "hour (UTC)",
    "source": "source",
    "ticks_stored": "ticks stored",
    "bytes_stored": "bytes stored",
    "bytes_per_tick": "bytes per tick",
    "wire_bytes": "bytes on the wire",
    "poll_passes": "polling passes",
    "markets_seen": "markets seen",
    "naive_http_bytes": "every market every pass",
    "ratio_vs_websocket": "vs websocket",
    "naive_ratio_vs_websocket": "every pass vs websocket",
}


def hour_table(storage: list[dict[str, Any]], block_size: int, resolved_blocks: int = 10) -> str:
    """Per hour and source. A slice under ten blocks shows its bytes with the block either way
    and no bytes per tick; a ratio with such a slice on either side shows its range."""
    if not storage:
        return "_no data yet_"

    def coarse(r: dict[str, Any]) -> bool:
        return not block_size or r["bytes_stored"] < resolved_blocks * block_size

    ws = {r["hour"]: r for r in storage if r["source"] == "websocket"}

    def ratio(r: dict[str, Any], key: str, value: float | None) -> str:
        if value is None or r.get(key) is None:
            return ""
        base = ws.get(r["hour"])
        if base is None or not (coarse(r) or coarse(base)):
            return fmt_ratio(r[key])
        scale = value / r["bytes_stored"] if r["bytes_stored"] else 0.0
        lo_base, hi_base = base["bytes_stored"] - block_size, base["bytes_stored"] + block_size
        if lo_base <= 0:
            return "below resolution"
        lo = scale * max(0, r["bytes_stored"] - block_size) / hi_base
        hi = scale * (r["bytes_stored"] + block_size) / lo_base
        return f"{fmt_ratio(r[key])} ({lo:.2f} to {hi:.2f})"

    body = []
    for r in storage:
        rough = coarse(r)
        body.append(
            [
                fmt_hour(r["hour"]),
                r["source"],
                fmt_count(r["ticks_stored"]),
                fmt_bytes(r["bytes_stored"]) + (f" (± {fmt_bytes(block_size)})" if rough else ""),
                "below resolution"
                if rough
                else ("" if r["bytes_per_tick"] is None else f"{float(r['bytes_per_tick']):,.1f}"),
                fmt_bytes(r["wire_bytes"]),
                fmt_count(r["poll_passes"]),
                fmt_count(r["markets_seen"]),
                fmt_bytes(r["naive_http_bytes"])
                + (
                    f" (± {fmt_bytes(block_size * (r['markets_seen'] or 0) / r['ticks_stored'])})"
                    if rough and r["naive_http_bytes"] and r["ticks_stored"]
                    else ""
                ),
                ratio(r, "ratio_vs_websocket", r["bytes_stored"]),
                ratio(r, "naive_ratio_vs_websocket", r["naive_http_bytes"]),
            ]
        )
    return tabulate(
        body, headers=list(HOUR_HEADERS.values()), tablefmt="github", disable_numparse=True
    )


LATENCY_HEADERS = ["measure", "source", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"]
LATENCY_WORDS = {
    "exchange_to_received": "exchange to received",
    "received_to_stored": "received to stored",
    "polling_later_than_websocket": "polling later than websocket",
}


def latency_table(latency: list[dict[str, Any]]) -> str:
    if not latency:
        return "_no data yet_"
    body = [
        [
            LATENCY_WORDS.get(r["metric"], r["metric"]),
            r["source"],
            fmt_count(r["count"]),
            *(fmt_ms(r[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")),
        ]
        for r in latency
    ]
    return tabulate(body, headers=LATENCY_HEADERS, tablefmt="github", disable_numparse=True)


# --------------------------------------------------------------------------- the chart

COLOURS = {"websocket": "#1f77b4", "http": "#d62728", "naive": "#7f7f7f", "delay": "#000000"}


def _cdf(axis: Any, values: list[float], **style: Any) -> None:
    data = sorted(v for v in values if v is not None)
    if data:
        ys = [i / (len(data) - 1 or 1) for i in range(len(data))]
        axis.plot([max(v, 1.0) for v in data], ys, **style)


def draw_chart(
    path: Path,
    samples: list[dict[str, Any]],
    period: Period,
    polling_delays: list[float] = (),  # type: ignore[assignment]
) -> None:
    """Left: latency distributions (cumulative, milliseconds on a log axis, labelled so). Right:
    bytes stored over the period per feed, linear bars with their values written on them.
    Legends sit below the plots, never over the data."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"wspace": 0.35})
    for source in SOURCES:
        mine = [s for s in samples if s["source"] == source]
        _cdf(
            left,
            [
                float(s["exchange_to_received_ms"])
                for s in mine
                if s["exchange_to_received_ms"] is not None
            ],
            color=COLOURS[source],
            label=f"{source}: exchange to received",
        )
        _cdf(
            left,
            [float(s["received_to_stored_ms"]) for s in mine],
            color=COLOURS[source],
            linestyle=":",
            label=f"{source}: received to stored",
        )
    _cdf(
        left,
        list(polling_delays),
        color=COLOURS["delay"],
        linestyle="--",
        label="polling later than websocket",
    )
    left.set_xscale("log")
    left.set_xlim(left=1.0)
    left.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    left.set_xlabel("milliseconds (log scale; 1 ms or less drawn at 1)")
    left.set_ylabel("fraction of ticks at or below")
    left.set_ylim(0, 1.01)
    left.grid(True, which="major", alpha=0.3)
    left.set_title("How long a change takes, per source")
    if left.lines:
        left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    bars: list[tuple[str, float, str, bool]] = []
    ws, http = period.sources.get("websocket"), period.sources.get("http")
    if ws:
        bars.append(("websocket", ws.bytes_stored, COLOURS["websocket"], ws.resolved))
    if http:
        bars.append(("polling, changes only", http.bytes_stored, COLOURS["http"], http.resolved))
        if http.naive_http_bytes:
            bars.append(
                (
                    "polling, every market\nevery pass",
                    http.naive_http_bytes,
                    COLOURS["naive"],
                    http.resolved,
                )
            )
    if bars:
        labels = [b[0] for b in bars]
        values = [b[1] / 1024**2 for b in bars]
        ys = list(range(len(bars)))[::-1]
        right.barh(ys, values, color=[b[2] for b in bars], height=0.6)
        right.set_yticks(ys, labels)
        top = max(values) or 1.0
        right.set_xlim(0, top * 1.35)
        for y, b, v in zip(ys, bars, values, strict=True):
            text = fmt_bytes(b[1]) + ("" if b[3] else " (below resolution)")
            if v > top * 0.6:  # a long bar carries its label inside, so nothing runs off
                right.text(v - top * 0.02, y, text, va="center", ha="right", color="white")
            else:
                right.text(v + top * 0.02, y, text, va="center", fontsize=9)
    right.set_xlabel("MiB stored in DuckDB (linear scale)")
    right.set_title(f"Bytes stored over the {fmt_seconds(period.covered_s)} covered")
    right.grid(True, axis="x", alpha=0.3)
    fig.subplots_adjust(left=0.07, right=0.97, top=0.92, bottom=0.27)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the report

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
    summary: dict[str, Any] | None = None,
    coverage: str | None = None,
    now: datetime | None = None,
) -> Report:
    """The Markdown report and its chart under `folder`, and its numeric metadata.

    `summary` is `warehouse.reports.period_summary()`: the period the ticks cover, the modes and
    the whole-period measurements the opening paragraph is written from. `coverage` is the
    sentence on how complete the data is (`Coverage.headline`), the report's first."""
    now = now or datetime.now(UTC)
    folder.mkdir(parents=True, exist_ok=True)
    period = Period.of(summary or {})
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    chart = folder / f"feed_comparison_{stamp}.png"
    md_path = folder / f"feed_comparison_{stamp}.md"
    draw_chart(chart, samples, period, polling_delays)
    missing = [s for s in SOURCES if s not in period.sources]
    metadata = report_metadata(period, latency)
    block = fmt_bytes(period.block_size) if period.block_size else "one block"
    lines = [
        "# Feed comparison: the WebSocket feed against REST polling",
        "",
        opening_paragraph(period, latency, coverage),
        "",
        f"Built {now.strftime('%Y-%m-%d %H:%M UTC')} from this warehouse. Rates are over the time "
        "the ticks cover, scaled to an hour only where a column says so. Bytes stored are "
        f"DuckDB's own storage of each slice, measured by writing it to a scratch database and "
        f"counting its blocks ({block} each), so each figure is exact to within one block. A "
        "slice smaller than ten blocks is marked with its ± one block, its bytes per tick as "
        "below the measuring resolution, and its ratios as the range one block either way "
        "allows; under two blocks it gets no ratio.",
        "",
        "## Over the period",
        "",
        period_table(period) if period.sources else "_no data yet_",
        "",
        "## Per hour",
        "",
        hour_table(storage, period.block_size),
        "",
        '"Every market every pass": what storing every market on every polling pass would '
        "have taken (markets seen times the measured bytes per polled tick), as the "
        "earlier HTTP watchdog did.",
        "",
        "## Latency per source (milliseconds)",
        "",
        latency_table(latency),
        "",
        '"Exchange to received" uses the exchange\'s timestamp (`ts_ms`), which REST market '
        'objects do not carry; "polling later than websocket" pairs each market state both '
        "feeds saw.",
        "",
        "## Chart",
        "",
        f"![feed comparison]({chart.name})",
        "",
    ]
    markdown = "\n".join(lines)
    atomic_write(md_path, markdown.encode())
    atomic_write(folder / "feed_comparison_latest.md", markdown.encode())
    return Report(md_path, chart, markdown, metadata, missing)
