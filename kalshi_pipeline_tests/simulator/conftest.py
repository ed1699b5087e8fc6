"""Simulator fixtures: one temporary key home and one shared simulator for the whole folder,
plus a factory for simulators that a test can break with faults."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kalshi_pipeline.kalshi.devkey import (
    ensure_dev_key,
    generate_private_key_pem,
    write_private_key,
)
from kalshi_pipeline.simulator.process import SimulatorProcess
from kalshi_pipeline_tests.simulator.support import TestSigner

SHARED_MARKETS = 3000
EXTRA_KEY_ID = "6f1c2b0e-0000-4000-8000-00000000e57a"


@pytest.fixture(scope="session")
def sim_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("sim-kalshi-home")
    ensure_dev_key(home)
    return home


@pytest.fixture(scope="session")
def signer(sim_home: Path) -> TestSigner:
    dev = ensure_dev_key(sim_home)
    return TestSigner.from_pem_file(dev.key_id, dev.private_key_path)


@pytest.fixture(scope="session")
def extra_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestSigner, Path]:
    """A second key pair, RSA (the dev key is Ed25519), registered with --register-key."""
    folder = tmp_path_factory.mktemp("extra-key")
    private = folder / "extra.pem"
    write_private_key(private, generate_private_key_pem("rsa"))
    signer = TestSigner.from_pem_file(EXTRA_KEY_ID, private)
    public = folder / "extra.pub.pem"
    from cryptography.hazmat.primitives import serialization

    public.write_bytes(
        signer.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return signer, public


@pytest.fixture(scope="session")
def sim(
    sim_home: Path, extra_key: tuple[TestSigner, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimulatorProcess]:
    """Shared by tests that neither set faults nor depend on exact traffic."""
    ledger = tmp_path_factory.mktemp("shared-ledger") / "ledger.jsonl"
    with SimulatorProcess(
        markets=SHARED_MARKETS,
        rate=40,
        seed=11,
        rest_tokens_per_s=1_000_000,
        ledger=ledger,
        kalshi_home=sim_home,
        register_keys=[(EXTRA_KEY_ID, extra_key[1])],
        extra_args=["--max-markets-per-subscription", "50"],
    ) as process:
        yield process


@pytest.fixture
def start_sim(sim_home: Path, tmp_path: Path) -> Iterator[Callable[..., SimulatorProcess]]:
    """Start a private simulator (stopped at the end of the test)."""
    started: list[SimulatorProcess] = []

    def start(**kwargs: Any) -> SimulatorProcess:
        kwargs.setdefault("kalshi_home", sim_home)
        kwargs.setdefault("seed", 5)
        kwargs.setdefault("markets", 200)
        kwargs.setdefault("ledger", tmp_path / f"ledger-{len(started)}.jsonl")
        process = SimulatorProcess(**kwargs).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
