"""Replay: a recorded landing log fed again through the writer's decoder into a fresh database.

`kalshi-pipeline replay --landing DIR --database PATH [--from T] [--to T]` reads every segment of
the log (`.seg`, archived `.seg.zst`, and `.open` ones, whole records only), in the order the
live writer loaded them: each recorded engine run (one process's landing log) whole, oldest run
first, with a decoder of its own, as each run had its own writer. Rows are decoded by the same
`Writer._decode` and stored by the same `warehouse.loads.commit`, with the landing positions, so
the tables equal the live run's except for the times of storing (`stored_at`, `updated_at` of
events, `wire_traffic`) and the few feed events the writer makes at load time (`landing_damaged`,
a batch's count of parse errors beyond the first 200). One difference can remain: the tail a
crashed run left unloaded was loaded live by its successor's writer, with a fresh decoder, and is
replayed with the crashed run's, so polled observations just before a crash may be stored
differently (the HTTP change detector's state differs).

The log is only read: a stream still landing into the folder is not disturbed; its open
segments are read up to their last whole record, and the summary says so.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kalshi_pipeline.stream.landing import (
    ARCHIVE_SUFFIX,
    SegmentFile,
    list_segments,
    read_records,
    segment_size,
)
from kalshi_pipeline.stream.overlap import Engines
from kalshi_pipeline.stream.stats import EngineStats
from kalshi_pipeline.stream.writer import Writer, _Batch
from kalshi_pipeline.warehouse import WarehouseBusyError
from kalshi_pipeline.warehouse.loads import commit
from kalshi_pipeline.warehouse.owner import Owner
from kalshi_pipeline.warehouse.paths import check_database_path
from kalshi_pipeline.warehouse.replayed import held, landing_positions, rows_held

READ_BYTES = 8 * 1024 * 1024
BATCH_ROWS = 50_000
# A record may carry a receive time a little before its segment's name (taken when it opened).
START_SLACK_NS = 60_000_000_000


class ReplayError(Exception):
    """The replay cannot start; the message names the input and the fix."""


@dataclass
class Progress:
    bytes_done: int
    bytes_total: int
    records: int
    seconds: float

    @property
    def percent(self) -> float:
        # a live segment grows while it is read: never more than 100
        return min(100.0, 100.0 * self.bytes_done / self.bytes_total) if self.bytes_total else 100.0

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ReplaySummary:
    segments: int = 0
    archived: int = 0
    records: int = 0
    records_in_range: int = 0
    bytes: int = 0
    ticks: int = 0
    ticks_websocket: int = 0
    ticks_http: int = 0
    markets: int = 0
    events: int = 0
    feed_events: int = 0
    poll_passes: int = 0
    parse_errors: int = 0
    seconds: float = 0.0
    runs: int = 0  # recorded engine runs (landing logs) found
    still_open: list[str] = field(default_factory=list)  # live segments, read to a whole record
    damaged: list[str] = field(default_factory=list)  # "<path>: <problem>"
    vanished: list[str] = field(default_factory=list)  # removed while replaying

    def lines(self) -> list[str]:
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"replayed {self.records_in_range:,} of {self.records:,} records "
            f"({self.bytes / 2**20:,.1f} MiB, {self.segments} segments of which {self.archived} "
            f"archived, {self.runs} engine runs) in {self.seconds:,.1f} s ({rate:,.0f} records/s)",
            f"stored {self.ticks:,} ticks ({self.ticks_websocket:,} websocket, "
            f"{self.ticks_http:,} http), {self.markets:,} market updates, {self.events:,} event "
            f"updates, {self.feed_events:,} feed events, {self.poll_passes:,} poll passes; "
            f"{self.parse_errors:,} frames did not decode",
        ]
        for name in self.still_open:
            out.append(
                f"still being written by a live stream: {name} (read up to its last whole "
                "record; run replay again with --resume later to add the rest)"
            )
        for name in self.vanished:
            out.append(f"removed while replaying (the stream's retention): {name}")
        for problem in self.damaged:
            out.append(
                f"damaged: {problem}; the records before the damage were replayed, the rest of "
                "that segment cannot be read (replace the file with a good copy and replay again "
                "into a fresh database)"
            )
        return out


def parse_time(text: str, flag: str) -> int:
    """An ISO 8601 time (a date alone is its midnight; no zone means UTC) in ns since epoch."""
    from datetime import UTC, datetime

    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ReplayError(
            f"{flag} {text!r} is not a time: give ISO 8601, e.g. 2026-11-27T20:00:00Z "
            "(no zone means UTC)"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp() * 1_000_000_000)


def runs_of(segments: list[SegmentFile]) -> list[list[SegmentFile]]:
    """The segments grouped by the landing log that wrote them (one per engine run), each in
    writing order, oldest run first. A log numbers its segments from 1 in its process; a
    segment numbered n follows the same process's segment n-1 that closed nearest its start."""
    runs: list[list[SegmentFile]] = []
    for seg in sorted(segments, key=lambda s: (s.start_ms, s.name)):
        n = int(seg.name.rsplit("-", 1)[1])
        candidates = [
            r for r in runs if r[-1].pid == seg.pid and int(r[-1].name.rsplit("-", 1)[1]) == n - 1
        ]
        if n == 1 or not candidates:
            runs.append([seg])
            continue
        best = min(candidates, key=lambda r: abs(_mtime_ns(r[-1]) - seg.start_ms * 1_000_000))
        best.append(seg)
    return runs


