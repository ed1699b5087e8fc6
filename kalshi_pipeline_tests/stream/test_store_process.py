"""The store process (`stream/store.py`): the writer and the warehouse's owner beside the engine.

Real `kalshi-pipeline stream` processes, real files; pass or fail is decided by processes, files
and what DuckDB holds, never by timing."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import psutil
import pytest

from kalshi_pipeline.warehouse import server
from kalshi_pipeline.warehouse.owner import Owner
from kalshi_pipeline.warehouse.paths import landing_folder
from kalshi_pipeline_tests.helpers import query, wait_for, wait_for_ticks
from kalshi_pipeline_tests.stream.support import landing_ticker_frames, stream_process

pytestmark = pytest.mark.timeout(240)


def _stream(sim, db: Path, *extra: str, **kwargs) -> subprocess.Popen[str]:
    return stream_process(sim, db, "--mode", "websocket", "--quiet", *extra, **kwargs)


def _store_process(stream: subprocess.Popen[str]) -> psutil.Process:
    (child,) = wait_for(
        lambda: [
            c
            for c in psutil.Process(stream.pid).children()
            if "kalshi_pipeline.stream.store" in " ".join(c.cmdline())
        ],
        timeout=60,
        what="the stream's store process",
    )
    return child


def _stored_once(db: Path) -> list[tuple[int, int, int]]:
    rows = query(
        db,
        "SELECT landing_segment, landing_offset, count(*) FROM ticks "
        "WHERE source='websocket' GROUP BY 1, 2",
    )
    assert all(n == 1 for _s, _o, n in rows), "a frame was stored twice"
    return rows


def _restart_stores_every_logged_frame_once(sim, db: Path) -> None:
    logged = landing_ticker_frames(landing_folder(db))
    again = _stream(sim, db, "--seconds", "5")
    _out, err = again.communicate(timeout=90)
    assert again.returncode == 0, err
    stored = _stored_once(db)
    assert logged <= {(s, o) for s, o, _n in stored}, "a logged frame was never stored"


def test_the_store_process_stands_for_its_engine_and_ends_with_it(sim_factory, tmp_path):
    """The endpoint names the engine's pid (what a successor asks, what `status` shows); a
    SIGKILLed engine's store process ends by itself and lets the file go."""
    sim = sim_factory(markets=300, rate=300)
    db = tmp_path / "k.duckdb"
    stream = _stream(sim, db)
    try:
        wait_for_ticks(db, 300)
        child = _store_process(stream)
        endpoint = server.live_endpoint(db)
        assert endpoint is not None and endpoint.pid == stream.pid != child.pid
    finally:
        stream.send_signal(signal.SIGKILL)
        stream.wait()
    child.wait(timeout=60)  # it saw its engine go, closed the warehouse and ended
    assert server.live_endpoint(db) is None
    with Owner(db) as owner:  # the file and its lock are free for the next owner at once
        assert owner.is_open


def test_a_killed_store_process_ends_the_stream_and_the_next_start_loses_nothing(
    sim_factory, tmp_path
):
    sim = sim_factory(markets=300, rate=300)
    db = tmp_path / "k.duckdb"
    stream = _stream(sim, db)
    try:
        wait_for_ticks(db, 300)
        _store_process(stream).send_signal(signal.SIGKILL)
        _out, err = stream.communicate(timeout=60)
    finally:
        if stream.poll() is None:
            stream.kill()
    assert stream.returncode != 0
    assert "store process" in err and "killed by signal 9" in err, err
    _restart_stores_every_logged_frame_once(sim, db)


def test_ctrl_c_to_the_whole_group_stops_cleanly_with_everything_stored(sim_factory, tmp_path):
    """A terminal's Ctrl-C reaches every process of the group: the store process ignores it and
    loads what the stopping engine received before it lets the file go."""
    sim = sim_factory(markets=300, rate=300)
    db = tmp_path / "k.duckdb"
    stream = _stream(sim, db, start_new_session=True)
    try:
        wait_for_ticks(db, 300)
        child = _store_process(stream)
        os.killpg(stream.pid, signal.SIGINT)
        _out, err = stream.communicate(timeout=90)
    finally:
        if stream.poll() is None:
            stream.kill()
    assert stream.returncode == 0, err
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    logged = landing_ticker_frames(landing_folder(db))
    stored = _stored_once(db)
    assert logged == {(s, o) for s, o, _n in stored}


def test_an_error_in_the_store_process_reaches_the_user_as_the_owner_said_it(sim_factory, tmp_path):
    """A taken port is found by the owner, in the store process: the stream's start fails with
    the owner's message (the port and the setting), and no store process is left behind."""
    sim = sim_factory(markets=100, rate=100)
    db = tmp_path / "k.duckdb"
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        stream = _stream(sim, db, env={"KALSHI_WAREHOUSE_PORT": str(port)})
        children: list[psutil.Process] = []
        with contextlib.suppress(psutil.NoSuchProcess):
            children = wait_for(
                lambda: psutil.Process(stream.pid).children() or stream.poll() is not None,
                timeout=60,
                what="the store process, or the stream's end",
            )
        _out, err = stream.communicate(timeout=90)
    assert stream.returncode == 2, err
    assert f"127.0.0.1:{port}: the port is taken" in err and "KALSHI_WAREHOUSE_PORT" in err
    for child in children if isinstance(children, list) else []:
        child.wait(timeout=30)  # gone with the failed start


def test_a_store_process_that_hangs_is_killed_by_the_stop_and_nothing_is_lost(
    sim_factory, tmp_path
):
    """A store process that stops answering (here: SIGSTOP) does not hold the stream's stop
    forever: it is killed once the stop's drain is overdue, the stop says so, and the next start
    stores every frame the log holds, once."""
    sim = sim_factory(markets=300, rate=300)
    db = tmp_path / "k.duckdb"
    stream = _stream(sim, db)
    try:
        wait_for_ticks(db, 300)
        store = _store_process(stream)
        store.suspend()
        wait_for(lambda: store.status() == psutil.STATUS_STOPPED, timeout=30, what="stopped")
        stream.send_signal(signal.SIGTERM)
        _out, err = stream.communicate(timeout=120)
    finally:
        if stream.poll() is None:
            stream.kill()
    # the stop's drain found the write loop's request in flight, or asked and got no answer
    assert re.search(r"store process \(pid \d+\) (was still busy|did not answer).*: killed", err)
    store.wait(timeout=30)
    _restart_stores_every_logged_frame_once(sim, db)
