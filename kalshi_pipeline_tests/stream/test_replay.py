"""Replay: a recorded landing log loaded again into a fresh database gives the live run's tables.

The source log is recorded by real engines streaming from the simulator (two runs, both feeds,
so HTTP change detection, poll passes and a restart are in it); archived (`keep_landing`)
segments replay the same; bad input is refused naming the input and the fix."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest

from kalshi_pipeline import cli
from kalshi_pipeline.defs.resources import KalshiFeedResource
from kalshi_pipeline.stream.config import Mode
from kalshi_pipeline.stream.landing import (
    ARCHIVE_SUFFIX,
    HEADER,
    Kind,
    LandingLog,
    Source,
    archive_segment,
    list_segments,
)
from kalshi_pipeline.stream.replay import Progress, ReplayError, replay
from kalshi_pipeline.stream.writer import Writer
from kalshi_pipeline.warehouse.owner import Owner
from kalshi_pipeline_tests.helpers import wait_for
from kalshi_pipeline_tests.stream.conftest import config_for

pytestmark = pytest.mark.timeout(240)

# What a replay stores differently by design: when it stored (not what).
EXCLUDED = {
    "ticks": ("stored_at",),
    "markets": (),
    "events": ("updated_at",),
    "feed_events": (),
    "poll_passes": (),
    "landing_positions": ("updated_at",),
}


def rows(db: Path) -> dict[str, Counter[tuple[Any, ...]]]:
    """Every table a replay fills, as a multiset of rows (without the columns in EXCLUDED)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for table, skip in EXCLUDED.items():
            select = f"SELECT * EXCLUDE ({', '.join(skip)})" if skip else "SELECT *"
            out[table] = Counter(con.execute(f"{select} FROM {table}").fetchall())
        return out
    finally:
        con.close()


def record_two_runs(sim_factory: Any, engines: Any, tmp_path: Path) -> tuple[Path, Path]:
    """A live database and its landing log: two engine runs one after the other, both feeds."""
    sim = sim_factory(markets=200, rate=150)
    db = tmp_path / "live" / "k.duckdb"
    config = config_for(sim, db, mode=Mode.BOTH, poll_interval_s=1.0)
    for _run in range(2):
        engine = engines(config)
        base = engine.stats.ticks_stored_ws
        wait_for(
            lambda e=engine, b=base: (
                e.stats.ticks_stored_ws >= b + 600 and e.stats.ticks_stored_http > 0
            ),
            timeout=60,
            what="600 websocket ticks and some polled ones",
        )
        assert engine.stop()
    return db, config.landing


