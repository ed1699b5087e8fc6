"""The writer: loads the landing log into DuckDB in batches, exactly once.

The writer is the warehouse's owner (`warehouse/owner.py`): it opens the file once, holds one
connection for its life and serves everyone else over Quack. Each cycle reads the committed
position of every segment, decodes the records after it into a batch, and hands the batch to
`warehouse/loads.py`, which inserts the rows together with the new positions in one transaction
(the writer decodes, the warehouse stores). A crash before COMMIT loads the same records again
next time; a crash after finds them committed. Two engines sharing a landing folder (a handover)
cannot both own the file: the newer one waits, receiving into the log, until the older one hands
it over; each loads only its own segments and those of engines that are gone, and ticks received
while both were receiving are stored once (`overlap.py`). When the file cannot be had (or a commit
fails for want of memory while analysts' queries run in this process) the cycle gives up quickly:
receiving never waits, the log grows.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import duckdb
import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from kalshi_pipeline.kalshi.bulk import Columns, delta_columns, ticker_columns
from kalshi_pipeline.kalshi.errors import FrameDecodeError
from kalshi_pipeline.kalshi.messages import (
    BookDelta,
    BookSnapshot,
    ErrorMessage,
    EventLifecycle,
    MarketLifecycle,
    Tick,
    Trade,
    UnknownMessage,
    decode_frame,
    decode_markets_page,
    decode_tick,
    decode_trades_page,
)
from kalshi_pipeline.stream.keyframes import KEYFRAME_S, KeyframeClock
from kalshi_pipeline.stream.landing import (
    SOURCE_NAMES,
    Kind,
    Record,
    SegmentFile,
    Source,
    archive_segment,
    list_segments,
    read_records,
    remove_stale_archive_files,
)
from kalshi_pipeline.stream.overlap import Engines, Window, in_any
from kalshi_pipeline.stream.pages import (
    TICKER_PREFIX,
    PageMeta,
    PassFigures,
    TradesPageMeta,
    iso_ms,
    series_of,
)
from kalshi_pipeline.stream.stats import EngineStats
from kalshi_pipeline.warehouse import WarehouseBusyError
from kalshi_pipeline.warehouse.books import ENGINE_BITS
from kalshi_pipeline.warehouse.loads import Batch, commit, stored_trade_ids
from kalshi_pipeline.warehouse.owner import Owner

log = logging.getLogger(__name__)

DELTA_PREFIX = b'{"type":"orderbook_delta"'
WS_FRAME = int(Kind.WS_FRAME)
MAX_ERROR_ROWS_PER_BATCH = 200
READ_BYTES = 32 * 1024 * 1024
MAX_SKIPPED_REMEMBERED = 10_000
LIFECYCLE_STATUS = {
    "created": "initialized",
    "activated": "active",
    "deactivated": "inactive",
    "determined": "determined",
    "settled": "finalized",
}


def _l1(t: Tick) -> tuple[Decimal | None, ...]:
    return (
        t.price,
        t.yes_bid,
        t.yes_ask,
        t.yes_bid_size,
        t.yes_ask_size,
        t.volume,
        t.open_interest,
    )


def out_of_memory(exc: BaseException) -> bool:
    """DuckDB ran out of its memory_limit (a client's query, most likely): worth a retry."""
    text = str(exc).lower()
    return isinstance(exc, duckdb.OutOfMemoryException) or (
        "failed to allocate" in text or "failed to pin" in text or "out of memory" in text
    )


@dataclass
class _BackfillCount:
    attempt: int = 0
    trades: int = 0  # received in the current attempt
    new: int = 0  # stored by any attempt (not stored before, by the socket or another page)


class FeedEventPayload(msgspec.Struct):
    kind: str
    detail: str = ""


_META = msgspec.json.Decoder(PageMeta)
_PASS = msgspec.json.Decoder(PassFigures)
_EVENT = msgspec.json.Decoder(FeedEventPayload)
_TRADES_META = msgspec.json.Decoder(TradesPageMeta)
MAX_BACKFILLS_REMEMBERED = 1_000


def _latencies(
    now_ns: int,
    cols: dict[str, list[Any]],
    websocket: pa.Array | None,
    store: list[float],
    lag: list[float],
) -> None:
    """Add to `store` each tick's wait from receipt to `now_ns` (ms), and to `lag` each WebSocket
    tick's feed lag: received less Kalshi's send time, or, without sending_ts_ms (older
    servers), less the market's change time (ts_ms); neither: no lag. `websocket` marks the
    WebSocket rows (None: all). The floats are Python's `(now_ns - rcv) / 1e6`, `rcv / 1e6 - ms`."""
    rcv = pa.array(cols["received_at"], pa.int64())
    waited = pc.subtract(pa.scalar(now_ns, pa.int64()), rcv).cast(pa.float64(), safe=False)
    store += pc.divide(waited, 1e6).to_pylist()
    rcv_ms = pc.divide(rcv.cast(pa.float64(), safe=False), 1e6)
    sent_ms = pc.coalesce(
        pa.array(cols["sent_at"], pa.int64()), pa.array(cols["exchange_ts"], pa.int64())
    ).cast(pa.float64(), safe=False)
    lags = pc.subtract(rcv_ms, sent_ms)
    if websocket is not None:
        lags = lags.filter(websocket)
    lag += lags.drop_null().to_pylist()


@dataclass
class _Batch(Batch):
    """A batch being decoded: the rows (`loads.Batch`) and what decoding them noticed."""

    errors_logged: int = 0
    errors_dropped: int = 0
    # frames kept for the bulk decoder (`Writer.finish_batch`), with their segments
    pending_ticks: list[tuple[Record, SegmentFile]] = field(default_factory=list)
    pending_deltas: list[tuple[Record, SegmentFile]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return super().size + len(self.pending_ticks) + len(self.pending_deltas)

    def add_tick(
        self, t: Tick, source: str, rec: Record, segment_id: int, overlap: bool = False
    ) -> None:
        c = self.cols
        if overlap:
            self.overlap.append(len(c["market_ticker"]))
        c["market_ticker"].append(t.market_ticker)
        c["source"].append(source)
        c["exchange_ts"].append(t.exchange_ts_ms)
        c["received_at"].append(rec.received_ns)
        c["sent_at"].append(t.sent_ts_ms)
        c["price"].append(t.price)
        c["yes_bid"].append(t.yes_bid)
        c["yes_ask"].append(t.yes_ask)
        c["yes_bid_size"].append(t.yes_bid_size)
        c["yes_ask_size"].append(t.yes_ask_size)
        c["last_trade_size"].append(t.last_trade_size)
        c["volume"].append(t.volume)
        c["open_interest"].append(t.open_interest)
        c["landing_segment"].append(segment_id)
        c["landing_offset"].append(rec.offset)

    def add_snapshot(self, snap: BookSnapshot, rec: Record, segment_id: int) -> None:
        c = self.snapshots
        c["market_ticker"].append(snap.market_ticker)
        c["sid"].append(snap.sid)
        c["seq"].append(snap.seq)
        c["yes_levels"].append([{"price": p, "size": n} for p, n in snap.yes])
        c["no_levels"].append([{"price": p, "size": n} for p, n in snap.no])
        c["received_at"].append(rec.received_ns)
        c["sent_at"].append(snap.sent_ts_ms)
        c["landing_segment"].append(segment_id)
        c["landing_offset"].append(rec.offset)

    def add_delta(self, d: BookDelta, rec: Record, segment_id: int) -> None:
        c = self.deltas
        received_ms = rec.received_ns // 1_000_000  # the view adds the lags back to this
        c["market_ticker"].append(d.market_ticker)
        c["sid"].append(d.sid)
        c["seq"].append(d.seq)
        c["side"].append(d.side)
        c["price"].append(d.price)
        c["delta"].append(d.delta)
        c["received_at"].append(rec.received_ns)
        c["exchange_lag_ms"].append(
            None if d.exchange_ts_ms is None else received_ms - d.exchange_ts_ms
        )
        c["sent_lag_ms"].append(None if d.sent_ts_ms is None else received_ms - d.sent_ts_ms)
        c["landing_segment"].append(segment_id)
        c["landing_offset"].append(rec.offset)

    def add_trade(self, t: Trade, source: str, rec: Record, segment_id: int) -> None:
        c = self.trades
        c["trade_id"].append(t.trade_id)
        c["market_ticker"].append(t.market_ticker)
        c["source"].append(source)
        c["yes_price"].append(t.yes_price)
        c["no_price"].append(t.no_price)
        c["count"].append(t.count)
        c["taker_side"].append(t.taker_side)
        c["taker_outcome_side"].append(t.taker_outcome_side)
        c["taker_book_side"].append(t.taker_book_side)
        c["is_block_trade"].append(t.is_block_trade)
        c["exchange_ts"].append(t.exchange_ts_ms)
        c["received_at"].append(rec.received_ns)
        c["sent_at"].append(t.sent_ts_ms)
        c["sid"].append(t.sid)
        c["seq"].append(t.seq)
        c["landing_segment"].append(segment_id)
        c["landing_offset"].append(rec.offset)

    def event(
        self, at_ns: int, source: str, kind: str, detail: str, engine: int | None = None
    ) -> None:
        self.feed_events.append((at_ns, source, kind, detail, engine))

    def error(self, rec: Record, kind: str, detail: str) -> None:
        if self.errors_logged < MAX_ERROR_ROWS_PER_BATCH:
            self.errors_logged += 1
            where = f"{rec.segment}@{rec.offset}"
            self.event(
                rec.received_ns, SOURCE_NAMES.get(rec.source, "engine"), kind, f"{detail} [{where}]"
            )
        else:
            self.errors_dropped += 1

    def market(self, ticker: str, **values: Any) -> None:
        row = self.markets.setdefault(ticker, {"market_ticker": ticker})
        for k, v in values.items():
            if v is not None:
                row[k] = v


class EventLog(Protocol):
    """Where the writer appends its own feed events (`database_busy`, `database_free`): the
    engine's landing log, or in the store process a relay to it (`store.py`)."""

    def append(self, kind: Kind, source: Source, payload: bytes) -> object: ...

    def sync(self) -> None: ...


# The interpreter settings a writer with a backlog works best under (`_start_committer`).
SWITCH_INTERVAL_S = 0.001
GC_THRESHOLD = 20_000


def _start_committer() -> ThreadPoolExecutor:
    """The thread that commits one batch while the writer decodes the next, and the process
    settings that let the two overlap (measured with `kalshi-pipeline bench`'s writer alone,
    500,000 ticks: 86k ticks/s one after the other; with the commit thread under Python's
    defaults, 73k; as set here, 103-116k):

    - a 1-ms switch interval (Python's default is 5 ms): DuckDB takes the interpreter lock back
      between its tasks (it looks for Ctrl-C), and under the default each of those waits up to
      5 ms for the decoding thread to let go, which made a commit take several times longer;
    - the collector: the objects alive so far (modules, Dagster's) are frozen out of its
      collections, and it collects the young generation every 20,000 allocations instead of
      700: decoding a batch allocates a tuple per frame, and the collections they set off were
      an eighth of the writer's time.

    Both are process-wide; they are set once, by the first writer with a full batch (a
    backlog, or a start-up listing of more than `batch_rows` markets), for the process's life.
    """
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], GC_THRESHOLD), *threshold[1:])
    return ThreadPoolExecutor(1, thread_name_prefix="kalshi-commit")


