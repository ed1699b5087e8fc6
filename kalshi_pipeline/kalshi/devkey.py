"""The `local` environment's key pair, made on first use under `.kalshi/` (git-ignored).

The simulator registers its public half; the client signs with the private half. A new dev key
is Ed25519, as Kalshi's web app makes API keys since October 2026; `KALSHI_DEV_KEY_TYPE=rsa` (or
the simulator's `--dev-key-type rsa`) makes an RSA one instead. A key already on disk is used
whatever its type, so a `.kalshi/` from an earlier version (RSA) keeps working. Nothing here is
a secret worth protecting, but it is handled like one (mode 600, never logged).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from filelock import FileLock

from kalshi_pipeline.kalshi.auth import KeyType, key_type_of
from kalshi_pipeline.kalshi.errors import KalshiConfigError

PRIVATE_NAME = "dev-key.pem"
KEY_ID_NAME = "dev-key-id"
DEV_KEY_TYPE_VAR = "KALSHI_DEV_KEY_TYPE"
DEFAULT_KEY_TYPE = KeyType.ED25519


def kalshi_home() -> Path:
    """Folder of the dev key: `KALSHI_HOME`, else `.kalshi` in the working directory."""
    return Path(os.environ.get("KALSHI_HOME") or ".kalshi").expanduser().resolve()


def parse_key_type(value: KeyType | str, source: str = DEV_KEY_TYPE_VAR) -> KeyType:
    """`ed25519` or `rsa`, any case; anything else is refused naming `source`."""
    if isinstance(value, KeyType):
        return value
    try:
        return KeyType(value.strip().lower())
    except ValueError:
        allowed = " or ".join(t.value for t in KeyType)
        raise KalshiConfigError(f"{source}={value!r} is not a key type: use {allowed}") from None


@dataclass(frozen=True)
class DevKey:
    key_id: str
    private_key_path: Path

    def _private(self) -> object:
        return serialization.load_pem_private_key(self.private_key_path.read_bytes(), None)

    @property
    def key_type(self) -> KeyType | None:
        return key_type_of(self._private())

    def public_key_pem(self) -> bytes:
        key = self._private()
        return key.public_key().public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def generate_private_key_pem(key_type: KeyType | str = DEFAULT_KEY_TYPE, bits: int = 2048) -> bytes:
    """A fresh private key in PKCS#8 PEM (Kalshi's format for both types), as tests and the dev
    key need."""
    key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if parse_key_type(key_type, "key_type") is KeyType.ED25519:
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private_key(path: Path, pem: bytes) -> None:
    """Write a key file readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def ensure_dev_key(home: Path | None = None, key_type: KeyType | str | None = None) -> DevKey:
    """The dev key pair, made once; safe when the simulator and a client race to make it.

    `key_type` (else KALSHI_DEV_KEY_TYPE) chooses the type of a key made now. When a key is
    already there and a type was asked for explicitly, it must match: one key pair serves the
    simulator and every client, so it is never replaced behind their backs.
    """
    home = home or kalshi_home()
    requested = key_type or os.environ.get(DEV_KEY_TYPE_VAR) or None
    wanted = parse_key_type(requested) if requested else None
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    private = home / PRIVATE_NAME
    key_id_file = home / KEY_ID_NAME
    with FileLock(str(home / ".dev-key.lock"), timeout=30):
        if not (private.exists() and key_id_file.exists()):
            write_private_key(private, generate_private_key_pem(wanted or DEFAULT_KEY_TYPE))
            key_id_file.write_text(str(uuid.uuid4()) + "\n")
    dev = DevKey(key_id=key_id_file.read_text().strip(), private_key_path=private)
    if wanted is not None:
        found = dev.key_type
        if found is not wanted:
            raise KalshiConfigError(
                f"the dev key {private} is {found.value if found else 'of another type'}, not "
                f"{wanted.value} as asked ({DEV_KEY_TYPE_VAR} or --dev-key-type): drop the "
                f"request to keep using it, or delete {private} and {key_id_file} to make a new "
                "one (restart the simulator afterwards)"
            )
    return dev
