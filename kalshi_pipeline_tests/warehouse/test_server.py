"""The owner serves the warehouse; clients attach, survive its restarts, and are refused when
they should be. Real processes, real files, real loopback sockets."""

from __future__ import annotations

import json
import logging
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psutil
import pytest

from kalshi_pipeline.warehouse import WarehouseError, connect
from kalshi_pipeline.warehouse.owner import Owner, close_bounded
from kalshi_pipeline.warehouse.server import WarehouseServerError, endpoint_path, token_path
from kalshi_pipeline_tests.helpers import wait_for

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[2]


class OwnerProcess:
    def __init__(self, db: Path) -> None:
        self.db = db
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kalshi_pipeline_tests.warehouse.owner_process", str(db)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("serving "), self.proc.stderr.read() if self.proc.stderr else line
        self.port = int(line.split()[1])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> tuple[str, str]:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        return out, err


@pytest.fixture
def owners(tmp_path: Path) -> Iterator[list[OwnerProcess]]:
    started: list[OwnerProcess] = []
    yield started
    for o in started:
        if o.proc.poll() is None:
            o.kill()


def start(owners: list[OwnerProcess], db: Path) -> OwnerProcess:
    owners.append(OwnerProcess(db))
    return owners[-1]


def beats(db: Path) -> int:
    with connect(db, read_only=True) as con:
        return int(
            con.execute("SELECT count(*) FROM feed_events WHERE kind = 'beat'").fetchone()[0]
        )


