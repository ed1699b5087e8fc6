"""The engine's typed config: one home for the Dagster resource, the CLI and the benchmarks.

Defaults come from the environment, honouring the predecessor's variables
(`USE_WEBSOCKET_MARKET_DATA`, `WEBSOCKET_FALLBACK_TO_HTTP`, `WEBSOCKET_TIMEOUT`,
`WEBSOCKET_MAX_RETRIES`, `WEBSOCKET_DEBUG`) so an old `.env` keeps meaning what it meant.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from kalshi_pipeline.kalshi.ratelimit import TIER_LIMITS
from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.warehouse.paths import check_database_path, landing_folder


class Mode(StrEnum):
    WEBSOCKET = "websocket"
    HTTP = "http"
    BOTH = "both"


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and the fix."""


TICKER_CHANNEL = "ticker"
BOOK_CHANNEL = "orderbook_delta"
TRADE_CHANNEL = "trade"
CHANNELS = (TICKER_CHANNEL, BOOK_CHANNEL, TRADE_CHANNEL)
CHANNELS_VAR = "KALSHI_CHANNELS"  # the channels' default, e.g. ticker,orderbook_delta,trade
"""The feed's channels, in the order they are subscribed. Only the WebSocket carries order books
and trades; HTTP polling stores the ticker (top of book) only."""


