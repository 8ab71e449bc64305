"""Ed25519 keys of a hub (the health data access body) and how nodes name and trust them.

* The hub's private key is a PKCS#8 PEM file readable by its owner only.
* A public key travels as the base64 of its 32 raw bytes (one line, easy to paste
  into a node's TOML) or as a file holding that line.
* A key's **key id** is the first 16 hex digits of the SHA-256 of its raw bytes; a
  signed permit names the key id that signed it, so a node can tell "signed by a
  hub I do not trust" from "signature invalid".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from healthfed.errors import PermitError

__all__ = [
    "generate_private_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "public_key_b64",
    "write_private_key",
]


def generate_private_key() -> Ed25519PrivateKey:
    """A new Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def write_private_key(key: Ed25519PrivateKey, path: str | Path) -> Path:
    """Write ``key`` as unencrypted PKCS#8 PEM, mode 0600, atomically."""
    path = Path(path)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.replace(tmp, path)
    return path


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file ``path``."""
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise PermitError(f"hub signing key not found: {path}") from None
    except ValueError as exc:
        raise PermitError(f"{path}: not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise PermitError(f"{path}: not an Ed25519 key")
    return key


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_b64(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Base64 of the 32 raw public-key bytes (of a private key: of its public half)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return base64.b64encode(_raw(key)).decode("ascii")


def key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """First 16 hex digits of SHA-256 over the raw public key."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return hashlib.sha256(_raw(key)).hexdigest()[:16]


def load_public_key(spec: str, base_dir: str | Path | None = None) -> Ed25519PublicKey:
    """A public key from base64 text, or from a file holding it (path relative to ``base_dir``).

    A file may hold the base64 line or a PEM ``PUBLIC KEY`` block.
    """
    text = spec.strip()
    candidate = Path(text)
    if base_dir is not None and not candidate.is_absolute():
        candidate = Path(base_dir) / candidate
    is_file = False
    try:
        is_file = candidate.is_file()
    except OSError:  # e.g. a base64 string too long to be a file name
        pass
    if is_file:
        content = candidate.read_bytes()
        if b"BEGIN PUBLIC KEY" in content:
            try:
                key = serialization.load_pem_public_key(content)
            except ValueError as exc:
                raise PermitError(f"{candidate}: not a PEM public key: {exc}") from None
            if not isinstance(key, Ed25519PublicKey):
                raise PermitError(f"{candidate}: not an Ed25519 public key")
            return key
        text = content.decode("ascii", errors="replace").strip()
        where = str(candidate)
    else:
        where = f"public key {spec!r}"
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PermitError(
            f"{where}: neither an existing file nor base64 of an Ed25519 public key"
        ) from None
    if len(raw) != 32:
        raise PermitError(f"{where}: an Ed25519 public key has 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)