def test_the_owner_serves_on_loopback_with_a_private_token_it_never_prints(
    tmp_path: Path, owners: list[OwnerProcess], warehouse_port: int
) -> None:
    db = tmp_path / "data" / "kalshi.duckdb"
    owner = start(owners, db)
    assert owner.port == warehouse_port
    token = token_path(db).read_text().strip()
    assert len(token) >= 32
    assert stat.S_IMODE(token_path(db).stat().st_mode) == 0o600
    endpoint = json.loads(endpoint_path(db).read_text())
    assert endpoint["port"] == warehouse_port and endpoint["pid"] == owner.proc.pid
    assert endpoint["started_at"].endswith("Z")
    listening = [
        c.laddr
        for c in psutil.Process(owner.proc.pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
    with connect(db, read_only=True) as con:
        assert "kalshi" not in repr(con) or token not in repr(con)
        assert con.execute("SELECT count(*) > 0 FROM feed_events").fetchone() == (True,)
    out, err = owner.stop()
    assert token not in out + err
    assert not endpoint_path(db).exists(), "a clean stop removes the endpoint"


def test_plain_duckdb_on_the_live_file_is_refused_at_once_and_the_owner_never_waits(
    tmp_path: Path, owners: list[OwnerProcess]
) -> None:
    db = tmp_path / "kalshi.duckdb"
    start(owners, db)
    before = beats(db)
    started = time.monotonic()
    with pytest.raises(duckdb.IOException, match="lock"):
        duckdb.connect(str(db), read_only=True)
    assert time.monotonic() - started < 5
    wait_for(lambda: beats(db) > before + 20, timeout=30, what="the owner still appending")


def test_a_wrong_or_missing_token_is_refused_and_the_client_names_the_token_file(
    tmp_path: Path, owners: list[OwnerProcess]
) -> None:
    db = tmp_path / "kalshi.duckdb"
    start(owners, db)
    good = token_path(db).read_text()
    token_path(db).write_text("not-the-token")
    with pytest.raises(WarehouseError) as err:
        connect(db, read_only=True, timeout_s=1).execute("SELECT 1")
    assert str(token_path(db)) in str(err.value)
    assert "not-the-token" not in str(err.value)
    token_path(db).unlink()
    with pytest.raises(WarehouseError) as err:
        connect(db, read_only=True, timeout_s=1)
    assert str(token_path(db)) in str(err.value)
    # the server itself refuses a wrong token (not only our client's checks)
    from kalshi_pipeline.warehouse.extensions import load_extensions

    raw = duckdb.connect()
    load_extensions(raw)
    raw.execute("CREATE SECRET (TYPE quack, TOKEN 'guessed')")
    with pytest.raises(duckdb.Error, match="Authentication failed"):
        raw.execute(f"ATTACH 'quack:localhost:{owners[0].port}' AS k")
        raw.execute("FROM k.query('SELECT 1')").fetchall()
    token_path(db).write_text(good)
    assert beats(db) > 0


def test_a_taken_port_names_the_port_and_the_setting(tmp_path: Path, warehouse_port: int) -> None:
    db = tmp_path / "kalshi.duckdb"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", warehouse_port))
        busy.listen()
        with pytest.raises(WarehouseServerError) as err:
            Owner(db).connection(timeout_s=5)
    text = str(err.value)
    assert str(warehouse_port) in text and "KALSHI_WAREHOUSE_PORT" in text
    assert not endpoint_path(db).exists()
    with Owner(db) as owner:  # the failed owner let go of the file
        assert owner.endpoint is not None and owner.endpoint.port == warehouse_port


def test_clients_carry_on_when_the_owner_is_killed_and_restarted(
    tmp_path: Path, owners: list[OwnerProcess]
) -> None:
    db = tmp_path / "kalshi.duckdb"
    first = start(owners, db)
    analysts = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kalshi_pipeline.bench.analyst",
                str(db),
                "--seconds",
                "120",
                "--pause-ms",
                "10",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(5)
    ]
    try:
        wait_for(lambda: beats(db) > 50, timeout=60, what="beats before the kill")
        first.kill()
        committed = beats(db)  # no owner now: read from the file itself
        assert endpoint_path(db).exists(), "a killed owner leaves its endpoint behind"
        second = start(owners, db)
        assert json.loads(endpoint_path(db).read_text())["pid"] == second.proc.pid
        wait_for(lambda: beats(db) > committed + 100, timeout=60, what="the new owner appending")
        time.sleep(1)
    finally:
        for a in analysts:
            a.send_signal(signal.SIGTERM)
    for a in analysts:
        out, err = a.communicate(timeout=120)
        assert a.returncode == 0, err
        result = json.loads(out)
        assert result["errors"] == 0, result["error_samples"]
        assert result["count_went_down"] == 0
        assert result["queries"] > 10
    assert beats(db) >= committed


def test_a_client_query_that_would_exhaust_memory_fails_alone(
    tmp_path: Path, owners: list[OwnerProcess]
) -> None:
    db = tmp_path / "kalshi.duckdb"
    owner = start(owners, db)
    before = beats(db)
    with connect(db, read_only=True) as con, pytest.raises(duckdb.Error, match="allocate"):
        # a list of 400M integers is 3 GB: beyond the owner's 1 GB memory_limit
        con.execute("SELECT list(range) FROM range(400000000)").fetchall()
    assert owner.proc.poll() is None
    wait_for(lambda: beats(db) > before + 50, timeout=60, what="the owner still appending")
    with connect(db, read_only=True) as con:
        assert con.execute("SELECT 42").fetchone() == (42,)


def test_a_second_owner_on_the_same_port_is_refused_and_clients_reach_the_right_database(
    tmp_path: Path, owners: list[OwnerProcess], warehouse_port: int
) -> None:
    first = tmp_path / "a" / "kalshi.duckdb"
    start(owners, first)
    # Quack itself would share the port (SO_REUSEPORT) and split the clients between the two
    with pytest.raises(WarehouseServerError, match=str(warehouse_port)):
        Owner(tmp_path / "b" / "kalshi.duckdb").connection(timeout_s=5)
    assert beats(first) > 0


def test_a_close_that_never_returns_is_left_behind_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """DuckDB 1.5.5's Quack server can hang in its destructor; a stopping owner goes on."""
    release = threading.Event()
    closed = threading.Event()

    class Stuck:  # a handle whose close blocks, as the Quack destructor did
        def close(self) -> None:
            release.wait(120)
            closed.set()

    db = tmp_path / "kalshi.duckdb"
    with caplog.at_level(logging.WARNING, logger="kalshi_pipeline.warehouse.owner"):
        assert close_bounded(Stuck(), db, timeout_s=0.5) is False
    assert not closed.is_set()  # it went on while the close was still blocked
    assert str(db) in caplog.text and "did not stop" in caplog.text
    release.set()
    assert closed.wait(30)  # and the close, released, finished in the background
    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))  # a real close returns in time, and closes
    assert close_bounded(con, other) is True
    with pytest.raises(duckdb.ConnectionException):
        con.execute("SELECT 1")