def parse_channels(value: str | Sequence[str]) -> tuple[str, ...]:
    """`"ticker,orderbook_delta"` or a list of names -> a checked tuple, duplicates dropped."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(str(v).strip().lower() for v in items if str(v).strip()))
    unknown = [n for n in names if n not in CHANNELS]
    if unknown or not names:
        got = ", ".join(repr(n) for n in unknown) if unknown else "nothing"
        raise ConfigError(
            f"channels: {got} is not a channel; use one or more of {', '.join(CHANNELS)}, "
            "comma-separated (e.g. ticker,orderbook_delta,trade)"
        )
    return names


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean: use true or false")


def env_float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


@dataclass(frozen=True)
class Scope:
    """Which markets to follow: all (the default), or some series, events or tickers."""

    series: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    tickers: tuple[str, ...] = ()

    @property
    def is_all(self) -> bool:
        return not (self.series or self.events or self.tickers)

    @classmethod
    def of(
        cls,
        series: Sequence[str] = (),
        events: Sequence[str] = (),
        tickers: Sequence[str] = (),
    ) -> Scope:
        def clean(values: Sequence[str]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(v.strip().upper() for v in values if v and v.strip()))

        return cls(clean(series), clean(events), clean(tickers))

    def describe(self) -> str:
        if self.is_all:
            return "all markets"
        parts = [
            f"{name} {','.join(values)}"
            for name, values in (
                ("series", self.series),
                ("events", self.events),
                ("tickers", self.tickers),
            )
            if values
        ]
        return "; ".join(parts)


@dataclass(frozen=True)
class StreamConfig:
    mode: Mode = Mode.WEBSOCKET
    fallback_to_http: bool = True
    websocket_timeout_s: float = 30.0
    max_retries: int = 3
    poll_interval_s: float = 1.0
    flush_interval_ms: int = 250
    # the most rows a batch takes (a backlog's); 10,000 against 5,000: +12 % ticks and +7-14 %
    # deltas through the engine at the firehose (alternating bench runs), peak RSS +0-12 MB
    flush_rows: int = 10_000
    scope: Scope = field(default_factory=Scope)
    database: Path = Path("data/kalshi.duckdb")
    landing_dir: Path | None = None  # default: beside the database, data/kalshi.landing/
    retention_s: float = 24 * 3600.0  # loaded landing segments older than this are removed,
    keep_landing: bool = False  # ... or, with this, compressed and kept (`replay` reads them)
    requests_per_s: float | None = None  # None: the rate tier's (kalshi.rate_tier)
    healthy_after_s: float = 60.0  # a connection this old resets the reconnect backoff
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    debug: bool = False
    # permessage-deflate on the socket. On by default, by measurement (`kalshi-pipeline bench`,
    # compression scenario): about 4x fewer bytes on the wire for 2-7 µs more CPU per tick.
    websocket_compression: bool = True
    websocket_max_message_bytes: int = 64 * 1024 * 1024  # Kalshi's message limit
    # a successor whose feed is not live this long after it started gives up (the owner streams on)
    handover_timeout_s: float = 120.0
    # asked to hand over this long ago and the owner has not: it may not listen (`handover_stalled`)
    handover_stall_s: float = 60.0
    # GET /exchange/status this often; changes are recorded (`exchange_status`) for coverage
    exchange_status_every_s: float = 60.0
    # WebSocket channels: `ticker` (top of book), `orderbook_delta` (full books), `trade`
    channels: tuple[str, ...] = (TICKER_CHANNEL,)
    # order-book markets per subscribe / add_markets command; halved on error 26 (Kalshi's
    # per-subscription market cap is not published)
    book_batch_size: int = 250
    # compare this many seconds apart the stream's books with REST's (GET /markets/orderbooks,
    # up to 100 markets a look, rotating); 0 turns the check off
    book_check_every_s: float = 60.0
    # scope "all": look for open markets without an order-book subscription this often (Kalshi
    # announces no scheduled open on the lifecycle channel, so a market listed before the
    # stream started and opened since is found here)
    book_open_markets_every_s: float = 300.0
    kalshi: KalshiSettings = field(default_factory=KalshiSettings)

    @property
    def read_rate_per_s(self) -> float:
        """REST requests per second: `requests_per_s` when set, else the rate tier's."""
        if self.requests_per_s is not None:
            return self.requests_per_s
        return TIER_LIMITS[self.kalshi.rate_tier].reads_per_s

    @property
    def landing(self) -> Path:
        return self.landing_dir or landing_folder(self.database)

    def validate(self) -> StreamConfig:
        checks = [
            (self.websocket_timeout_s > 0, "websocket_timeout_s must be > 0 (seconds)"),
            (self.max_retries >= 1, "max_retries must be >= 1"),
            (self.poll_interval_s > 0, "poll_interval_s must be > 0 (seconds)"),
            (self.flush_interval_ms >= 10, "flush_interval_ms must be >= 10"),
            (self.flush_rows >= 1, "flush_rows must be >= 1"),
            (self.retention_s >= 0, "retention_s must be >= 0"),
            (self.handover_timeout_s > 0, "handover_timeout_s must be > 0 (seconds)"),
            (self.handover_stall_s > 0, "handover_stall_s must be > 0 (seconds)"),
            (self.exchange_status_every_s > 0, "exchange_status_every_s must be > 0 (seconds)"),
            (self.book_batch_size >= 1, "book_batch_size must be >= 1 (markets per command)"),
            (
                self.book_check_every_s >= 0,
                "book_check_every_s must be >= 0 (seconds; 0 turns the REST check off)",
            ),
            (
                self.book_open_markets_every_s > 0,
                "book_open_markets_every_s must be > 0 (seconds)",
            ),
            (
                self.requests_per_s is None or self.requests_per_s > 0,
                "requests_per_s must be > 0 (or unset to follow KALSHI_RATE_TIER)",
            ),
            (
                self.websocket_max_message_bytes >= 64 * 1024 * 1024,
                "websocket_max_message_bytes must be at least 67108864 (64 MiB, Kalshi's "
                "message limit), or a large real message would close the socket",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if not isinstance(self.mode, Mode):
            raise ConfigError(f"mode={self.mode!r} must be one of websocket, http, both")
        names = parse_channels(self.channels)
        if isinstance(self.channels, str) or names != tuple(self.channels):
            raise ConfigError(
                f"channels={self.channels!r} must be a tuple of distinct channel names, each "
                f"one of {', '.join(CHANNELS)} (StreamConfig.from_env also reads 'a,b' text)"
            )
        streamed = [c for c in self.channels if c != TICKER_CHANNEL]
        if self.mode is Mode.HTTP and streamed:
            raise ConfigError(
                f"channels={','.join(self.channels)} with mode=http: {' and '.join(streamed)} "
                "come only over the WebSocket (REST polling stores the ticker); use mode "
                "websocket or both, or channels=ticker"
            )
        return self

    def streams(self, channel: str) -> bool:
        """Whether the WebSocket feed subscribes `channel`."""
        return channel in self.channels

    def with_(self, **changes: object) -> StreamConfig:
        return replace(self, **changes).validate()  # type: ignore[arg-type]

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> StreamConfig:
        """Defaults from the environment; explicit keyword overrides win."""
        e = os.environ if environ is None else environ
        use_ws = env_bool(e, "USE_WEBSOCKET_MARKET_DATA", True)
        channels: tuple[str, ...] = (TICKER_CHANNEL,)
        raw_channels = e.get(CHANNELS_VAR)
        if raw_channels is not None and raw_channels.strip():
            try:
                channels = parse_channels(raw_channels)
            except ConfigError as exc:
                raise ConfigError(f"{CHANNELS_VAR}={raw_channels!r}: {exc}") from None
        base = cls(
            mode=Mode.WEBSOCKET if use_ws else Mode.HTTP,
            fallback_to_http=env_bool(e, "WEBSOCKET_FALLBACK_TO_HTTP", True),
            websocket_timeout_s=env_float(e, "WEBSOCKET_TIMEOUT", 30.0),
            max_retries=int(env_float(e, "WEBSOCKET_MAX_RETRIES", 3)),
            debug=env_bool(e, "WEBSOCKET_DEBUG", False),
            channels=channels,
            database=Path(e.get("KALSHI_DUCKDB_PATH") or "data/kalshi.duckdb"),
            kalshi=KalshiSettings.from_env(e),
        )
        clean = {k: v for k, v in overrides.items() if v is not None}
        if "mode" in clean and not isinstance(clean["mode"], Mode):
            try:
                clean["mode"] = Mode(str(clean["mode"]).lower())
            except ValueError:
                raise ConfigError(
                    f"mode={clean['mode']!r} must be one of websocket, http, both"
                ) from None
        if "database" in clean:
            clean["database"] = Path(str(clean["database"]))
        if "channels" in clean:
            clean["channels"] = parse_channels(clean["channels"])  # type: ignore[arg-type]
        config = replace(base, **clean).validate()  # type: ignore[arg-type]
        check_database_path(config.database)  # a folder, /proc, no write access: refused now
        return config
