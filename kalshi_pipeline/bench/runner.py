"""The engine in a process of its own, for the benchmarks.

`python -m kalshi_pipeline.bench.runner SPEC`, where SPEC is a JSON object: `database`,
`rest_url`, `ws_url`, `mode`, optional `config` (more `StreamConfig` fields), `status_every_s`,
`target_ws_ticks` or `target_book_deltas`, `max_s`. It runs the same `Engine` as the CLI and the
Dagster op, prints one JSON status line to stdout every `status_every_s` (counters only, no
percentiles, so the status costs the engine next to nothing), one `target` line the moment the
engine has stored `target_ws_ticks` WebSocket ticks (or `target_book_deltas` order-book deltas),
and stops cleanly on SIGTERM or SIGINT.

Like `kalshi-pipeline stream`, it ends by itself (exit 0) when a successor started on the same
database asks it to hand over: its `stop` feed event and its last line (`stopped`, with `ended`)
say "handed over to ...", and so does `stream ended: ...` on stderr.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.stream.config import Mode, Scope, StreamConfig
from kalshi_pipeline.stream.engine import Engine
from kalshi_pipeline.stream.lean import keep_pandas_out
from kalshi_pipeline.stream.stats import EngineStats

TARGET_POLL_S = 0.01


def config_from_spec(spec: dict[str, Any]) -> StreamConfig:
    extra = dict(spec.get("config") or {})
    if isinstance(extra.get("scope"), dict):  # JSON carries a scope as its three lists
        extra["scope"] = Scope.of(**extra["scope"])
    return StreamConfig(
        mode=Mode(spec.get("mode", "websocket")),
        database=Path(spec["database"]),
        kalshi=KalshiSettings.for_env("local", rest_url=spec["rest_url"], ws_url=spec["ws_url"]),
        **extra,
    ).validate()


def status(stats: EngineStats, event: str = "status") -> dict[str, Any]:
    return {
        "event": event,
        "t_ns": time.time_ns(),
        "ticks_stored": stats.ticks_stored,
        "ticks_stored_ws": stats.ticks_stored_ws,
        "ticks_stored_http": stats.ticks_stored_http,
        "book_deltas_stored": stats.book_deltas_stored,
        "ws_frames": stats.ws_frames,
        "http_pages": stats.http_pages,
        "backlog_bytes": stats.backlog_bytes,
        "reconnects": stats.reconnects,
        "fallbacks": stats.fallbacks,
        "parse_errors": stats.parse_errors,
        "ws_connected": stats.ws_connected,
        "polling": stats.polling,
        "db_busy": stats.db_busy_since is not None,
        "last_event": stats.last_event,
    }


def emit(line: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(line, default=str) + "\n")
    sys.stdout.flush()


def run(spec: dict[str, Any]) -> int:
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    keep_pandas_out()  # as `kalshi-pipeline stream` does
    engine = Engine(config_from_spec(spec)).start()
    emit({"event": "started", "t_ns": time.time_ns()})
    every = float(spec.get("status_every_s", 0.5))
    target = spec.get("target_ws_ticks")
    deltas_target = spec.get("target_book_deltas")
    if deltas_target is not None:
        target = None  # one target a run: the deltas'
    deadline = time.monotonic() + float(spec.get("max_s", 3600.0))
    next_status = time.monotonic()
    reason = "benchmark runner stopped"
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            if engine.finished is not None:  # a successor took over (a handover)
                reason = engine.finished
                break
            now = time.monotonic()
            if target is not None and engine.stats.ticks_stored_ws >= target:
                emit(status(engine.stats, "target"))
                target = None
            if deltas_target is not None and engine.stats.book_deltas_stored >= deltas_target:
                emit(status(engine.stats, "target"))
                deltas_target = None
            if now >= next_status:
                emit(status(engine.stats))
                next_status = now + every
                engine.check()
            waiting = target is not None or deltas_target is not None
            stop.wait(TARGET_POLL_S if waiting else max(0.0, next_status - now))
    except BaseException as exc:
        reason = f"failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        drained = engine.stop(reason=reason)
        emit(
            {
                **status(engine.stats, "stopped"),
                "drained": drained,
                "ended": reason,
                "summary": engine.summary(fresh=True),
            }
        )
        print(f"stream ended: {reason}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kalshi_pipeline.bench.runner SPEC_JSON", file=sys.stderr)
        return 2
    return run(json.loads(args[0]))


if __name__ == "__main__":
    sys.exit(main())
