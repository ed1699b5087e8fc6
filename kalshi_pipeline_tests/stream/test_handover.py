"""Handover between two stream processes on one database: make before break.

Real `kalshi-pipeline stream` processes against the simulator; pass or fail is decided by what
is in DuckDB and the simulator's ledger, never by timing."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kalshi_pipeline.ports import free_port
from kalshi_pipeline.stream.landing import Kind, list_segments, read_records
from kalshi_pipeline.warehouse.paths import landing_folder
from kalshi_pipeline_tests.helpers import (
    Holder,
    down_intervals,
    feed_events,
    query,
    sent_indices,
    wait_for,
)
from kalshi_pipeline_tests.stream.conftest import config_for
from kalshi_pipeline_tests.stream.support import settle_and_compare, stream_process

pytestmark = pytest.mark.timeout(300)


def _stream(sim: Any, db: Path, *extra: str, ws_url: str | None = None) -> subprocess.Popen[str]:
    return stream_process(sim, db, "--quiet", "--flush-interval-ms", "100", *extra, ws_url=ws_url)


def _count(db: Path) -> int:
    return int(query(db, "SELECT count(*) FROM ticks")[0][0])


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    return proc.returncode, err


class _Owner:
    """Whatever engine process currently streams; stopped at the end of the test."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: Any, **kwargs: Any) -> subprocess.Popen[str]:
        proc = _stream(*args, **kwargs)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _first(streams: _Owner, sim: Any, db: Path, ticks: int = 100) -> subprocess.Popen[str]:
    """The stream that owns the database, once it has stored `ticks`."""
    first = streams.start(sim, db)
    wait_for(lambda: db.exists() and _count(db) > ticks, timeout=90, what="the first storing")
    return first


@pytest.fixture
def streams() -> Any:
    owner = _Owner()
    yield owner
    owner.close()


def test_a_successor_takes_over_and_every_tick_is_stored_exactly_once(
    sim_factory: Any, tmp_path: Path, streams: _Owner
) -> None:
    sim = sim_factory(markets=100, rate=100)
    db = tmp_path / "k.duckdb"
    first = _first(streams, sim, db)
    second = streams.start(sim, db)
    code, err = _stop_when_done(first)
    assert code == 0, err
    assert "stream ended: handed over to pid" in err, err
    before = _count(db)
    wait_for(lambda: _count(db) > before + 100, timeout=90, what="the successor storing")

    _exactly_once(sim, db)
    assert down_intervals(db) == [], "coverage shows the feed down across the handover"
    code, err = _stop(second)
    assert code == 0, err
    events = feed_events(db)
    kinds = [kind for _at, _source, kind, _detail in events]
    assert "handover_requested" in kinds and "handover" in kinds
    assert any(k == "stop" and d.startswith("handed over to pid") for _a, _s, k, d in events)
    sent = [sent_indices([s]) for s in sim.sessions() if s.get("sent_ranges")]
    assert len(sent) >= 2, "both streams received"
    assert set.intersection(*sent[:2]), "no tick reached both streams: they never overlapped"


