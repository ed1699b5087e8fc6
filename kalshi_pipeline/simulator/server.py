"""The simulator process: builds the exchange, serves REST, WebSocket and `/_sim` on one port with
one aiohttp loop, and runs until SIGINT or SIGTERM.

The first line on stdout says where it listens, in a fixed form tools parse:
`kalshi simulator listening on http://HOST:PORT (rest /trade-api/v2, ws /trade-api/ws/v2)`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import signal
import sys
import time
from collections.abc import Callable

from aiohttp import web

from kalshi_pipeline.simulator import control, rest
from kalshi_pipeline.simulator.auth import KeyRegistry
from kalshi_pipeline.simulator.bookfirehose import book_firehose_market_count
from kalshi_pipeline.simulator.config import (
    SimConfig,
    add_arguments,
    config_from_args,
    is_loopback_host,
)
from kalshi_pipeline.simulator.engine import Engine, now_us
from kalshi_pipeline.simulator.faults import Faults
from kalshi_pipeline.simulator.firehose import Firehose, firehose_market_count
from kalshi_pipeline.simulator.hub import Hub
from kalshi_pipeline.simulator.ledger import Ledger
from kalshi_pipeline.simulator.model import Exchange
from kalshi_pipeline.simulator.runtime import Runtime
from kalshi_pipeline.simulator.universe import Builder, HourlySeries
from kalshi_pipeline.simulator.ws import WS_PATH, handle_ws

__all__ = ["add_arguments", "build", "main", "main_from_args", "serve"]

log = logging.getLogger("kalshi_pipeline.simulator")
LISTENING = "kalshi simulator listening on {url} (rest /trade-api/v2, ws /trade-api/ws/v2)"
SHUTDOWN_GRACE_S = 2.0


def build(config: SimConfig) -> tuple[Runtime, Engine]:
    """The runtime with its market universe listed and opening tickers published."""
    if config.rest_tokens_per_s <= 0:
        raise ValueError("--rest-tokens-per-s must be positive")
    keys = KeyRegistry.for_config(config)
    ledger = Ledger(config.ledger)
    book_ledger = Ledger(config.book_ledger_path())
    faults = Faults(seed=None if config.seed is None else config.seed + 2)
    faults.apply(config.faults)
    rt = Runtime(
        config=config,
        exchange=Exchange(),
        hub=Hub(ledger, book_ledger, faults),
        ledger=ledger,
        faults=faults,
        keys=keys,
        firehose=Firehose(),
    )
    builder = Builder(rt.exchange, random.Random(config.seed))
    strikes = config.strikes_per_hourly_event()
    hourly = HourlySeries(builder, config.market_lifetime_s, strikes)
    engine = Engine(rt, builder, hourly, config.seed)
    start = now_us()
    firehose_markets = firehose_market_count(config.firehose, config.markets)
    book_markets = book_firehose_market_count(config.book_firehose, config.markets)
    engine.bootstrap(max(0, config.markets - strikes - firehose_markets - book_markets), start)
    rt.firehose.build(builder, ledger, engine.rng, config.firehose, firehose_markets, start)
    rt.book_firehose.build(
        builder, book_ledger, engine.rng, config.book_firehose, book_markets, start
    )
    for m in rt.exchange.markets.values():
        rt.hub.record_book(m, start // 1000)
    ledger.flush()
    book_ledger.flush()
    return rt, engine


def build_app(rt: Runtime) -> web.Application:
    app = web.Application(middlewares=[control.loopback_only, rest.gateway])
    app["runtime"] = rt
    rest.add_routes(app)
    control.add_routes(app)
    app.router.add_get(WS_PATH, handle_ws)
    return app


async def _fault_clock(rt: Runtime) -> None:
    """Carries out `drop_every_s`."""
    while True:
        await asyncio.sleep(0.05)
        if rt.faults.drop_due():
            control.drop_all(rt)


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def serve(
    config: SimConfig,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str, int], None] | None = None,
) -> None:
    """Run until `stop` is set (or SIGINT/SIGTERM when `stop` is not given)."""
    started = time.monotonic()
    rt, engine = build(config)
    app = build_app(rt)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = int(runner.addresses[0][1])
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    print(LISTENING.format(url=_url(config.host, port)), flush=True)
    if not is_loopback_host(config.host):
        print(
            f"note: {config.host} is not a loopback address: other machines can reach the "
            "simulator's REST and WebSocket API (the /_sim control endpoint stays loopback-only)",
            flush=True,
        )
        log.warning("listening on non-loopback address %s", config.host)
    log.info(
        "ready in %.1f s: %d markets (%d active), %d events, rate %.0f/s, lifetime %d s, "
        "firehose %d frames, order-book firehose %d frames, keys %s",
        time.monotonic() - started,
        len(rt.exchange.markets),
        rt.exchange.count_by_status()["active"],
        len(rt.exchange.events),
        config.rate,
        config.market_lifetime_s,
        len(rt.firehose),
        len(rt.book_firehose),
        ", ".join(rt.keys.key_ids()),
    )
    if on_ready is not None:
        on_ready(config.host, port)
    tasks = [
        asyncio.create_task(engine.run(config.rate), name="engine"),
        asyncio.create_task(rt.ledger.run_flusher(), name="ledger"),
        asyncio.create_task(rt.hub.book_ledger.run_flusher(), name="book-ledger"),
        asyncio.create_task(_fault_clock(rt), name="faults"),
    ]
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        control.drop_all(rt)
        if rt.sessions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(rt.no_sessions.wait(), SHUTDOWN_GRACE_S)
        await runner.cleanup()
        rt.ledger.close()
        rt.hub.book_ledger.close()


def main_from_args(args: argparse.Namespace) -> int:
    """Entry point for `kalshi-pipeline simulate`; returns the exit status."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    config = config_from_args(args)
    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", config.host, config.port, exc)
        return 2
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kalshi_pipeline.simulator",
        description="Local Kalshi exchange simulator (REST + WebSocket on one port).",
    )
    add_arguments(parser)
    return main_from_args(parser.parse_args(argv))