def test_a_replayed_log_gives_the_live_tables_and_archived_segments_replay_the_same(
    sim_factory: Any, engines: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live_db, landing = record_two_runs(sim_factory, engines, tmp_path)
    live = rows(live_db)
    assert sum(live["ticks"].values()) >= 1200
    assert live["poll_passes"] and live["markets"]

    replayed = tmp_path / "replay" / "a.duckdb"
    summary = replay(landing, replayed)
    assert rows(replayed) == live
    assert summary.runs == 2
    assert summary.ticks == sum(live["ticks"].values())
    assert not summary.damaged and not summary.still_open

    # keep_landing: the live writer archives its loaded segments instead of removing them
    with Owner(live_db) as owner:
        writer = Writer(owner, landing, retention_s=0, keep_landing=True)
        writer.load_once()  # learns what is loaded
        segments = list_segments(landing)
        sizes = {s.name: s.path.stat().st_size for s in segments}
        for _ in segments:
            assert writer.cleanup() == 1
    assert list_segments(landing) == []
    archived = list_segments(landing, archived=True)
    assert [s.name for s in archived] == [s.name for s in segments]
    assert all(s.archived and s.path.name.endswith(ARCHIVE_SUFFIX) for s in archived)
    for seg in archived:
        assert seg.path.stat().st_size < sizes[seg.name] / 3

    # the same rows from the archive, through the command line
    code = cli.main(["replay", "--landing", str(landing), "--database", str(tmp_path / "b.duckdb")])
    assert code == 0
    out = capsys.readouterr().err
    assert (
        "records/s" in out and f"{len(archived)} segments of which {len(archived)} archived" in out
    )
    assert rows(tmp_path / "b.duckdb") == live


def test_a_time_range_replays_only_what_was_received_in_it(
    sim_factory: Any, engines: Any, tmp_path: Path
) -> None:
    live_db, landing = record_two_runs(sim_factory, engines, tmp_path)
    con = duckdb.connect(str(live_db), read_only=True)
    # the middle third of the websocket ticks, by receive time
    times = [
        r[0]
        for r in con.execute(
            "SELECT epoch_ns(received_at) FROM ticks WHERE source = 'websocket' ORDER BY 1"
        ).fetchall()
    ]
    lo, hi = times[len(times) // 3], times[2 * len(times) // 3]
    expected = Counter(
        con.execute(
            "SELECT * EXCLUDE (stored_at) FROM ticks WHERE source = 'websocket' "
            "AND epoch_ns(received_at) >= ? AND epoch_ns(received_at) < ?",
            [lo, hi],
        ).fetchall()
    )
    con.close()
    db = tmp_path / "range.duckdb"
    summary = replay(landing, db, from_ns=lo, to_ns=hi)
    assert 0 < summary.records_in_range < summary.records
    con = duckdb.connect(str(db), read_only=True)
    got = Counter(
        con.execute("SELECT * EXCLUDE (stored_at) FROM ticks WHERE source = 'websocket'").fetchall()
    )
    outside = con.execute(
        "SELECT count(*) FROM ticks WHERE epoch_ns(received_at) < ? OR epoch_ns(received_at) >= ?",
        [lo, hi],
    ).fetchone()
    con.close()
    assert got == expected
    assert outside == (0,)


# ---------------------------------------------------------------- without a network

FRAME = (
    '{{"type":"ticker","sid":1,"msg":{{"market_id":"m","market_ticker":"KX-{t}",'
    '"price_dollars":"0.{p:04d}","yes_bid_dollars":"0.1000","yes_ask_dollars":"0.2000",'
    '"volume_fp":"{v:05d}.00","open_interest_fp":"1.00","yes_bid_size_fp":"1.00",'
    '"yes_ask_size_fp":"2.00","ts":1,"ts_ms":{ms}}}}}'
)


def frame(i: int) -> bytes:
    return FRAME.format(t=i % 7, p=i % 10000, v=i, ms=1_790_000_000_000 + i).encode()


def write_log(folder: Path, n: int, rotate_bytes: int = 64 * 1024 * 1024) -> LandingLog:
    log = LandingLog(folder, rotate_bytes=rotate_bytes)
    for i in range(n):
        log.append(Kind.WS_FRAME, Source.WEBSOCKET, frame(i))
    return log


def ticks(db: Path) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return int(con.execute("SELECT count(*) FROM ticks").fetchone()[0])  # type: ignore[index]
    finally:
        con.close()


def test_a_missing_folder_or_one_without_segments_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match=r"nope does not exist; give --landing the folder"):
        replay(tmp_path / "nope", tmp_path / "a.duckdb")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a segment")
    with pytest.raises(ReplayError, match=r"empty holds no landing segments"):
        replay(tmp_path / "empty", tmp_path / "a.duckdb")
    assert not (tmp_path / "a.duckdb").exists()


def test_an_existing_database_is_refused_unless_resumed(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    write_log(landing, 300).close()
    db = tmp_path / "r.duckdb"
    assert replay(landing, db).ticks == 300
    with pytest.raises(ReplayError, match=r"r\.duckdb is not empty \(300 rows in ticks.*--resume"):
        replay(landing, db)
    assert ticks(db) == 300  # nothing lost, nothing doubled
    assert replay(landing, db, resume=True).ticks == 0
    assert ticks(db) == 300


def test_a_damaged_segment_is_reported_by_name_and_the_rest_is_replayed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    landing = tmp_path / "landing"
    write_log(landing, 400, rotate_bytes=20_000).close()
    segments = list_segments(landing)
    assert len(segments) >= 3
    bad = segments[1]
    data = bytearray(bad.path.read_bytes())
    record = HEADER.size + len(frame(0))
    data[3 * record + HEADER.size + 5] ^= 0xFF  # the 4th record's payload: its CRC fails
    bad.path.write_bytes(bytes(data))
    db = tmp_path / "r.duckdb"
    code = cli.main(["replay", "--landing", str(landing), "--database", str(db), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"damaged: {bad.path}: CRC mismatch at offset {3 * record}" in err
    assert "replace the file with a good copy" in err
    per_segment = math.ceil(20_000 / record)
    assert ticks(db) == 400 - (per_segment - 3)  # all but the records after the damage


def test_a_segment_still_being_written_is_read_to_its_last_whole_record(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    log = write_log(landing, 250)
    log.flush()
    with open(next(landing.iterdir()), "ab") as f:  # half a record, as if being written now
        f.write(HEADER.pack(Kind.WS_FRAME, Source.WEBSOCKET, 0, 500, 1, 0)[:10])
    db = tmp_path / "r.duckdb"
    summary = replay(landing, db)
    assert summary.ticks == 250
    assert len(summary.still_open) == 1 and summary.still_open[0].endswith(".open")
    assert any("still being written by a live stream" in line for line in summary.lines())
    assert not summary.damaged
    assert ticks(db) == 250


def test_bad_times_and_an_empty_range_name_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    landing = tmp_path / "landing"
    write_log(landing, 10).close()
    assert (
        cli.main(
            [
                "replay",
                "--landing",
                str(landing),
                "--database",
                str(tmp_path / "x.duckdb"),
                "--from",
                "soon",
            ]
        )
        == 2
    )
    with pytest.raises(
        ReplayError, match=r"no segment of .* between --from and --to; the log spans"
    ):
        replay(landing, tmp_path / "a.duckdb", from_ns=1, to_ns=2)


def test_the_feed_resource_and_the_command_line_set_retention_and_keep(tmp_path: Path) -> None:
    db = tmp_path / "k.duckdb"
    feed = KalshiFeedResource(landing_retention_hours=2, keep_landing=True)
    config = feed.stream_config(db)
    assert (config.retention_s, config.keep_landing) == (7200, True)
    assert KalshiFeedResource().stream_config(db).keep_landing is False
    args = cli.build_parser().parse_args(
        ["stream", "--retention-hours", "0.5", "--keep-landing", "--database", str(db)]
    )
    config = cli.stream_config_from_args(args)
    assert (config.retention_s, config.keep_landing) == (1800, True)


def test_a_crash_while_archiving_loses_nothing_and_leaves_no_litter(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    write_log(landing, 120, rotate_bytes=20_000).close()
    first, second = list_segments(landing)[:2]
    kept = first.path.read_bytes()
    archive_segment(first)
    (landing / first.path.name).write_bytes(kept)  # died after the rename, before the unlink
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    ).stdout.strip()
    stale = landing / f"{second.name}{ARCHIVE_SUFFIX}.{dead}.tmp"
    stale.write_bytes(b"half an archive")  # died while compressing
    listed = list_segments(landing, archived=True)
    assert [s.name for s in listed].count(first.name) == 1
    db = tmp_path / "r.duckdb"
    assert replay(landing, db).ticks == 120
    with Owner(db) as owner:
        writer = Writer(owner, landing, retention_s=0, keep_landing=True)
        writer.committed = {s.name: s.path.stat().st_size for s in list_segments(landing)}
        while writer.cleanup():
            pass
    assert not stale.exists()
    assert list_segments(landing) == []
    assert replay(landing, tmp_path / "again.duckdb").ticks == 120


def test_replaying_the_folder_of_a_running_stream_leaves_it_undisturbed(
    sim_factory: Any, engines: Any, tmp_path: Path
) -> None:
    sim = sim_factory(markets=100, rate=100)
    live_db = tmp_path / "live" / "k.duckdb"
    config = config_for(sim, live_db, keep_landing=True)
    engine = engines(config)
    assert engine.writer.keep_landing  # the setting reaches the stream's writer
    wait_for(lambda: engine.stats.ticks_stored_ws >= 300, timeout=60, what="300 ticks stored")
    db = tmp_path / "r.duckdb"
    first = replay(config.landing, db)
    assert first.ticks_websocket >= 300 and len(first.still_open) == 1
    before = engine.stats.ticks_stored_ws
    wait_for(
        lambda: engine.stats.ticks_stored_ws >= before + 300,
        timeout=60,
        what="the stream storing on after the replay",
    )
    assert engine.stop()
    assert engine.stats.parse_errors == 0
    rest = replay(config.landing, db, resume=True)
    assert rest.ticks_websocket >= 300 and not rest.still_open
    assert rows(db) == rows(live_db)


def test_an_interrupted_replay_keeps_what_it_stored_and_resume_completes_it(
    tmp_path: Path,
) -> None:
    landing = tmp_path / "landing"
    write_log(landing, 3000, rotate_bytes=100_000).close()
    db = tmp_path / "r.duckdb"

    def interrupt(progress: Progress) -> None:
        assert 0 < progress.percent < 100 and progress.records > 0
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replay(landing, db, batch_rows=500, on_progress=interrupt)
    stored = ticks(db)  # the owner closed the file; the first batch stays stored
    assert 0 < stored <= 500
    assert replay(landing, db, resume=True).ticks == 3000 - stored
    con = duckdb.connect(str(db), read_only=True)
    distinct = con.execute(
        "SELECT count(DISTINCT (landing_segment, landing_offset)) FROM ticks"
    ).fetchone()
    con.close()
    assert distinct == (3000,)


def test_a_segment_that_cannot_be_archived_stays_as_it_is_and_replays(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    write_log(landing, 100).close()
    (seg,) = list_segments(landing)
    # the archive cannot be written (as on a full disk): its temporary name is taken by a folder
    (landing / f"{seg.name}{ARCHIVE_SUFFIX}.{os.getpid()}.tmp").mkdir()
    with Owner(tmp_path / "live.duckdb") as owner:
        writer = Writer(owner, landing, retention_s=0, keep_landing=True)
        writer.committed = {seg.name: seg.path.stat().st_size}
        assert writer.cleanup() == 0
        assert writer.cleanup() == 0  # not tried again at once
    assert list_segments(landing) == [seg]
    assert list_segments(landing, archived=True) == [seg]
    assert replay(landing, tmp_path / "r.duckdb").ticks == 100


def test_a_database_another_process_holds_is_refused(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    write_log(landing, 10).close()
    db = tmp_path / "held.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from kalshi_pipeline.warehouse.replayed import held\n"
            "with held(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ReplayError, match=r"held\.duckdb is held by another process"):
            replay(landing, db)
    finally:
        holder.kill()
        holder.wait()