def _stop_when_done(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    """Wait for a process that should end by itself (it handed over)."""
    try:
        wait_for(lambda: proc.poll() is not None, timeout=timeout, what=f"pid {proc.pid} ending")
    except AssertionError:
        proc.kill()
        _out, err = proc.communicate(timeout=60)
        raise AssertionError(f"pid {proc.pid} did not end; its output:\n{err[-3000:]}") from None
    _out, err = proc.communicate(timeout=60)
    return proc.returncode, err


def test_a_successor_that_never_goes_live_leaves_the_running_stream_alone(
    sim_factory: Any, tmp_path: Path, streams: _Owner
) -> None:
    sim = sim_factory(markets=200, rate=100, with_ledger=False)
    db = tmp_path / "k.duckdb"
    first = _first(streams, sim, db, ticks=100)
    nowhere = f"ws://127.0.0.1:{free_port()}/trade-api/ws/v2"
    second = streams.start(sim, db, "--handover-timeout", "8", "--max-retries", "1", ws_url=nowhere)
    code, err = _stop_when_done(second, timeout=90)
    assert code == 1, err
    assert "could not take over from pid" in err and "keeps streaming" in err, err
    assert first.poll() is None, "the running stream stopped"
    before = _count(db)
    wait_for(lambda: _count(db) > before + 100, timeout=60, what="the first stream storing on")
    wait_for(
        lambda: any(k == "handover_failed" for _a, _s, k, _d in feed_events(db)),
        timeout=60,
        what="the failed handover recorded (loaded from the successor's landing log)",
    )
    code, err = _stop(first)
    assert code == 0, err
    assert "stream ended: handed over" not in err


def _segment_bytes(db: Path, pid: int) -> int:
    folder = landing_folder(db)
    return sum(s.path.stat().st_size for s in list_segments(folder) if s.pid == pid)


def _ticker_frames(db: Path, pid: int) -> int:
    segments = [s for s in list_segments(landing_folder(db)) if s.pid == pid]
    return sum(
        1
        for seg in segments
        for r in read_records(seg, 0, max_bytes=1 << 26)[0]
        if r.kind == Kind.WS_FRAME and r.payload.startswith(b'{"type":"ticker"')
    )


def _exactly_once(sim: Any, db: Path) -> None:
    expected, stored = settle_and_compare(sim, db, None)
    doubled = sum(n - 1 for n in stored.values() if n > 1)
    missing = sum((expected - stored).values())
    assert (doubled, missing) == (0, 0), f"{doubled} ticks stored twice, {missing} never stored"


def test_two_successors_in_quick_succession_the_newest_takes_over(
    sim_factory: Any, tmp_path: Path, streams: _Owner
) -> None:
    sim = sim_factory(markets=100, rate=100)
    db = tmp_path / "k.duckdb"
    first = _first(streams, sim, db)
    second = streams.start(sim, db)
    wait_for(lambda: _segment_bytes(db, second.pid) > 0, timeout=60, what="the second landing")
    third = streams.start(sim, db)
    for proc in (first, second):
        code, err = _stop_when_done(proc)
        assert code == 0, err
        assert "stream ended: handed over to" in err or "stream ended: superseded by" in err, err
    assert third.poll() is None
    _exactly_once(sim, db)
    code, err = _stop(third)
    assert code == 0, err


@pytest.mark.parametrize("victim", ["predecessor", "successor"])
def test_sigkill_of_either_side_during_a_handover_loses_and_doubles_nothing(
    sim_factory: Any, tmp_path: Path, streams: _Owner, victim: str
) -> None:
    sim = sim_factory(markets=100, rate=100)
    db = tmp_path / "k.duckdb"
    first = _first(streams, sim, db)
    second = streams.start(sim, db)
    # killed while both receive: the successor has landed ticker frames (so it was subscribed
    # before anything still in flight to the victim was sent), the handover may be under way
    wait_for(lambda: _ticker_frames(db, second.pid) > 0, timeout=60, what="the second receiving")
    killed, survivor = (first, second) if victim == "predecessor" else (second, first)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    if survivor.poll() is not None:  # the handover was done: the successor's turn to die was
        survivor = streams.start(sim, db)  # after it, so another stream must take over
    before = _count(db)
    wait_for(lambda: _count(db) > before + 300, timeout=90, what="a stream storing on")
    _exactly_once(sim, db)
    code, err = _stop(survivor)
    assert code == 0, err


def test_an_owner_that_never_answers_is_reported_and_nothing_waits_on_it(
    sim_factory: Any, tmp_path: Path, engines: Any
) -> None:
    # An owner that serves the database but knows nothing of handovers (an older version).
    sim = sim_factory(markets=200, rate=200, with_ledger=False)
    db = tmp_path / "k.duckdb"
    hold = (
        "import sys\n"
        "from pathlib import Path\n"
        "from kalshi_pipeline.warehouse.owner import Owner\n"
        "owner = Owner(Path(sys.argv[1]))\n"
        "owner.connection(timeout_s=30)\n"
        "print('serving', flush=True); sys.stdin.readline(); owner.close()\n"
    )
    with Holder(hold, db) as holder:
        assert holder.ready == "serving"
        engine = engines(config_for(sim, db, handover_stall_s=2))
        assert engine.predecessor == holder.pid
        wait_for(lambda: engine.stall_reported, timeout=60, what="the stalled handover recorded")
        wait_for(lambda: engine.stats.backlog_bytes > 10_000, timeout=60, what="a backlog")
        assert engine.stats.ticks_stored == 0  # the owner holds the file: nothing stored yet
        holder.release()  # the old owner goes
    wait_for(lambda: engine.stats.ticks_stored > 0, timeout=60, what="the successor storing")

    def kinds() -> set[str]:
        return {kind for _at, _source, kind, _detail in feed_events(db)}

    wait_for(lambda: {"handover_stalled", "handover"} <= kinds(), timeout=60, what="both recorded")


def test_a_handover_from_a_stream_in_fallback_keeps_polling_until_the_successor_is_live(
    sim_factory: Any, tmp_path: Path, streams: _Owner
) -> None:
    sim = sim_factory(markets=200, rate=200)
    db = tmp_path / "k.duckdb"
    nowhere = f"ws://127.0.0.1:{free_port()}/trade-api/ws/v2"
    first = streams.start(sim, db, "--max-retries", "1", ws_url=nowhere)  # its socket never works
    wait_for(
        lambda: db.exists() and "fallback_start" in {e[2] for e in feed_events(db)},
        timeout=90,
        what="the first stream polling in fallback",
    )
    polled = int(query(db, "SELECT count(*) FROM ticks WHERE source = 'http'")[0][0])
    second = streams.start(sim, db)
    code, err = _stop_when_done(first)
    assert code == 0 and "stream ended: handed over to pid" in err, err
    before = _count(db)
    wait_for(lambda: _count(db) > before + 200, timeout=90, what="the successor storing")
    assert int(query(db, "SELECT count(*) FROM ticks WHERE source = 'http'")[0][0]) >= polled
    _exactly_once(sim, db)  # every frame sent on the successor's socket, once
    assert down_intervals(db, since_kind="fallback_start") == [], "a gap at the handover"
    code, err = _stop(second)
    assert code == 0, err