def _mtime_ns(seg: SegmentFile) -> int:
    try:
        return seg.path.stat().st_mtime_ns
    except FileNotFoundError:
        return seg.start_ms * 1_000_000


def _current(seg: SegmentFile) -> SegmentFile | None:
    """The segment as it is now: a live one may have been closed (`.open` → `.seg`) or archived
    since it was listed; None when it is gone."""
    if seg.path.exists():
        return seg
    folder = seg.path.parent
    for path, archived in (
        (folder / f"{seg.name}.seg", False),
        (folder / f"{seg.name}{ARCHIVE_SUFFIX}", True),
    ):
        if path.exists():
            return SegmentFile(seg.name, path, seg.pid, seg.start_ms, False, archived)
    return None


def _check_landing(landing: Path) -> list[SegmentFile]:
    if not landing.exists():
        raise ReplayError(
            f"the landing folder {landing} does not exist; give --landing the folder the stream "
            "wrote, beside its database and named after it (data/kalshi.landing for "
            "data/kalshi.duckdb)"
        )
    if not landing.is_dir():
        raise ReplayError(f"--landing {landing} is a file, not a folder; give the landing folder")
    segments = list_segments(landing, archived=True)
    if not segments:
        raise ReplayError(
            f"{landing} holds no landing segments (<start>-<pid>-<n>.seg, .open or .seg.zst "
            "files); is it the stream's landing folder (data/kalshi.landing for "
            "data/kalshi.duckdb)? Segments are removed after the retention unless the stream "
            "runs with --keep-landing"
        )
    return segments


def _in_range(seg: SegmentFile, from_ns: int | None, to_ns: int | None) -> bool:
    if to_ns is not None and seg.start_ms * 1_000_000 - START_SLACK_NS >= to_ns:
        return False
    return not (from_ns is not None and _mtime_ns(seg) < from_ns)


def _refuse_held(database: Path, held_rows: dict[str, int]) -> None:
    what = ", ".join(f"{n:,} rows in {t}" for t, n in held_rows.items())
    raise ReplayError(
        f"the database {database} is not empty ({what}); replay writes into a fresh "
        "database: give --database a new path, or add --resume to continue a replay of "
        "this log that stopped (records it holds already are skipped)"
    )


