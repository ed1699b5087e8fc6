"""The WebSocket transport settings: compression and the message size limit, from every front."""

from __future__ import annotations

from pathlib import Path

import pytest

from kalshi_pipeline.cli import build_parser, stream_config_from_args
from kalshi_pipeline.defs.resources import KalshiFeedResource
from kalshi_pipeline.stream.config import ConfigError, StreamConfig


def test_compression_is_on_by_default_and_the_limit_is_kalshis_64_mib() -> None:
    config = StreamConfig()
    assert config.websocket_compression is True
    assert config.websocket_max_message_bytes == 64 * 1024 * 1024


def test_a_message_limit_below_kalshis_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        StreamConfig(websocket_max_message_bytes=16 * 1024 * 1024).validate()
    assert "websocket_max_message_bytes" in str(caught.value)
    assert "64 MiB" in str(caught.value)
    assert StreamConfig(websocket_max_message_bytes=128 * 1024 * 1024).validate()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [([], True), (["--no-websocket-compression"], False), (["--websocket-compression"], True)],
)
def test_the_stream_command_sets_compression(
    flags: list[str], expected: bool, kalshi_home: Path, tmp_path: Path
) -> None:
    args = build_parser().parse_args(["stream", "--database", str(tmp_path / "k.duckdb"), *flags])
    assert stream_config_from_args(args).websocket_compression is expected


def test_both_compression_flags_at_once_are_refused(kalshi_home: Path) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["stream", "--websocket-compression", "--no-websocket-compression"]
        )


@pytest.mark.parametrize("value", [True, False])
def test_the_kalshi_feed_resource_passes_compression_to_the_engine(
    value: bool, kalshi_home: Path, tmp_path: Path
) -> None:
    feed = KalshiFeedResource(websocket_compression=value)
    assert feed.stream_config(tmp_path / "k.duckdb").websocket_compression is value
