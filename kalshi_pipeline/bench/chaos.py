"""Chaos: the simulator's faults at random and the engine SIGKILLed every 90 s, for 10 minutes,
then everything checked against the ledger.

Faults, one at a time at random gaps, always with 1% malformed frames: connections dropped,
silence (the socket stays open and says nothing), a drop with handshakes refused for a while, a
drop into a 429 storm, a drop into a spell of 5xx (so reconciliation passes meet them). Every
`chaos_kill_every_s` the engine process is killed with SIGKILL and started again on the same
database and landing log.

At the end the engine is stopped cleanly and whatever the landing log still holds is loaded by
the writer (what the next start would do). Then:
- lost: ledger lines the simulator wrote to a connection (`sent_ranges` of every session) with
  no matching `ticks` row; split into those sent in the moments around a SIGKILL (in the socket
  or the process's buffers when it died) and the rest. At the end the exchange is paused
  (`pause_updates`) before the engine stops; lines published in the last second before the stop,
  if any, are left out, since the engine was told to stop reading.
- lost after receipt: ticker frames in the landing log that are not in `ticks` (should be 0).
- duplicates: the same landing frame stored twice (should be 0), and ledger lines stored more
  often than they were sent.
- fallback seconds, recoveries (the socket subscribed again after an interruption) and how long
  each took, from `feed_events`.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

from kalshi_pipeline.bench import analysis
from kalshi_pipeline.bench.context import Context, engine_status, open_db
from kalshi_pipeline.bench.procs import EngineProcess
from kalshi_pipeline.warehouse.paths import landing_folder

MALFORMED_RATE = 0.01
KILL_WINDOW_MS = (-2_000, 3_000)  # sent this close to a SIGKILL: in flight when it died
STOP_MARGIN_MS = 1_000
ENGINE_CONFIG = {
    "websocket_timeout_s": 5.0,
    "max_retries": 3,
    "backoff_base_s": 0.2,
    "backoff_cap_s": 5.0,
    "healthy_after_s": 10.0,
    "poll_interval_s": 1.0,
}
INTERRUPTIONS = {"disconnect", "silence", "connect_failed", "auth_failed", "subscribe_failed"}


def pick_fault(rng: random.Random) -> tuple[str, dict[str, Any]]:
    kind = rng.choice(["drop", "silence", "refuse", "429", "5xx"])
    if kind == "drop":
        return kind, {"drop_connections": True}
    if kind == "silence":
        return kind, {"silence_s": round(rng.uniform(4, 12), 1)}
    if kind == "refuse":
        return kind, {"drop_connections": True, "refuse_handshakes_s": round(rng.uniform(5, 15), 1)}
    if kind == "429":
        return kind, {"drop_connections": True, "http_429_s": round(rng.uniform(3, 10), 1)}
    return kind, {"drop_connections": True, "http_5xx_s": round(rng.uniform(3, 10), 1)}


def run(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    folder = ctx.folder("chaos")
    db = folder / "k.duckdb"
    ledger = folder / "ledger.jsonl"
    rng = random.Random(ctx.seed)
    faults: list[dict[str, Any]] = []
    kills: list[int] = []
    crashes = 0
    with ctx.simulator(
        markets=plan.chaos_markets,
        rate=plan.chaos_rate,
        ledger=ledger,
        market_lifetime=plan.chaos_lifetime,
    ) as sim:

        def start() -> EngineProcess:
            return ctx.engine(
                "chaos", sim, db, config=ENGINE_CONFIG, status_every_s=1.0, sample_every_s=1.0
            )

        sim.set_faults(malformed_rate=MALFORMED_RATE)
        engine = start()
        startup = ctx.settle(engine, plan.settle_s, "chaos")
        began = time.monotonic()
        end = began + plan.chaos_s
        next_kill = began + plan.chaos_kill_every_s
        next_fault = began + rng.uniform(*plan.chaos_fault_gap_s)
        while (now := time.monotonic()) < end:
            if now >= next_kill:
                engine.kill()
                kills.append(time.time_ns() // 1_000_000)
                engine = start()
                next_kill += plan.chaos_kill_every_s
            if now >= next_fault:
                kind, params = pick_fault(rng)
                sim.set_faults(malformed_rate=MALFORMED_RATE, **params)
                faults.append({"at_ms": time.time_ns() // 1_000_000, "kind": kind, **params})
                next_fault = now + rng.uniform(*plan.chaos_fault_gap_s)
            if not engine.alive():
                crashes += 1
                engine = start()
            ctx.display.status(
                f"{len(faults)} faults, {len(kills)} kills | {engine_status(engine)}"
            )
            time.sleep(max(0.0, min(0.5, next_kill - now, next_fault - now, end - now)))
        # faults off and the exchange frozen, so everything sent can be accounted for
        sim.set_faults(pause_updates=True)
        ctx.display.status("faults cleared; waiting for the socket to stream again")
        engine.wait_for(
            lambda e: bool(e.status.get("ws_connected")) and not e.status.get("polling"),
            timeout_s=60,
            what="the socket back and polling stopped",
            required=False,
        )
        time.sleep(plan.pause_s)
        stop_ms = time.time_ns() // 1_000_000
        stopped = engine.stop(timeout_s=30)
        sessions = sim.sessions()
        sim_stats = sim.stats()
    ctx.display.status("loading what the landing log still holds")
    leftover = ctx.child(
        "kalshi_pipeline.bench.replay",
        [str(landing_folder(db)), str(db), "--max-s", "120"],
        timeout_s=180,
        name="chaos-replay",
    )
    ctx.display.status("comparing the warehouse with the ledger")
    result = account(db, ledger, sessions, kills, stop_ms)
    return {
        "figures": {
            "chaos_lost": result["lost"],
            "chaos_duplicates": result["duplicates"],
            "chaos_fallback_s": result["fallback_s"],
            "chaos_recoveries": result["recoveries"],
            "chaos_lost_at_kills": result["lost_at_kills"],
            "chaos_lost_after_receipt": result["lost_after_receipt"],
        },
        "details": {
            **result,
            "seconds": plan.chaos_s,
            **startup,
            "kills": len(kills),
            "faults": Counter(f["kind"] for f in faults),
            "fault_log": faults,
            "unexpected_engine_exits": crashes,
            "sessions": len(sessions),
            "malformed_sent": sim_stats.get("malformed_sent"),
            "final_stop_drained": (stopped or {}).get("drained"),
            "leftover_load": leftover,
        },
    }


def account(
    db: Any, ledger: Any, sessions: list[dict[str, Any]], kills: list[int], stop_ms: int
) -> dict[str, Any]:
    sent = analysis.sent_lines(sessions)
    lines = analysis.read_ledger_lines(ledger, set(sent))
    by_conn = {s["conn_id"]: s for s in sessions}
    expected: Counter[tuple[Any, ...]] = Counter()  # sent while the engine was reading
    sent_all: Counter[tuple[Any, ...]] = Counter()  # every line sent, to judge duplicates
    key_lines: dict[tuple[Any, ...], list[int]] = {}
    for i, line in lines.items():
        key = analysis.ledger_key(line)
        sent_all[key] += 1
        if line.get("emitted_at_ms", 0) > stop_ms - STOP_MARGIN_MS:
            continue
        expected[key] += 1
        key_lines.setdefault(key, []).append(i)
    with open_db(db, read_only=True) as con:
        stored = analysis.stored_ws_keys(con)
        dup_frames = analysis.duplicates(con)
        after_receipt = analysis.landing_frames_not_stored(con, landing_folder(db))
        events = analysis.feed_events(con)
    missing = expected - stored
    over = stored - sent_all
    at_kills = 0
    before_kill_ms: list[int] = []  # how long before its SIGKILL each lost line was sent
    for key, n in missing.items():
        for i in key_lines[key][:n]:
            emitted = lines[i].get("emitted_at_ms", 0)
            closed = by_conn.get(sent[i], {}).get("closed_at_ms")
            for k in kills:
                lo, hi = k + KILL_WINDOW_MS[0], k + KILL_WINDOW_MS[1]
                if lo <= emitted <= hi and closed is not None and lo <= closed <= hi:
                    at_kills += 1
                    before_kill_ms.append(k - emitted)
                    break
    lost = sum(missing.values())
    return {
        "sent_lines": sum(expected.values()),
        "lost": lost,
        "lost_at_kills": at_kills,
        "lost_elsewhere": lost - at_kills,
        "lost_at_kills_sent_ms_before_kill": [min(before_kill_ms), max(before_kill_ms)]
        if before_kill_ms
        else None,
        "lost_at_kills_per_kill": round(at_kills / len(kills), 1) if kills else None,
        "lost_after_receipt": after_receipt["not_stored"],
        "landing_ticker_frames": after_receipt["logged"],
        "landing_undecodable_frames": after_receipt["undecodable"],
        "duplicates": dup_frames,
        "ledger_lines_stored_too_often": sum(over.values()),
        **feed_figures(events, kills),
    }


def feed_figures(events: list[tuple[float, str, str, str]], kills: list[int]) -> dict[str, Any]:
    """Fallback time, recoveries and their durations, from `feed_events` and the kill times."""
    timeline = [(t, src, kind) for t, src, kind, _ in events]
    timeline += [(k / 1000, "bench", "killed") for k in kills]
    timeline.sort()
    fallback_s = 0.0
    fallback_from: float | None = None
    down_from: float | None = None
    recoveries: list[float] = []
    subscribes = 0
    kinds: Counter[str] = Counter()
    for t, src, kind in timeline:
        kinds[kind] += 1
        if kind == "fallback_start":
            fallback_from = fallback_from or t
        elif kind == "fallback_end" and fallback_from is not None:
            fallback_s += t - fallback_from
            fallback_from = None
        elif kind == "killed":
            if fallback_from is not None:
                fallback_s += t - fallback_from
                fallback_from = None
            down_from = down_from or t
        elif kind in INTERRUPTIONS and src == "websocket":
            down_from = down_from or t
        elif kind == "subscribe" and src == "websocket":
            subscribes += 1
            if down_from is not None:
                recoveries.append(t - down_from)
                down_from = None
    recoveries.sort()
    return {
        "fallback_s": round(fallback_s, 1),
        "fallbacks": kinds["fallback_start"],
        "recoveries": len(recoveries),
        "recovery_p50_s": round(recoveries[len(recoveries) // 2], 2) if recoveries else None,
        "recovery_max_s": round(recoveries[-1], 2) if recoveries else None,
        "subscribes": subscribes,
        "feed_event_counts": dict(kinds),
    }
