"""`kalshi-pipeline`: the same engine, simulator and queries from a terminal."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from kalshi_pipeline.kalshi.errors import KalshiConfigError


def _add_stream(sub: Any) -> None:
    p = sub.add_parser(
        "stream",
        help="run the stream engine in the foreground (Ctrl-C stops it cleanly)",
        description="Stream Kalshi ticks (and, with --channels, order books and trades) into "
        "DuckDB: WebSocket, HTTP polling, or both. "
        "Defaults come from the environment (KALSHI_ENV, KALSHI_DUCKDB_PATH, KALSHI_CHANNELS, "
        "USE_WEBSOCKET_MARKET_DATA, WEBSOCKET_FALLBACK_TO_HTTP, WEBSOCKET_TIMEOUT, "
        "WEBSOCKET_MAX_RETRIES).",
    )
    p.add_argument("--mode", choices=["websocket", "http", "both"], help="feed mode")
    p.add_argument("--database", type=Path, help="DuckDB file (default data/kalshi.duckdb)")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    fb = p.add_mutually_exclusive_group()
    fb.add_argument("--fallback", dest="fallback_to_http", action="store_true", default=None)
    fb.add_argument("--no-fallback", dest="fallback_to_http", action="store_false")
    p.add_argument("--websocket-timeout", dest="websocket_timeout_s", type=float, metavar="S")
    p.add_argument("--max-retries", type=int, metavar="N")
    wc = p.add_mutually_exclusive_group()
    wc.add_argument(
        "--websocket-compression",
        dest="websocket_compression",
        action="store_true",
        default=None,
        help="offer permessage-deflate (the default: about 4x fewer bytes, a little more CPU)",
    )
    wc.add_argument(
        "--no-websocket-compression",
        dest="websocket_compression",
        action="store_false",
        help="do not offer permessage-deflate",
    )
    p.add_argument("--poll-interval", dest="poll_interval_s", type=float, metavar="S")
    p.add_argument("--flush-interval-ms", type=int, metavar="MS")
    p.add_argument(
        "--requests-per-s",
        type=float,
        metavar="N",
        help="REST limit (default: the KALSHI_RATE_TIER tier's, basic = 20)",
    )
    p.add_argument(
        "--channels",
        metavar="LIST",
        help="WebSocket channels, comma-separated: ticker (default), orderbook_delta, trade",
    )
    p.add_argument(
        "--book-check-every",
        dest="book_check_every_s",
        type=float,
        metavar="S",
        help="compare the streamed order books with REST's every S seconds (60; 0: never)",
    )
    p.add_argument("--series", action="append", default=[], metavar="TICKER")
    p.add_argument("--events", action="append", default=[], metavar="TICKER")
    p.add_argument("--tickers", action="append", default=[], metavar="TICKER")
    p.add_argument("--env", choices=["local", "demo", "prod"], help="Kalshi environment")
    p.add_argument("--rest-url", help="override KALSHI_REST_URL")
    p.add_argument("--ws-url", help="override KALSHI_WS_URL")
    p.add_argument(
        "--retention-hours",
        type=float,
        metavar="H",
        help="loaded landing segments older than H hours are removed (24), or archived with "
        "--keep-landing",
    )
    p.add_argument(
        "--keep-landing",
        dest="keep_landing",
        action="store_true",
        default=None,
        help="archive loaded landing segments (zstd, .seg.zst) after the retention instead of "
        "removing them; `kalshi-pipeline replay` reads them",
    )
    p.add_argument(
        "--handover-timeout",
        dest="handover_timeout_s",
        type=float,
        metavar="S",
        help="started while another stream writes the same database, take over once this feed "
        "is live; give up after S seconds if it is not (120)",
    )
    p.add_argument("--quiet", action="store_true", help="no live status line")
    p.set_defaults(func=_cmd_stream)


def _split(values: Sequence[str]) -> list[str]:
    return [v for item in values for v in item.split(",") if v.strip()]


def stream_config_from_args(args: argparse.Namespace) -> Any:
    from kalshi_pipeline.kalshi.settings import KalshiSettings
    from kalshi_pipeline.stream.config import Scope, StreamConfig

    kalshi = KalshiSettings.from_env(env=args.env, rest_url=args.rest_url, ws_url=args.ws_url)
    return StreamConfig.from_env(
        mode=args.mode,
        database=args.database,
        fallback_to_http=args.fallback_to_http,
        websocket_timeout_s=args.websocket_timeout_s,
        max_retries=args.max_retries,
        websocket_compression=args.websocket_compression,
        poll_interval_s=args.poll_interval_s,
        flush_interval_ms=args.flush_interval_ms,
        requests_per_s=args.requests_per_s,
        retention_s=args.retention_hours * 3600 if args.retention_hours is not None else None,
        keep_landing=getattr(args, "keep_landing", None),
        handover_timeout_s=getattr(args, "handover_timeout_s", None),
        scope=Scope.of(_split(args.series), _split(args.events), _split(args.tickers)),
        channels=getattr(args, "channels", None),
        book_check_every_s=getattr(args, "book_check_every_s", None),
        kalshi=kalshi,
    )


def _install_stop_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():  # a second Ctrl-C: the user means it
            raise KeyboardInterrupt
        print(
            f"\n{signal.Signals(signum).name}: stopping (flushing to the database)...",
            file=sys.stderr,
        )
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _status_line(quiet: bool) -> Callable[[dict[str, Any]], None]:
    tty = sys.stderr.isatty()
    last = {"t": 0.0, "ticks": 0, "at": time.monotonic()}

    def show(s: dict[str, Any]) -> None:
        now = time.monotonic()
        rate = (int(s["ticks_stored"]) - last["ticks"]) / max(1e-9, now - last["at"])
        last["ticks"], last["at"] = int(s["ticks_stored"]), now
        if quiet:
            return
        line = (
            f"{rate:8.0f} ticks/s | source {s['source']:<9} | stored {s['ticks_stored']:>9} | "
            f"backlog {int(s['backlog_bytes']) // 1024:>6} KiB | {s['last_event']}"
        )
        if tty:
            print("\r" + line[:160].ljust(160), end="", file=sys.stderr, flush=True)
        elif now - last["t"] >= 10:
            last["t"] = now
            print(line, file=sys.stderr, flush=True)

    return show


def _cmd_stream(args: argparse.Namespace) -> int:
    from kalshi_pipeline.stream.config import ConfigError
    from kalshi_pipeline.stream.engine import EngineError, run_engine
    from kalshi_pipeline.stream.lean import keep_pandas_out
    from kalshi_pipeline.warehouse import WarehouseError

    try:
        config = stream_config_from_args(args)
    except (ConfigError, KalshiConfigError, WarehouseError) as exc:
        print(f"kalshi-pipeline stream: {exc}", file=sys.stderr)
        return 2
    keep_pandas_out()  # this process only streams (its store process is lean: stream/lean.py)
    stop = threading.Event()
    _install_stop_signals(stop)
    print(
        f"streaming {config.scope.describe()} from {config.kalshi.env.value} "
        f"({config.kalshi.ws_url if config.mode.value != 'http' else config.kalshi.rest_url}) "
        f"in {config.mode.value} mode"
        + (f" (channels {','.join(config.channels)})" if config.mode.value != "http" else "")
        + f" into {config.database}; Ctrl-C stops",
        file=sys.stderr,
    )
    try:
        summary = run_engine(config, stop, seconds=args.seconds, on_status=_status_line(args.quiet))
    except (KalshiConfigError, WarehouseError) as exc:
        print(f"\nkalshi-pipeline stream: {exc}", file=sys.stderr)
        return 2
    except EngineError as exc:
        print(f"\nkalshi-pipeline stream: {exc}", file=sys.stderr)
        if getattr(args, "own_process", False):
            exit_without_teardown(1)
        return 1
    if sys.stderr.isatty() and not args.quiet:
        print(file=sys.stderr)
    print(
        "summary: "
        + ", ".join(
            f"{k}={v}"
            for k, v in summary.items()
            if k
            in (
                "uptime_s",
                "ticks_stored",
                "ticks_stored_websocket",
                "ticks_stored_http",
                "reconnects",
                "fallbacks",
                "fallback_seconds",
                "parse_errors",
                "objects_skipped",
                "values_flagged",
                "backlog_bytes",
            )
        ),
        file=sys.stderr,
    )
    print(f"stream ended: {summary['ended']}", file=sys.stderr)
    code = 0 if summary["drained"] else 1
    if getattr(args, "own_process", False):
        exit_without_teardown(code)
    return code


def _add_simulate(sub: Any) -> None:
    from kalshi_pipeline.simulator import server

    p = sub.add_parser(
        "simulate",
        help="run the local Kalshi exchange simulator (REST and WebSocket on one port)",
        description="A local exchange that speaks Kalshi's protocol, for development, tests and "
        "benchmarks. Binds 127.0.0.1 unless --host says otherwise.",
    )
    server.add_arguments(p)
    p.set_defaults(func=lambda a: server.main_from_args(a))


def _add_sql(sub: Any) -> None:
    p = sub.add_parser(
        "sql",
        help="query the warehouse read-only, live while the stream runs",
        description="Run SQL read-only on the warehouse: through the stream's writer while it "
        "serves the file, else on the file itself. Several statements (separated by ;) all print, "
        "in order, or none does and the error names the statement. For a session, use "
        "`kalshi-pipeline shell`.",
    )
    p.add_argument("query", help='the SQL, e.g. "SELECT count(*) FROM ticks"')
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--database", type=Path, help="DuckDB file (default data/kalshi.duckdb)")
    p.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for a file held unserved"
    )
    p.set_defaults(func=_cmd_sql)


def _print_quietly(text: str) -> int:
    """Print; a reader that went away (`| head`) ends the output quietly, not in a traceback."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that cannot fail too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _cmd_sql(args: argparse.Namespace) -> int:
    from kalshi_pipeline.warehouse import WarehouseError
    from kalshi_pipeline.warehouse.connection import default_path
    from kalshi_pipeline.warehouse.query import StatementFailedError, render, run_sql

    try:
        results = run_sql(args.database or default_path(), args.query, timeout_s=args.timeout)
    except StatementFailedError as exc:
        print(f"kalshi-pipeline sql: {exc}", file=sys.stderr)
        return 1
    except WarehouseError as exc:
        print(f"kalshi-pipeline sql: {exc}", file=sys.stderr)
        return 2
    return _print_quietly("\n\n".join(render(r, args.format) for r in results))


