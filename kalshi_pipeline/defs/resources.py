"""Resources: `kalshi_feed` (the stream engine's config) and `warehouse` (the DuckDB file).

Defaults come from the environment when the code location loads, through the same
`StreamConfig.from_env()` the CLI uses (KALSHI_ENV, KALSHI_RATE_TIER, KALSHI_CHANNELS,
USE_WEBSOCKET_MARKET_DATA, WEBSOCKET_FALLBACK_TO_HTTP, WEBSOCKET_TIMEOUT, WEBSOCKET_MAX_RETRIES,
KALSHI_DUCKDB_PATH). Every
field shows in the Launchpad under `resources.<key>.config` and a run may override any of them;
the mode switch is `resources: {kalshi_feed: {config: {mode: http}}}`. Bad values (an unknown
mode, a negative interval) are refused before a run is created (see `validation.py`).

Credentials never travel in run config: `api_key_id`, `private_key_path` and
`private_key_passphrase` default to `dg.EnvVar(...)` of KALSHI_API_KEY_ID,
KALSHI_PRIVATE_KEY_PATH and KALSHI_PRIVATE_KEY_PASSPHRASE when those are set, so the UI shows the
variable's name and the run worker reads its value.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from kalshi_pipeline.defs.validation import checked_resource
from kalshi_pipeline.kalshi.errors import KalshiConfigError
from kalshi_pipeline.kalshi.settings import (
    ENV_VAR,
    KEY_ID_VAR,
    KEY_PATH_VAR,
    PASSPHRASE_VAR,
    REST_URL_VAR,
    WS_URL_VAR,
    KalshiSettings,
    parse_environment,
)
from kalshi_pipeline.stream.config import ConfigError, Mode, Scope, StreamConfig
from kalshi_pipeline.warehouse import Client, Warehouse, WarehouseError, connect
from kalshi_pipeline.warehouse.connection import DEFAULT_PATH, default_path
from kalshi_pipeline.warehouse.paths import check_database_path

FeedMode = Literal["websocket", "http", "both"]
EnvironmentName = Literal["local", "demo", "prod"]
RateTierName = Literal["basic", "advanced", "premier", "paragon", "prime", "prestige"]

_BUILTIN = StreamConfig()  # the engine's own defaults, before the environment


class FeedScope(dg.Config):
    """Which markets to follow; all three empty means every market."""

    series: list[str] = Field(default=[], description="series tickers, e.g. KXBTCD")
    events: list[str] = Field(default=[], description="event tickers")
    tickers: list[str] = Field(default=[], description="market tickers")


class KalshiFeedResource(dg.ConfigurableResource):
    """How the stream engine reads Kalshi: feed mode, fallback, polling, scope and environment."""

    mode: FeedMode = Field(
        default=_BUILTIN.mode.value,
        description="websocket (default), http (REST polling) or both (both feeds, both stored)",
    )
    fallback_to_http: bool = Field(
        default=_BUILTIN.fallback_to_http,
        description="websocket mode: poll over HTTP while the socket is down or silent",
    )
    websocket_timeout_s: float = Field(
        default=_BUILTIN.websocket_timeout_s,
        gt=0,
        description="seconds of socket silence before falling back to HTTP (more than 0)",
    )
    max_retries: int = Field(
        default=_BUILTIN.max_retries,
        ge=1,
        description="failed connection attempts before falling back to HTTP (1 or more)",
    )
    poll_interval_s: float = Field(
        default=_BUILTIN.poll_interval_s,
        gt=0,
        description="seconds between HTTP polling passes (more than 0)",
    )
    websocket_compression: bool = Field(
        default=_BUILTIN.websocket_compression,
        description="offer permessage-deflate on the WebSocket (Kalshi accepts it): about 4x "
        "fewer bytes on the wire for a little more CPU per tick; on by default (measured, see "
        "the README)",
    )
    flush_interval_ms: int = Field(
        default=_BUILTIN.flush_interval_ms,
        ge=10,
        description="milliseconds between loads of the landing log into DuckDB (10 or more)",
    )
    handover_timeout_s: float = Field(
        default=_BUILTIN.handover_timeout_s,
        gt=0,
        description="a run started while another streams (a mode switch, a rotation) takes over "
        "once its feed is live; not live after this many seconds (more than 0), it fails and the "
        "running one streams on",
    )
    landing_retention_hours: float = Field(
        default=_BUILTIN.retention_s / 3600,
        ge=0,
        description="hours a loaded landing-log segment stays as written; after that it is "
        "removed, or archived with keep_landing (0 or more)",
    )
    keep_landing: bool = Field(
        default=_BUILTIN.keep_landing,
        description="archive loaded landing segments (zstd, <name>.seg.zst, about 15x smaller) "
        "after landing_retention_hours instead of removing them, and keep them: "
        "`kalshi-pipeline replay` loads them into a fresh database",
    )
    scope: FeedScope = Field(default=FeedScope(), description="markets to follow (default all)")
    channels: list[str] = Field(
        default=list(_BUILTIN.channels),
        description="WebSocket channels: ticker (top of book, the default), orderbook_delta "
        "(every order-book change, tables book_snapshots/book_deltas) and trade (table trades); "
        "orderbook_delta and trade need mode websocket or both",
    )
    book_batch_size: int = Field(
        default=_BUILTIN.book_batch_size,
        ge=1,
        description="order-book markets per subscribe command; halved when Kalshi answers "
        "error 26 (too many markets for one subscription)",
    )
    book_check_every_s: float = Field(
        default=_BUILTIN.book_check_every_s,
        ge=0,
        description="seconds between comparisons of the streamed order books with REST's "
        "(up to 100 markets a look, rotating); 0 turns them off",
    )
    environment: EnvironmentName = Field(
        default="local",
        description="local (the simulator), demo or prod; demo and prod need credentials",
    )
    rate_tier: RateTierName = Field(
        default="basic",
        description="the Kalshi account's rate-limit tier; sizes the REST limiter (basic: 20 "
        "requests/s, 3 s of burst); default KALSHI_RATE_TIER",
    )
    rest_url: str | None = Field(
        default=None,
        description="REST base URL; empty means KALSHI_REST_URL when it was set for this "
        "environment (KALSHI_ENV), else the environment's host",
    )
    ws_url: str | None = Field(
        default=None,
        description="WebSocket URL; empty means KALSHI_WS_URL when it was set for this "
        "environment (KALSHI_ENV), else the environment's host",
    )
    api_key_id: str | None = Field(
        default=None, description="set through the environment (KALSHI_API_KEY_ID), not here"
    )
    private_key_path: str | None = Field(
        default=None, description="set through the environment (KALSHI_PRIVATE_KEY_PATH)"
    )
    private_key_passphrase: str | None = Field(
        default=None, description="set through the environment (KALSHI_PRIVATE_KEY_PASSPHRASE)"
    )

    @classmethod
    def from_env(cls) -> KalshiFeedResource:
        """Defaults from the environment, as `kalshi-pipeline stream` reads them."""
        env = StreamConfig.from_env()
        credentials = {
            name: dg.EnvVar(var)
            for name, var in (
                ("api_key_id", KEY_ID_VAR),
                ("private_key_path", KEY_PATH_VAR),
                ("private_key_passphrase", PASSPHRASE_VAR),
            )
            if os.environ.get(var)
        }
        return cls(
            mode=env.mode.value,
            fallback_to_http=env.fallback_to_http,
            websocket_timeout_s=env.websocket_timeout_s,
            max_retries=env.max_retries,
            poll_interval_s=env.poll_interval_s,
            flush_interval_ms=env.flush_interval_ms,
            websocket_compression=env.websocket_compression,
            channels=list(env.channels),
            environment=env.kalshi.env.value,
            rate_tier=env.kalshi.rate_tier.value,
            **credentials,
        )

    def kalshi_settings(self) -> KalshiSettings:
        # KALSHI_REST_URL / KALSHI_WS_URL were set for the environment named by KALSHI_ENV (the
        # simulator's port under `kalshi-pipeline dev`); a run switched to another environment
        # must not inherit them.
        try:
            same_env = parse_environment(os.environ.get(ENV_VAR)).value == self.environment
        except KalshiConfigError:
            same_env = False
        return KalshiSettings.for_env(
            self.environment,
            rest_url=self.rest_url or (os.environ.get(REST_URL_VAR) if same_env else None),
            ws_url=self.ws_url or (os.environ.get(WS_URL_VAR) if same_env else None),
            api_key_id=self.api_key_id,
            private_key_path=self.private_key_path,
            private_key_passphrase=self.private_key_passphrase,
            rate_tier=self.rate_tier,
        )

    def stream_config(self, database: str | os.PathLike[str]) -> StreamConfig:
        """The engine's config for this resource, writing into `database`."""
        return StreamConfig.from_env(
            mode=Mode(self.mode),
            fallback_to_http=self.fallback_to_http,
            websocket_timeout_s=self.websocket_timeout_s,
            max_retries=self.max_retries,
            poll_interval_s=self.poll_interval_s,
            flush_interval_ms=self.flush_interval_ms,
            websocket_compression=self.websocket_compression,
            handover_timeout_s=self.handover_timeout_s,
            retention_s=self.landing_retention_hours * 3600,
            keep_landing=self.keep_landing,
            scope=Scope.of(self.scope.series, self.scope.events, self.scope.tickers),
            channels=self.channels,
            book_batch_size=self.book_batch_size,
            book_check_every_s=self.book_check_every_s,
            database=Path(database),
            kalshi=self.kalshi_settings(),
        )


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file; `connect()` gives a warehouse client (attached to the stream's writer
    while it serves the file, else opening the file itself)."""

    path: str = Field(
        default=str(DEFAULT_PATH),
        min_length=1,
        description="DuckDB file (default KALSHI_DUCKDB_PATH, else data/kalshi.duckdb); the "
        "landing log lives beside it",
    )

    @classmethod
    def from_env(cls) -> WarehouseResource:
        return cls(path=str(default_path()))

    @property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.path)

    @contextlib.contextmanager
    def connect(self, *, read_only: bool = False, timeout_s: float = 60.0) -> Iterator[Client]:
        with connect(
            self.path, create=not read_only, read_only=read_only, timeout_s=timeout_s
        ) as con:
            yield con


def _check_feed(feed: KalshiFeedResource) -> None:
    """Checks across fields, with the engine's own rules (StreamConfig.validate)."""
    try:
        feed.stream_config(database=DEFAULT_PATH)
    except (ConfigError, KalshiConfigError) as exc:
        raise ValueError(str(exc)) from None


def _check_warehouse(resource: WarehouseResource) -> None:
    """A folder, /proc or an unwritable place is refused at launch, not by a failed run."""
    try:
        check_database_path(Path(resource.path))
    except WarehouseError as exc:
        raise ValueError(f"path: {exc}") from None


defs = dg.Definitions(
    resources={
        "kalshi_feed": checked_resource(KalshiFeedResource.from_env(), "kalshi_feed", _check_feed),
        "warehouse": checked_resource(WarehouseResource.from_env(), "warehouse", _check_warehouse),
    }
)
