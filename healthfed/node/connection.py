"""The data one request reads: a dataset's DuckDB connection, lazy, without opted-out patients.

Every computation reads the view ``data`` of the connection the node opens for
its request (:class:`RequestConnection`). With opt-outs to apply, the view is
replaced by one without the opted-out patients before the computation starts;
without, the connection opens only when the computation first uses it
(:class:`LazyConnection`), so a round answered from the node's in-process caches
never pays for opening DuckDB.
"""

from __future__ import annotations

import hashlib
from typing import Any

from healthfed.data.sql import quote_ident

__all__ = ["LazyConnection", "RequestConnection", "RequestData"]


class RequestData:
    """The request's data: a (lazy) connection whose ``data`` view excludes opted-out patients.

    ``excluded`` is the number of rows the opt-outs removed (``None`` for a node
    without an opt-out store).
    """

    def __init__(self, con: Any, excluded: int | None) -> None:
        self.con = con
        self.excluded = excluded


class LazyConnection:
    """A dataset's DuckDB connection for one request, opened on first use.

    Behaves as the ``duckdb`` connection (attribute access opens it), so a
    computation that answers from the node's in-process caches (e.g. an
    iterative fit's later rounds, see :func:`healthfed.compute.preprocess.cached_design`)
    never pays for opening DuckDB. :meth:`data_identity` names the rows of the
    view ``data`` without opening it, and only while nothing could have changed
    that view: once the connection is open (a computation may rename or replace
    ``data``, as the opt-out exclusion and subgroup filters do), it returns None
    and callers identify the data through the connection itself.
    """

    def __init__(self, dataset: Any) -> None:
        self._dataset = dataset
        self._con: Any = None
        self._closed = False
        self._interrupted = False

    @property
    def opened(self) -> bool:
        return self._con is not None

    def _open(self) -> Any:
        if self._closed:
            # Never reopen: a fresh connection would not carry this request's view
            # (e.g. the opt-out exclusion). As a closed duckdb connection does (DuckDB is
            # imported here only: the hub imports this module and never opens data):
            import duckdb

            raise duckdb.ConnectionException("Connection already closed!")
        if self._con is None:
            from healthfed.data.dataset import lease_from  # DuckDB: the node side only

            self._con = lease_from(self._dataset)
        return self._con

    def interrupt(self) -> None:
        """Stop the running query (the request's deadline); the connection is not reused."""
        self._interrupted = True
        if self._con is not None:
            self._con.interrupt()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_dataset", "_con", "_closed", "_interrupted"):
            raise AttributeError(name)
        return getattr(self._open(), name)

    def data_identity(self) -> tuple[Any, ...] | None:
        """Identity of the rows behind ``data`` (file + size + mtime + view), or None."""
        if self._con is not None or self._closed:
            return None
        identity = getattr(self._dataset, "data_identity", None)
        return identity() if callable(identity) else None

    def close(self) -> None:
        self._closed = True
        if self._con is not None:
            con, self._con = self._con, None
            from healthfed.data.dataset import give_back_to

            give_back_to(self._dataset, con, reusable=not self._interrupted)

    def __enter__(self) -> LazyConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RequestConnection:
    """The dataset's DuckDB connection for one request, always closed afterwards.

    With an opt-out store holding opt-outs, the connection is opened at once and
    the dataset's ``data`` view is renamed and replaced by one without the
    opted-out patients (matched on the keyed hash of the id column), so every
    computation — statistics and models alike — reads only the remaining
    patients; ``excluded`` counts the rows dropped. The opt-out table's name
    carries a digest of the opt-out set, so the view's SQL (which in-process
    caches use to identify the data) changes whenever the set does. Without
    opt-outs to apply the connection opens lazily, on the computation's first
    use of it (:class:`LazyConnection`).
    """

    def __init__(self, dataset: Any, optouts: Any = None) -> None:
        self._dataset = dataset
        self._optouts = optouts

    def __enter__(self) -> RequestData:
        self._con = LazyConnection(self._dataset)
        try:
            excluded = self._exclude_optouts()
        except Exception:
            self._con.close()
            raise
        return RequestData(self._con, excluded)

    def _exclude_optouts(self) -> int | None:
        if self._optouts is None:
            return None
        hashes = self._optouts.hashes()
        if not hashes:
            return 0
        id_col = self._dataset.descriptor.id_column
        expr = self._optouts.sql_hash(quote_ident(id_col))
        if expr is None:  # pragma: no cover - hashes exist only with a key
            return 0
        digest = hashlib.sha256("\n".join(sorted(hashes)).encode()).hexdigest()[:16]
        table = f"__healthfed_optouts_{digest}"
        con = self._con
        con.execute("ALTER VIEW data RENAME TO __healthfed_all_rows")
        con.execute(f"CREATE TABLE {table} (h VARCHAR PRIMARY KEY)")
        con.executemany(f"INSERT INTO {table} VALUES (?)", [(h,) for h in hashes])
        con.execute(
            f"CREATE VIEW data AS SELECT * FROM __healthfed_all_rows "
            f"WHERE {expr} NOT IN (SELECT h FROM {table})"
        )
        row = con.execute(
            f"SELECT count(*) FROM __healthfed_all_rows WHERE {expr} IN (SELECT h FROM {table})"
        ).fetchone()
        return int(row[0]) if row else 0

    def __exit__(self, *exc: object) -> None:
        self._con.close()
