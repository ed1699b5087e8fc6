"""Which environment, which URLs and which key."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from kalshi_pipeline.kalshi.auth import HEADER_SIGNATURE, KeyType
from kalshi_pipeline.kalshi.devkey import (
    ensure_dev_key,
    generate_private_key_pem,
    write_private_key,
)
from kalshi_pipeline.kalshi.errors import KalshiConfigError
from kalshi_pipeline.kalshi.ratelimit import RateTier
from kalshi_pipeline.kalshi.settings import Environment, KalshiSettings
from kalshi_pipeline_tests.keys import KEY_TYPES, verify

KALSHI_VARS = (
    "KALSHI_ENV",
    "KALSHI_REST_URL",
    "KALSHI_WS_URL",
    "KALSHI_API_KEY_ID",
    "KALSHI_PRIVATE_KEY_PATH",
    "KALSHI_PRIVATE_KEY_PASSPHRASE",
    "KALSHI_HOME",
    "KALSHI_RATE_TIER",
    "KALSHI_DEV_KEY_TYPE",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No KALSHI_* variable of the machine running the tests leaks in."""
    for var in KALSHI_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(params=KEY_TYPES)
def key_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    path = tmp_path / "keys" / "kalshi.pem"
    write_private_key(path, generate_private_key_pem(request.param))
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
    verify(
        public,
        base64.b64decode(headers[HEADER_SIGNATURE]),
        b"42GET/trade-api/v2/portfolio/balance",
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
    # made as Kalshi makes keys since October 2026: Ed25519, in PKCS#8
    assert isinstance(public, ed25519.Ed25519PublicKey)
    assert signer.key_type is KeyType.ED25519
    # PKCS#8: the file is what serializing the key as PKCS#8 PEM gives
    key = serialization.load_pem_private_key(private.read_bytes(), None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert private.read_bytes() == pkcs8
    verify(public, base64.b64decode(signer.sign(b"1GET/trade-api/ws/v2")), b"1GET/trade-api/ws/v2")
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


# --------------------------------------------------------------------------- dev key type


def test_kalshi_dev_key_type_rsa_makes_an_rsa_dev_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "kalshi-home"
    monkeypatch.setenv("KALSHI_HOME", str(home))
    monkeypatch.setenv("KALSHI_DEV_KEY_TYPE", "RSA")

    signer = KalshiSettings.from_env().signer()

    assert signer.key_type is KeyType.RSA
    public = serialization.load_pem_private_key(
        (home / "dev-key.pem").read_bytes(), None
    ).public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    verify(public, base64.b64decode(signer.sign(b"1GET/x")), b"1GET/x")


def test_an_rsa_dev_key_from_an_earlier_version_keeps_working(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an earlier version made RSA dev keys; with no type asked for, it is used as it is
    home = tmp_path / "kalshi-home"
    monkeypatch.setenv("KALSHI_HOME", str(home))
    write_private_key(home / "dev-key.pem", generate_private_key_pem("rsa"))
    (home / "dev-key-id").write_text("old-dev-key\n")
    before = (home / "dev-key.pem").read_bytes()

    signer = KalshiSettings.from_env().signer()

    assert (signer.key_id, signer.key_type) == ("old-dev-key", KeyType.RSA)
    assert (home / "dev-key.pem").read_bytes() == before
    assert ensure_dev_key(home).key_type is KeyType.RSA


def test_asking_for_another_type_than_the_dev_key_on_disk_names_the_file_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "kalshi-home"
    monkeypatch.setenv("KALSHI_HOME", str(home))
    ensure_dev_key(home)  # ed25519
    before = (home / "dev-key.pem").read_bytes()
    monkeypatch.setenv("KALSHI_DEV_KEY_TYPE", "rsa")

    with pytest.raises(KalshiConfigError) as caught:
        KalshiSettings.from_env().signer()

    message = str(caught.value)
    assert str(home / "dev-key.pem") in message
    assert "is ed25519, not rsa" in message
    assert "delete" in message
    assert (home / "dev-key.pem").read_bytes() == before  # never replaced behind a simulator


def test_an_unknown_dev_key_type_names_the_variable_and_the_choices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KALSHI_HOME", str(tmp_path / "kalshi-home"))
    monkeypatch.setenv("KALSHI_DEV_KEY_TYPE", "ecdsa")
    with pytest.raises(KalshiConfigError) as caught:
        KalshiSettings.from_env().signer()
    assert "KALSHI_DEV_KEY_TYPE='ecdsa'" in str(caught.value)
    assert "ed25519 or rsa" in str(caught.value)
    assert not (tmp_path / "kalshi-home" / "dev-key.pem").exists()


# --------------------------------------------------------------------------- rate tier


def test_rate_tier_defaults_to_basic_and_reads_kalshi_rate_tier() -> None:
    assert KalshiSettings().rate_tier is RateTier.BASIC
    assert KalshiSettings.from_env({}).rate_tier is RateTier.BASIC
    assert KalshiSettings.from_env({"KALSHI_RATE_TIER": " Premier "}).rate_tier is RateTier.PREMIER
    assert (
        KalshiSettings.from_env({"KALSHI_RATE_TIER": "premier"}, rate_tier="prime").rate_tier
        is RateTier.PRIME
    )


@pytest.mark.parametrize("value", ["gold", "20", "basic tier"])
def test_an_unknown_rate_tier_names_the_variable_and_the_allowed_values(value: str) -> None:
    with pytest.raises(KalshiConfigError) as caught:
        KalshiSettings.from_env({"KALSHI_RATE_TIER": value})
    message = str(caught.value)
    assert f"KALSHI_RATE_TIER={value!r}" in message
    assert "basic, advanced, premier, paragon, prime, prestige" in message
