"""Which environment, which URLs and which key (design.md §4, kalshi-protocol.md §1.1)."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from kalshi_pipeline.kalshi.auth import HEADER_SIGNATURE
from kalshi_pipeline.kalshi.devkey import generate_private_key_pem, write_private_key
from kalshi_pipeline.kalshi.errors import KalshiConfigError
from kalshi_pipeline.kalshi.settings import Environment, KalshiSettings

KALSHI_VARS = (
    "KALSHI_ENV",
    "KALSHI_REST_URL",
    "KALSHI_WS_URL",
    "KALSHI_API_KEY_ID",
    "KALSHI_PRIVATE_KEY_PATH",
    "KALSHI_PRIVATE_KEY_PASSPHRASE",
    "KALSHI_HOME",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No KALSHI_* variable of the machine running the tests leaks in."""
    for var in KALSHI_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "kalshi.pem"
    write_private_key(path, generate_private_key_pem())
    return path


def test_defaults_are_the_local_simulator() -> None:
    for settings in (KalshiSettings(), KalshiSettings.from_env({}), KalshiSettings.from_env()):
        assert settings.env is Environment.LOCAL
        assert settings.rest_url == "http://127.0.0.1:8700/trade-api/v2"
        assert settings.ws_url == "ws://127.0.0.1:8700/trade-api/ws/v2"


@pytest.mark.parametrize(
    ("env", "rest", "ws"),
    [
        (
            "demo",
            "https://external-api.demo.kalshi.co/trade-api/v2",
            "wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2",
        ),
        (
            "prod",
            "https://external-api.kalshi.com/trade-api/v2",
            "wss://external-api-ws.kalshi.com/trade-api/ws/v2",
        ),
    ],
)
def test_demo_and_prod_use_kalshis_recommended_hosts(env: str, rest: str, ws: str) -> None:
    settings = KalshiSettings.from_env({"KALSHI_ENV": env})
    assert settings.env == env
    assert settings.rest_url == rest
    assert settings.ws_url == ws
    assert KalshiSettings.for_env(env).rest_url == rest


def test_environment_name_is_case_and_space_insensitive() -> None:
    assert KalshiSettings.from_env({"KALSHI_ENV": " PROD "}).env is Environment.PROD


@pytest.mark.parametrize("env", ["local", "demo", "prod"])
def test_url_variables_override_the_hosts(env: str) -> None:
    settings = KalshiSettings.from_env(
        {
            "KALSHI_ENV": env,
            "KALSHI_REST_URL": "https://api.elections.kalshi.com/trade-api/v2/",
            "KALSHI_WS_URL": "wss://api.elections.kalshi.com/trade-api/ws/v2",
        }
    )
    assert settings.rest_url == "https://api.elections.kalshi.com/trade-api/v2"
    assert settings.ws_url == "wss://api.elections.kalshi.com/trade-api/ws/v2"


def test_process_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALSHI_ENV", "demo")
    monkeypatch.setenv("KALSHI_REST_URL", "http://127.0.0.1:9999/trade-api/v2")
    settings = KalshiSettings.from_env()
    assert settings.env is Environment.DEMO
    assert settings.rest_url == "http://127.0.0.1:9999/trade-api/v2"
    assert settings.ws_url == "wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2"


def test_unknown_environment_is_refused_naming_the_value() -> None:
    with pytest.raises(KalshiConfigError) as caught:
        KalshiSettings.from_env({"KALSHI_ENV": "staging"})
    assert "staging" in str(caught.value)
    assert "KALSHI_ENV" in str(caught.value)
    assert "local" in str(caught.value)


@pytest.mark.parametrize("env", ["demo", "prod"])
def test_remote_environment_without_credentials_names_both_missing_variables(env: str) -> None:
    settings = KalshiSettings.from_env({"KALSHI_ENV": env})
    with pytest.raises(KalshiConfigError) as caught:
        settings.signer()
    assert "KALSHI_API_KEY_ID" in str(caught.value)
    assert "KALSHI_PRIVATE_KEY_PATH" in str(caught.value)


