"""Canonical JSON: the exact bytes permits are signed over and audit records hashed over.

Canonical form: UTF-8, keys sorted at every level, no insignificant whitespace
(``separators=(",", ":")``), non-ASCII characters written as themselves, NaN and
infinities refused. Two parties that agree on a JSON value therefore agree on its
bytes, so a signature or hash made by one can be checked by the other.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_json", "sha256_hex"]


def canonical_json(value: Any) -> bytes:
    """``value`` as canonical JSON bytes (sorted keys, no whitespace, UTF-8)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes | Any) -> str:
    """Hex SHA-256 of ``data`` (bytes) or of its canonical JSON (anything else)."""
    if not isinstance(data, bytes | bytearray):
        data = canonical_json(data)
    return hashlib.sha256(data).hexdigest()
