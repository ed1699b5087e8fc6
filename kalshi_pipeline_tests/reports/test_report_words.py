"""The report's words and numbers for figures large enough to resolve, and for none at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from kalshi_pipeline.reporting import Period, build_report, fmt_bytes, report_metadata

BLOCK = 256 * 1024
START = datetime(2026, 11, 27, 17, 0, 10, tzinfo=UTC)


def _summary(ws_blocks: int, http_blocks: int) -> dict:
    end = START + timedelta(minutes=25)
    common = {"first": START, "last": end, "minutes_with_ticks": 26}
    return {
        "first": START,
        "last": end,
        "modes": ["both"],
        "block_size": BLOCK,
        "sources": {
            "websocket": {
                **common,
                "source": "websocket",
                "ticks": 75_000,
                "bytes_stored": ws_blocks * BLOCK,
                "wire_bytes": 35_000_000,
                "naive_http_bytes": None,
                "poll_passes": None,
            },
            "http": {
                **common,
                "source": "http",
                "ticks": 76_000,
                "bytes_stored": http_blocks * BLOCK,
                "wire_bytes": 4_200_000_000,
                "naive_http_bytes": 28 * ws_blocks * BLOCK,
                "poll_passes": 1_500,
            },
        },
    }


LATENCY = [
    {
        "metric": "polling_later_than_websocket",
        "source": "http",
        "count": 74_000,
        "p50_ms": 555.0,
        "p90_ms": 945.0,
        "p99_ms": 1085.0,
        "max_ms": 2436.0,
    },
    {
        "metric": "exchange_to_received",
        "source": "websocket",
        "count": 75_000,
        "p50_ms": 1.0,
        "p90_ms": 7.0,
        "p99_ms": 52.0,
        "max_ms": 1312.0,
    },
]


def test_resolved_figures_give_ratios_in_words_and_rates_over_the_time_covered(tmp_path: Path):
    report = build_report(tmp_path, [], LATENCY, [], [], summary=_summary(11, 12))
    opening = report.markdown.splitlines()[2]
    assert "This report covers 25.0 min of stored ticks, 2026-11-27 17:00 to 17:25 UTC" in opening
    assert (
        "Polling would have stored 28 times as much as the WebSocket feed had it kept every "
        f"market on every pass ({fmt_bytes(28 * 11 * BLOCK)} against {fmt_bytes(11 * BLOCK)})"
    ) in opening
    assert "keeping only the markets that changed, it stored 1.1 times as much" in opening
    assert "Polling saw a change a median 0.56 s later than the socket (p99 1.08 s" in opening
    assert "On the wire polling downloaded 120 times as many bytes" in opening
    assert "a median 1 ms after the exchange's timestamp (p99 52 ms)" in opening
    m = report.metadata
    assert m["covered_s"] == 1500.0
    assert m["ticks_per_hour_websocket"] == 180_000.0  # 75,000 in 25 minutes, not per bucket
    assert m["bytes_per_hour_websocket"] == round(11 * BLOCK * 3600 / 1500, 1)
    assert m["storage_ratio_naive_http_vs_ws"] == 28.0
    assert m["storage_ratio_http_changes_vs_ws"] == round(12 / 11, 3)


def test_a_slice_of_a_few_blocks_gives_the_range_the_resolution_allows(tmp_path: Path):
    report = build_report(tmp_path, [], LATENCY, [], [], summary=_summary(3, 2))
    opening = report.markdown.splitlines()[2]
    # naive = 42 x the 2 measured http blocks (1 to 3), against 3 websocket blocks (2 to 4)
    assert (
        "Polling would have stored about 28.0 times as much (10.5 to 63.0 times: bytes are "
        "counted in 256.0 KiB blocks)"
    ) in opening
    assert "it stored about 0.7 times as much (0.2 to 1.5 times)" in opening
    for key in ("storage_ratio_naive_http_vs_ws", "storage_ratio_http_changes_vs_ws"):
        assert key not in report.metadata  # the UI plots only resolved ratios
    assert "below resolution" in report.markdown  # bytes per tick of a slice this small


def test_a_slice_under_two_blocks_gets_no_ratio_and_says_why(tmp_path: Path):
    report = build_report(tmp_path, [], LATENCY, [], [], summary=_summary(1, 1))
    opening = report.markdown.splitlines()[2]
    assert "are below the measuring resolution (256.0 KiB blocks)" in opening
    assert "Polling would have stored" not in opening


def test_an_empty_warehouse_says_what_to_run(tmp_path: Path):
    report = build_report(tmp_path, [], [], [], [], summary=None)
    assert "kalshi-pipeline stream --mode both" in report.markdown.splitlines()[2]
    assert report.missing == ["websocket", "http"]
    assert Period.of({}).sources == {}
    assert report_metadata(Period.of({}), []) == {}