def _add_shell(sub: Any) -> None:
    p = sub.add_parser(
        "shell",
        help="an interactive DuckDB shell on the live warehouse",
        description="DuckDB's own shell (duckdb-cli), attached to the stream's writer while it "
        "serves the warehouse (tables by name), else on the file itself. Its first line says "
        "which. Arguments after -- go to the duckdb binary.",
    )
    p.add_argument("--database", type=Path, help="DuckDB file (default data/kalshi.duckdb)")
    p.add_argument("duckdb_args", nargs="*", help="extra arguments for duckdb (after --)")
    p.set_defaults(func=_cmd_shell)


def _cmd_shell(args: argparse.Namespace) -> int:
    from kalshi_pipeline.warehouse import WarehouseError, shell
    from kalshi_pipeline.warehouse.connection import default_path

    try:
        return shell.run(args.database or default_path(), args.duckdb_args)
    except WarehouseError as exc:
        print(f"kalshi-pipeline shell: {exc}", file=sys.stderr)
        return 2


def _add_replay(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="load a recorded landing log into a fresh database, through the same decoder",
        description="Feed a recorded landing log (or the records of it received between --from "
        "and --to) through the stream's decoder into a fresh DuckDB file: the same ticks, "
        "markets, events, feed events and polling passes the live run stored. The log is only "
        "read; a stream still writing it is not disturbed.",
    )
    p.add_argument("--landing", type=Path, required=True, help="the landing folder to replay")
    p.add_argument("--database", type=Path, required=True, help="the DuckDB file to fill (new)")
    p.add_argument("--from", dest="from_time", metavar="TIME", help="received at or after (UTC)")
    p.add_argument("--to", dest="to_time", metavar="TIME", help="received before (ISO 8601, UTC)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a replay into this database that stopped (what it holds is skipped)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=_cmd_replay)


def _cmd_replay(args: argparse.Namespace) -> int:
    from kalshi_pipeline.stream.replay import Progress, ReplayError, parse_time, replay
    from kalshi_pipeline.warehouse import WarehouseError

    tty = sys.stderr.isatty()
    last = {"t": 0.0}

    def progress(p: Progress) -> None:
        now = time.monotonic()
        if args.quiet or (not tty and now - last["t"] < 10):
            return
        last["t"] = now
        line = (
            f"{p.percent:5.1f} % of {p.bytes_total / 2**20:,.1f} MiB | "
            f"{p.records:>11,} records | {p.records_per_s:9,.0f} records/s"
        )
        print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    try:
        from_ns = parse_time(args.from_time, "--from") if args.from_time else None
        to_ns = parse_time(args.to_time, "--to") if args.to_time else None
        summary = replay(
            args.landing,
            args.database,
            from_ns=from_ns,
            to_ns=to_ns,
            resume=args.resume,
            on_progress=progress,
        )
    except (ReplayError, WarehouseError) as exc:
        print(f"kalshi-pipeline replay: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(
            f"\nkalshi-pipeline replay: interrupted; what was stored stays in {args.database}, "
            "and the same command with --resume continues",
            file=sys.stderr,
        )
        code = 130
    else:
        if tty and not args.quiet:
            print(file=sys.stderr)
        for line in summary.lines():
            print(line, file=sys.stderr)
        print(f"into {args.database}", file=sys.stderr)
        code = 1 if summary.damaged else 0
    if getattr(args, "own_process", False):
        exit_without_teardown(code)  # the replay's owner served Quack: skip DuckDB's teardown
    return code


def _add_delegated(sub: Any, name: str, module: str, help_text: str) -> None:
    """A subcommand whose flags and body live in their own module (imported when used)."""
    import importlib

    mod = importlib.import_module(module)
    p = sub.add_parser(name, help=help_text, description=help_text)
    mod.add_arguments(p)
    p.set_defaults(func=mod.main_from_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kalshi-pipeline",
        description="Collect Kalshi market data into DuckDB, orchestrated by Dagster.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_delegated(
        sub,
        "dev",
        "kalshi_pipeline.devserver",
        "start the simulator and dagster dev (the stream begins on its own); Ctrl-C stops all",
    )
    _add_simulate(sub)
    _add_stream(sub)
    _add_delegated(
        sub,
        "status",
        "kalshi_pipeline.status",
        "is the stream alive and fresh? exit 0 when healthy (for cron and alerting)",
    )
    _add_sql(sub)
    _add_shell(sub)
    _add_replay(sub)
    _add_delegated(
        sub,
        "bench",
        "kalshi_pipeline.bench.cli",
        "measure throughput, latency, storage, resources and chaos against the simulator",
    )
    return parser


def exit_without_teardown(code: int) -> NoReturn:
    """End the process now, skipping the interpreter's teardown. Called only once everything is
    stored and the warehouse owner is closed: DuckDB 1.5.5, after its Quack server has served,
    sometimes crashes (SIGSEGV) or hangs while the interpreter finalizes its threads and
    modules, which would turn a clean stop into a failure exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    from dotenv import load_dotenv

    load_dotenv(Path.cwd() / ".env", override=False)
    args = build_parser().parse_args(argv)
    # the command line of this process (not an in-process caller): `stream` may end it at once
    args.own_process = argv is None
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
