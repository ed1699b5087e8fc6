"""The simulator as a process: start-up line, flags, failures, shutdown."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import requests

from kalshi_pipeline.simulator.process import LISTENING_RE, SimulatorProcess, SimulatorStartError
from kalshi_pipeline_tests.helpers import wait_for


def test_first_line_says_where_it_listens(sim_home: Path, tmp_path: Path) -> None:
    with SimulatorProcess(markets=10, rate=5, kalshi_home=sim_home) as sim:
        first = sim.stdout_tail().splitlines()[0]
        assert first == (
            f"kalshi simulator listening on http://127.0.0.1:{sim.port} "
            "(rest /trade-api/v2, ws /trade-api/ws/v2)"
        )
        assert LISTENING_RE.match(first)
        assert sim.rest_url == f"http://127.0.0.1:{sim.port}/trade-api/v2"
        assert sim.ws_url == f"ws://127.0.0.1:{sim.port}/trade-api/ws/v2"
        assert requests.get(f"{sim.rest_url}/exchange/status", timeout=5).status_code == 200
    assert sim.proc is not None and sim.proc.returncode == 0


def test_shutdown_flushes_the_ledger(sim_home: Path, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    sim = SimulatorProcess(markets=30, rate=500, kalshi_home=sim_home, ledger=ledger).start()
    try:
        lines_seen = sim.stats()["ledger_lines"]
    finally:
        assert sim.stop() == 0
    lines = ledger.read_bytes().splitlines()
    assert len(lines) >= lines_seen >= 30


def test_bad_flags_fail_with_the_childs_stderr(sim_home: Path) -> None:
    with pytest.raises(SimulatorStartError) as info:
        SimulatorProcess(kalshi_home=sim_home, market_lifetime="soon").start()
    assert "market-lifetime" in str(info.value)
    # 3 tokens/s fills a 3 s bucket to 9 tokens, short of one 10-token read: every call a 429.
    with pytest.raises(SimulatorStartError) as info:
        SimulatorProcess(kalshi_home=sim_home, rest_tokens_per_s=3).start()
    assert "rest-tokens-per-s" in str(info.value) and "at least 3.33" in str(info.value)


def test_port_in_use_fails_clearly(sim_home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        sim = SimulatorProcess(kalshi_home=sim_home, markets=5, extra_args=["--port", str(port)])
        with pytest.raises(SimulatorStartError) as info:
            sim.start()
    assert "cannot listen" in str(info.value)


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            address: str = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_non_loopback_host_warns_and_control_stays_loopback_only(sim_home: Path) -> None:
    with SimulatorProcess(
        markets=5, rate=0, kalshi_home=sim_home, extra_args=["--host", "0.0.0.0"]
    ) as sim:
        lines = wait_for(
            lambda: sim.stdout_tail().splitlines()[1:] and sim.stdout_tail(), timeout=5
        )
        first, note = lines.splitlines()[:2]
        assert first.startswith("kalshi simulator listening on http://0.0.0.0:")
        assert note.startswith("note:") and "not a loopback address" in note
        assert requests.get(f"{sim.base_url}/_sim/stats", timeout=5).status_code == 200
        address = _non_loopback_address()
        if address is None:
            pytest.skip("no non-loopback address on this machine")
        resp = requests.get(f"http://{address}:{sim.port}/_sim/stats", timeout=5)
        assert resp.status_code == 403
        market_data = requests.get(f"http://{address}:{sim.port}/trade-api/v2/series", timeout=5)
        assert market_data.status_code == 200
