"""A node's dataset cache: typed Parquet copies of CSV files and validation stamps.

Every cache file is named ``<file stem>-<path digest>-<version key>``: the prefix
identifies the data file, the key the version (size, mtime, format and the
declared types), so a changed file or descriptor gets a new entry and older
entries of the same file are removed. Writes are atomic (temporary file + rename);
failing to write a stamp only costs a rescan later.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from healthfed.data.descriptor import DatasetDescriptor

__all__ = [
    "cache_key",
    "default_cache_dir",
    "read_stamp",
    "remove_stale",
    "sha256_file",
    "write_stamp",
]

_CACHE_VERSION = "2"  # 2: levels spelled as declared (1.0 -> "1", booleans)


def default_cache_dir(data_path: Path) -> Path | None:
    """A writable cache dir: next to the data file if possible, else the user cache dir."""
    candidates = [data_path.parent / ".healthfed-cache"]
    xdg = os.environ.get("XDG_CACHE_HOME")
    candidates.append((Path(xdg) if xdg else Path.home() / ".cache") / "healthfed")
    for cand in candidates:
        try:
            cand.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(cand, os.W_OK | os.X_OK):
            return cand
    return None


def sha256_file(path: Path) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(d: DatasetDescriptor, st: os.stat_result) -> tuple[str, str]:
    """(prefix for this file, key of this version of file + declared types)."""
    prefix = f"{d.path.stem}-{hashlib.sha256(str(d.path).encode()).hexdigest()[:12]}"
    ident = {
        "v": _CACHE_VERSION,
        "path": str(d.path),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "format": d.format,
        "csv": [d.csv_delimiter, d.csv_header, list(d.na_values), d.csv_encoding, d.csv_decimal],
        "id": d.id_column,
        "generate_id": d.generate_id,
        "columns": [[c.name, c.type, list(c.levels or ())] for c in d.columns.values()],
    }
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    return prefix, key


def remove_stale(cache_dir: Path, prefix: str, keep: str) -> None:
    """Drop caches of older versions of the same file (best effort)."""
    for old in cache_dir.glob(f"{prefix}-*"):
        if old.name != keep and old.suffix in (".parquet", ".json"):
            try:
                old.unlink()
            except OSError:
                pass


def read_stamp(stamp: Path | None) -> int | None:
    """The row count a validation stamp remembers, or None (no stamp, unreadable)."""
    if stamp is None:
        return None
    try:
        return int(json.loads(stamp.read_text())["n_rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_stamp(stamp: Path, prefix: str, n: int, data_file: Path) -> None:
    """Remember a successful validation; failure to write only costs a rescan later."""
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=stamp.parent, prefix=f".{stamp.name}.")
        with os.fdopen(fd, "w") as fh:
            json.dump({"n_rows": n, "file": str(data_file)}, fh)
        os.replace(tmp, stamp)
        remove_stale(stamp.parent, prefix, keep=stamp.name)
    except OSError:
        pass