def replay(
    landing: Path,
    database: Path,
    *,
    from_ns: int | None = None,
    to_ns: int | None = None,
    resume: bool = False,
    batch_rows: int = BATCH_ROWS,
    on_progress: Callable[[Progress], None] | None = None,
) -> ReplaySummary:
    """Load the landing log in `landing` (records received in [from_ns, to_ns)) into
    `database`, which must be new or empty unless `resume`. Raises ReplayError on bad input."""
    landing, database = Path(landing), Path(database)
    if from_ns is not None and to_ns is not None and from_ns >= to_ns:
        raise ReplayError("--from must be before --to")
    every = _check_landing(landing)
    chosen = [s for s in every if _in_range(s, from_ns, to_ns)]
    if not chosen:
        first = every[0].start_ms / 1000
        last = max(_mtime_ns(s) for s in every) / 1e9
        raise ReplayError(
            f"no segment of {landing} was written between --from and --to; the log spans "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(first))} to "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(last))}"
        )
    if database.resolve().is_relative_to(landing.resolve()):
        raise ReplayError(
            f"--database {database} is inside the landing folder {landing}; put it elsewhere"
        )
    check_database_path(database)  # a folder, /proc, no write access: refused, with the fix
    summary = ReplaySummary()
    stats = EngineStats()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        try:
            con = stack.enter_context(held(database))
        except WarehouseBusyError:
            raise ReplayError(
                f"the database {database} is held by another process (a running stream?); "
                "replay into a new file: give --database a path that does not exist yet"
            ) from None
        stack.callback(lambda: setattr(summary, "seconds", time.perf_counter() - started))
        if not resume and (held_rows := rows_held(con)):
            _refuse_held(database, held_rows)
        committed = landing_positions(con)
        windows = Engines().windows(every)  # as the live writer saw them: no engine alive
        sizes = {s.name: segment_size(s) for s in chosen}
        total = sum(sizes.values())
        done = 0
        runs = runs_of(chosen)
        summary.runs = len(runs)
        for run in runs:
            # the decoder never opens its owner: this function stores what it decodes
            decoder = Writer(
                Owner(database), landing, stats, batch_rows=batch_rows, retention_s=math.inf
            )
            decoder._windows = windows
            decoder.connection = con  # a backfill page counts the trades it adds
            for listed in run:
                summary.segments += 1
                summary.archived += listed.archived
                if listed.open:
                    summary.still_open.append(str(listed.path))
                pos = committed.get(listed.name, 0)
                done += min(pos, sizes[listed.name])
                while not (listed.open and pos >= sizes[listed.name]):
                    seg = _current(listed)
                    if seg is None:
                        summary.vanished.append(str(listed.path))
                        break
                    batch = _Batch()
                    # an archive is decompressed from its start on every read: read it whole
                    chunk = sizes[listed.name] + 1 if seg.archived else READ_BYTES
                    records, nxt, problem = read_records(seg, pos, max_bytes=chunk)
                    end = pos
                    for rec in records:
                        summary.records += 1
                        end = rec.end
                        if (from_ns is None or rec.received_ns >= from_ns) and (
                            to_ns is None or rec.received_ns < to_ns
                        ):
                            summary.records_in_range += 1
                            decoder._decode_records((rec,), seg, batch, end)
                        if batch.size >= batch_rows:
                            break
                    if problem and end == nxt:
                        summary.damaged.append(f"{seg.path}: {problem}")
                        batch.event(
                            time.time_ns(), "writer", "landing_damaged", f"{seg.name}: {problem}"
                        )
                        end = max(end, segment_size(seg))
                    decoder.finish_batch(batch)
                    if batch.errors_dropped:
                        batch.event(
                            time.time_ns(),
                            "writer",
                            "parse_error",
                            f"{batch.errors_dropped} more parse errors or flagged values in this "
                            "batch (the frames are kept in the landing log)",
                        )
                    if end == pos:
                        break
                    batch.positions[seg.name] = end
                    commit(con, batch)
                    _count(summary, batch)
                    done += end - pos
                    summary.bytes += end - pos
                    pos = end
                    if on_progress is not None:
                        on_progress(
                            Progress(done, total, summary.records, time.perf_counter() - started)
                        )
        summary.parse_errors = stats.parse_errors
    return summary


def _count(summary: ReplaySummary, batch: _Batch) -> None:
    ws = batch.ws_ticks
    dropped_ws = batch.dropped.get("websocket", 0)
    dropped_http = batch.dropped.get("http", 0)
    summary.ticks_websocket += ws - dropped_ws
    summary.ticks_http += batch.rows - ws - dropped_http
    summary.ticks = summary.ticks_websocket + summary.ticks_http
    summary.markets += len(batch.markets)
    summary.events += len(batch.events)
    summary.feed_events += len(batch.feed_events)
    summary.poll_passes += len(batch.passes)
