"""The landing log and the writer without a network: exactly once across restarts and crashes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import duckdb
import msgspec
import pytest

from kalshi_pipeline.stream.landing import HEADER, Kind, LandingLog, Source, list_segments
from kalshi_pipeline.stream.pages import PageMeta
from kalshi_pipeline.stream.stats import EngineStats
from kalshi_pipeline.stream.writer import Writer
from kalshi_pipeline.warehouse.owner import Owner
from kalshi_pipeline_tests.helpers import query

FRAME = (
    '{{"type":"ticker","sid":1,"msg":{{"market_id":"m","market_ticker":"{t}",'
    '"price_dollars":"0.{p:04d}","yes_bid_dollars":"0.1000","yes_ask_dollars":"0.2000",'
    '"volume_fp":"{v}.00","open_interest_fp":"1.00","yes_bid_size_fp":"1.00",'
    '"yes_ask_size_fp":"2.00","ts":1,"ts_ms":{ms}}}}}\n'
)


def frame(i: int) -> bytes:
    return FRAME.format(t=f"KX-{i % 7}", p=i % 10000, v=i, ms=1_790_000_000_000 + i).encode()


class Files:
    """The database of a test, with an owner per writer (one process owns the file at a time)."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "data" / "k.duckdb"
        self.owners: list[Owner] = []

    def owner(self) -> Owner:
        for o in self.owners:
            o.close()  # the writer before this one ended (its process stopped or crashed)
        self.owners.append(Owner(self.path))
        return self.owners[-1]


OPEN: list[Files] = []


@pytest.fixture(autouse=True)
def close_owners() -> Iterator[None]:
    """Every owner a test opened is closed after it (a process runs one owner at a time)."""
    yield
    while OPEN:
        for owner in OPEN.pop().owners:
            owner.close()


def make(tmp_path: Path) -> tuple[Files, Path]:
    OPEN.append(Files(tmp_path))
    return OPEN[-1], tmp_path / "data" / "landing"


def test_every_logged_frame_is_stored_once_across_writer_restarts(tmp_path: Path) -> None:
    wh, landing_dir = make(tmp_path)
    log = LandingLog(landing_dir)
    for i in range(2500):
        log.append(Kind.WS_FRAME, Source.WEBSOCKET, frame(i))
    log.sync()
    first = Writer(wh.owner(), landing_dir, landing=log, batch_rows=1000)
    assert first.load_once() > 0  # one batch of 1000, then "crash"
    for i in range(2500, 3000):
        log.append(Kind.WS_FRAME, Source.WEBSOCKET, frame(i))
    log.close()
    second = Writer(wh.owner(), landing_dir, batch_rows=1000)
    assert second.drain(30)
    rows = query(
        wh.path, "SELECT count(*), count(DISTINCT (landing_segment, landing_offset)) FROM ticks"
    )
    assert rows == [(3000, 3000)]
    assert Writer(wh.owner(), landing_dir).load_once() == 0


def test_a_writer_waits_while_another_owns_the_file_then_stores_every_record_once(
    tmp_path: Path,
) -> None:
    wh, landing_dir = make(tmp_path)
    log = LandingLog(landing_dir)
    wh.owners += [Owner(wh.path), Owner(wh.path)]
    old = Writer(wh.owners[0], landing_dir, landing=log, batch_rows=300)
    new = Writer(wh.owners[1], landing_dir, landing=log, batch_rows=300, busy_timeout_s=0.05)
    for i in range(2000):
        log.append(Kind.WS_FRAME, Source.WEBSOCKET, frame(i))
        if i % 250 == 0:
            log.sync()
            old.load_once()
            assert new.load_once() == 0  # the old writer owns the file: the log keeps it
    log.sync()
    assert new.stats.db_busy_since is not None
    old.drain(30)
    old.owner.close()  # a handover: the old engine stops
    for i in range(2000, 2500):
        log.append(Kind.WS_FRAME, Source.WEBSOCKET, frame(i))
    log.sync()
    assert new.drain(30)
    assert new.stats.db_busy_since is None
    assert query(wh.path, "SELECT count(*), count(DISTINCT landing_offset) FROM ticks") == [
        (2500, 2500)
    ]
    new.owner.close()


