"""The ledgers. The ticker ledger: one JSON line per published ticker update, the `msg` exactly as
sent plus `emitted_at_ms` as its last key; line numbers (0-based) are the indexes `/_sim/sessions`
reports. The book ledger (a second file, so ticker-only readers and those line numbers stay as
they were): one line per order-book change, trade, snapshot sent and faulted frame, each with a
`type`, a `channel` and `emitted_at_ms` (the README lists the line types).

Lines are buffered and written at least every `flush_interval_s` (and on close), so a test can
read the file while the simulator runs. Without a path only the counter is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import BinaryIO


class Ledger:
    def __init__(self, path: Path | None, flush_interval_s: float = 0.05) -> None:
        self.path = path
        self.count = 0
        self.flush_interval_s = flush_interval_s
        self._buffer: list[bytes] = []
        self._file: BinaryIO | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("wb")

    def append(self, msg: bytes, emitted_at_ms: int) -> int:
        """Record one ticker msg; returns its line index."""
        index = self.count
        self.count += 1
        if self._file is not None:
            self._buffer.append(b'%s,"emitted_at_ms":%d}\n' % (msg[:-1], emitted_at_ms))
        return index

    @property
    def keeps_lines(self) -> bool:
        """Whether lines go to a file (else only the counter runs)."""
        return self._file is not None

    def append_line(self, line: bytes) -> None:
        """Record one whole line (ending in a newline), as the book ledger does."""
        self.count += 1
        if self._file is not None:
            self._buffer.append(line)

    def flush(self) -> None:
        if self._file is None or not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._file.write(data)
        self._file.flush()

    async def run_flusher(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            self.flush()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
