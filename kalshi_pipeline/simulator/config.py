"""The simulator's settings and the command-line flags that set them."""

from __future__ import annotations

import argparse
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from kalshi_pipeline.simulator.faults import FaultRequest

DEFAULT_PORT = 8700
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")


def parse_duration(text: str) -> float:
    """`30s`, `5m`, `1h`, `1h30m` or a bare number of seconds -> seconds."""
    text = text.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * {"h": 3600, "m": 60, "s": 1}[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h)")
    return total


def _lifetime(text: str) -> int:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < 2 or seconds != int(seconds):
        raise argparse.ArgumentTypeError(
            f"market lifetime must be a whole number of seconds, at least 2, got {text!r}"
        )
    return int(seconds)


def _key_spec(text: str) -> tuple[str, Path]:
    key_id, sep, path = text.partition("=")
    if not sep or not key_id or not path:
        raise argparse.ArgumentTypeError(f"expected KEY_ID=PEM_PATH, got {text!r}")
    return key_id, Path(path).expanduser()


def _rate01(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


READ_REQUEST_COST = 10
READ_BUCKET_SECONDS = 3
"""A read bucket holds this many seconds of its refill (Basic and Advanced since Sep 2026)."""
MIN_READ_TOKENS_PER_S = READ_REQUEST_COST / READ_BUCKET_SECONDS


def _read_rate(text: str) -> float:
    """A read bucket must hold at least one request, or every REST call would be a 429."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected tokens per second, got {text!r}") from None
    if not value >= MIN_READ_TOKENS_PER_S:
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_READ_TOKENS_PER_S:.2f} tokens/s, got {text!r}: a request "
            f"costs {READ_REQUEST_COST} tokens and the bucket holds {READ_BUCKET_SECONDS} s "
            "(200 is Kalshi's Basic tier)"
        )
    return value


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    markets: int = 2000
    rate: float = 50.0
    seed: int | None = None
    ledger: Path | None = None
    book_ledger: Path | None = None
    book_depth_events: float = 1.5
    firehose: int = 0
    book_firehose: int = 0
    market_lifetime_s: int = 3600
    hourly_strikes: int | None = None
    kalshi_home: Path | None = None
    register_keys: list[tuple[str, Path]] = field(default_factory=list)
    dev_key_type: str | None = None  # a new dev key's type; None: KALSHI_DEV_KEY_TYPE, else ed25519
    skew_past_s: float = 10.0
    skew_future_s: float = 60.0
    rest_tokens_per_s: float = 200.0
    ping_interval_s: float = 10.0
    max_markets_per_subscription: int = 100_000
    max_commands_per_s: int = 100
    send_buffer_bytes: int = 16 * 1024 * 1024
    faults: FaultRequest = field(default_factory=FaultRequest)

    def book_ledger_path(self) -> Path | None:
        """The book ledger: `--book-ledger`, else beside the ticker ledger (`X.jsonl` ->
        `X.books.jsonl`), else none."""
        if self.book_ledger is not None:
            return self.book_ledger
        if self.ledger is None:
            return None
        return self.ledger.with_name(self.ledger.stem + ".books.jsonl")

    def strikes_per_hourly_event(self) -> int:
        if self.hourly_strikes is not None:
            return self.hourly_strikes
        return min(10, max(1, self.markets // 10))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `kalshi-pipeline simulate` flags."""
    d = SimConfig()
    a = parser.add_argument
    a("--host", default=d.host, help="address to bind (default %(default)s; keep it loopback)")
    a("--port", type=int, default=d.port, help="port (default %(default)s; 0 = any free port)")
    a("--markets", type=int, default=d.markets, help="open markets in total (default %(default)s)")
    a(
        "--rate",
        type=float,
        default=d.rate,
        help="ticker updates per second over all markets, Poisson (default %(default)s)",
    )
    a("--seed", type=int, default=None, help="seed for the market universe and its updates")
    a("--ledger", type=Path, default=None, help="JSON Lines file of every published ticker msg")
    a(
        "--book-ledger",
        type=Path,
        default=None,
        help="JSON Lines file of every order-book change, trade, snapshot sent and faulted frame "
        "(default: beside --ledger, X.jsonl -> X.books.jsonl)",
    )
    a(
        "--book-depth-events",
        type=float,
        default=d.book_depth_events,
        metavar="MEAN",
        help="mean order-book changes away from the best levels per ticker update "
        "(default %(default)s)",
    )
    a(
        "--firehose",
        type=int,
        default=0,
        metavar="N",
        help="pre-encode N ticker frames and send them to every new ticker subscription first",
    )
    a(
        "--book-firehose",
        type=int,
        default=0,
        metavar="N",
        help="build N orderbook_delta frames over markets of their own (series KXSIMBOOK) and "
        "send them, after the snapshots, to every order-book subscription once it covers all "
        "those markets (0: off; otherwise at least 2)",
    )
    a(
        "--market-lifetime",
        type=_lifetime,
        default=d.market_lifetime_s,
        metavar="DURATION",
        dest="market_lifetime_s",
        help="lifetime of the hourly markets: 30s, 5m, 1h (default 1h)",
    )
    a(
        "--hourly-strikes",
        type=int,
        default=None,
        metavar="N",
        help="markets per hourly event (default: min(10, markets/10))",
    )
    a(
        "--kalshi-home",
        type=Path,
        default=None,
        help="folder of the dev key (default: $KALSHI_HOME or ./.kalshi)",
    )
    a(
        "--register-key",
        type=_key_spec,
        action="append",
        default=[],
        dest="register_keys",
        metavar="KEY_ID=PEM_PATH",
        help="accept this Ed25519 or RSA key too, from its public (or private) PEM (repeatable)",
    )
    a(
        "--dev-key-type",
        choices=["ed25519", "rsa"],
        default=None,
        help="type of the dev key when it is made (default: $KALSHI_DEV_KEY_TYPE, else "
        "ed25519, as Kalshi makes keys); without the flag a dev key already there is used "
        "whatever its type; with it, a dev key of the other type stops the simulator",
    )
    a(
        "--skew-past-s",
        type=float,
        default=d.skew_past_s,
        help="oldest accepted signature timestamp, seconds (default %(default)s)",
    )
    a(
        "--skew-future-s",
        type=float,
        default=d.skew_future_s,
        help="newest accepted signature timestamp, seconds ahead (default %(default)s)",
    )
    a(
        "--rest-tokens-per-s",
        type=_read_rate,
        default=d.rest_tokens_per_s,
        help="REST read bucket refill, tokens per second; 10 tokens a request, 3 s of capacity "
        "(default %(default)s: Kalshi's Basic tier, 20 reads/s)",
    )
    a(
        "--ping-interval-s",
        type=float,
        default=d.ping_interval_s,
        help="seconds between `heartbeat` pings (default %(default)s)",
    )
    a(
        "--max-markets-per-subscription",
        type=int,
        default=d.max_markets_per_subscription,
        help="error 26 above this (default %(default)s)",
    )
    a(
        "--max-commands-per-s",
        type=int,
        default=d.max_commands_per_s,
        help="commands per second per connection, error 27 above (default %(default)s)",
    )
    a(
        "--send-buffer-bytes",
        type=int,
        default=d.send_buffer_bytes,
        help="queued bytes per connection before error 25 (default %(default)s)",
    )
    g = parser.add_argument_group("faults at start (same as POST /_sim/faults)")
    g.add_argument(
        "--drop-every-s", type=float, default=None, help="close every WebSocket every N seconds"
    )
    g.add_argument(
        "--silence-s",
        type=float,
        default=None,
        help="send nothing on sockets opened in the first N seconds",
    )
    g.add_argument(
        "--refuse-handshakes-s",
        type=float,
        default=None,
        help="answer handshakes 503 for N seconds",
    )
    g.add_argument(
        "--http-429-s", type=float, default=None, help="answer every REST request 429 for N seconds"
    )
    g.add_argument(
        "--http-5xx-s",
        type=float,
        default=None,
        help="answer every REST request 500/502/503 for N seconds",
    )
    g.add_argument(
        "--malformed-rate",
        type=_rate01,
        default=0.0,
        help="fraction of ticker sends followed by an extra malformed frame",
    )
    g.add_argument("--slow-ms", type=float, default=0.0, help="delay every REST response")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    return SimConfig(
        host=args.host,
        port=args.port,
        markets=max(0, args.markets),
        rate=max(0.0, args.rate),
        seed=args.seed,
        ledger=args.ledger,
        book_ledger=args.book_ledger,
        book_depth_events=max(0.0, args.book_depth_events),
        firehose=max(0, args.firehose),
        book_firehose=max(0, args.book_firehose),
        market_lifetime_s=args.market_lifetime_s,
        hourly_strikes=args.hourly_strikes,
        kalshi_home=args.kalshi_home,
        register_keys=list(args.register_keys),
        dev_key_type=args.dev_key_type,
        skew_past_s=args.skew_past_s,
        skew_future_s=args.skew_future_s,
        rest_tokens_per_s=args.rest_tokens_per_s,
        ping_interval_s=args.ping_interval_s,
        max_markets_per_subscription=args.max_markets_per_subscription,
        max_commands_per_s=args.max_commands_per_s,
        send_buffer_bytes=args.send_buffer_bytes,
        faults=FaultRequest(
            drop_every_s=args.drop_every_s or None,
            silence_s=args.silence_s or None,
            silence_new_sockets=bool(args.silence_s),
            refuse_handshakes_s=args.refuse_handshakes_s or None,
            http_429_s=args.http_429_s or None,
            http_5xx_s=args.http_5xx_s or None,
            malformed_rate=args.malformed_rate,
            slow_ms=args.slow_ms,
        ),
    )