def test_the_feed_lag_is_the_receive_time_less_kalshis_send_time_or_change_time(
    tmp_path: Path,
) -> None:
    """The lag the status reports, for ticks decoded in bulk and one by one alike: received
    minus `sending_ts_ms`, else minus `ts_ms`; a tick with neither adds no lag."""
    wh, landing_dir = make(tmp_path)
    log = LandingLog(landing_dir)
    sent_ms = 1_795_000_000_000
    for i in range(300):
        data = frame(i)  # ts_ms is 1_790_000_000_000 + i
        if i % 3 == 0:  # Kalshi's send time present: the lag is 25 ms
            data = data.replace(b"}}\n", f'}},"sending_ts_ms":{sent_ms + i}}}\n'.encode())
            received_ms = sent_ms + i + 25
        else:  # no send time: the lag from ts_ms, also 25 ms
            received_ms = 1_790_000_000_000 + i + 25
        if i % 50 == 7:  # one by one: a price with more places than a price has (rounded)
            data = data.replace(b'"price_dollars":"0.', b'"price_dollars":"0.00001')
        log.append(Kind.WS_FRAME, Source.WEBSOCKET, data, received_ms * 1_000_000)
    no_times = frame(999).replace(b',"ts":1,"ts_ms":1790000000999', b"")
    log.append(Kind.WS_FRAME, Source.WEBSOCKET, no_times, sent_ms * 1_000_000)
    log.sync()
    stats = EngineStats()
    writer = Writer(wh.owner(), landing_dir, stats, landing=log)
    assert writer.drain(30)
    assert stats.ticks_stored_ws == 301
    assert stats.values_flagged >= 6  # the rounded prices went one by one
    figures = stats.snapshot()
    # every lag is 25 ms (the tick without times adds none; ms of 2026 as floats: to 0.001 ms)
    assert figures["lag_p50_ms"] == pytest.approx(25.0, abs=1e-3)
    assert figures["lag_p99_ms"] == pytest.approx(25.0, abs=1e-3)
    assert figures["store_p50_ms"] is not None and figures["store_p50_ms"] > 0


def _backlog(tmp_path: Path, frames: int) -> tuple[Files, Writer]:
    """A landing log of `frames` ticker frames, and a writer of 500-row batches to load it."""
    wh, landing_dir = make(tmp_path)
    log = LandingLog(landing_dir)
    for i in range(frames):
        log.append(Kind.WS_FRAME, Source.WEBSOCKET, frame(i))
    log.sync()
    return wh, Writer(wh.owner(), landing_dir, landing=log, batch_rows=500)


def _stored_once(db: Path) -> list[tuple[int, int]]:
    return query(
        db, "SELECT count(*), count(DISTINCT (landing_segment, landing_offset)) FROM ticks"
    )


def _committed_out_of_log_order(db: Path) -> int:
    """Ticks committed before a tick that comes earlier in the log (`stored_at` is the commit's
    time): 0 when the batches were committed in the order of the log."""
    rows = query(
        db,
        "SELECT count(*) FROM (SELECT stored_at < lag(stored_at) OVER (ORDER BY landing_offset) "
        "AS early FROM ticks) WHERE early",
    )
    return int(rows[0][0])


def test_a_backlog_is_decoded_while_the_last_batch_commits_and_stored_once(
    tmp_path: Path,
) -> None:
    """With a backlog, the next batch is decoded while the last one commits (on the writer's
    commit thread): every frame is still stored once, in the order of the log."""
    wh, writer = _backlog(tmp_path, 2300)
    before = set(threading.enumerate())
    assert writer.load_once() == 500
    assert any(t.name.startswith("kalshi-commit") for t in set(threading.enumerate()) - before)
    assert writer.drain(60)
    assert _stored_once(wh.path) == [(2300, 2300)]
    # stored in the order received: the volumes (the frame's number) rise with the offsets
    assert query(
        wh.path,
        "SELECT count(*) FROM (SELECT volume - lag(volume) OVER (ORDER BY landing_offset) AS d "
        "FROM ticks) WHERE d <> 1",
    ) == [(0,)]
    assert _committed_out_of_log_order(wh.path) == 0
    assert writer.stats.ticks_stored == 2300


