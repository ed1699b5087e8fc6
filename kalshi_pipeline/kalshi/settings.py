"""Where to connect and with which key: environments `local` (the simulator), `demo`, `prod`.

Read from the environment; `.env` in the working directory is read by the CLI and by `dagster dev`
before this runs. Hosts are Kalshi's current ones; `KALSHI_REST_URL` and `KALSHI_WS_URL` override
them. `KALSHI_RATE_TIER` sizes the REST limiter; `KALSHI_DEV_KEY_TYPE` chooses the type of a
`local` dev key made on first use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from kalshi_pipeline.kalshi.auth import Signer
from kalshi_pipeline.kalshi.devkey import ensure_dev_key, kalshi_home
from kalshi_pipeline.kalshi.errors import KalshiConfigError
from kalshi_pipeline.kalshi.ratelimit import RATE_TIER_VAR, RateTier, parse_rate_tier

LOCAL_HOST = "127.0.0.1:8700"
REST_PREFIX = "/trade-api/v2"
WS_PATH = "/trade-api/ws/v2"


class Environment(StrEnum):
    LOCAL = "local"
    DEMO = "demo"
    PROD = "prod"


DEFAULT_URLS: dict[Environment, tuple[str, str]] = {
    Environment.LOCAL: (f"http://{LOCAL_HOST}{REST_PREFIX}", f"ws://{LOCAL_HOST}{WS_PATH}"),
    Environment.DEMO: (
        f"https://external-api.demo.kalshi.co{REST_PREFIX}",
        f"wss://external-api-ws.demo.kalshi.co{WS_PATH}",
    ),
    Environment.PROD: (
        f"https://external-api.kalshi.com{REST_PREFIX}",
        f"wss://external-api-ws.kalshi.com{WS_PATH}",
    ),
}

ENV_VAR = "KALSHI_ENV"
REST_URL_VAR = "KALSHI_REST_URL"
WS_URL_VAR = "KALSHI_WS_URL"
KEY_ID_VAR = "KALSHI_API_KEY_ID"
KEY_PATH_VAR = "KALSHI_PRIVATE_KEY_PATH"
PASSPHRASE_VAR = "KALSHI_PRIVATE_KEY_PASSPHRASE"  # noqa: S105 - a variable name, not a secret


def parse_environment(value: str | None) -> Environment:
    try:
        return Environment((value or "local").strip().lower())
    except ValueError:
        choices = ", ".join(e.value for e in Environment)
        raise KalshiConfigError(f"{ENV_VAR}={value!r} is not one of {choices}") from None


@dataclass(frozen=True)
class KalshiSettings:
    """Everything needed to reach one Kalshi environment. The passphrase never shows in repr."""

    env: Environment = Environment.LOCAL
    rest_url: str = DEFAULT_URLS[Environment.LOCAL][0]
    ws_url: str = DEFAULT_URLS[Environment.LOCAL][1]
    api_key_id: str | None = None
    private_key_path: Path | None = None
    private_key_passphrase: str | None = field(default=None, repr=False)
    rate_tier: RateTier = RateTier.BASIC

    @classmethod
    def for_env(
        cls,
        env: Environment | str = Environment.LOCAL,
        *,
        rest_url: str | None = None,
        ws_url: str | None = None,
        api_key_id: str | None = None,
        private_key_path: str | os.PathLike[str] | None = None,
        private_key_passphrase: str | None = None,
        rate_tier: RateTier | str | None = None,
    ) -> KalshiSettings:
        env = parse_environment(env) if isinstance(env, str) else env
        default_rest, default_ws = DEFAULT_URLS[env]
        return cls(
            env=env,
            rest_url=(rest_url or default_rest).rstrip("/"),
            ws_url=ws_url or default_ws,
            api_key_id=api_key_id or None,
            private_key_path=Path(private_key_path).expanduser() if private_key_path else None,
            private_key_passphrase=private_key_passphrase or None,
            rate_tier=parse_rate_tier(rate_tier),
        )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: str | None
    ) -> KalshiSettings:
        """Settings from environment variables; keyword overrides win when not None."""
        e = os.environ if environ is None else environ

        def pick(name: str, var: str) -> str | None:
            value = overrides.get(name)
            return value if value is not None else e.get(var)

        return cls.for_env(
            pick("env", ENV_VAR) or "local",
            rest_url=pick("rest_url", REST_URL_VAR),
            ws_url=pick("ws_url", WS_URL_VAR),
            api_key_id=pick("api_key_id", KEY_ID_VAR),
            private_key_path=pick("private_key_path", KEY_PATH_VAR),
            private_key_passphrase=pick("private_key_passphrase", PASSPHRASE_VAR),
            rate_tier=pick("rate_tier", RATE_TIER_VAR),
        )

    def credentials_problem(self) -> str | None:
        """Why this environment cannot sign, or None. `local` falls back to the dev key."""
        if self.env is Environment.LOCAL:
            return None
        missing = [
            var
            for var, value in ((KEY_ID_VAR, self.api_key_id), (KEY_PATH_VAR, self.private_key_path))
            if not value
        ]
        if missing:
            return (
                f"KALSHI_ENV={self.env.value} needs credentials: set {' and '.join(missing)} "
                "(the key id and the PEM file from Kalshi's API keys page)"
            )
        return None

    def signer(self) -> Signer:
        """Load the key once. `local` without explicit credentials uses the simulator's dev key."""
        problem = self.credentials_problem()
        if problem:
            raise KalshiConfigError(problem)
        if self.api_key_id and self.private_key_path:
            return Signer.from_file(
                self.api_key_id, self.private_key_path, self.private_key_passphrase
            )
        if self.api_key_id or self.private_key_path:
            raise KalshiConfigError(
                f"set both {KEY_ID_VAR} and {KEY_PATH_VAR}, or neither to use the local dev key"
            )
        dev = ensure_dev_key(kalshi_home())  # its type: KALSHI_DEV_KEY_TYPE for a new key
        return Signer.from_file(dev.key_id, dev.private_key_path)