def test_remote_environment_with_only_a_key_id_names_the_missing_key_path() -> None:
    settings = KalshiSettings.from_env({"KALSHI_ENV": "prod", "KALSHI_API_KEY_ID": "kid"})
    with pytest.raises(KalshiConfigError) as caught:
        settings.signer()
    assert "KALSHI_PRIVATE_KEY_PATH" in str(caught.value)
    assert "KALSHI_API_KEY_ID" not in str(caught.value)


def test_remote_environment_with_only_a_key_path_names_the_missing_key_id(key_file: Path) -> None:
    settings = KalshiSettings.from_env(
        {"KALSHI_ENV": "demo", "KALSHI_PRIVATE_KEY_PATH": str(key_file)}
    )
    with pytest.raises(KalshiConfigError) as caught:
        settings.signer()
    assert "KALSHI_API_KEY_ID" in str(caught.value)
    assert "KALSHI_PRIVATE_KEY_PATH" not in str(caught.value)


def test_remote_environment_with_credentials_signs_with_that_key(key_file: Path) -> None:
    settings = KalshiSettings.from_env(
        {
            "KALSHI_ENV": "prod",
            "KALSHI_API_KEY_ID": "kid-1",
            "KALSHI_PRIVATE_KEY_PATH": str(key_file),
        }
    )
    signer = settings.signer()
    assert signer.key_id == "kid-1"
    public = serialization.load_pem_private_key(key_file.read_bytes(), None).public_key()
    headers = signer.headers("GET", settings.rest_url + "/portfolio/balance", now_ms=42)
    public.verify(
        base64.b64decode(headers[HEADER_SIGNATURE]),
        b"42GET/trade-api/v2/portfolio/balance",
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )


def test_local_without_credentials_makes_and_uses_the_dev_key_under_kalshi_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "kalshi-home"
    monkeypatch.setenv("KALSHI_HOME", str(home))

    signer = KalshiSettings.from_env().signer()

    private = home / "dev-key.pem"
    assert private.is_file()
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert signer.key_id == (home / "dev-key-id").read_text().strip()
    public = serialization.load_pem_private_key(private.read_bytes(), None).public_key()
    public.verify(
        base64.b64decode(signer.sign(b"1GET/trade-api/ws/v2")),
        b"1GET/trade-api/ws/v2",
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    # made once: a second settings object uses the same key
    before = private.read_bytes()
    assert KalshiSettings.from_env().signer().key_id == signer.key_id
    assert private.read_bytes() == before


def test_local_with_explicit_credentials_uses_them_not_the_dev_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key_file: Path
) -> None:
    home = tmp_path / "kalshi-home"
    monkeypatch.setenv("KALSHI_HOME", str(home))
    settings = KalshiSettings.from_env(
        {"KALSHI_API_KEY_ID": "mine", "KALSHI_PRIVATE_KEY_PATH": str(key_file)}
    )
    assert settings.signer().key_id == "mine"
    assert not (home / "dev-key.pem").exists()


def test_local_with_half_the_credentials_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KALSHI_HOME", str(tmp_path / "kalshi-home"))
    with pytest.raises(KalshiConfigError) as caught:
        KalshiSettings.from_env({"KALSHI_API_KEY_ID": "mine"}).signer()
    assert "KALSHI_PRIVATE_KEY_PATH" in str(caught.value)


def test_passphrase_never_shows_in_repr(tmp_path: Path) -> None:
    secret = "hunter2-very-secret"
    settings = KalshiSettings.from_env(
        {
            "KALSHI_ENV": "demo",
            "KALSHI_API_KEY_ID": "kid",
            "KALSHI_PRIVATE_KEY_PATH": str(tmp_path / "k.pem"),
            "KALSHI_PRIVATE_KEY_PASSPHRASE": secret,
        }
    )
    assert settings.private_key_passphrase == secret
    assert secret not in repr(settings)
    assert secret not in str(settings)
    assert "kid" in repr(settings)


def test_key_path_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = KalshiSettings.for_env("demo", api_key_id="k", private_key_path="~/k.pem")
    assert settings.private_key_path == tmp_path / "k.pem"
    assert os.fspath(settings.private_key_path).startswith(str(tmp_path))
