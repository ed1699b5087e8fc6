"""Fixtures for the protocol layer's tests against the simulator in its own process.

One simulator serves the whole folder (its faults are cleared around every test); tests that need
a differently shaped exchange (3,500 markets, 5-second hourly markets) start their own. The dev
key is generated under a temporary KALSHI_HOME; keys the simulator must not know are generated
in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from kalshi_pipeline.kalshi.devkey import DevKey, ensure_dev_key
from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.kalshi.support import MAX_COMMANDS_PER_S, MAX_MARKETS_PER_SUBSCRIPTION


@pytest.fixture(scope="package")
def kalshi_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary KALSHI_HOME (set in the environment) holding the dev key."""
    home = tmp_path_factory.mktemp("kalshi-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KALSHI_HOME", str(home))
        ensure_dev_key(home)
        yield home


@pytest.fixture(scope="package")
def dev_key(kalshi_home: Path) -> DevKey:
    return ensure_dev_key(kalshi_home)


@pytest.fixture(scope="package")
def ledger_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ledger") / "ledger.jsonl"


@pytest.fixture(scope="package")
def simulator(kalshi_home: Path, ledger_path: Path) -> Iterator[SimulatorProcess]:
    with SimulatorProcess(
        markets=300,
        rate=300,
        seed=7,
        ledger=ledger_path,
        kalshi_home=kalshi_home,
        extra_args=[
            "--max-markets-per-subscription",
            str(MAX_MARKETS_PER_SUBSCRIPTION),
            "--max-commands-per-s",
            str(MAX_COMMANDS_PER_S),
        ],
    ) as sim:
        yield sim


@pytest.fixture
def sim(simulator: SimulatorProcess) -> Iterator[SimulatorProcess]:
    """The shared simulator, with no faults before or after the test."""
    simulator.clear_faults()
    yield simulator
    if simulator.alive():
        simulator.clear_faults()


@pytest.fixture
def settings(sim: SimulatorProcess) -> KalshiSettings:
    return KalshiSettings.for_env("local", rest_url=sim.rest_url, ws_url=sim.ws_url)


@pytest.fixture(scope="package")
def stranger_key() -> rsa.RSAPrivateKey:
    """A key the simulator never registered."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
