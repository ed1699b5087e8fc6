"""What the engine does at start with the database's folder and an earlier landing log."""

from __future__ import annotations

import pytest

from kalshi_pipeline.stream.landing import Kind, LandingLog, Source
from kalshi_pipeline.warehouse.paths import landing_folder
from kalshi_pipeline_tests.helpers import feed_events, query, wait_for
from kalshi_pipeline_tests.stream.conftest import config_for
from kalshi_pipeline_tests.stream.test_landing_writer import frame

pytestmark = pytest.mark.timeout(120)


def test_an_earlier_versions_landing_log_is_moved_beside_the_database_and_loaded(
    sim_factory, engines, tmp_path
):
    sim = sim_factory(markets=50, rate=20)
    db = tmp_path / "data" / "kalshi.duckdb"
    legacy = tmp_path / "data" / "landing"  # where an earlier version kept it
    old = LandingLog(legacy)
    for i in range(40):
        old.append(Kind.WS_FRAME, Source.WEBSOCKET, frame(i))
    old.close()
    engines(config_for(sim, db))
    wait_for(
        lambda: (
            db.exists()
            and query(db, "SELECT count(*) FROM ticks WHERE market_ticker LIKE 'KX-%'") == [(40,)]
        ),
        timeout=60,
        interval=0.5,
        what="the earlier version's 40 frames stored",
    )
    kinds = {r[2]: r[3] for r in feed_events(db)}
    assert str(landing_folder(db)) in kinds["landing_moved"]
    assert not legacy.exists() and landing_folder(db).is_dir()
