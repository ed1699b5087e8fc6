"""The `channels` setting, from every front: what it accepts and how it refuses the rest."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from kalshi_pipeline.cli import build_parser, main, stream_config_from_args
from kalshi_pipeline.definitions import defs
from kalshi_pipeline.defs.resources import KalshiFeedResource
from kalshi_pipeline.stream.config import ConfigError, Mode, StreamConfig


def test_the_ticker_alone_is_the_default(kalshi_home: Path) -> None:
    assert StreamConfig().channels == ("ticker",)
    assert StreamConfig.from_env().channels == ("ticker",)


def test_the_stream_command_reads_a_comma_separated_list(kalshi_home: Path, tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "stream",
            "--database",
            str(tmp_path / "k.duckdb"),
            "--channels",
            "ticker, orderbook_delta,trade,TRADE",
        ]
    )
    config = stream_config_from_args(args)
    assert config.channels == ("ticker", "orderbook_delta", "trade")
    assert config.streams("orderbook_delta") and config.streams("trade")


def test_an_unknown_channel_on_the_command_line_is_refused_naming_the_allowed_ones(
    kalshi_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "k.duckdb"
    code = main(["stream", "--database", str(db), "--channels", "ticker,bogus", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "channels: 'bogus' is not a channel" in err
    assert "ticker, orderbook_delta, trade" in err
    assert not db.exists()  # refused before anything started


def test_order_books_in_http_mode_are_refused_with_the_way_out(
    kalshi_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        StreamConfig.from_env(mode="http", channels="ticker,orderbook_delta")
    message = str(caught.value)
    assert "mode=http" in message and "orderbook_delta" in message
    assert "use mode websocket or both, or channels=ticker" in message
    code = main(
        ["stream", "--database", str(tmp_path / "k.duckdb"), "--mode", "http", "--channels",
         "trade", "--quiet"]
    )  # fmt: skip
    assert code == 2
    assert "trade come only over the WebSocket" in capsys.readouterr().err
    # both modes stream books over the socket while polling keeps the ticker
    assert StreamConfig.from_env(mode="both", channels="orderbook_delta").mode is Mode.BOTH


def test_no_channel_at_all_is_refused(kalshi_home: Path) -> None:
    with pytest.raises(ConfigError, match="channels: nothing is not a channel"):
        StreamConfig.from_env(channels=" , ")


def test_the_book_settings_are_checked(kalshi_home: Path) -> None:
    with pytest.raises(ConfigError, match="book_batch_size must be >= 1"):
        StreamConfig(book_batch_size=0).validate()
    with pytest.raises(ConfigError, match="book_check_every_s must be >= 0"):
        StreamConfig(book_check_every_s=-1).validate()
    assert StreamConfig(book_check_every_s=0).validate().book_check_every_s == 0


def test_the_kalshi_feed_resource_passes_the_channels_to_the_engine(
    kalshi_home: Path, tmp_path: Path
) -> None:
    feed = KalshiFeedResource(channels=["ticker", "trade"], book_batch_size=50)
    config = feed.stream_config(tmp_path / "k.duckdb")
    assert config.channels == ("ticker", "trade")
    assert config.book_batch_size == 50


def test_run_config_refuses_an_unknown_channel_and_books_over_http(kalshi_home: Path) -> None:
    job = defs.resolve_job_def("kalshi_ingest")
    good = {"resources": {"kalshi_feed": {"config": {"channels": ["ticker", "orderbook_delta"]}}}}
    resolved = dg.validate_run_config(job, good)
    assert resolved["resources"]["kalshi_feed"]["config"]["channels"] == [
        "ticker",
        "orderbook_delta",
    ]
    for config, words in (
        ({"channels": ["bogus"]}, "'bogus' is not a channel"),
        ({"mode": "http", "channels": ["orderbook_delta"]}, "mode=http"),
    ):
        with pytest.raises(dg.DagsterInvalidConfigError) as caught:
            dg.validate_run_config(job, {"resources": {"kalshi_feed": {"config": config}}})
        assert words in str(caught.value)


def test_kalshi_channels_sets_the_default_and_a_bad_one_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, kalshi_home: Path
) -> None:
    monkeypatch.setenv("KALSHI_CHANNELS", "ticker,trade")
    assert StreamConfig.from_env().channels == ("ticker", "trade")
    assert KalshiFeedResource.from_env().channels == ["ticker", "trade"]
    assert StreamConfig.from_env(channels="orderbook_delta").channels == ("orderbook_delta",)
    monkeypatch.setenv("KALSHI_CHANNELS", "tickers")
    with pytest.raises(ConfigError) as caught:
        StreamConfig.from_env()
    assert str(caught.value).startswith("KALSHI_CHANNELS='tickers': channels: 'tickers' is not")
