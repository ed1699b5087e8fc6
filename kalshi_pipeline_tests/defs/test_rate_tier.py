"""The Kalshi rate-limit tier in the feed's config: default from KALSHI_RATE_TIER, shown and
overridable in the Launchpad, and carried to the engine's REST limiter."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from kalshi_pipeline.definitions import defs
from kalshi_pipeline.defs.resources import KalshiFeedResource
from kalshi_pipeline.kalshi.errors import KalshiConfigError
from kalshi_pipeline.kalshi.ratelimit import RateTier
from kalshi_pipeline.stream.config import StreamConfig


def test_the_tier_defaults_to_kalshi_rate_tier_and_reaches_the_engine(
    monkeypatch: pytest.MonkeyPatch, kalshi_home: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("KALSHI_RATE_TIER", "premier")
    feed = KalshiFeedResource.from_env()
    assert feed.rate_tier == "premier"
    config = feed.stream_config(tmp_path / "k.duckdb")
    assert config.kalshi.rate_tier is RateTier.PREMIER
    assert config.read_rate_per_s == 120.0


def test_without_kalshi_rate_tier_the_feed_is_basic_at_20_requests_a_second(
    kalshi_home: Path, tmp_path: Path
) -> None:
    config = KalshiFeedResource.from_env().stream_config(tmp_path / "k.duckdb")
    assert config.kalshi.rate_tier is RateTier.BASIC
    assert config.read_rate_per_s == 20.0
    # an explicit requests_per_s (kalshi-pipeline stream --requests-per-s) still wins
    assert StreamConfig.from_env(requests_per_s=7).read_rate_per_s == 7.0


def test_run_config_may_set_the_tier_and_refuses_an_unknown_one(kalshi_home: Path) -> None:
    job = defs.resolve_job_def("kalshi_ingest")
    ok = {"resources": {"kalshi_feed": {"config": {"rate_tier": "prime"}}}}
    resolved = dg.validate_run_config(job, ok)
    assert resolved["resources"]["kalshi_feed"]["config"]["rate_tier"] == "prime"

    bad = {"resources": {"kalshi_feed": {"config": {"rate_tier": "platinum"}}}}
    with pytest.raises(dg.DagsterInvalidConfigError) as caught:
        dg.validate_run_config(job, bad)
    assert "rate_tier" in str(caught.value)
    assert "platinum" in str(caught.value)


def test_an_unknown_kalshi_rate_tier_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, kalshi_home: Path
) -> None:
    monkeypatch.setenv("KALSHI_RATE_TIER", "platinum")
    with pytest.raises(KalshiConfigError) as caught:
        StreamConfig.from_env()
    assert "KALSHI_RATE_TIER='platinum'" in str(caught.value)
    assert "basic, advanced, premier, paragon, prime, prestige" in str(caught.value)