class Writer:
    """Loads landing records into the warehouse. Not thread-safe: one thread calls it (and
    while it decodes the next batch, its commit thread commits the last)."""

    def __init__(
        self,
        owner: Owner,
        landing_dir: os.PathLike[str] | str,
        stats: EngineStats | None = None,
        *,
        landing: EventLog | None = None,
        batch_rows: int = 10_000,  # the engine's flush_rows (a backlog's batches)
        retention_s: float = 24 * 3600.0,
        keep_landing: bool = False,
        busy_timeout_s: float = 0.5,
        keyframe_s: float = KEYFRAME_S,
    ) -> None:
        self.owner = owner
        self.landing_dir = Path(landing_dir)
        self.stats = stats or EngineStats()
        self.landing = landing
        self.batch_rows = batch_rows
        self.retention_s = retention_s
        self.keep_landing = keep_landing
        self._archive_retry_at = 0.0  # after a failed archive (a full disk), wait a minute
        self.busy_timeout_s = busy_timeout_s
        self.committed: dict[str, int] = {}
        self._last_http: dict[str, tuple[Decimal | None, ...]] = {}
        self._meta: dict[str, tuple[Any, ...]] = {}
        self._event_series: dict[str, str] = {}
        self._pass_counts: dict[int, list[int]] = {}
        self._skipped_seen: set[str] = set()  # unreadable objects already recorded
        self._busy_reported = False
        self._positions_known = False
        self._positions_of: duckdb.DuckDBPyConnection | None = None
        # decoded, not yet committed, in order: a batch whose commit failed for want of memory
        # (committed as it was next cycle) and the batch decoded while it was being committed
        self._queue: deque[_Batch] = deque()
        self._committer: ThreadPoolExecutor | None = None  # commits while the next batch decodes
        self._inflight: Future[None] | None = None
        self._cycle = threading.Lock()
        self._closed = False
        self._engines = Engines()
        self._windows: list[Window] = []
        self.duplicates_dropped = 0  # ticks received by two engines at once, stored once
        self._keyframes = KeyframeClock(keyframe_s)
        self._backfills: dict[str, _BackfillCount] = {}
        # the owned connection during a cycle (replay sets its own): a backfill page asks it
        # which of its trades are stored already
        self.connection: duckdb.DuckDBPyConnection | None = None

    # ------------------------------------------------------------------ cycle

    def load_once(self) -> int:
        """One batch: returns the rows of all tables loaded (0 when idle or the db is busy)."""
        # The write loop's thread and a stopping engine's drain share the owner's connection: a
        # DuckDB connection must not be used by two threads at once, nor closed under one.
        with self._cycle:
            if self._closed:
                return 0
            return self._load_once()

    def close(self) -> None:
        """Close the warehouse (after the cycle in progress, if any); later cycles do nothing."""
        with self._cycle:
            self._closed = True
            if self._committer is not None:
                self._committer.shutdown(wait=True)
            self.owner.close()

    def _load_once(self) -> int:
        if self._positions_known and not self._queue and self._backlog() == 0:
            self.stats.backlog_bytes = 0
            return 0  # nothing new in the log: do not even open the database
        try:
            con = self.owner.connection(timeout_s=self.busy_timeout_s)
        except WarehouseBusyError as exc:
            if not self._busy_reported:
                self._note_busy(True, str(exc))
            self.stats.backlog_bytes = self._backlog()
            return 0
        ahead: BaseException | None = None  # decoding the next batch failed (a defect)
        try:
            if con is not self._positions_of:
                # read once per owned connection: while it owns the file, nobody else writes them
                self.committed = dict(
                    con.execute("SELECT segment, position FROM landing_positions").fetchall()
                )
                self._positions_of = con
            self._positions_known = True
            self.connection = con
            # a batch that failed to commit is committed as it was: decoding again would find
            # the HTTP markets "unchanged" (the change detector has seen them) and drop them
            if not self._queue:
                batch = self._read_batch()
                if not batch.positions:
                    self.stats.backlog_bytes = self._backlog()
                    return 0
                self._queue.append(batch)
            batch = self._queue[0]
            ahead = self._commit(con, batch)
        except duckdb.Error as exc:
            if not out_of_memory(exc):
                raise
            # clients' queries run in this process and took its memory: retry next cycle
            if not self._busy_reported:
                self._note_busy(True, f"a commit failed for want of memory: {exc}"[:500])
            self.stats.backlog_bytes = self._backlog()
            return 0
        self._queue.popleft()
        if self._busy_reported:
            self._note_busy(False)
        self.committed.update(batch.positions)
        self.stats.backlog_bytes = self._backlog()
        self._after_commit(batch)
        if ahead is not None:
            raise ahead
        return batch.size + len(batch.markets) + len(batch.feed_events) + len(batch.passes)

    def _commit(self, con: duckdb.DuckDBPyConnection, batch: _Batch) -> BaseException | None:
        """Commit `batch` (the queue's head). A full batch means a backlog: then the next batch
        is decoded while this one commits (DuckDB works without the interpreter lock, decoding
        needs it), and queued behind it. Returns what decoding the next batch raised, for the
        caller to raise once this commit is recorded."""
        if batch.size < self.batch_rows or len(self._queue) > 1:
            commit(con, batch)
            return None
        if self._committer is None:
            self._committer = _start_committer()
        self._inflight = self._committer.submit(commit, con, batch)
        ahead: BaseException | None = None
        try:
            following = self._read_batch()  # from the positions `batch` reaches
            if following.positions:
                self._queue.append(following)
        except Exception as exc:
            ahead = exc
        finally:
            inflight, self._inflight = self._inflight, None
            wait_for_futures([inflight])
        inflight.result()  # the commit's own error, as if committed here
        return ahead

    def drain(self, deadline_s: float) -> bool:
        """Load until nothing is left or the deadline passes; True when fully drained."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.landing is not None:
                self.landing.sync()
            loaded = self.load_once()
            if loaded == 0:
                return self._backlog() == 0
        return self._backlog() == 0

    def _note_busy(self, busy: bool, detail: str = "") -> None:
        self._busy_reported = busy
        self.stats.db_busy_since = time.monotonic() if busy else None
        if self.landing is None:
            return
        payload = msgspec.json.encode(
            FeedEventPayload(
                kind="database_busy" if busy else "database_free",
                detail=detail or "the writer is loading the backlog",
            )
        )
        self.landing.append(Kind.FEED_EVENT, Source.WRITER, payload)

    # ------------------------------------------------------------------ reading

    def _segments(self) -> list[SegmentFile]:
        """The segments this writer loads: its own and those of engines that are gone."""
        return self._engines.loadable(list_segments(self.landing_dir))

    def _read_from(self, segment: str) -> int:
        """Where the next batch starts in `segment`: past the batches decoded and queued."""
        for queued in reversed(self._queue):
            if segment in queued.positions:
                return queued.positions[segment]
        return self.committed.get(segment, 0)

    def _overlap(self, rec: Record) -> bool:
        return bool(self._windows) and in_any(self._windows, rec.received_ns)

    def _backlog(self) -> int:
        total = 0
        for seg in self._segments():
            with contextlib.suppress(FileNotFoundError):
                total += max(0, seg.path.stat().st_size - self.committed.get(seg.name, 0))
        return total

    def _read_batch(self) -> _Batch:
        batch = _Batch()
        every = list_segments(self.landing_dir)
        self._windows = self._engines.windows(every)
        for seg in self._engines.loadable(every):
            start = self._read_from(seg.name)
            try:
                size = seg.path.stat().st_size
            except FileNotFoundError:
                continue
            if size <= start:
                continue
            room = max(1, self.batch_rows - batch.size)
            # read about what the batch has room for (a frame is ~500 bytes): a fixed 32 MiB
            # window made every cycle hold 32 MiB and a copy of its records, whatever it used
            records, _next, problem = read_records(
                seg, start, max_records=room, max_bytes=min(READ_BYTES, room * 1024 + 65536)
            )
            end = self._decode_records(records, seg, batch, start)
            if problem and end == _next:
                # a closed segment whose rest will never become whole: record it and skip it
                batch.event(time.time_ns(), "writer", "landing_damaged", f"{seg.name}: {problem}")
                end = size
            if end > start:
                batch.positions[seg.name] = end
            if batch.size >= self.batch_rows:
                break
        self.finish_batch(batch)
        if batch.errors_dropped:
            batch.event(
                time.time_ns(),
                "writer",
                "parse_error",
                f"{batch.errors_dropped} more parse errors or flagged values in this batch "
                "(the frames are kept in the landing log)",
            )
        batch.keyframe_windows = self._keyframes.due()
        return batch

    def _decode_records(
        self, records: Sequence[Record], seg: SegmentFile, batch: _Batch, start: int
    ) -> int:
        """Decode `records` into `batch`; returns the end of the last one taken. The firehose's
        frames (`ticker`, `orderbook_delta`) only wait here for the bulk decoder: this loop runs
        for every frame, so they take the shortest way through it."""
        end = start
        ticks, deltas = batch.pending_ticks, batch.pending_deltas
        keyframe = self._keyframes.frame
        overlap = self._overlap if self._windows else None
        frames = frame_bytes = 0
        for rec in records:
            if rec.kind == WS_FRAME:
                data = rec.payload
                frames += 1
                frame_bytes += len(data)
                end = rec.end
                if data.startswith(TICKER_PREFIX):
                    # a handover's overlap is compared row by row
                    if overlap is None or not overlap(rec):
                        ticks.append((rec, seg))
                        continue
                elif data.startswith(DELTA_PREFIX):
                    deltas.append((rec, seg))
                    keyframe(rec, seg)
                    continue
                self._decode_ws(rec, seg, batch)
                continue
            self._decode_other(rec, seg, batch)
            end = rec.end
            # a frame is at most one row, and `max_records` bounds them; a page is many
            if batch.size >= self.batch_rows:
                break
        if frames:
            traffic = batch.traffic.get("websocket")
            if traffic is None:
                traffic = batch.traffic["websocket"] = [0, 0]
            traffic[0] += frames
            traffic[1] += frame_bytes
        return end

    def finish_batch(self, batch: _Batch) -> None:
        """Decode the frames `_decode_records` kept for the bulk decoder: the plain ones into
        columns, the rest one by one, as any other frame."""
        ticks, batch.pending_ticks = batch.pending_ticks, []
        deltas, batch.pending_deltas = batch.pending_deltas, []
        self._bulk(batch, ticks, ticker_columns, batch.wire_ticks)
        self._bulk(batch, deltas, delta_columns, batch.wire_deltas)

    def _bulk(
        self,
        batch: _Batch,
        pending: list[tuple[Record, SegmentFile]],
        columns: Callable[[list[bytes]], Columns],
        wire: dict[str, list[Any]],
    ) -> None:
        if not pending:
            return
        got = columns([rec.payload for rec, _seg in pending])
        for i in got.rest:
            self._decode_ws(*pending[i], batch)
        rows = [pending[i] for i in got.rows] if got.rest else pending
        if not rows:
            return
        for name, column in got.values.items():
            wire[name].extend(column)
        wire["received_at"].extend(rec.received_ns for rec, _seg in rows)
        wire["landing_segment"].extend(seg.segment_id for _rec, seg in rows)
        wire["landing_offset"].extend(rec.offset for rec, _seg in rows)

    def _decode_other(self, rec: Record, seg: SegmentFile, batch: _Batch) -> None:
        """A record that is not a WebSocket frame: a REST page, a feed event, a polling pass."""
        source = SOURCE_NAMES.get(rec.source, "engine")
        if rec.kind == Kind.REST_PAGE:
            self._decode_page(rec, seg, batch)
        elif rec.kind == Kind.TRADES_PAGE:
            self._decode_trades_page(rec, seg, batch)
        elif rec.kind == Kind.FEED_EVENT:
            try:
                ev = _EVENT.decode(rec.payload)
            except msgspec.DecodeError:
                batch.error(rec, "parse_error", "undecodable feed event")
                return
            # the engine whose feed recorded it: a gap breaks that engine's books only
            batch.event(rec.received_ns, source, ev.kind, ev.detail, seg.pid & ENGINE_BITS)
        elif rec.kind == Kind.POLL_PASS:
            try:
                p = _PASS.decode(rec.payload)
            except msgspec.DecodeError:
                batch.error(rec, "parse_error", "undecodable poll figures")
                return
            seen, changed = self._pass_counts.pop(p.pass_id, [0, 0])
            batch.passes.append(
                {
                    "started_at": p.started_ns,
                    "finished_at": p.finished_ns,
                    "purpose": p.purpose,
                    "pages": p.pages,
                    "requests": p.requests,
                    "retries": p.retries,
                    "response_bytes": p.response_bytes,
                    "markets_seen": seen,
                    "markets_changed": changed,
                }
            )

    def _decode_ws(self, rec: Record, seg: SegmentFile, batch: _Batch) -> None:
        """One frame, by the per-frame decoder (the firehose's plain frames go in bulk)."""
        data = rec.payload
        try:
            if data.startswith(TICKER_PREFIX):
                tick = decode_tick(data)
                batch.add_tick(tick, "websocket", rec, seg.segment_id, self._overlap(rec))
                if tick.notes:
                    self._flag(rec, batch, tick.market_ticker, tick.notes)
                return
            msg = decode_frame(data)
        except FrameDecodeError as exc:
            self.stats.parse_errors += 1
            batch.error(rec, "parse_error", exc.reason[:300])
            return
        if isinstance(msg, BookDelta | BookSnapshot | Trade):
            msg = self._storable_ids(msg, rec, batch)
        if isinstance(msg, Tick):
            batch.add_tick(msg, "websocket", rec, seg.segment_id, self._overlap(rec))
            self._flag(rec, batch, msg.market_ticker, msg.notes)
        elif isinstance(msg, BookDelta):
            batch.add_delta(msg, rec, seg.segment_id)
            self._keyframes.frame(rec, seg)
            self._flag(rec, batch, msg.market_ticker, msg.notes)
        elif isinstance(msg, BookSnapshot):
            batch.add_snapshot(msg, rec, seg.segment_id)
            self._keyframes.frame(rec, seg)
            self._flag(rec, batch, msg.market_ticker, msg.notes)
        elif isinstance(msg, Trade):
            batch.add_trade(msg, "websocket", rec, seg.segment_id)
            self._flag(rec, batch, msg.trade_id, msg.notes)
        elif isinstance(msg, MarketLifecycle):
            self._lifecycle(msg, rec, batch)
        elif isinstance(msg, EventLifecycle):
            if msg.series_ticker:
                self._event_series[msg.event_ticker] = msg.series_ticker
            batch.events[msg.event_ticker] = {
                "event_ticker": msg.event_ticker,
                "series_ticker": msg.series_ticker or series_of(msg.event_ticker),
                "title": msg.title,
                "exchange_index": msg.exchange_index,
            }
            self._flag(rec, batch, msg.event_ticker, msg.notes)
        elif isinstance(msg, UnknownMessage):
            self.stats.unknown_frames += 1
            batch.error(rec, "unknown_frame", f"unknown message type {msg.type!r}")
        elif isinstance(msg, ErrorMessage):
            pass  # the feed acts on error frames and records them as feed events

    def _storable_ids(self, msg: Any, rec: Record, batch: _Batch) -> Any:
        """A sid or seq wider than its column (INTEGER, BIGINT) is stored as NULL, flagged: a
        frame that cannot be stored as it is must not stop every frame after it."""
        odd = {}
        if msg.sid is not None and not -(2**31) <= msg.sid < 2**31:
            odd["sid"] = msg.sid
        if msg.seq is not None and not -(2**63) <= msg.seq < 2**63:
            odd["seq"] = msg.seq
        if not odd:
            return msg
        what = msg.trade_id if isinstance(msg, Trade) else msg.market_ticker
        self._flag(
            rec,
            batch,
            what,
            tuple(f"{k}={v} is too large for its column; stored as NULL" for k, v in odd.items()),
        )
        return msgspec.structs.replace(msg, **dict.fromkeys(odd))

    def _flag(self, rec: Record, batch: _Batch, what: str, notes: tuple[str, ...]) -> None:
        """An object stored despite values that break the spec: say what was done, and where
        the raw frame sits in the landing log."""
        if notes:
            self.stats.values_flagged += len(notes)
            batch.error(rec, "flagged", f"{what}: {'; '.join(notes)}"[:1000])

    def _lifecycle(self, m: MarketLifecycle, rec: Record, batch: _Batch) -> None:
        meta = m.additional_metadata
        event_ticker = meta.event_ticker if meta else None
        status = LIFECYCLE_STATUS.get(m.event_type)
        if m.event_type == "deactivated" and m.is_deactivated is False:
            status = "active"
        batch.market(
            m.market_ticker,
            event_ticker=event_ticker,
            series_ticker=self._event_series.get(event_ticker or "") or series_of(event_ticker),
            title=meta.title if meta else None,
            yes_sub_title=meta.yes_sub_title if meta else None,
            status=status,
            open_time=m.open_ts * 1_000_000_000 if m.open_ts else None,
            close_time=m.close_ts * 1_000_000_000 if m.close_ts else None,
            # `determined` carries the result; `settled` carries none, and None never
            # overwrites a stored value (the upsert coalesces)
            result=m.result or None,
            settlement_value_dollars=m.settlement_dollars(),
            exchange_index=m.exchange_index,
            updated_by="lifecycle",
            updated_at=rec.received_ns,
        )
        self._flag(rec, batch, m.market_ticker, m.notes)
        self._meta.pop(m.market_ticker, None)  # let the next REST pass refresh it

    def _split_page(
        self,
        rec: Record,
        batch: _Batch,
        what: str,
        meta_decoder: msgspec.json.Decoder[Any],
        decode_body: Callable[[bytes], Any],
    ) -> tuple[Any, Any] | None:
        """A REST page record: its meta line and decoded body, its bytes counted as HTTP
        traffic; None (recorded as a parse error) when it cannot be read."""
        head, sep, body = rec.payload.partition(b"\n")
        try:
            if not sep:
                raise FrameDecodeError(f"{what} record without meta line", rec.payload)
            meta = meta_decoder.decode(head)
            page = decode_body(body)
        except (msgspec.DecodeError, FrameDecodeError) as exc:
            self.stats.parse_errors += 1
            reason = exc.reason if isinstance(exc, FrameDecodeError) else str(exc)
            batch.error(rec, "parse_error", reason[:300])
            return None
        traffic = batch.traffic.setdefault("http", [0, 0])
        traffic[0] += 1
        traffic[1] += len(body)
        return meta, page

    def _decode_page(self, rec: Record, seg: SegmentFile, batch: _Batch) -> None:
        split = self._split_page(rec, batch, "page", _META, decode_markets_page)
        if split is None:
            return
        meta, page = split
        for reason in page.skipped:
            self.stats.objects_skipped += 1  # counted every time, recorded once
            if reason not in self._skipped_seen:
                if len(self._skipped_seen) >= MAX_SKIPPED_REMEMBERED:
                    self._skipped_seen.clear()
                self._skipped_seen.add(reason)
                batch.error(rec, "parse_error", reason[:300])
        counts = self._pass_counts.setdefault(meta.pass_id, [0, 0])
        for market in page.markets:
            counts[0] += 1
            tick = market.to_tick()
            l1 = _l1(tick)
            stored = False
            if self._last_http.get(market.ticker) != l1:
                self._last_http[market.ticker] = l1
                counts[1] += 1
                batch.add_tick(tick, "http", rec, seg.segment_id, self._overlap(rec))
                stored = True
            key = (
                market.event_ticker,
                market.status,
                market.title,
                market.yes_sub_title,
                market.open_time,
                market.close_time,
                market.result,
                market.settlement_bounds_type,
                market.settlement_floor,
                market.settlement_value,
                market.exchange_index,
            )
            if self._meta.get(market.ticker) != key:
                self._meta[market.ticker] = key
                stored = True
                batch.market(
                    market.ticker,
                    event_ticker=market.event_ticker,
                    series_ticker=self._event_series.get(market.event_ticker or "")
                    or series_of(market.event_ticker),
                    title=market.title,
                    yes_sub_title=market.yes_sub_title,
                    status=market.status,
                    open_time=market.open_time,
                    close_time=market.close_time,
                    result=market.result or None,
                    settlement_bounds_type=market.settlement_bounds_type,
                    settlement_floor_dollars=market.settlement_floor,
                    settlement_value_dollars=market.settlement_value,
                    exchange_index=market.exchange_index,
                    updated_by="http",
                    updated_at=rec.received_ns,
                )
            if stored:  # flagged once when stored, not again on every pass that repeats it
                self._flag(rec, batch, market.ticker, market.notes)

    def _decode_trades_page(self, rec: Record, seg: SegmentFile, batch: _Batch) -> None:
        """A backfill's page of trades, stored with source 'http'; a trade stored already (the
        socket's copy, an earlier attempt's) is stored once (`loads.commit`). After the last
        page the backfill is recorded as `trades_backfilled`, with how many trades it added."""
        split = self._split_page(rec, batch, "trades page", _TRADES_META, decode_trades_page)
        if split is None:
            return
        meta, page = split
        for reason in page.skipped:
            self.stats.objects_skipped += 1
            batch.error(rec, "parse_error", reason[:300])
        wanted = set(meta.tickers) if meta.tickers is not None else None
        trades = [t for t in page.trades if wanted is None or t.market_ticker in wanted]
        count = self._backfills.get(meta.backfill_id)
        if count is None:
            if len(self._backfills) >= MAX_BACKFILLS_REMEMBERED:
                self._backfills.clear()  # attempts that never finished
            count = self._backfills[meta.backfill_id] = _BackfillCount(meta.attempt)
        if count.attempt != meta.attempt:
            count.attempt, count.trades = meta.attempt, 0
        count.trades += len(trades)
        count.new += len(self._new_trade_ids([t.trade_id for t in trades], batch))
        for t in trades:
            batch.add_trade(t, "http", rec, seg.segment_id)
            self._flag(rec, batch, t.trade_id, t.notes)
        if meta.last:
            del self._backfills[meta.backfill_id]
            batch.event(
                rec.received_ns,
                "http",
                "trades_backfilled",
                f"trade: {count.trades} trades ({count.new} new) between "
                f"{iso_ms(meta.since_ms)} and {iso_ms(meta.until_ms)}",
            )

    def _new_trade_ids(self, trade_ids: list[str], batch: _Batch) -> set[str]:
        """Of `trade_ids`, those neither stored nor earlier in this batch."""
        earlier = set(batch.trades["trade_id"])
        fresh = {i for i in trade_ids if i not in earlier}
        if fresh and self.connection is not None:
            if self._inflight is not None:  # decoding ahead: the connection is the commit's
                wait_for_futures([self._inflight])
            fresh -= stored_trade_ids(self.connection, sorted(fresh))
        return fresh

    def _after_commit(self, batch: _Batch) -> None:
        now_ns = time.time_ns()
        ws = batch.ws_ticks
        dropped_ws = batch.dropped.get("websocket", 0)
        dropped = dropped_ws + batch.dropped.get("http", 0)
        self.duplicates_dropped += dropped
        self.stats.ticks_stored += batch.rows - dropped
        self.stats.ticks_stored_ws += ws - dropped_ws
        self.stats.ticks_stored_http += batch.rows - ws - (dropped - dropped_ws)
        self.stats.book_deltas_stored += batch.book_deltas
        self.stats.rows_loaded_batches += 1
        lag: list[float] = []
        store: list[float] = []
        c = batch.cols  # ticks decoded one by one, from either feed
        if c["received_at"]:
            websocket = pa.array([s == "websocket" for s in c["source"]])
            _latencies(now_ns, c, websocket, store, lag)
        if batch.wire_ticks["received_at"]:  # decoded in bulk: all from the WebSocket
            _latencies(now_ns, batch.wire_ticks, None, store, lag)
        self.stats.record_latencies(lag, store)
        if batch.feed_events:
            last = batch.feed_events[-1]
            self.stats.last_event = f"{last[1]} {last[2]}"
        self.owner.release_after_checkpoint()
        self.cleanup()

    def cleanup(self) -> int:
        """Closed segments fully loaded and older than the retention are removed, or with
        `keep_landing` archived (compressed, kept; one per call, so a cycle never waits for more
        than one). Returns how many were removed or archived."""
        done = 0
        now = time.time()
        if self.keep_landing:
            remove_stale_archive_files(self.landing_dir)  # left by a crash while archiving
        for seg in self._segments():
            if seg.open:
                continue
            try:
                st = seg.path.stat()
            except FileNotFoundError:
                continue
            if self.committed.get(seg.name, -1) < st.st_size:
                continue
            if now - st.st_mtime < self.retention_s:
                continue
            if self.keep_landing:
                if time.monotonic() < self._archive_retry_at:
                    return done
                try:
                    archive_segment(seg)
                except FileNotFoundError:
                    continue  # another writer archived or removed it first
                except OSError as exc:  # a full disk: the segment stays as it is, loaded
                    log.warning(
                        "cannot archive landing segment %s (kept as it is): %s", seg.path, exc
                    )
                    self._archive_retry_at = time.monotonic() + 60.0
                    return done
                return done + 1
            with contextlib.suppress(FileNotFoundError):
                seg.path.unlink()
                done += 1
        return done
