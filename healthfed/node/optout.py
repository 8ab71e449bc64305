"""Patient opt-outs from secondary use (EHDS Art. 71), kept at the node, hashed.

The store is a SQLite file holding only keyed hashes of the patient ids, never
the ids. The key is a per-node random 256-bit secret in a file next to the
store (``<store>.key``, mode 0600), so the hashes cannot be reversed by trying
candidate ids without it, and hashes from two sites cannot be linked.

Keyed hash: ``sha256_hex(key_hex + ":" + patient_id)`` over UTF-8. It is
written so DuckDB can compute the very same value in SQL (``sha256(...)``) over
the dataset's id column, which is how the node excludes opted-out patients from
every computation that starts after the opt-out (see
``healthfed.node.connection``): the ``data`` view every computation reads is
replaced by one without them.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["OptOutStore"]


class OptOutStore:
    """Hashed patient opt-outs of one node.

    Parameters
    ----------
    path
        The SQLite file; it and its key file are created on first use.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.key_path = self.path.with_name(self.path.name + ".key")

    # --- storage -----------------------------------------------------------------------------
    def _key(self, create: bool) -> str | None:
        try:
            return self.key_path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            if not create:
                return None
        self.key_path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32)
        try:
            fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            return self.key_path.read_text(encoding="ascii").strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
        return key

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30)
        con.execute(
            "CREATE TABLE IF NOT EXISTS optouts (hash TEXT PRIMARY KEY, added_at TEXT NOT NULL)"
        )
        return con

    # --- hashing ----------------------------------------------------------------------------
    def hash_id(self, patient_id: str) -> str:
        """The keyed hash of ``patient_id`` (creates the node's key on first use)."""
        key = self._key(create=True)
        return hashlib.sha256(f"{key}:{patient_id}".encode()).hexdigest()

    def sql_hash(self, column_sql: str) -> str | None:
        """DuckDB expression computing :meth:`hash_id` of ``column_sql``, or None without a key."""
        key = self._key(create=False)
        if key is None:
            return None
        return f"sha256('{key}:' || {column_sql})"

    # --- API -----------------------------------------------------------------------------------
    def add(self, patient_id: str) -> bool:
        """Record an opt-out; False if the patient had already opted out."""
        h = self.hash_id(str(patient_id))
        with self._connect() as con:
            cur = con.execute(
                "INSERT OR IGNORE INTO optouts (hash, added_at) VALUES (?, ?)",
                (h, datetime.now(UTC).isoformat()),
            )
        con.close()
        return cur.rowcount == 1

    def remove(self, patient_id: str) -> bool:
        """Withdraw an opt-out; False if there was none."""
        h = self.hash_id(str(patient_id))
        with self._connect() as con:
            cur = con.execute("DELETE FROM optouts WHERE hash = ?", (h,))
        con.close()
        return cur.rowcount == 1

    def hashes(self) -> list[str]:
        """The current opt-outs' hashes (read fresh: a computation sees every earlier opt-out)."""
        if not self.path.exists():
            return []
        con = self._connect()
        try:
            return [row[0] for row in con.execute("SELECT hash FROM optouts")]
        finally:
            con.close()

    def __len__(self) -> int:
        return len(self.hashes())

    def __contains__(self, patient_id: object) -> bool:
        return self.hash_id(str(patient_id)) in set(self.hashes())
