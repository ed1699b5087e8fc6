"""The landing log: every frame and REST page is appended here before it is parsed.

Segments are append-only files in the folder beside the database (`data/kalshi.landing/`). A
record is a fixed header (kind, source, length, receive time, CRC-32) and its payload. A process
writes only its own segment, named `<start_ms>-<pid>-<n>`, with suffix `.open` while it writes
and `.seg` once closed; a `.open` whose process is gone was closed by a crash, and its torn tail
(if any) is ignored. Readers take only whole records whose CRC matches, so another process's
active segment is safe to read.

A loaded segment the user keeps (`keep_landing`) is archived as `<name>.seg.zst`: zstd, level 3
with long-distance matching over a 16 MiB window, checksummed, its uncompressed size in the frame
header, its mtime kept. `read_records` reads it like the `.seg` it was (same offsets). Archives
are listed only when asked for (`list_segments(..., archived=True)`): the stream never loads
them again; `kalshi-pipeline replay` does.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple

import psutil
import zstandard

HEADER = struct.Struct("<BBHIqI")  # kind, source, reserved, length, received_ns, crc32
MAX_RECORD = 256 * 1024 * 1024
ARCHIVE_SUFFIX = ".seg.zst"
# Measured on simulator segments of 57-65 MiB (README, "Landing log"): ratio 14-45, about 0.4 s of
# CPU and 20 MiB of memory per segment; gzip compressed 2-4x less at half the speed, lzma took
# 25-50 s per segment for its better ratio.
ARCHIVE_LEVEL = 3
ARCHIVE_WINDOW_LOG = 24


class Kind(IntEnum):
    WS_FRAME = 1  # one WebSocket text frame
    REST_PAGE = 2  # one GET /markets page: JSON meta line, then the body
    FEED_EVENT = 3  # JSON {source, kind, detail}
    POLL_PASS = 4  # JSON figures of one finished polling pass
    TRADES_PAGE = 5  # one GET /markets/trades page of a backfill: JSON meta line, then the body


class Source(IntEnum):
    ENGINE = 0
    WEBSOCKET = 1
    HTTP = 2
    WRITER = 3


SOURCE_NAMES = {s.value: s.name.lower() for s in Source}
_KINDS = frozenset(k.value for k in Kind)


class Record(NamedTuple):
    """One whole record (a tuple: the writer reads tens of thousands a second, and a frozen
    dataclass's constructor was a tenth of its time)."""

    segment: str
    offset: int
    end: int
    kind: int
    source: int
    received_ns: int
    payload: bytes


def _pid_alive(pid: int) -> bool:
    return psutil.pid_exists(pid)


@dataclass(frozen=True)
class SegmentFile:
    name: str  # without suffix: the key of its position
    path: Path
    pid: int
    start_ms: int
    open: bool  # still being written by a live process
    archived: bool = False  # compressed (`<name>.seg.zst`): loaded, kept

    @property
    def segment_id(self) -> int:
        """A number unique per segment, stored with each tick (start ms and pid)."""
        return (self.start_ms << 22) | (self.pid & 0x3FFFFF)


def list_segments(folder: Path, *, archived: bool = False) -> list[SegmentFile]:
    """The segments in `folder`, oldest first; with `archived`, the compressed ones too (a
    segment found both ways, by a crash while archiving, is listed once, as its `.seg`)."""
    out: dict[str, SegmentFile] = {}
    if not folder.exists():
        return []
    for path in folder.iterdir():
        if path.name.endswith(ARCHIVE_SUFFIX):
            if not archived:
                continue
            stem, is_archive = path.name[: -len(ARCHIVE_SUFFIX)], True
        elif path.suffix in (".open", ".seg"):
            stem, is_archive = path.stem, False
        else:
            continue
        try:
            start, pid, _n = stem.split("-")
            start_ms, pid_i = int(start), int(pid)
        except ValueError:
            continue
        if is_archive and stem in out:
            continue
        live = path.suffix == ".open" and (pid_i == os.getpid() or _pid_alive(pid_i))
        out[stem] = SegmentFile(stem, path, pid_i, start_ms, live, is_archive)
    return sorted(out.values(), key=lambda s: (s.start_ms, s.name))


def segment_size(seg: SegmentFile) -> int:
    """The segment's bytes as written (an archive's uncompressed size); 0 when it is gone."""
    try:
        if not seg.archived:
            return seg.path.stat().st_size
        with open(seg.path, "rb") as f:
            size = zstandard.frame_content_size(f.read(18))
            if size >= 0:
                return size
            f.seek(0)
            return sum(len(c) for c in zstandard.ZstdDecompressor().read_to_iter(f))
    except (FileNotFoundError, zstandard.ZstdError):
        return 0


def archive_segment(seg: SegmentFile) -> Path:
    """Compress a closed segment into `<name>.seg.zst` and remove the `.seg`.

    The archive is written beside it under a temporary name, synced, given the segment's mtime
    and renamed into place before the `.seg` goes, so a crash at any point leaves the records
    readable (a leftover `.seg` is archived again next time)."""
    target = seg.path.with_name(seg.name + ARCHIVE_SUFFIX)
    tmp = seg.path.with_name(f"{seg.name}{ARCHIVE_SUFFIX}.{os.getpid()}.tmp")
    st = seg.path.stat()
    params = zstandard.ZstdCompressionParameters.from_level(
        ARCHIVE_LEVEL,
        enable_ldm=True,
        window_log=ARCHIVE_WINDOW_LOG,
        write_checksum=True,
        write_content_size=True,
    )
    try:
        with open(seg.path, "rb") as src, open(tmp, "wb") as dst:
            zstandard.ZstdCompressor(compression_params=params).copy_stream(
                src, dst, size=st.st_size
            )
            dst.flush()
            os.fsync(dst.fileno())
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    seg.path.unlink(missing_ok=True)
    return target


def remove_stale_archive_files(folder: Path) -> int:
    """Remove half-written archives (`<name>.seg.zst.<pid>.tmp`) of processes that are gone."""
    removed = 0
    for path in folder.glob(f"*{ARCHIVE_SUFFIX}.*.tmp"):
        try:
            pid = int(path.name.rsplit(".", 2)[1])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


def _read_at(seg: SegmentFile, start: int, max_bytes: int) -> tuple[bytes, bool]:
    """Up to `max_bytes` from `start` of the segment as written, and whether more follows."""
    if not seg.archived:
        with open(seg.path, "rb") as f:
            f.seek(start)
            return f.read(max_bytes), bool(f.read(1))
    with open(seg.path, "rb") as raw:
        reader = zstandard.ZstdDecompressor().stream_reader(raw)
        reader.seek(start)
        parts: list[bytes] = []
        want = max_bytes + 1
        while want > 0:
            chunk = reader.read(min(want, 8 * 1024 * 1024))
            if not chunk:
                break
            parts.append(chunk)
            want -= len(chunk)
    data = b"".join(parts)
    return data[:max_bytes], len(data) > max_bytes


def read_records(
    seg: SegmentFile,
    start: int,
    *,
    max_bytes: int = 32 * 1024 * 1024,
    max_records: int | None = None,
) -> tuple[list[Record], int, str | None]:
    """Whole, CRC-checked records from `start`, up to about `max_bytes` (and `max_records`).

    Returns (records, next_position, problem): `problem` is set when a closed segment has a
    damaged record that will never become whole (a torn tail after a crash, or corruption).
    """
    records: list[Record] = []
    try:
        data, more = _read_at(seg, start, max_bytes)
    except FileNotFoundError:
        return records, start, None
    except zstandard.ZstdError as exc:
        return records, start, f"unreadable archive ({exc})"
    pos = 0
    n = len(data)
    problem: str | None = None
    room = max_records if max_records is not None else n
    # the writer's loop over every frame: names bound locally, tuples built without the
    # NamedTuple's Python-level constructor
    unpack, size, kinds, crc32 = HEADER.unpack_from, HEADER.size, _KINDS, zlib.crc32
    name, new, append = seg.name, tuple.__new__, records.append
    taken = 0
    while pos + size <= n and taken < room:
        kind, source, _r, length, received_ns, crc = unpack(data, pos)
        end = pos + size + length
        if length > MAX_RECORD or kind not in kinds:
            problem = f"bad record header at offset {start + pos}"
            break
        if end > n:
            if pos == 0 and more:  # one record bigger than the read window
                return read_records(seg, start, max_bytes=size + length, max_records=max_records)
            break
        payload = data[pos + size : end]
        if crc32(payload) != crc:
            problem = f"CRC mismatch at offset {start + pos}"
            break
        append(new(Record, (name, start + pos, start + end, kind, source, received_ns, payload)))
        taken += 1
        pos = end
    if problem is None and not seg.open and not more and pos < n and taken < room:
        problem = f"torn record at offset {start + pos} ({n - pos} bytes)"
    if seg.open and problem is not None:
        problem = None  # the writer may still be finishing that record
    return records, start + pos, problem


class LandingLog:
    """This process's appender. Thread-safe; `sync()` forces appended bytes to disk."""

    def __init__(
        self, folder: Path, *, rotate_bytes: int = 64 * 1024 * 1024, rotate_s: float = 600.0
    ) -> None:
        self.folder = folder
        self.rotate_bytes = rotate_bytes
        self.rotate_s = rotate_s
        self._lock = threading.Lock()
        self._n = 0
        self._file = None
        self._path: Path | None = None
        self._stem = ""
        self._opened = 0.0
        self._size = 0
        self._dirty = False
        folder.mkdir(parents=True, exist_ok=True)
        self._open_new()

    def _open_new(self) -> None:
        self._n += 1
        name = f"{time.time_ns() // 1_000_000}-{os.getpid()}-{self._n:06d}"
        self._path = self.folder / f"{name}.open"
        self._stem = name
        self._file = open(self._path, "ab", buffering=1024 * 1024)  # noqa: SIM115
        self._opened = time.monotonic()
        self._size = 0

    def append(
        self, kind: Kind, source: Source, payload: bytes, received_ns: int | None = None
    ) -> tuple[str, int]:
        """Append one record; returns (segment, end offset) of where it landed."""
        header = HEADER.pack(
            kind,
            source,
            0,
            len(payload),
            received_ns if received_ns is not None else time.time_ns(),
            zlib.crc32(payload),
        )
        with self._lock:
            f = self._file
            assert f is not None
            f.write(header)
            f.write(payload)
            self._size += HEADER.size + len(payload)
            self._dirty = True
            where = (self._stem, self._size)
            if self._size >= self.rotate_bytes:
                self._rotate_locked()
            return where

    def _close_locked(self) -> None:
        if self._file is None or self._path is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        closed = self._path.with_suffix(".seg")
        os.replace(self._path, closed)

    def _rotate_locked(self) -> None:
        self._close_locked()
        self._open_new()

    def flush(self) -> None:
        """Hand buffered records to the OS (no fsync): from then on a killed process loses
        nothing it logged; only a machine crash can, until the next `sync()`."""
        with self._lock:
            if self._file is not None and self._dirty:
                self._file.flush()

    def sync(self) -> None:
        """Flush to the OS and fsync; rotate by age. Called by the writer every flush interval."""
        with self._lock:
            if self._file is None:
                return
            if self._dirty:
                self._file.flush()
                fd = self._file.fileno()
                self._dirty = False
            else:
                fd = -1
            if time.monotonic() - self._opened >= self.rotate_s and self._size > 0:
                self._rotate_locked()
                return
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            self._close_locked()
