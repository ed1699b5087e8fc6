"""Coverage of a real stream against the simulator: a dropped connection shows as a `down`
interval with reason `disconnect`, the rest is live; `status` says so while the stream runs."""

from __future__ import annotations

import pytest

from kalshi_pipeline import status
from kalshi_pipeline.warehouse import connect
from kalshi_pipeline.warehouse.coverage import build_feed_coverage, stream_serving
from kalshi_pipeline_tests.helpers import feed_events, query, wait_for
from kalshi_pipeline_tests.stream.conftest import config_for
from kalshi_pipeline_tests.stream.support import kinds

pytestmark = pytest.mark.timeout(180)


def coverage_rows(db, alive: bool) -> list[tuple]:  # type: ignore[no-untyped-def]
    with connect(db) as con:
        build_feed_coverage(con, stream_alive=alive)
    return query(
        db,
        "SELECT source, state, reason, started_at, ended_at FROM feed_coverage "
        "ORDER BY started_at, source",
    )


def test_a_dropped_connection_is_a_disconnect_gap_and_the_rest_is_live(
    sim_factory, engines, tmp_path
):
    sim = sim_factory(markets=100, rate=50)
    db = tmp_path / "k.duckdb"
    engine = engines(config_for(sim, db, fallback_to_http=False))
    wait_for(lambda: "reconcile" in kinds(db), timeout=30, what="start-up reconciliation")
    sim.set_faults(drop_connections=True)
    wait_for(lambda: "disconnect" in kinds(db), timeout=30, what="the disconnect recorded")
    sim.clear_faults()

    def reconciled_again() -> bool:
        order = kinds(db)
        again = len(order) - 1 - order[::-1].index("subscribe")
        return order.count("subscribe") >= 2 and "reconcile" in order[again:]

    wait_for(reconciled_again, timeout=30, what="subscribed again and reconciled")
    assert stream_serving(db)

    rows = coverage_rows(db, alive=True)
    dropped = next(e for e in feed_events(db) if e[2] == "disconnect")[0]
    assert {r[0] for r in rows} == {"websocket"}  # websocket mode without fallback
    states = [(r[1], r[2]) for r in rows]
    assert states[0] == ("down", "no_run")  # the start, until subscribed
    (down,) = [r for r in rows[1:] if r[1] == "down"]
    assert down[2] == "disconnect" and down[3] == dropped
    after = rows[rows.index(down) + 1 :]
    assert [(r[1], r[2]) for r in after] == [("degraded", "disconnect"), ("live", None)]
    assert after[-1][4] is None  # open while the stream runs
    assert all(r[1] == "live" for r in rows[1 : rows.index(down)])

    # status, while the stream serves the database: the gap and its reason
    report = status.collect(tmp_path / "no-dagster", db, exchange_timeout_s=None)
    hour = report.coverage["last_hour"]
    assert hour.gaps == 2 and hour.longest_gap_reason in ("disconnect", "no_run")
    longest = max((r[4] - r[3]).total_seconds() for r in rows if r[1] == "down")
    assert 0 < hour.covered < 1.0  # the two gaps, out of the few seconds recorded
    assert hour.longest_gap_s == pytest.approx(longest, abs=0.06)  # rounded to 0.1 s
    text = status.render(report)
    assert "coverage     last hour  " in text and "gaps, longest" in text

    engine.stop()
    assert not stream_serving(db)
    rows = coverage_rows(db, alive=False)
    assert (rows[-1][1], rows[-1][2], rows[-1][4]) == ("down", "no_run", None)


def test_a_paused_shard_is_recorded_and_shown_as_the_exchanges_not_the_feeds(
    sim_factory, engines, tmp_path
):
    sim = sim_factory(markets=60, rate=30, with_ledger=False)
    db = tmp_path / "k.duckdb"
    engines(config_for(sim, db, exchange_status_every_s=0.5))

    def status_events() -> list[str]:
        return [e[3] for e in feed_events(db) if e[2] == "exchange_status"]

    wait_for(lambda: status_events(), timeout=30, what="the exchange's state recorded")
    sim.set_faults(paused_shards=[2])
    wait_for(
        lambda: any("2:closed" in d for d in status_events()),
        timeout=30,
        what="the paused shard recorded",
    )
    sim.clear_faults()
    wait_for(lambda: "2:closed" not in status_events()[-1], timeout=30, what="the shard open again")
    rows = coverage_rows(db, alive=True)
    closed = [r for r in rows if r[0] == "exchange"]
    assert [(r[1], r[2]) for r in closed] == [("down", "exchange_closed")]
    assert closed[0][4] is not None  # it ended when the shard opened again
    assert ("websocket", "live") in {(r[0], r[1]) for r in rows}  # the feed itself was fine