def test_an_owner_opened_in_one_thread_and_closed_in_another_lets_go_of_the_file(
    tmp_path: Path,
) -> None:
    """A successor's writer thread takes the file; the thread that stops the stream closes it
    (a stopped owner that kept the lock held its successor off for as long as the process
    lived: a Dagster run evaluating its checks after a handover, 30 s)."""
    db = tmp_path / "kalshi.duckdb"
    owner = Owner(db)
    opened = threading.Thread(target=owner.connection, kwargs={"timeout_s": 30})
    opened.start()
    opened.join()
    assert owner.is_open
    owner.close()
    code = (
        "import sys\nfrom kalshi_pipeline.warehouse import connect\n"
        "with connect(sys.argv[1], timeout_s=5) as con:\n"
        "    print(con.execute('SELECT count(*) FROM ticks').fetchone()[0])\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, str(db)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert other.returncode == 0, other.stderr[-2000:]
    assert other.stdout.strip() == "0"


def _duckdb_mb(con: duckdb.DuckDBPyConnection) -> float:
    row = con.execute("SELECT sum(memory_usage_bytes) / 1e6 FROM duckdb_memory()").fetchone()
    assert row is not None
    return float(row[0])


def test_the_owner_lets_go_of_the_blocks_it_wrote_unless_a_client_is_attached(
    tmp_path: Path,
) -> None:
    """DuckDB keeps what it writes cached up to its memory limit: a stream that writes fast grew
    by what it wrote. The owner releases it, but never under a client's queries."""
    db = tmp_path / "kalshi.duckdb"
    with Owner(db) as owner:
        con = owner.connection()
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()
        for start in range(0, 1_000_000, 100_000):  # as the writer commits: batch by batch
            con.execute(
                "INSERT INTO ticks_stored (market_ticker, source, received_at, stored_at, "
                "price, yes_bid_size, volume, open_interest, landing_segment, landing_offset) "
                "SELECT 'KXM-' || (i % 2000), 'websocket', now() + to_microseconds(i), now(), "
                "(i % 99 + 1) / 100, hash(i) % 100000 / 100, i / 7, hash(i + 1) % 20000000 / 100, "
                "1, i::INTEGER FROM range(?, ?) t(i)",
                [start, start + 100_000],
            )
        con.execute("CHECKPOINT")
        written = _duckdb_mb(con)
        assert written > 8  # what the test is about: the blocks it wrote, still cached

        code = (
            "import sys, time\nfrom kalshi_pipeline.warehouse import connect\n"
            "with connect(sys.argv[1], timeout_s=30) as con:\n"
            "    print(con.execute('SELECT count(*) FROM ticks').fetchone()[0], flush=True)\n"
            "    sys.stdin.read()\n"
        )
        client = subprocess.Popen(
            [sys.executable, "-c", code, str(db)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert client.stdout is not None
            assert client.stdout.readline().strip() == "1000000"
            assert owner.release_memory() is False  # a client is attached: nothing evicted
            assert _duckdb_mb(con) >= written * 0.9
        finally:
            client.communicate("", timeout=60)
        assert client.returncode == 0

        wait_for(lambda: owner.release_memory(), timeout=60, what="the client's session to end")
        assert _duckdb_mb(con) < written / 2
        assert con.execute("SELECT current_setting('memory_limit')").fetchone() == limit
        assert con.execute("SELECT count(*), sum(volume) FROM ticks").fetchone() == (
            1_000_000,
            con.execute("SELECT sum((i / 7)::DECIMAL(18,2)) FROM range(1000000) t(i)").fetchone()[
                0
            ],
        )


def test_when_duckdb_cannot_evict_down_to_the_release_size_the_limit_is_still_restored(
    tmp_path: Path,
) -> None:
    db = tmp_path / "kalshi.duckdb"
    with Owner(db) as owner:
        con = owner.connection()
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()
        # memory DuckDB can neither drop nor write out: a temporary table with nowhere to spill
        con.execute("SET temp_directory = ''")
        con.execute("CREATE TEMP TABLE pinned AS SELECT range AS i FROM range(3000000)")
        with pytest.raises(duckdb.OutOfMemoryException):  # what release_memory meets inside
            con.execute("SET memory_limit = '1MB'")
        con.execute(f"SET memory_limit = '{owner.memory_limit}'")
        assert owner.release_memory() is True  # it tried; the failure stays inside
        assert con.execute("SELECT current_setting('memory_limit')").fetchone() == limit
        assert con.execute("SELECT count(*), sum(i) FROM pinned").fetchone() == (
            3_000_000,
            3_000_000 * 2_999_999 // 2,
        )
