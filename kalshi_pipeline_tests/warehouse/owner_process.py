"""A stand-in owner for the warehouse tests.

`python -m kalshi_pipeline_tests.warehouse.owner_process DATABASE` owns the file like the
stream's writer, serves it, and appends one feed event every 10 ms (detail: a counter) until
SIGTERM, when it closes cleanly. It prints "serving PORT" once serving."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from kalshi_pipeline.cli import exit_without_teardown
from kalshi_pipeline.warehouse.owner import Owner


def main() -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    owner = Owner(Path(sys.argv[1]))
    con = owner.connection(timeout_s=60)
    assert owner.endpoint is not None
    print(f"serving {owner.endpoint.port}", flush=True)
    i = 0
    while not stop.is_set():
        con.execute(
            "INSERT INTO feed_events (occurred_at, source, kind, detail) "
            "VALUES (now(), 'engine', 'beat', ?)",
            [str(i)],
        )
        i += 1
        stop.wait(0.01)
    owner.close()
    return 0


if __name__ == "__main__":
    # as `kalshi-pipeline stream` ends once its owner is closed: DuckDB 1.5.5 sometimes hangs or
    # crashes in the interpreter's teardown after its Quack server has served (a test's
    # owner once did not exit within 60 s of SIGTERM under the whole suite)
    exit_without_teardown(main())