def test_a_commit_that_fails_for_want_of_memory_keeps_the_batch_decoded_behind_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit fails for want of memory (analysts' queries took it) while the next batch was
    decoded behind it: both are committed later, in order, nothing lost or stored twice."""
    from kalshi_pipeline.stream import writer as writer_module

    real_commit = writer_module.commit
    failures = [duckdb.OutOfMemoryException("Out of Memory Error: failed to allocate block")]

    def commit_failing_once(con: duckdb.DuckDBPyConnection, batch: object) -> None:
        if failures:
            raise failures.pop()
        real_commit(con, batch)  # type: ignore[arg-type]

    monkeypatch.setattr(writer_module, "commit", commit_failing_once)
    wh, writer = _backlog(tmp_path, 1200)
    assert writer.load_once() == 0  # the commit failed: nothing stored, the log keeps it
    assert writer.stats.db_busy_since is not None
    assert writer.drain(60)
    assert writer.stats.db_busy_since is None
    assert _stored_once(wh.path) == [(1200, 1200)]
    assert _committed_out_of_log_order(wh.path) == 0
    kinds = [r[0] for r in query(wh.path, "SELECT kind FROM feed_events ORDER BY occurred_at")]
    assert kinds[:2] == ["database_busy", "database_free"]


def test_a_decoding_failure_while_a_batch_commits_keeps_the_commit_on_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoding the next batch fails (a defect) while the last one commits: the error is
    raised, but only once that commit is recorded, so nothing is loaded twice afterwards."""
    wh, writer = _backlog(tmp_path, 1200)
    real_read = Writer._read_batch
    calls = 0

    def read_failing_second(self: Writer) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("a decoder defect")
        return real_read(self)

    monkeypatch.setattr(Writer, "_read_batch", read_failing_second)
    with pytest.raises(RuntimeError, match="a decoder defect"):
        writer.load_once()
    assert writer.stats.ticks_stored == 500  # the commit went through and is on record
    assert _stored_once(wh.path) == [(500, 500)]
    assert writer.drain(60)
    assert _stored_once(wh.path) == [(1200, 1200)]


def test_a_commit_after_a_failed_rollback_stores_the_batch(tmp_path: Path) -> None:
    """A commit that failed for want of memory, whose ROLLBACK failed too, leaves the owner's
    connection in an aborted transaction: the next commit ends it and stores its batch."""
    wh, landing_dir = make(tmp_path)
    log = LandingLog(landing_dir)
    owner = wh.owner()
    writer = Writer(owner, landing_dir, landing=log)
    for i in range(50):
        log.append(Kind.WS_FRAME, Source.WEBSOCKET, frame(i))
    assert writer.drain(30)
    con = owner.connection(timeout_s=10)
    con.execute("BEGIN TRANSACTION")
    with pytest.raises(duckdb.Error):
        con.execute("SELECT CAST('not a number' AS INTEGER)")  # the transaction is aborted
    for i in range(50, 100):
        log.append(Kind.WS_FRAME, Source.WEBSOCKET, frame(i))
    assert writer.drain(30)
    owner.close()
    assert query(wh.path, "SELECT count(*) FROM ticks") == [(100,)]


def test_a_torn_tail_from_a_crash_is_skipped_and_reported(tmp_path: Path) -> None:
    wh, landing_dir = make(tmp_path)
    # a segment left by a process that died mid-record: its pid no longer exists
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    landing_dir.mkdir(parents=True)
    path = landing_dir / f"1790000000000-{pid}-000001.open"

    good = frame(1)
    with open(path, "wb") as f:
        f.write(HEADER.pack(Kind.WS_FRAME, Source.WEBSOCKET, 0, len(good), 1, zlib.crc32(good)))
        f.write(good)
        torn = frame(2)
        f.write(HEADER.pack(Kind.WS_FRAME, Source.WEBSOCKET, 0, len(torn), 2, zlib.crc32(torn)))
        f.write(torn[:10])
    assert not list_segments(landing_dir)[0].open
    writer = Writer(wh.owner(), landing_dir)
    assert writer.drain(30)
    assert query(wh.path, "SELECT count(*) FROM ticks") == [(1,)]
    kinds = [r[0] for r in query(wh.path, "SELECT kind FROM feed_events")]
    assert "landing_damaged" in kinds


def test_malformed_frames_are_counted_recorded_and_write_no_row(tmp_path: Path) -> None:
    wh, landing_dir = make(tmp_path)
    log = LandingLog(landing_dir)
    bad = [
        b"{not json",
        b'{"type":"ticker","msg":{"market_ticker":"","price_dollars":"0.5"}}',
        b'{"type":"ticker","msg":{"price_dollars":"0.5"}}',
        b"[]",
        b'{"type":"mystery"}',
    ]
    for i, b in enumerate(bad):
        log.append(Kind.WS_FRAME, Source.WEBSOCKET, frame(i))
        log.append(Kind.WS_FRAME, Source.WEBSOCKET, b)
    writer = Writer(wh.owner(), landing_dir, landing=log)
    assert writer.drain(30)
    assert query(wh.path, "SELECT count(*) FROM ticks") == [(len(bad),)]
    assert writer.stats.parse_errors == 4
    assert writer.stats.unknown_frames == 1
    events = query(wh.path, "SELECT kind, count(*) FROM feed_events GROUP BY 1 ORDER BY 1")
    assert events == [("parse_error", 4), ("unknown_frame", 1)]


def test_polled_pages_store_only_markets_that_changed(tmp_path: Path) -> None:
    wh, landing_dir = make(tmp_path)
    log = LandingLog(landing_dir)

    def page(pass_id: int, bids: list[str]) -> bytes:
        markets = [
            {
                "ticker": f"KX-{i}",
                "event_ticker": "KX-E",
                "status": "active",
                "yes_bid_dollars": b,
                "yes_ask_dollars": "0.9000",
                "volume_fp": "1.00",
            }
            for i, b in enumerate(bids)
        ]
        meta = msgspec.json.encode(PageMeta(pass_id=pass_id, page=1))
        return meta + b"\n" + msgspec.json.encode({"markets": markets, "cursor": ""})

    log.append(Kind.REST_PAGE, Source.HTTP, page(1, ["0.1000", "0.2000", "0.3000"]))
    log.append(Kind.REST_PAGE, Source.HTTP, page(2, ["0.1000", "0.2500", "0.3000"]))
    log.append(Kind.REST_PAGE, Source.HTTP, page(3, ["0.1000", "0.2500", "0.3000"]))
    assert Writer(wh.owner(), landing_dir, landing=log).drain(30)
    rows = query(wh.path, "SELECT market_ticker, yes_bid FROM ticks ORDER BY landing_offset, 1")
    assert [(t, str(b)) for t, b in rows] == [
        ("KX-0", "0.1000"),
        ("KX-1", "0.2000"),
        ("KX-2", "0.3000"),
        ("KX-1", "0.2500"),
    ]
    assert query(wh.path, "SELECT count(*) FROM markets WHERE status = 'active'") == [(3,)]


def test_odd_values_are_stored_as_far_as_they_can_be_and_flagged_with_their_place(
    tmp_path: Path,
) -> None:
    wh, landing_dir = make(tmp_path)
    log = LandingLog(landing_dir)
    negative = (
        b'{"type":"ticker","sid":1,"sending_ts_ms":1790000000250,"msg":{"market_ticker":"KX-NEG",'
        b'"price_dollars":"0.9900","yes_bid_size_fp":"-3.00","yes_ask_size_fp":"-24.83",'
        b'"ts_ms":1790000000000}}'
    )
    impossible = b'{"type":"ticker","sid":1,"msg":{"market_ticker":"KX-BAD","price_dollars":"7.5"}}'
    log.append(Kind.WS_FRAME, Source.WEBSOCKET, negative)
    log.append(Kind.WS_FRAME, Source.WEBSOCKET, impossible)
    markets = [
        {"ticker": "KX-A", "yes_bid_dollars": "0.1000", "settlement_bounds_type": "default"},
        {
            "ticker": "KX-B",
            "yes_bid_dollars": "0.200049",
            "yes_bid_size_fp": "-1.00",
            "settlement_bounds_type": "floor",
            "settlement_floor_dollars": "0.0500",
            "exchange_index": 2,
        },
        {"title": "no ticker at all"},
        {"ticker": "KX-C", "yes_bid_dollars": "0.3000", "status": "paused_for_review"},
    ]
    for pass_id in (1, 2):  # the second pass repeats the page: nothing new to store or flag
        meta = msgspec.json.encode(PageMeta(pass_id=pass_id, page=1))
        log.append(
            Kind.REST_PAGE,
            Source.HTTP,
            meta + b"\n" + msgspec.json.encode({"markets": markets, "cursor": ""}),
        )
    writer = Writer(wh.owner(), landing_dir, landing=log)
    assert writer.drain(30)
    ticks = query(
        wh.path,
        "SELECT market_ticker, source, price, yes_bid, yes_bid_size, yes_ask_size, "
        "epoch_ms(sent_at) FROM ticks ORDER BY landing_offset, market_ticker",
    )
    assert [(t[0], t[1]) for t in ticks] == [
        ("KX-NEG", "websocket"),
        ("KX-BAD", "websocket"),
        ("KX-A", "http"),
        ("KX-B", "http"),
        ("KX-C", "http"),
    ]
    neg, bad, _a, b, _c = ticks
    assert (str(neg[4]), str(neg[5]), neg[6]) == ("-3.00", "-24.83", 1790000000250)
    assert bad[2] is None  # 7.5 dollars cannot be a price: NULL, not a garbage row
    assert (str(b[3]), str(b[4]), b[6]) == ("0.2000", "-1.00", None)
    market = query(
        wh.path,
        "SELECT settlement_bounds_type, settlement_floor_dollars, exchange_index FROM markets "
        "WHERE market_ticker = 'KX-B'",
    )
    assert [(m[0], str(m[1]), m[2]) for m in market] == [("floor", "0.0500", 2)]
    assert query(wh.path, "SELECT status FROM markets WHERE market_ticker = 'KX-C'") == [
        ("paused_for_review",)
    ]
    events = query(wh.path, "SELECT kind, detail FROM feed_events ORDER BY detail")
    flagged = [d for k, d in events if k == "flagged"]
    assert len(flagged) == 4
    assert any(d.startswith("KX-NEG: yes_bid_size_fp='-3.00' is negative") for d in flagged)
    assert any("KX-B: " in d and "rounded half-even" in d for d in flagged)
    assert all("@" in d for d in flagged)  # where the raw frame sits in the landing log
    skipped = [d for k, d in events if k == "parse_error"]
    assert len(skipped) == 1 and skipped[0].startswith("markets[2] skipped")
    assert (writer.stats.objects_skipped, writer.stats.values_flagged) == (2, 6)


def test_settled_after_determined_keeps_the_result_and_settlement_value(tmp_path: Path) -> None:
    wh, landing_dir = make(tmp_path)
    log = LandingLog(landing_dir)
    created = (
        b'{"type":"market_lifecycle_v2","sid":2,"seq":1,"sending_ts_ms":1790000000000,"msg":'
        b'{"market_ticker":"KX-H","event_type":"created","open_ts":1790000000,'
        b'"close_ts":1790003600,"exchange_index":3,'
        b'"additional_metadata":{"event_ticker":"KXH-E","title":"t"}}}'
    )
    determined = (
        b'{"type":"market_lifecycle_v2","sid":2,"seq":2,"msg":{"market_ticker":"KX-H",'
        b'"event_type":"determined","determination_ts":1790003700,"result":"yes",'
        b'"settlement_value":"1.0000"}}'
    )
    settled = (
        b'{"type":"market_lifecycle_v2","sid":2,"seq":3,"msg":{"market_ticker":"KX-H",'
        b'"event_type":"settled","settled_ts":1790003800}}'
    )
    event = (
        b'{"type":"event_lifecycle","sid":2,"seq":4,"msg":{"event_ticker":"KXH-E",'
        b'"series_ticker":"KXH","exchange_index":3}}'
    )
    stored = "SELECT status, result, settlement_value_dollars, exchange_index FROM markets"
    for frames in ([created, determined], [settled, event]):  # two batches: settled comes later
        for f in frames:
            log.append(Kind.WS_FRAME, Source.WEBSOCKET, f)
        assert Writer(wh.owner(), landing_dir, landing=log).drain(30)
    rows = query(wh.path, stored)
    assert [(s, r, str(v), i) for s, r, v, i in rows] == [("finalized", "yes", "1.0000", 3)]
    assert query(wh.path, "SELECT series_ticker, exchange_index FROM events") == [("KXH", 3)]
    # and in one batch
    wh.owner().close()  # (one owner per port at a time)
    wh2, landing2 = make(tmp_path / "one")
    log2 = LandingLog(landing2)
    for f in (created, determined, settled):
        log2.append(Kind.WS_FRAME, Source.WEBSOCKET, f)
    assert Writer(wh2.owner(), landing2, landing=log2).drain(30)
    rows = query(wh2.path, stored)
    assert [(s, r, str(v), i) for s, r, v, i in rows] == [("finalized", "yes", "1.0000", 3)]


def test_loaded_segments_are_removed_after_the_retention(tmp_path: Path) -> None:
    wh, landing_dir = make(tmp_path)
    log = LandingLog(landing_dir, rotate_bytes=2000)
    for i in range(50):
        log.append(Kind.WS_FRAME, Source.WEBSOCKET, frame(i))
    log.close()
    closed = [s for s in list_segments(landing_dir) if not s.open]
    assert len(closed) > 3
    keep = Writer(wh.owner(), landing_dir, retention_s=3600)
    assert keep.drain(30)
    assert len(list_segments(landing_dir)) == len(closed)
    old = closed[0].path.stat().st_mtime - 7200
    for s in closed:
        os.utime(s.path, (old, old))
    # positions not yet known
    assert Writer(wh.owner(), landing_dir, retention_s=3600).cleanup() == 0
    gone = Writer(wh.owner(), landing_dir, retention_s=3600)
    gone.load_once()
    assert gone.cleanup() == len(closed)
    assert query(wh.path, "SELECT count(*) FROM ticks") == [(50,)]


def test_the_status_works_latency_percentiles_out_again_only_every_few_seconds() -> None:
    """Sorting the latencies kept is the dearest part of a status; the status asks every
    second, so the percentiles are as of at most `percentiles_every_s` ago, and as of now when
    asked `fresh` (the end of a run) or when none were known yet."""
    stats = EngineStats(percentiles_every_s=3600.0)
    assert stats.snapshot()["lag_p50_ms"] is None  # nothing yet
    stats.record_latencies([10.0] * 98 + [500.0] * 2, [1.0] * 100)
    first = stats.snapshot()  # the first latencies are shown at once
    assert (first["lag_p50_ms"], first["lag_p99_ms"], first["store_p50_ms"]) == (10.0, 500.0, 1.0)
    stats.record_latencies([40.0] * 300, [2.0] * 300)
    assert stats.snapshot()["lag_p50_ms"] == 10.0  # within the interval: as before
    fresh = stats.snapshot(fresh=True)
    assert (fresh["lag_p50_ms"], fresh["store_p50_ms"]) == (40.0, 2.0)
    every = EngineStats(percentiles_every_s=0.0)
    every.record_latencies([5.0], [5.0])
    assert every.snapshot()["lag_p99_ms"] == 5.0
    every.record_latencies([7.0] * 10, [7.0] * 10)
    assert every.snapshot()["lag_p50_ms"] == 7.0  # the interval passed: worked out again


def test_the_writer_gives_back_what_duckdb_cached_once_it_has_checkpointed(
    tmp_path: Path,
) -> None:
    """DuckDB keeps the blocks it writes cached up to its memory limit (1 GB): a stream that
    writes fast grew by what it wrote. After each checkpoint the writer has them released."""
    wh, landing_dir = make(tmp_path)
    log = LandingLog(landing_dir)
    for i in range(120_000):
        log.append(Kind.WS_FRAME, Source.WEBSOCKET, frame(i))
    log.sync()
    owner = wh.owner()
    con = owner.connection()
    con.execute("SET checkpoint_threshold = '2MB'")  # checkpoints every few batches, not 16 MB
    writer = Writer(owner, landing_dir)
    assert writer.drain(120)
    assert writer.stats.ticks_stored == 120_000
    cached = con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchone()
    size = con.execute("SELECT used_blocks * block_size FROM pragma_database_size()").fetchone()
    assert cached is not None and size is not None
    # without the releases every block written stays cached: at least the file's size
    assert cached[0] < size[0] / 2
    stored = con.execute("SELECT count(*), max(volume) FROM ticks").fetchone()
    assert stored == (120_000, 119_999)
