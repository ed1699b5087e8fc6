"""`feed_coverage` from feed events a test writes into a real DuckDB file: one case per reason.

Times are seconds after T0; `now` is fixed, so every interval is exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kalshi_pipeline.warehouse import connect
from kalshi_pipeline.warehouse.coverage import build_feed_coverage, coverage_over

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
WS = "mode=websocket fallback_to_http=True scope=all env=local database=x pid=101"
WS_NO_FALLBACK = "mode=websocket fallback_to_http=False scope=all env=local database=x pid=101"
HTTP = "mode=http fallback_to_http=True scope=all env=local database=x pid=102"
BOTH = "mode=both fallback_to_http=True scope=all env=local database=x pid=103"


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


def write(db: Path, events: list[tuple[float, str, str, str]], ticks: list[float] = ()) -> None:  # type: ignore[assignment]
    with connect(db, create=True) as con:
        for s, source, kind, detail in events:
            con.execute(
                "INSERT INTO feed_events (occurred_at, source, kind, detail) VALUES (?, ?, ?, ?)",
                [at(s), source, kind, detail],
            )
        for n, s in enumerate(ticks):
            con.execute(
                "INSERT INTO ticks_stored (market_ticker, source, received_at, stored_at, "
                "landing_segment, landing_offset) VALUES ('KX-1', 'websocket', ?, ?, 1, ?)",
                [at(s), at(s), n],
            )


def coverage(
    db: Path, now_s: float, *, alive: bool = True
) -> list[tuple[str, str, str | None, float, float | None]]:
    """Build the table, then read it back: (source, state, reason, start s, end s or None)."""
    with connect(db) as con:
        build_feed_coverage(con, stream_alive=alive, now=at(now_s))
        rows = con.execute(
            "SELECT source, state, reason, epoch_ms(started_at), epoch_ms(ended_at) "
            "FROM feed_coverage ORDER BY started_at, source"
        ).fetchall()
    t0 = T0.timestamp() * 1000
    return [
        (r[0], r[1], r[2], (r[3] - t0) / 1000, None if r[4] is None else (r[4] - t0) / 1000)
        for r in rows
    ]


def started(mode: str = WS, at_s: float = 0.0) -> list[tuple[float, str, str, str]]:
    """An engine start, its socket subscribed 0.5 s later, its reconciliation at 1 s."""
    out = [(at_s, "engine", "start", mode)]
    if "mode=http" not in mode:
        out += [
            (at_s + 0.2, "websocket", "connect", "ws://x"),
            (at_s + 0.5, "websocket", "subscribe", "ticker (all markets)"),
        ]
    out.append((at_s + 1.0, "http", "reconcile", "pass 1: 1 pages"))
    return out


def test_a_stream_that_stayed_subscribed_is_live_with_an_open_interval(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(db, [*started(), (30, "websocket", "markets_added", "KX-2")])
    assert coverage(db, 600) == [
        ("websocket", "down", "no_run", 0.0, 0.5),  # starting: nothing delivered yet
        ("websocket", "live", None, 0.5, None),
    ]
    with connect(db) as con:
        hour = coverage_over(con, 590, stream_alive=True, now=at(600))
    assert hour.covered == 1.0 and hour.gaps == []
    assert hour.live == {"websocket": 1.0, "http": 0.0}


def test_a_disconnect_without_fallback_is_down_then_reconciling(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [
            *started(WS_NO_FALLBACK),
            (10, "websocket", "disconnect", "closed by the server"),
            (11, "websocket", "connect_failed", "connection refused"),
            (12, "websocket", "connect", "ws://x"),
            (12.5, "websocket", "subscribe", "ticker"),
            (13, "http", "reconcile", "pass 2"),
        ],
    )
    assert coverage(db, 100)[1:] == [
        ("websocket", "live", None, 0.5, 10.0),
        ("websocket", "down", "disconnect", 10.0, 12.5),  # a refusal inside keeps the cause
        ("websocket", "degraded", "disconnect", 12.5, 13.0),
        ("websocket", "live", None, 13.0, None),
    ]
    with connect(db) as con:
        cov = coverage_over(con, 99, stream_alive=True, now=at(100))
    assert cov.down_s == {"disconnect": 2.5}
    assert cov.headline("99 s") == (
        "The market data was covered 97.4 % of the last 99 s (the WebSocket feed live 96.9 %); "
        "1 gap, longest 2.5 s (disconnect)."
    )
    (gap,) = cov.gaps
    assert (gap.started_at, gap.ended_at, gap.sources, gap.reason) == (
        at(10),
        at(12.5),
        ("websocket",),
        "disconnect",
    )


def test_silence_covered_by_fallback_polling_is_degraded_not_down(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [
            *started(),
            (20, "websocket", "silence", "no frame for 30s"),
            (20.1, "engine", "fallback_start", "HTTP polling started: silent"),
            (25, "websocket", "subscribe", "ticker"),
            (25, "engine", "fallback_ending", "pass 9"),
            (26, "http", "reconcile", "pass 9"),
            (26.5, "engine", "fallback_end", "HTTP polling stopped"),
        ],
    )
    assert coverage(db, 100)[1:] == [
        ("websocket", "live", None, 0.5, 20.0),
        ("websocket", "down", "silence", 20.0, 20.1),
        ("http", "live", None, 20.1, 26.5),
        ("websocket", "degraded", "silence", 20.1, 26.0),
        ("websocket", "live", None, 26.0, None),
    ]


def test_refused_handshakes_are_down_until_fallback_covers_them(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [
            (0, "engine", "start", WS),
            (0.3, "websocket", "auth_failed", "401 Unauthorized"),
            (1.0, "http", "reconcile", "pass 1"),
            (2.0, "websocket", "connect_failed", "handshake refused"),
            (3.0, "websocket", "connect_failed", "handshake refused"),
            (3.1, "engine", "fallback_start", "3 connection attempts in a row failed"),
        ],
    )
    assert coverage(db, 50) == [
        ("websocket", "down", "no_run", 0.0, 0.3),
        ("websocket", "down", "refused", 0.3, 3.1),
        ("http", "live", None, 3.1, None),
        ("websocket", "degraded", "refused", 3.1, None),
    ]


def test_rate_limited_and_stretched_polling_is_degraded(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [
            (0, "engine", "start", HTTP),
            (20, "http", "rate_limited", "pass 9: retried 3x 429, backed off 4.0s"),
            (40, "http", "rate_limit_stretch", "a pass took 2.5s"),
            (50, "http", "rate_limit_fits", "passes fit in 1.0s again"),
        ],
    )
    assert coverage(db, 60) == [
        ("http", "live", None, 0.0, 16.0),
        ("http", "degraded", "rate_limit", 16.0, 20.0),
        ("http", "live", None, 20.0, 40.0),
        ("http", "degraded", "rate_limit", 40.0, 50.0),
        ("http", "live", None, 50.0, None),
    ]
    with connect(db) as con:
        assert coverage_over(con, 60, stream_alive=True, now=at(60)).covered == 1.0


def test_a_clean_stop_is_down_no_run_until_the_next_engine_is_live(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [*started(BOTH), (60, "engine", "stop", "requested"), *started(BOTH, at_s=200)],
    )
    rows = coverage(db, 300)
    assert rows == [
        ("http", "live", None, 0.0, 60.0),
        ("websocket", "degraded", "no_run", 0.0, 0.5),  # polling covers the socket's start
        ("websocket", "live", None, 0.5, 60.0),
        ("http", "down", "no_run", 60.0, 200.0),
        ("websocket", "down", "no_run", 60.0, 200.0),
        ("http", "live", None, 200.0, None),
        ("websocket", "degraded", "no_run", 200.0, 200.5),
        ("websocket", "live", None, 200.5, None),
    ]
    with connect(db) as con:
        cov = coverage_over(con, 300, stream_alive=True, now=at(300))
    (gap,) = cov.gaps
    assert (gap.seconds, gap.reason, gap.sources) == (140.0, "no_run", ("websocket", "http"))
    assert cov.covered == pytest.approx(160 / 300)


def test_a_stopped_stream_leaves_an_open_no_run_interval(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(db, [*started(), (60, "engine", "stop", "requested")])
    assert coverage(db, 100, alive=False)[-1] == ("websocket", "down", "no_run", 60.0, None)
    with connect(db) as con:
        cov = coverage_over(con, 30, stream_alive=False, now=at(100))
    assert cov.covered == 0.0
    assert cov.gaps[0].ended_at is None and cov.gaps[0].reason == "no_run"


def test_an_engine_that_never_stopped_crashed_at_its_last_record(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [*started(), (30, "websocket", "markets_added", "KX-2"), *started(WS, at_s=120)],
        ticks=[5, 50],  # its last tick arrived at 50 s
    )
    assert coverage(db, 200) == [
        ("websocket", "down", "no_run", 0.0, 0.5),
        ("websocket", "live", None, 0.5, 50.0),
        ("websocket", "down", "crash", 50.0, 120.5),  # until the next engine subscribed
        ("websocket", "live", None, 120.5, None),
    ]


def test_a_dead_newest_engine_is_a_crash_when_no_stream_serves(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(db, started(), ticks=[40])
    assert coverage(db, 100, alive=True)[-1] == ("websocket", "live", None, 0.5, None)
    assert coverage(db, 100, alive=False)[-2:] == [
        ("websocket", "live", None, 0.5, 40.0),
        ("websocket", "down", "crash", 40.0, None),
    ]


def test_a_handover_done_right_has_no_down_interval(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [
            *started(),
            *started(WS.replace("pid=101", "pid=202"), at_s=100),
            (101.2, "engine", "handover_requested", "pid 202 (run abc) is live"),
            (101.5, "engine", "stop", "handed over to pid 202 (run abc)"),
            (102, "engine", "handover", "took over from pid 101"),
            (150, "engine", "stop", "requested"),
        ],
    )
    assert coverage(db, 200) == [
        ("websocket", "down", "no_run", 0.0, 0.5),
        ("websocket", "live", None, 0.5, 150.0),
        ("websocket", "down", "no_run", 150.0, None),
    ]


RUN_A, RUN_B, RUN_C = (f"{c * 8}-0000-0000-0000-000000000000" for c in "abc")


def engine_start(pid: int, run: str, successor_of: int | None = None) -> str:
    """The start detail as the engine writes it (the Dagster op labels the engine with its run)."""
    tail = f" successor_of=pid {successor_of}" if successor_of else ""
    return (
        f"mode=websocket fallback_to_http=True scope=all env=local database=x pid={pid} "
        f"label=run {run}{tail}"
    )


def rows_with_runs(db: Path, now_s: float) -> list[tuple[Any, ...]]:
    with connect(db) as con:
        build_feed_coverage(con, stream_alive=True, now=at(now_s))
        return con.execute(
            "SELECT state, reason, epoch_ms(started_at) - ?, run_id FROM feed_coverage "
            "ORDER BY started_at",
            [int(T0.timestamp() * 1000)],
        ).fetchall()


def test_a_rotation_handover_as_the_engine_records_it_has_no_gap_and_names_each_run(
    tmp_path: Path,
) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [
            *started(engine_start(101, RUN_A)),
            *started(engine_start(202, RUN_B, successor_of=101), at_s=100),
            (101.2, "engine", "handover_requested", f"run {RUN_B} (pid 202) is live after 0.6s"),
            (101.5, "engine", "stop", f"handed over to run {RUN_B} (pid 202)"),
            (102, "engine", "handover", "took over the warehouse from pid 101 after 1.9s"),
        ],
    )
    assert rows_with_runs(db, 200) == [
        ("down", "no_run", 0, RUN_A),
        ("live", None, 500, RUN_A),
        ("live", None, 101_500, RUN_B),  # the successor owns the warehouse from here
    ]


def test_a_successor_overtaken_by_a_newer_one_and_a_terminated_predecessor_leave_no_gap(
    tmp_path: Path,
) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [
            *started(engine_start(101, RUN_A)),
            *started(engine_start(202, RUN_B, successor_of=101), at_s=100),
            *started(engine_start(303, RUN_C, successor_of=101), at_s=101),
            (102, "engine", "stop", f"superseded by run {RUN_C} (pid 303) before taking over"),
            (103, "engine", "handover_requested", f"run {RUN_C} (pid 303) is live"),
            (200, "engine", "stop", "dagster run terminated"),  # the predecessor, terminated
            (201, "engine", "handover", "took over the warehouse from pid 101 after 100s"),
            (300, "engine", "stop", "requested"),  # the last one, stopped
        ],
    )
    assert rows_with_runs(db, 400) == [
        ("down", "no_run", 0, RUN_A),
        ("live", None, 500, RUN_A),
        ("live", None, 200_000, RUN_C),
        ("down", "no_run", 300_000, None),
    ]


def test_a_window_that_opens_inside_a_handover_sees_both_engines(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [
            *started(),
            *started(WS.replace("pid=101", "pid=202"), at_s=100),
            (101.5, "engine", "stop", "handed over to pid 202 (run abc)"),
        ],
    )
    with connect(db) as con:
        cov = coverage_over(con, 99.5, stream_alive=True, now=at(200))  # from 100.5 on
    assert (cov.covered, cov.gaps) == (1.0, [])


def test_a_mode_switch_by_handover_moves_coverage_to_the_new_source(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [
            *started(),
            (100, "engine", "start", HTTP),
            (101.5, "engine", "stop", "handed over to pid 102"),
            (102, "engine", "handover", "took over from pid 101"),
        ],
    )
    assert coverage(db, 200)[1:] == [
        ("websocket", "live", None, 0.5, 101.5),
        ("http", "live", None, 100.0, None),
    ]


def test_a_hole_between_predecessor_stop_and_successor_data_is_down_handover(
    tmp_path: Path,
) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [
            *started(),
            (100, "engine", "start", WS.replace("pid=101", "pid=202")),
            (101, "engine", "stop", "handed over to pid 202"),
            (104, "websocket", "subscribe", "ticker"),
            (104.5, "http", "reconcile", "pass 3"),
        ],
    )
    assert coverage(db, 200)[1:] == [
        ("websocket", "live", None, 0.5, 101.0),
        ("websocket", "down", "handover", 101.0, 104.0),
        ("websocket", "live", None, 104.0, None),
    ]


def test_a_failed_handover_leaves_the_predecessor_streaming(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [
            *started(),
            (100, "engine", "start", WS.replace("pid=101", "pid=202")),
            (105, "websocket", "connect_failed", "refused"),  # the successor's socket
            (105.1, "engine", "fallback_start", "1 connection attempts in a row failed"),
            (130, "engine", "handover_failed", "pid 202 could not subscribe"),
            (131, "engine", "stop", "handover failed"),  # the successor's own stop
        ],
    )
    # the successor's refused attempts and fallback are its own: the predecessor stayed
    # subscribed (as two stream processes record it, see the handover tests)
    assert coverage(db, 200)[1:] == [("websocket", "live", None, 0.5, None)]


def test_coverage_of_an_empty_warehouse_is_unknown(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(db, [])
    assert coverage(db, 100) == []
    with connect(db) as con:
        cov = coverage_over(con, 3600, stream_alive=False, now=at(100))
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'feed_coverage'"
            ).fetchall()
        )
    assert cov.covered is None and cov.gaps == []
    assert (
        cov.headline("hour") == "No feed was recorded in the last hour, so its coverage is unknown."
    )
    assert types["started_at"] == "TIMESTAMP WITH TIME ZONE" and types["state"] == "VARCHAR"


def test_a_closed_shard_and_the_exchanges_maintenance_are_told_from_a_hole(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    write(
        db,
        [
            *started(),
            (2, "http", "exchange_status", "exchange=open shards=1:open,2:open"),
            (10, "http", "exchange_status", "exchange=open shards=1:open,2:closed"),
            (
                20,
                "http",
                "exchange_status",
                "exchange=maintenance shards=1:maintenance,2:maintenance",
            ),
            (21, "websocket", "disconnect", "closed by the server"),
            (40, "http", "exchange_status", "exchange=open shards=1:open,2:open"),
            (41, "websocket", "connect", "ws://x"),
            (41.5, "websocket", "subscribe", "ticker (all markets)"),
            (42, "http", "reconcile", "pass 2: 1 pages"),
        ],
    )
    rows = coverage(db, 60)
    exchange = [r for r in rows if r[0] == "exchange"]
    assert exchange == [
        ("exchange", "down", "exchange_closed", 10.0, 20.0),  # shard 2 only
        ("exchange", "down", "maintenance", 20.0, 40.0),  # the whole exchange
        ("exchange", "down", "maintenance", 20.0, 40.0),  # shard 1
        ("exchange", "down", "maintenance", 20.0, 40.0),  # shard 2, closed before
    ]
    with connect(db) as con:
        channels = con.execute(
            "SELECT channel FROM feed_coverage WHERE source = 'exchange' ORDER BY started_at, "
            "channel"
        ).fetchall()
        assert [c for (c,) in channels] == ["shard 2", "all", "shard 1", "shard 2"]
        minute = coverage_over(con, 59, stream_alive=True, now=at(60))
    # the feed was down 21 s to 41.5 s: while the exchange was in maintenance that is the
    # reason, the rest is the disconnect's
    assert minute.down_s == pytest.approx({"maintenance": 19.0, "disconnect": 1.5})
