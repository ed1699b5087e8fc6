"""Fixtures for the protocol layer's tests against the simulator in its own process.

One simulator serves the whole folder (its faults are cleared around every test); tests that need
a differently shaped exchange (3,500 markets, 5-second hourly markets) start their own. The dev
key is generated under a temporary KALSHI_HOME; one API key of each type Kalshi issues (Ed25519,
RSA) is registered with `--register-key` so that auth tests run once per type; keys the
simulator must not know are generated in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kalshi_pipeline.kalshi.devkey import DevKey, ensure_dev_key
from kalshi_pipeline.kalshi.settings import KalshiSettings
from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.kalshi.support import (
    MAX_COMMANDS_PER_S,
    MAX_MARKETS_PER_SUBSCRIPTION,
    ApiKey,
)
from kalshi_pipeline_tests.keys import (
    KEY_TYPES,
    new_private_key,
    pem_of,
    public_pem_of,
    write_key,
)


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
def api_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ApiKey]:
    """One registered key per type, private halves in mode-600 PEM files as Kalshi gives them."""
    folder = tmp_path_factory.mktemp("api-keys")
    keys = {}
    for n, key_type in enumerate(KEY_TYPES):
        key = new_private_key(key_type)
        path = write_key(folder / f"{key_type}.pem", pem_of(key))
        write_key(folder / f"{key_type}.pub.pem", public_pem_of(key))
        keys[key_type] = ApiKey(key_type, f"0000000{n}-aaaa-4bbb-8ccc-{key_type:0>12}", key, path)
    return keys


@pytest.fixture(scope="package")
def simulator(
    kalshi_home: Path, ledger_path: Path, api_keys: dict[str, ApiKey]
) -> Iterator[SimulatorProcess]:
    with SimulatorProcess(
        markets=300,
        rate=300,
        seed=7,
        ledger=ledger_path,
        kalshi_home=kalshi_home,
        register_keys=[(k.key_id, k.path.with_suffix(".pub.pem")) for k in api_keys.values()],
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


@pytest.fixture(params=KEY_TYPES)
def api_key(request: pytest.FixtureRequest, api_keys: dict[str, ApiKey]) -> ApiKey:
    """Each registered key in turn: a test using it runs once per key type."""
    return api_keys[request.param]


@pytest.fixture
def signed_settings(sim: SimulatorProcess, api_key: ApiKey) -> KalshiSettings:
    """Settings that sign with `api_key`, as a user's KALSHI_API_KEY_ID and key path do."""
    return KalshiSettings.for_env(
        "local",
        rest_url=sim.rest_url,
        ws_url=sim.ws_url,
        api_key_id=api_key.key_id,
        private_key_path=api_key.path,
    )
