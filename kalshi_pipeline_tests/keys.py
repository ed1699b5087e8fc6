"""Test keys of both kinds Kalshi issues, and a signature check written from Kalshi's docs
(independent of the project's signer), for every auth test to run once per key type."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

KEY_TYPES = ["ed25519", "rsa"]

PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PSS_32 = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def new_private_key(key_type: str) -> PrivateKey:
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(key_type)


def pem_of(
    key: PrivateKey | ec.EllipticCurvePrivateKey | object,
    fmt: serialization.PrivateFormat = serialization.PrivateFormat.PKCS8,
    passphrase: bytes | None = None,
) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, encryption)  # type: ignore[attr-defined]


def public_pem_of(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_key(path: Path, pem: bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    os.chmod(path, mode)
    return path


def verify(public_key: object, signature: bytes, message: bytes) -> None:
    """Raise InvalidSignature unless `signature` is Kalshi's signature of `message`: Ed25519
    directly, RSA with PSS, SHA-256, MGF1-SHA-256 and a 32-byte salt."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        public_key.verify(signature, message)
    elif isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, message, PSS_32, hashes.SHA256())
    else:
        raise TypeError(f"not a Kalshi key type: {type(public_key).__name__}")
