"""What every scenario shares: the plan, a scratch folder, the dev key, and how to start the
simulator and the engine in processes of their own."""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kalshi_pipeline.bench.display import Display
from kalshi_pipeline.bench.plan import Plan
from kalshi_pipeline.bench.procs import (
    BenchError,
    EngineProcess,
    Reaper,
    child_env,
    run_child,
)
from kalshi_pipeline.kalshi.devkey import ensure_dev_key
from kalshi_pipeline.ports import free_port
from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline.warehouse import Warehouse

MB = 1024 * 1024


# The firehose scenarios (throughput, memory, locked, scaling) measure the engine against the
# loopback limit, so they run uncompressed: with permessage-deflate the simulator's compressor,
# not the engine, would set the pace. The others run with the feed's default (compression on);
# the compression scenario measures both.
FIREHOSE_CONFIG: dict[str, Any] = {"websocket_compression": False}
SETTLED_BACKLOG = 1024 * 1024  # bytes of landing log not yet loaded that count as caught up


@dataclass
class Context:
    plan: Plan
    work: Path
    display: Display
    seed: int = 7
    profile_dir: Path | None = None
    _n: Iterator[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.home = self.work / "kalshi-home"
        ensure_dev_key(self.home)
        self.env = child_env(self.home)
        # the engines' warehouse servers: a port of the bench's own, clear of a running stack
        self.env["KALSHI_WAREHOUSE_PORT"] = str(free_port())

    def folder(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def log(self, name: str) -> Path:
        return self.folder("logs") / f"{next(self._n):02d}-{name}.log"

    @contextlib.contextmanager
    def simulator(self, **kwargs: Any) -> Iterator[SimulatorProcess]:
        kwargs.setdefault("seed", self.seed)
        sim = SimulatorProcess(kalshi_home=self.home, env=self.env, start_timeout_s=120, **kwargs)
        sim.start()
        assert sim.proc is not None
        Reaper.add(sim.proc)
        try:
            yield sim
        finally:
            sim.stop()
            Reaper.discard(sim.proc)

    def engine(
        self,
        name: str,
        sim: SimulatorProcess,
        database: Path,
        *,
        mode: str = "websocket",
        config: dict[str, Any] | None = None,
        target_ws_ticks: int | None = None,
        target_book_deltas: int | None = None,
        status_every_s: float = 0.25,
        sample_every_s: float = 0.1,
        max_s: float = 3600.0,
        profile_at_start: bool = True,
    ) -> EngineProcess:
        spec = {
            "database": str(database),
            "rest_url": sim.rest_url,
            "ws_url": sim.ws_url,
            "mode": mode,
            "config": config or {},
            "status_every_s": status_every_s,
            "target_ws_ticks": target_ws_ticks,
            "target_book_deltas": target_book_deltas,
            "max_s": max_s,
        }
        profile = None
        if self.profile_dir is not None:
            profile = self.profile_dir / f"{name}-{next(self._n):02d}.txt"
        return EngineProcess(
            spec,
            self.env,
            self.log(f"engine-{name}"),
            sample_every_s=sample_every_s,
            profile=profile,
            profile_at_start=profile_at_start,
        ).start()

    def settle(self, engine: EngineProcess, timeout_s: float, name: str) -> dict[str, Any]:
        """Wait until the engine has stored its first WebSocket ticks and loaded what start-up
        brought (the reconciliation of every market), so a window measures the steady state.
        Returns how long that took and whether it happened within `timeout_s`."""
        t0 = time.monotonic()
        engine.wait_for(
            lambda e: e.status.get("ticks_stored_ws", 0) > 0,
            timeout_s,
            "the first WebSocket ticks stored",
            on_wait=lambda e: self.display.status(f"{name}: start-up | " + engine_status(e)),
        )
        left = max(1.0, timeout_s - (time.monotonic() - t0))
        settled = self.catch_up(engine, left, name, "the start-up backlog loaded")
        return {"startup_s": round(time.monotonic() - t0, 1), "settled": settled}

    def catch_up(self, engine: EngineProcess, timeout_s: float, name: str, what: str) -> bool:
        """Wait until the engine is back at the live edge: under SETTLED_BACKLOG bytes of its
        landing log not yet loaded (a live stream's backlog is never exactly 0: what arrived
        since the last commit). False when that did not happen within `timeout_s`."""
        return engine.wait_for(
            lambda e: int(e.status.get("backlog_bytes", 1 << 40)) < SETTLED_BACKLOG,
            timeout_s,
            what,
            on_wait=lambda e: self.display.status(f"{name}: catching up | " + engine_status(e)),
            required=False,
        )

    def child(self, module: str, args: list[str], timeout_s: float, name: str) -> dict[str, Any]:
        return run_child(module, args, self.env, timeout_s, self.log(name))

    def sleep(
        self,
        seconds: float,
        show: Callable[[], str] | None = None,
        alive: Callable[[], bool] | None = None,
    ) -> None:
        """Wait `seconds`, refreshing the display; fail early if `alive()` turns false."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            if alive is not None and not alive():
                raise BenchError("a process of the scenario exited early")
            if show is not None:
                self.display.status(show())
            time.sleep(min(0.25, left))


def engine_status(e: EngineProcess) -> str:
    s = e.status
    stored = f"stored {s.get('ticks_stored', 0):,} (ws {s.get('ticks_stored_ws', 0):,})"
    return f"{stored} | {backlog_and_rss(e)}"


def backlog_and_rss(e: EngineProcess) -> str:
    """The tail of every engine's status line: its landing backlog and its memory."""
    rss = e.sampler.last_rss_mb() if e.sampler else None
    return f"backlog {int(e.status.get('backlog_bytes', 0)) // 1024:,} KiB | rss {rss or 0:.0f} MB"


@contextlib.contextmanager
def open_db(path: Path, *, read_only: bool = False) -> Iterator[Any]:
    """The warehouse through its client (after the engine has stopped: on the file itself)."""
    with Warehouse(path).connect(read_only=read_only, timeout_s=60) as con:
        yield con
