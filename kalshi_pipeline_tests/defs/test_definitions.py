"""The definitions load with the names operators, tests and the UI rely on."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from kalshi_pipeline.definitions import defs
from kalshi_pipeline.defs.ingest.jobs import kalshi_ingest_job
from kalshi_pipeline.defs.resources import KalshiFeedResource, WarehouseResource
from kalshi_pipeline.defs.validation import checked_resource


def test_definitions_load_with_every_name_operators_use() -> None:
    job = defs.resolve_job_def("kalshi_ingest")
    assert job.executor_def is dg.in_process_executor
    assert [node.name for node in job.nodes] == ["stream_ticks"]
    assert job.nodes[0].definition.retry_policy is None  # a retry would swallow terminations
    # A shard tag on the job would queue a Launchpad run behind the run it should replace.
    assert "kalshi/shard" not in job.tags

    keepalive = defs.resolve_sensor_def("kalshi_ingest_keepalive")
    assert keepalive.default_status == dg.DefaultSensorStatus.RUNNING
    # Often enough to replace a dead worker well within 60 s; skips write no event-log rows.
    assert keepalive.minimum_interval_seconds == 15
    assert keepalive.job_name == "kalshi_ingest"
    failures = defs.resolve_sensor_def("kalshi_ingest_failures")
    assert failures.default_status == dg.DefaultSensorStatus.RUNNING

    (raw_ticks,) = [s for s in defs.resolve_all_asset_specs() if s.key == dg.AssetKey("raw_ticks")]
    policy = raw_ticks.freshness_policy
    assert policy is not None
    assert policy.fail_window.to_timedelta().total_seconds() == 600
    assert policy.warn_window.to_timedelta().total_seconds() == 300

    resources = defs.resources or {}
    assert {"kalshi_feed", "warehouse"} <= set(resources)


def test_mode_is_a_plain_choice_in_run_config() -> None:
    job = defs.resolve_job_def("kalshi_ingest")
    for mode in ("websocket", "http", "both"):
        config = {"resources": {"kalshi_feed": {"config": {"mode": mode}}}}
        resolved = dg.validate_run_config(job, config)
        assert resolved["resources"]["kalshi_feed"]["config"]["mode"] == mode


def test_feed_defaults_come_from_the_environment_and_survive_a_partial_override(
    monkeypatch: pytest.MonkeyPatch, kalshi_home: Path
) -> None:
    monkeypatch.setenv("USE_WEBSOCKET_MARKET_DATA", "false")
    monkeypatch.setenv("WEBSOCKET_TIMEOUT", "12")
    monkeypatch.setenv("WEBSOCKET_MAX_RETRIES", "7")
    monkeypatch.setenv("WEBSOCKET_FALLBACK_TO_HTTP", "false")
    monkeypatch.setenv("KALSHI_DUCKDB_PATH", "/tmp/elsewhere/k.duckdb")
    job = dg.Definitions(
        jobs=[kalshi_ingest_job],
        resources={
            "kalshi_feed": checked_resource(KalshiFeedResource.from_env(), "kalshi_feed"),
            "warehouse": checked_resource(WarehouseResource.from_env(), "warehouse"),
        },
    ).resolve_job_def("kalshi_ingest")

    defaults = dg.validate_run_config(job, {})["resources"]
    feed = defaults["kalshi_feed"]["config"]
    assert (feed["mode"], feed["websocket_timeout_s"], feed["max_retries"]) == ("http", 12.0, 7)
    assert feed["fallback_to_http"] is False
    assert defaults["warehouse"]["config"]["path"] == "/tmp/elsewhere/k.duckdb"

    # Setting only the mode in the Launchpad keeps the other values from the environment.
    switched = dg.validate_run_config(
        job, {"resources": {"kalshi_feed": {"config": {"mode": "both"}}}}
    )["resources"]["kalshi_feed"]["config"]
    assert (switched["mode"], switched["websocket_timeout_s"], switched["max_retries"]) == (
        "both",
        12.0,
        7,
    )


def test_credentials_reach_the_resource_only_as_environment_variable_names(
    monkeypatch: pytest.MonkeyPatch, kalshi_home: Path
) -> None:
    monkeypatch.setenv("KALSHI_API_KEY_ID", "key-id-from-env")
    monkeypatch.setenv("KALSHI_PRIVATE_KEY_PATH", "/keys/prod.pem")
    feed = checked_resource(KalshiFeedResource.from_env(), "kalshi_feed")
    fields = feed.config_schema.as_field().config_type.fields  # type: ignore[attr-defined]
    assert fields["api_key_id"].default_value == {"env": "KALSHI_API_KEY_ID"}
    assert fields["private_key_path"].default_value == {"env": "KALSHI_PRIVATE_KEY_PATH"}
    assert fields["private_key_passphrase"].default_value is None
