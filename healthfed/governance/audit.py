"""Tamper-evident, append-only audit logs (hub and node share the format).

An audit log is a JSON-lines file. Record ``i`` (1-based, ``seq = i``) holds
who, what, when, permit, decision and sizes, plus::

    prev_hash   the previous record's "hash" (64 zeros for the first record)
    hash        sha256 hex of the canonical JSON of the record without "hash"

so changing a byte of any record breaks its own hash, and removing or reordering
records breaks the next record's ``prev_hash`` or ``seq``. Removing records from
the *end* leaves a valid shorter chain; to catch that, every append also
rewrites a small head file (``<log>.head``: last seq and hash) that
:func:`verify_audit_log` compares with the log's last record. (A party able to
rewrite both the log and its head consistently can only be caught with an
external anchor, e.g. a copy of the head kept elsewhere.)

Appends from several processes (a node's executor, ``healthfed node approve``)
are serialised with an exclusive lock on ``<log>.lock`` (:mod:`filelock`: ``flock`` on
POSIX, ``LockFileEx`` on Windows, so a node runs on a Windows server too).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from healthfed.errors import HealthfedError
from healthfed.governance.canonical import canonical_json, sha256_hex

__all__ = ["GENESIS", "AuditLog", "AuditReport", "verify_audit_log"]

GENESIS = "0" * 64


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def record_hash(record: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of ``record`` without its ``hash`` field."""
    return sha256_hex(canonical_json({k: v for k, v in record.items() if k != "hash"}))


class AuditLog:
    """An append-only, hash-chained JSON-lines audit log at ``path``.

    Parameters
    ----------
    path
        The log file; created (with its folder) on the first append.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def head_path(self) -> Path:
        return self.path.with_name(self.path.name + ".head")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path.with_name(self.path.name + ".lock"), mode=0o600)
        with lock:
            yield

    def _last(self) -> tuple[int, str]:
        """(seq, hash) of the last record, read from the end of the file."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                block = min(size, 1 << 16)
                while True:
                    fh.seek(size - block)
                    tail = fh.read(block)
                    lines = [ln for ln in tail.split(b"\n") if ln.strip()]
                    if not lines:
                        return 0, GENESIS
                    if len(lines) > 1 or block == size:
                        break
                    block = min(size, block * 4)
        except FileNotFoundError:
            return 0, GENESIS
        try:
            last = json.loads(lines[-1])
            return int(last["seq"]), str(last["hash"])
        except (ValueError, KeyError, TypeError):
            raise HealthfedError(
                f"audit log {self.path}: its last record is unreadable; run "
                f"`healthfed audit verify {self.path}` before appending"
            ) from None

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Append ``record`` (``seq``, ``time``, ``prev_hash`` and ``hash`` are added)."""
        with self._locked():
            seq, prev = self._last()
            full = {k: v for k, v in record.items() if k not in ("seq", "prev_hash", "hash")}
            full.setdefault("time", _now())
            full["seq"] = seq + 1
            full["prev_hash"] = prev
            full["hash"] = record_hash(full)
            line = canonical_json(full) + b"\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            head_tmp = self.head_path.with_name(self.head_path.name + ".tmp")
            head_tmp.write_bytes(canonical_json({"seq": full["seq"], "hash": full["hash"]}))
            os.replace(head_tmp, self.head_path)
        return full

    def records(self) -> list[dict[str, Any]]:
        """All records, parsed (no verification; use :func:`verify_audit_log`)."""
        if not self.path.exists():
            return []
        return [
            json.loads(line)
            for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]


@dataclass(frozen=True)
class AuditReport:
    """Outcome of :func:`verify_audit_log`; ``bad_line`` is 1-based (the record's line)."""

    path: Path
    records: int
    ok: bool
    bad_line: int | None = None
    problem: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"{self.path}: {self.records} record(s), hash chain intact"
        return f"{self.path}: record at line {self.bad_line} is bad: {self.problem}"


def verify_audit_log(path: str | Path) -> AuditReport:
    """Check every record's hash, sequence number and link to the previous record.

    Returns an :class:`AuditReport` naming the first bad record (by line number) and
    what is wrong with it; raises :class:`HealthfedError` only if the file is missing.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise HealthfedError(f"audit log not found: {path}") from None
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    prev = GENESIS
    n = 0
    for i, line in enumerate(lines, start=1):

        def bad(problem: str, i: int = i, n: int = n) -> AuditReport:
            return AuditReport(path, n, False, i, problem)

        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return bad("not valid JSON (the record was changed or truncated)")
        if not isinstance(rec, dict) or "hash" not in rec or "prev_hash" not in rec:
            return bad("not an audit record (no hash/prev_hash)")
        if rec["hash"] != record_hash(rec):
            return bad("its content does not match its hash (the record was changed)")
        if rec.get("seq") != i:
            return bad(
                f"sequence number {rec.get('seq')!r} where {i} was expected "
                "(records were removed, inserted or reordered)"
            )
        if rec["prev_hash"] != prev:
            return bad(
                "its prev_hash does not match the previous record's hash "
                "(a record before it was removed, changed or reordered)"
            )
        prev = rec["hash"]
        n += 1
    head_path = path.with_name(path.name + ".head")
    if head_path.exists():
        try:
            head = json.loads(head_path.read_text(encoding="utf-8"))
            head_seq, head_hash = int(head["seq"]), str(head["hash"])
        except (ValueError, KeyError, TypeError):
            return AuditReport(path, n, False, n or None, f"head file {head_path} is unreadable")
        if head_seq != n or head_hash != prev:
            return AuditReport(
                path,
                n,
                False,
                n + 1 if head_seq > n else (n or None),
                f"the log ends at record {n} but its head file records {head_seq} record(s) "
                f"ending in hash {head_hash[:12]}… (records were removed from the end or the "
                "log was replaced)",
            )
    return AuditReport(path, n, True)
