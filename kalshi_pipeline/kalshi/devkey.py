"""The `local` environment's key pair, made on first use under `.kalshi/` (git-ignored).

The simulator registers its public half; the client signs with the private half. Nothing here
is a secret worth protecting, but it is handled like one (mode 600, never logged).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from filelock import FileLock

PRIVATE_NAME = "dev-key.pem"
KEY_ID_NAME = "dev-key-id"


def kalshi_home() -> Path:
    """Folder of the dev key: `KALSHI_HOME`, else `.kalshi` in the working directory."""
    return Path(os.environ.get("KALSHI_HOME") or ".kalshi").expanduser().resolve()


@dataclass(frozen=True)
class DevKey:
    key_id: str
    private_key_path: Path

    def public_key_pem(self) -> bytes:
        key = serialization.load_pem_private_key(self.private_key_path.read_bytes(), None)
        return key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def generate_private_key_pem(bits: int = 2048) -> bytes:
    """A fresh RSA private key in PKCS#8 PEM, as tests and the dev key need."""
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


def ensure_dev_key(home: Path | None = None) -> DevKey:
    """The dev key pair, made once; safe when the simulator and a client race to make it."""
    home = home or kalshi_home()
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    private = home / PRIVATE_NAME
    key_id_file = home / KEY_ID_NAME
    with FileLock(str(home / ".dev-key.lock"), timeout=30):
        if not (private.exists() and key_id_file.exists()):
            write_private_key(private, generate_private_key_pem())
            key_id_file.write_text(str(uuid.uuid4()) + "\n")
    return DevKey(key_id=key_id_file.read_text().strip(), private_key_path=private)
