"""Chaos: the simulator's faults at random, the engine SIGKILLed every 90 s and handed over to a
successor every 90 s (half a period off the kills), for 10 minutes, then everything checked
against the ledger and the feed's coverage measured.

Faults, one at a time at random gaps, always with 1% malformed frames: connections dropped,
silence (the socket stays open and says nothing), a drop with handshakes refused for a while, a
drop into a 429 storm, a drop into a spell of 5xx (so reconciliation passes meet them). Every
`chaos_kill_every_s` the engine process is killed with SIGKILL and started again on the same
database and landing log.

Every `chaos_handover_every_s` a second engine process is started on the same database while the
current one runs (make before break): it connects, subscribes, asks the running engine to hand
over, and that one ends by itself with exit 0 ("handed over to ..."). When a handover is due, the
fault in effect (if any) is cut short and none starts, and it begins once the engine streams (by
a status line taken a second or more after the last fault changed); while it is under way no
fault starts, and until `HANDOVER_AFTER_S` after it no kill is made, so its figures measure the
handover alone. The successor is then "the engine" for later kills and handovers. A predecessor
that has not exited within `chaos_handover_wait_s` of its successor's start, one that exits
otherwise, or a successor that dies first is a failed handover, recorded with why; the run goes
on with whichever engine still runs. A run however short makes at least one kill and one
handover.

At the end the engine is stopped cleanly and whatever the landing log still holds is loaded by
the writer (what the next start would do). Then:
- lost: ledger lines the simulator wrote to a connection (`sent_ranges` of every session) with
  no matching `ticks` row; split into those sent in the moments around a SIGKILL (in the socket
  or the process's buffers when it died) and the rest. At the end the exchange is paused
  (`pause_updates`) before the engine stops; lines published in the last second before the stop,
  if any, are left out, since the engine was told to stop reading.
- lost after receipt: ticker frames in the landing log that are not in `ticks` (should be 0); a
  frame both engines received in a handover's overlap counts as stored when its twin is.
- duplicates: the same landing frame stored twice (should be 0), and ledger lines stored more
  often than they were sent (a line sent to both engines of a handover counts once).
- fallback seconds, recoveries (the socket subscribed again after an interruption) and how long
  each took, from `feed_events`.
- coverage (`warehouse/coverage.py`, from `feed_events`): the share of the run with some source
  live or degraded; per handover, the seconds without any live feed from the successor's start
  to `HANDOVER_AFTER_S` after its predecessor exited (target 0); per SIGKILL, the seconds from
  the kill to the next live feed (the `crash` gap).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kalshi_pipeline.bench import analysis
from kalshi_pipeline.bench.context import Context, engine_status, open_db
from kalshi_pipeline.bench.procs import EngineProcess, tail
from kalshi_pipeline.warehouse.coverage import Interval, coverage_intervals, summarize
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
    "handover_timeout_s": 30.0,  # a successor not live by then gives up (within the bench's wait)
}
HANDOVER_AFTER_S = 5.0  # a handover's window runs this long past its end (or to the next fault);
# no kill is made in it
FAULT_SETTLE_MS = 1_000  # a handover starts on a status line this long after a fault's change
AT_LEAST_ONE_S = 120.0  # a short run goes on this much longer for one kill and one handover
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


def fault_spell_s(params: dict[str, Any]) -> float:
    """How long a fault lasts once set (a plain drop: the moment itself)."""
    spells = ("silence_s", "refuse_handshakes_s", "http_429_s", "http_5xx_s")
    return max((float(params.get(k, 0.0)) for k in spells), default=0.0)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Handover:
    """One handover under way or done: a successor started while `predecessor` ran."""

    predecessor: EngineProcess
    successor: EngineProcess
    started_ms: int
    deadline: float  # monotonic: the predecessor must have exited by then
    ended_ms: int | None = None  # when the outcome was known
    outcome: str | None = None  # None while under way; "done", or why it failed

    @property
    def after_ms(self) -> int:
        """The end of its window: no kill before then."""
        return (self.ended_ms or self.started_ms) + int(HANDOVER_AFTER_S * 1000)

    @property
    def done(self) -> bool:
        return self.outcome == "done"

    def check(self, now: float) -> EngineProcess | None:
        """Settle the outcome once it is known; then the engine that streams on (None while
        the handover is under way). Never waits beyond a short stop of a finished process."""
        if not self.predecessor.alive():
            self.predecessor.stop()  # reaped: its last line read
            assert self.predecessor.proc is not None
            code = self.predecessor.proc.returncode
            ended = str((self.predecessor.stopped or {}).get("ended") or "")
            if code == 0 and ended.startswith("handed over to"):
                self.outcome = "done"
            else:
                self.outcome = (
                    f"the predecessor exited with {code} ({ended or 'no last status line'}): "
                    f"{_last_line(self.predecessor)}"
                )
            following = self.successor
        elif not self.successor.alive():
            self.successor.stop()
            assert self.successor.proc is not None
            self.outcome = (
                f"the successor exited with {self.successor.proc.returncode} before its "
                f"predecessor handed over: {_last_line(self.successor)}"
            )
            following = self.predecessor
        elif now >= self.deadline:
            waited = (now_ms() - self.started_ms) / 1000
            self.outcome = (
                f"the predecessor still ran {waited:.0f}s after its successor started "
                f"(last successor status: {self.successor.status.get('last_event')}); the "
                "successor was stopped"
            )
            self.successor.stop(timeout_s=30)
            following = self.predecessor
        else:
            return None
        self.ended_ms = now_ms()
        return following

    def record(self) -> dict[str, Any]:
        return {
            "started_ms": self.started_ms,
            "ended_ms": self.ended_ms,
            "outcome": self.outcome,
            "predecessor_pid": self.predecessor.pid,
            "successor_pid": self.successor.pid,
        }


def _last_line(engine: EngineProcess) -> str:
    return tail(engine.log, 1)[-300:] or "(nothing on stderr)"


def run(ctx: Context) -> dict[str, Any]:
    plan = ctx.plan
    folder = ctx.folder("chaos")
    db = folder / "k.duckdb"
    ledger = folder / "ledger.jsonl"
    rng = random.Random(ctx.seed)
    faults: list[dict[str, Any]] = []
    kills: list[int] = []
    handovers: list[Handover] = []
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

        def streaming(e: EngineProcess) -> bool:
            return bool(e.status.get("ws_connected")) and not e.status.get("polling")

        def streams_since_faults(e: EngineProcess) -> bool:
            """Streaming, by a status line taken a second or more after the last fault changed."""
            changed = max((max(f["at_ms"], f.get("cut_ms", 0)) for f in faults), default=0)
            seen_ms = int(e.status.get("t_ns", 0)) // 1_000_000
            return e.alive() and streaming(e) and seen_ms >= changed + FAULT_SETTLE_MS

        sim.set_faults(malformed_rate=MALFORMED_RATE)
        engine = start()
        startup = ctx.settle(engine, plan.settle_s, "chaos")
        began = time.monotonic()
        began_ms = now_ms()
        end = began + plan.chaos_s
        next_kill = began + plan.chaos_kill_every_s
        next_handover = began + plan.chaos_handover_every_s / 2
        next_fault = began + rng.uniform(*plan.chaos_fault_gap_s)
        fault_until = began  # the spell of the last fault set lasts until then
        handover: Handover | None = None  # the newest

        def under_way() -> bool:
            return handover is not None and handover.outcome is None

        # Past `end` only to finish a handover, or to make at least one kill and one handover
        while (
            (now := time.monotonic()) < end
            or under_way()
            or ((not kills or handover is None) and now < end + AT_LEAST_ONE_S)
        ):
            if handover is not None and handover.outcome is None:
                following = handover.check(now)
                if following is not None:
                    engine = following
            due = not under_way() and now >= next_handover and (now < end or handover is None)
            settled = handover is None or (
                handover.outcome is not None and now_ms() >= handover.after_ms
            )
            if settled and now >= next_kill and (now < end or not kills):
                engine.kill()
                kills.append(now_ms())
                engine = start()
                every = plan.chaos_kill_every_s
                next_kill = max(next_kill + every, now + every / 2)
            if not under_way() and not due and now >= next_fault and now < end:
                kind, params = pick_fault(rng)
                sim.set_faults(malformed_rate=MALFORMED_RATE, **params)
                faults.append({"at_ms": now_ms(), "kind": kind, **params})
                fault_until = now + fault_spell_s(params)
                next_fault = now + rng.uniform(*plan.chaos_fault_gap_s)
            if due and fault_until > now:
                sim.set_faults(malformed_rate=MALFORMED_RATE)  # the spell ends early
                faults[-1]["cut_ms"] = now_ms()  # for the handover
                fault_until = now
            if due and streams_since_faults(engine):
                handover = Handover(engine, start(), now_ms(), now + plan.chaos_handover_wait_s)
                handovers.append(handover)
                next_handover = max(next_handover + plan.chaos_handover_every_s, now + 1.0)
            if not engine.alive() and not under_way():
                crashes += 1
                engine = start()
            done = sum(h.done for h in handovers)
            ctx.display.status(
                f"{len(faults)} faults, {len(kills)} kills, {done}/{len(handovers)} handovers | "
                f"{engine_status(engine)}"
            )
            ahead = [t - now for t in (next_kill, next_fault, next_handover, end) if t > now]
            time.sleep(max(0.05, min([0.5, *ahead])))
        # faults off and the exchange frozen, so everything sent can be accounted for
        sim.set_faults(pause_updates=True)
        ctx.display.status("faults cleared; waiting for the socket to stream again")
        engine.wait_for(
            streaming, timeout_s=60, what="the socket back and polling stopped", required=False
        )
        time.sleep(plan.pause_s)
        stop_ms = now_ms()
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
    gaps = coverage_figures(
        db,
        began_ms,
        stop_ms,
        kills,
        [f["at_ms"] for f in faults],
        [h.record() for h in handovers],
    )
    return {
        "figures": {
            "chaos_lost": result["lost"],
            "chaos_duplicates": result["duplicates"],
            "chaos_fallback_s": result["fallback_s"],
            "chaos_recoveries": result["recoveries"],
            "chaos_lost_at_kills": result["lost_at_kills"],
            "chaos_lost_after_receipt": result["lost_after_receipt"],
            "chaos_coverage": gaps["coverage"],
            "chaos_handovers": gaps["handovers_done"],
            "chaos_handovers_failed": gaps["handovers_failed"],
            "chaos_handover_gap_max_s": gaps["handover_gap_max_s"],
            "chaos_handover_gap_total_s": gaps["handover_gap_total_s"],
            "chaos_kills": len(kills),
            "chaos_kill_gap_max_s": gaps["kill_gap_max_s"],
            "chaos_kill_gap_total_s": gaps["kill_gap_total_s"],
        },
        "details": {
            **result,
            **gaps,
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


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def uncovered_s(intervals: Sequence[Interval], lo: datetime, hi: datetime) -> float | None:
    """Seconds of [lo, hi) with every source down (None when nothing was recorded in it)."""
    if hi <= lo:
        return 0.0
    cov = summarize(intervals, lo, hi)
    if cov.covered is None:
        return None
    return sum(g.seconds for g in cov.gaps)


def down_from(intervals: Sequence[Interval], at: datetime, until: datetime) -> float | None:
    """Seconds from `at` until some source is live or degraded again (adjacent gaps of any
    reason joined), looking no further than `until`."""
    if until <= at:
        return 0.0
    cov = summarize(intervals, at, until)
    if cov.covered is None:
        return None
    reached = at
    for g in sorted(cov.gaps, key=lambda g: g.started_at):
        if g.started_at > reached:
            break
        reached = max(reached, g.ended_at or until)
    return (reached - at).total_seconds()


def coverage_figures(
    db: Path,
    began_ms: int,
    stop_ms: int,
    kills: list[int],
    faults: list[int],
    handovers: list[dict[str, Any]],
) -> dict[str, Any]:
    """Coverage over the run, the seconds without any live feed per handover and per SIGKILL.

    A handover's window runs from its successor's start to `HANDOVER_AFTER_S` after its outcome,
    or to the next kill or fault if sooner; a kill's, from the kill until some feed is live again
    (no further than the next kill or handover)."""
    start, stop = _at(began_ms), _at(stop_ms)
    with open_db(db, read_only=True) as con:
        intervals = coverage_intervals(con, since=start, stream_alive=False, now=stop)
    whole = summarize(intervals, start, stop)
    disturbances = sorted([*kills, *faults, stop_ms])
    for h in handovers:
        ended = h["ended_ms"] or stop_ms
        after = next((m for m in disturbances if m >= ended), stop_ms)
        hi = min(ended + int(HANDOVER_AFTER_S * 1000), after)
        seconds = uncovered_s(intervals, _at(h["started_ms"]), _at(hi))
        h["seconds_without_feed"] = None if seconds is None else round(seconds, 2)
    marks = sorted([*kills, *(h["started_ms"] for h in handovers), stop_ms])
    per_kill = []
    for k in kills:
        until = next((m for m in marks if m > k), stop_ms)
        seconds = down_from(intervals, _at(k), _at(until))
        per_kill.append(None if seconds is None else round(seconds, 2))
    on_handover = [h["seconds_without_feed"] for h in handovers]
    measured_h = [s for s in on_handover if s is not None]
    measured_k = [s for s in per_kill if s is not None]
    done = sum(h["outcome"] == "done" for h in handovers)
    return {
        "coverage": None if whole.covered is None else round(whole.covered, 5),
        "coverage_live": {k: round(v, 5) for k, v in whole.live.items()},
        "coverage_down_s": {k: round(v, 2) for k, v in whole.down_s.items()},
        "coverage_gaps": len(whole.gaps),
        "coverage_longest_gap": whole.longest.as_dict() if whole.longest else None,
        "coverage_line": whole.line("of the run"),
        "handovers_done": done,
        "handovers_failed": len(handovers) - done,
        "handover_gap_max_s": max(measured_h) if measured_h else None,
        "handover_gap_total_s": round(sum(measured_h), 2) if measured_h else None,
        "kill_gap_max_s": max(measured_k) if measured_k else None,
        "kill_gap_total_s": round(sum(measured_k), 2) if measured_k else None,
        "kill_gaps_s": per_kill,
        "handover_log": handovers,
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
        "landing_frames_received_twice": after_receipt["received_twice"],
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
