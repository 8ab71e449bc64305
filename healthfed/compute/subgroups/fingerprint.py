"""Node and aggregator side of ``dataset_fingerprint``: a dataset's content hash and row count.

A site releases the sha256 of its data file (for in-memory data: of DuckDB's
row hashes) and its row count as a disclosure-checked count, so a model's
provenance can name exactly the data it was trained and evaluated on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from healthfed.data.sql import quote_ident
from healthfed.errors import PolicyDenied
from healthfed.privacy.disclosure import CountTable, Release

__all__ = [
    "DATASET_FINGERPRINT",
    "combine_fingerprint",
    "run_fingerprint",
    "validate_fingerprint",
]

DATASET_FINGERPRINT = "dataset_fingerprint"


def validate_fingerprint(params: dict[str, Any], descriptor: Any, policy: Any) -> dict[str, Any]:
    """Check a ``dataset_fingerprint`` request: it takes no parameters."""
    if params:
        raise PolicyDenied(f"dataset_fingerprint takes no parameters, got {sorted(params)}")
    return {}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_fingerprint(con: Any, descriptor: Any, params: dict[str, Any], policy: Any) -> Release:
    """The data file's sha256 (or the view's row-hash digest) and the row count."""
    n = int(con.execute("SELECT count(*) FROM data").fetchone()[0])
    path = Path(descriptor.path)
    if path.is_file():
        kind, digest = "file-sha256", _file_sha256(path)
    else:  # in-memory data: a digest of DuckDB's per-row hashes of every declared column
        cols = ", ".join(quote_ident(c) for c in descriptor.columns)
        h = con.execute(f"SELECT sum(hash({cols})::HUGEINT), bit_xor(hash({cols})) FROM data")
        kind = "rows-sha256"
        digest = hashlib.sha256(repr(tuple(h.fetchone())).encode()).hexdigest()
    desc_hash = ""
    if descriptor.source is not None and Path(descriptor.source).is_file():
        desc_hash = _file_sha256(Path(descriptor.source))
    return Release(
        DATASET_FINGERPRINT,
        tables={"rows": CountTable(("n",), ("rows",), np.array([[n]]))},
        meta={
            "hash_kind": kind,
            "content_hash": digest,
            "descriptor_sha256": desc_hash,
            "title": descriptor.title or descriptor.name,
        },
    )


def combine_fingerprint(site_replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict:
    """Per site: row count, content hash and its kind, descriptor hash, title."""
    return {
        s: {
            "n_rows": r["tables"]["rows"]["total"],
            "content_hash": r["meta"]["content_hash"],
            "hash_kind": r["meta"]["hash_kind"],
            "descriptor_sha256": r["meta"]["descriptor_sha256"],
            "title": r["meta"]["title"],
        }
        for s, r in sorted(site_replies.items())
    }
