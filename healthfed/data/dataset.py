"""A dataset held by a hospital node, queried locally through DuckDB.

:class:`NodeDataset` turns a data file plus its descriptor into a DuckDB view
named ``data`` that has exactly the declared columns, each with one fixed SQL
type and, for numeric columns, in the variable's canonical unit. Every
computation a node runs is written against that view, so it never sees the file
format, the file's own column types or the site's units.

Why DuckDB: queries stream over Parquet, so a site's data need not fit in
memory, and each request gets its own cheap connection (no shared state between
requests). CSV files are converted once to a typed Parquet cache; a Parquet file
is read in place.

Column typing in the view::

    numeric, integer -> DOUBLE   (NaN read as NULL; converted to the canonical unit)
    binary           -> INTEGER  0/1 (the declared levels' order gives the coding)
    categorical      -> VARCHAR  (1 and 1.0 both read as '1')
    id               -> VARCHAR

Validation runs on first use and raises :class:`~healthfed.errors.DataError`
naming the file and every offending column (missing file, missing column, value
not of the declared type, categorical level not declared, binary not 0/1, null
or duplicate patient id). The messages may quote a value; they stay on the node.
A successful validation is remembered in the cache directory, keyed by the
file's path, size and mtime and by the declared types, so a restarted node does
not rescan an unchanged file.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from healthfed.data.cache import (
    cache_key,
    default_cache_dir,
    read_stamp,
    remove_stale,
    sha256_file,
    write_stamp,
)
from healthfed.data.column_sql import binary_expr, double_expr, is_bool, level_expr, str_expr
from healthfed.data.csv_diagnose import csv_read_error
from healthfed.data.descriptor import DatasetDescriptor, load_descriptor
from healthfed.data.harmonise import conversion
from healthfed.data.sql import quote_ident, sql_literal
from healthfed.data.value_checks import check_values
from healthfed.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from healthfed.data.profile import DatasetProfile

__all__ = [
    "NodeDataset",
    "give_back_to",
    "lease_from",
    "leased_connection",
    "render_descriptor_toml",
]

_ROW_GROUP_SIZE = 122_880  # DuckDB's own row-group size: lets scans run in parallel
_FRAME_TABLE = "__healthfed_src"
POOL_SIZE = 2  # connections kept per dataset for later requests (NodeDataset.lease)
# What a request may create or change in a connection's catalogue; lease() keeps a
# connection only while this reads as it did when the connection was new.
_CATALOGUE_SQL = (
    "SELECT 'view', database_name, schema_name, view_name, sql FROM duckdb_views() "
    "WHERE NOT internal UNION ALL "
    "SELECT 'table', database_name, schema_name, table_name, sql FROM duckdb_tables() "
    "UNION ALL SELECT 'sequence', database_name, schema_name, sequence_name, sql "
    "FROM duckdb_sequences() UNION ALL "
    "SELECT 'index', database_name, schema_name, index_name, sql FROM duckdb_indexes() "
    "UNION ALL SELECT 'database', database_name, '', coalesce(path, ''), type "
    "FROM duckdb_databases() WHERE NOT internal ORDER BY ALL"
)


def _catalogue(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    return con.execute(_CATALOGUE_SQL).fetchall()


def lease_from(source: Any) -> Any:
    """A connection with the view ``data`` from ``source``: a :class:`NodeDataset` lends a
    pooled one (:meth:`NodeDataset.lease`); anything else with a ``connect()`` (tests'
    stand-ins) gives a new one. End it with :func:`give_back_to`."""
    lease = getattr(source, "lease", None)
    return lease() if callable(lease) else source.connect()


def give_back_to(source: Any, con: Any, reusable: bool = True) -> None:
    """End a connection :func:`lease_from` gave: back to the pool, or closed."""
    give_back = getattr(source, "give_back", None)
    if callable(give_back):
        give_back(con, reusable=reusable)
    else:
        con.close()


@contextmanager
def leased_connection(source: Any) -> Iterator[Any]:
    """``source``'s connection with the view ``data`` for one use, always ended
    (:func:`lease_from`, :func:`give_back_to`)."""
    con = lease_from(source)
    try:
        yield con
    finally:
        give_back_to(source, con)


def _missing(message: str) -> DataError:
    """The error of a data file the node cannot open (``public_reason`` may leave the node)."""
    err = DataError(message)
    err.public_reason = "its data file is missing or unreadable"  # type: ignore[attr-defined]
    return err


def _coded_expr(spec: Any, name: str, sql_type: str) -> str:
    """A binary, categorical or text column as the ``data`` view codes it (0/1, its level
    or its text): the view and the generated id hash the same values."""
    if spec.type == "binary":
        return binary_expr(spec, sql_type)
    if spec.type == "categorical":
        return level_expr(spec, sql_type)
    return str_expr(name, sql_type)


class NodeDataset:
    """A dataset held by a hospital node, exposed as a typed, unit-harmonised DuckDB view.

    Parameters
    ----------
    descriptor
        The dataset's validated descriptor (which file, which columns, which units).
    cache_dir
        Where CSV-to-Parquet caches and validation stamps go. Default: a
        ``.healthfed-cache`` folder next to the data file, or the user cache dir
        when that folder is not writable.

    Notes
    -----
    Nothing is read at construction except the descriptor's units (an unknown unit
    fails fast); the file is validated on first use (``connect``, ``n_rows``).
    """

    def __init__(self, descriptor: DatasetDescriptor, cache_dir: Path | str | None = None) -> None:
        self.descriptor = descriptor
        self._cache_dir_arg = Path(cache_dir).resolve() if cache_dir is not None else None
        self._frame: pa.Table | None = None
        self._lock = threading.Lock()
        self._view_sql: str | None = None
        self._n_rows: int | None = None
        self._hash: tuple[Any, str] | None = None
        self._source_path: Path | None = None  # the Parquet file the view reads
        # connections a request gave back exactly as lease() made them (see lease)
        self._pool: list[tuple[duckdb.DuckDBPyConnection, str, Any]] = []
        self._leased: dict[int, tuple[str, Any]] = {}
        self._pool_lock = threading.Lock()
        for spec in descriptor.columns.values():
            if spec.type == "binary" and spec.levels is not None and len(spec.levels) != 2:
                raise DataError(
                    f"{self._label}: column {spec.name!r} is binary but declares "
                    f"{len(spec.levels)} levels {list(spec.levels)}; a binary column has exactly 2"
                )
        # Unknown units are a descriptor problem: fail before touching the data.
        self._conversions = {
            name: conversion(name, spec.unit, dataset=descriptor.name)
            for name, spec in descriptor.columns.items()
            if spec.is_numeric
        }

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def from_descriptor_file(
        cls, path: str | Path, cache_dir: Path | str | None = None
    ) -> NodeDataset:
        """Load the descriptor TOML at ``path`` and wrap its dataset."""
        return cls(load_descriptor(path), cache_dir=cache_dir)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, descriptor: DatasetDescriptor) -> NodeDataset:
        """An in-memory dataset (tests, notebooks) with the same typing and validation.

        The descriptor's ``path`` and ``format`` are ignored; the frame is the data.
        """
        ds = cls(descriptor)
        try:
            ds._frame = pa.Table.from_pandas(df, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"{ds._label}: cannot read the frame: {exc}") from None
        return ds

    # --- public API ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The dataset name requests refer to (``[dataset].name``)."""
        return self.descriptor.name

    @property
    def n_rows(self) -> int:
        """Number of rows (patients); validates the data on first use."""
        self._prepare()
        assert self._n_rows is not None
        return self._n_rows

    def validate(self) -> None:
        """Validate the data now (otherwise done on first use); raise DataError if invalid."""
        self._prepare()

    def out_of_bounds(self) -> dict[str, int]:
        """Column -> how many values lie outside its declared bounds (only columns with some).

        Exact counts, for the node's own log and checks; one scan (validates first).
        """
        self._prepare()
        cols = [
            (n, s.bounds)
            for n, s in self.descriptor.columns.items()
            if s.is_numeric and s.bounds is not None
        ]
        if not cols:
            return {}
        aggs = ", ".join(
            f"count(*) FILTER (WHERE {quote_ident(n)} < {b[0]!r} OR {quote_ident(n)} > {b[1]!r})"
            for n, b in cols
            if b is not None
        )
        with leased_connection(self) as con:
            row = con.execute(f"SELECT {aggs} FROM data").fetchone()
        assert row is not None
        return {n: int(c) for (n, _), c in zip(cols, row, strict=True) if c}

    @property
    def in_memory(self) -> bool:
        """True for a dataset made with :meth:`from_frame`."""
        return self._frame is not None

    def profile(self) -> DatasetProfile:
        """The steward's check of the data: missing values, out of bounds, levels, warnings.

        See :mod:`healthfed.data.profile`; validates first (raises DataError if invalid).
        """
        from healthfed.data.profile import profile_dataset

        self._prepare()
        return profile_dataset(self)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A NEW in-memory DuckDB connection with the view ``data``; the caller closes it."""
        self._prepare()
        assert self._view_sql is not None
        con = duckdb.connect()
        try:
            if self._frame is not None:
                con.register(_FRAME_TABLE, self._frame)
            con.execute(self._view_sql)
        except duckdb.Error as exc:
            con.close()
            raise DataError(f"{self._label}: cannot open the data: {exc}") from None
        return con

    def lease(self) -> duckdb.DuckDBPyConnection:
        """A connection with the view ``data`` inside a transaction; :meth:`give_back` it.

        Opening a DuckDB database costs ~13 ms of CPU, as much as a whole small
        request. So a connection is used again by later requests, but only as it was
        made: every request runs in a transaction that :meth:`give_back` rolls back (a
        request's views, tables and renames vanish with it), and the connection is
        kept only if its catalogue then equals the one it had when new (views and
        their SQL, no tables). Anything else, or any error, closes it. (Settings are
        not rolled back: no computation changes one; the SQL they run is healthfed's.)
        """
        self._prepare()
        assert self._view_sql is not None
        con: duckdb.DuckDBPyConnection | None = None
        with self._pool_lock:
            while self._pool and con is None:
                pooled, sql, snapshot = self._pool.pop()
                if sql == self._view_sql:
                    con = pooled
                    self._leased[id(con)] = (sql, snapshot)
                else:
                    pooled.close()
        if con is None:
            con = self.connect()
            with self._pool_lock:
                self._leased[id(con)] = (self._view_sql, _catalogue(con))
        try:
            con.execute("BEGIN TRANSACTION")
        except duckdb.Error:
            self.give_back(con, reusable=False)
            raise
        return con

    def give_back(self, con: duckdb.DuckDBPyConnection, reusable: bool = True) -> None:
        """End the request's use of ``con`` (from :meth:`lease`): roll back, keep or close.

        ``reusable=False`` (e.g. the request's deadline interrupted it) always closes.
        """
        with self._pool_lock:
            made = self._leased.pop(id(con), None)
        try:
            con.execute("ROLLBACK")
            if reusable and made is not None and _catalogue(con) == made[1]:
                with self._pool_lock:
                    if len(self._pool) < POOL_SIZE:
                        self._pool.append((con, made[0], made[1]))
                        return
        except duckdb.Error:
            pass
        con.close()

    def data_identity(self) -> tuple[Any, ...] | None:
        """Identify the rows of the view ``data`` without opening DuckDB, or None.

        For a file-backed dataset: the view's SQL and the size and modification
        time of the Parquet file it reads (the data file, or a CSV's typed cache),
        ``os.stat``-ed on every call, so a replaced file gets a new identity.
        Node-side caches key on it. An in-memory frame has no cheap identity
        (None): callers fall back to fingerprinting through a connection.
        """
        self._prepare()
        if self._frame is not None or self._source_path is None:
            return None
        try:
            st = os.stat(self._source_path)
        except OSError:
            return None
        return (
            "dataset",
            self.descriptor.name,
            self._view_sql,
            (str(self._source_path), st.st_size, st.st_mtime_ns),
        )

    def content_hash(self) -> str:
        """sha256 (hex) of the data file's bytes: pins exactly which data a result came from.

        For an in-memory frame, the sha256 of its Arrow IPC serialisation.
        """
        if self._frame is not None:
            if self._hash is None:
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, self._frame.schema) as writer:
                    writer.write_table(self._frame)
                self._hash = (None, hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest())
            return self._hash[1]
        path = self.descriptor.path
        try:
            st = path.stat()
            key = (st.st_size, st.st_mtime_ns)
            if self._hash is None or self._hash[0] != key:
                self._hash = (key, sha256_file(path))
        except OSError as exc:
            raise DataError(f"{self._label}: cannot read data file: {exc}") from None
        return self._hash[1]

    def __repr__(self) -> str:
        src = "<frame>" if self._frame is not None else str(self.descriptor.path)
        return f"NodeDataset(name={self.name!r}, file={src!r})"

    # --- internals ----------------------------------------------------------------------------
    @property
    def _label(self) -> str:
        d = self.descriptor
        if self._frame is not None:
            return f"in-memory frame for dataset {d.name!r}"
        return f"{d.path} (dataset {d.name!r})"

    def _prepare(self) -> None:
        if self._view_sql is not None:
            return
        with self._lock:
            if self._view_sql is not None:
                return
            if self._frame is not None:
                self._prepare_frame()
            else:
                self._prepare_file()

    def _prepare_frame(self) -> None:
        assert self._frame is not None
        con = duckdb.connect()
        try:
            con.register(_FRAME_TABLE, self._frame)
            source = _FRAME_TABLE
            if self.descriptor.generate_id:
                source = self._with_generated_id(con, source)
            types = self._source_types(con, source)
            n = check_values(con, source, types, self.descriptor, self._label, 1, "row")
        finally:
            con.close()
        self._n_rows = n
        self._view_sql = self._build_view(source, types)

    def _prepare_file(self) -> None:
        d = self.descriptor
        path = d.path
        try:
            st = path.stat()
        except FileNotFoundError:
            raise _missing(f"{self._label}: data file not found: {path}") from None
        except OSError as exc:
            raise DataError(f"{self._label}: cannot read data file {path}: {exc}") from None
        if not path.is_file():
            raise _missing(f"{self._label}: data file is not a regular file: {path}")
        if not os.access(path, os.R_OK):
            raise _missing(f"{self._label}: data file is not readable: {path}")
        cache_dir = self._cache_dir_arg or default_cache_dir(path)
        prefix, key = cache_key(d, st)
        con = duckdb.connect()
        try:
            if d.format == "parquet" and not d.generate_id:
                source_path = path
                source = f"read_parquet({sql_literal(str(path))})"
                types = self._source_types(con, source)
                stamp = cache_dir / f"{prefix}-{key}.json" if cache_dir else None
                n = read_stamp(stamp)
                if n is None:
                    n = check_values(con, source, types, d, self._label, 1, "row")
                    if stamp is not None:
                        write_stamp(stamp, prefix, n, self.descriptor.path)
            else:
                if cache_dir is None:
                    raise DataError(
                        f"{self._label}: no writable cache directory for the typed Parquet "
                        "cache; set the node's cache_dir"
                    )
                cached = cache_dir / f"{prefix}-{key}.parquet"
                if not cached.is_file():
                    self._to_cache(con, cached, prefix)
                source_path = cached
                source = f"read_parquet({sql_literal(str(cached))})"
                types = self._source_types(con, source)
                n = int(con.execute(f"SELECT count(*) FROM {source}").fetchone()[0])  # type: ignore[index]
        finally:
            con.close()
        self._n_rows = n
        self._source_path = source_path
        # A cache holds the view's types already (binary 0/1, levels spelled as declared):
        # its view only converts units, it must not code the levels a second time.
        self._view_sql = self._build_view(source, types, typed=source_path != path)

    def _csv_source(self) -> str:
        d = self.descriptor
        opts = [
            "all_varchar = true",
            f"header = {'true' if d.csv_header else 'false'}",
            f"delim = {sql_literal(d.csv_delimiter)}",
            f"nullstr = [{', '.join(sql_literal(v) for v in d.na_values)}]",
        ]
        if not d.csv_header:
            names = [c for c in d.columns if not (d.generate_id and c == d.id_column)]
            opts.append(f"names = [{', '.join(sql_literal(c) for c in names)}]")
        if d.csv_encoding != "utf-8":
            opts.append(f"encoding = {sql_literal(d.csv_encoding)}")
        source = f"read_csv({sql_literal(str(d.path))}, {', '.join(opts)})"
        numeric = [quote_ident(c) for c, spec in d.columns.items() if spec.is_numeric]
        if d.csv_decimal == "," and numeric:  # 1,5 -> 1.5 before the numbers are cast
            swaps = ", ".join(f"replace({q}, ',', '.') AS {q}" for q in numeric)
            source = f"(SELECT * REPLACE ({swaps}) FROM {source})"
        return source

    def _with_generated_id(self, con: duckdb.DuckDBPyConnection, raw: str) -> str:
        """``raw`` with the pseudonymous id column added (``generate_id``; descriptor docs)."""
        d = self.descriptor
        try:
            rows = con.execute(f"DESCRIBE SELECT * FROM {raw}").fetchall()
        except duckdb.Error as exc:
            raise DataError(f"{self._label}: cannot read the data: {exc}") from None
        have = {str(r[0]): str(r[1]) for r in rows}
        if d.id_column in have:
            raise DataError(
                f"{self._label}: generate_id is set but the data already has a column "
                f"{d.id_column!r}; drop generate_id, or set id_column to a new name"
            )
        # Hash the values as the view types them, so a CSV, a Parquet file and a frame of
        # the same rows give the same ids (an invalid value hashes as missing; validation
        # reports it).
        parts = [sql_literal(d.name)]
        for c, spec in d.columns.items():
            if c == d.id_column or c not in have:
                continue
            q, t = quote_ident(c), have[c]
            if spec.is_numeric:
                v = f"NULLIF(TRY_CAST({q} AS DOUBLE), 'NaN'::DOUBLE)"
            else:
                v = _coded_expr(spec, c, t)
            parts.append(f"coalesce(CAST({v} AS VARCHAR), chr(30))")
        h = f"sha256(concat_ws(chr(31), {', '.join(parts)}))"
        gid = "'g' || substr(__h, 1, 16) || CASE WHEN __k > 1 THEN '-' || __k ELSE '' END"
        return (
            f"(SELECT * EXCLUDE (__h, __k, __ord), {gid} AS {quote_ident(d.id_column)} FROM "
            f"(SELECT *, row_number() OVER (PARTITION BY __h ORDER BY __ord) AS __k FROM "
            f"(SELECT *, {h} AS __h, row_number() OVER () AS __ord FROM {raw})) ORDER BY __ord)"
        )

    def _to_cache(self, con: duckdb.DuckDBPyConnection, cached: Path, prefix: str) -> None:
        """Validate the CSV (or Parquet with a generated id), then write it as typed Parquet
        atomically (temp file + rename)."""
        d = self.descriptor
        if d.format == "parquet":
            source = f"read_parquet({sql_literal(str(d.path))})"
            row_base, row_word = 1, "row"
        else:
            source = self._csv_source()
            row_base, row_word = (2 if d.csv_header else 1), "line"  # the line in the file
        if d.generate_id:
            source = self._with_generated_id(con, source)
        types = self._source_types(con, source)
        check_values(con, source, types, self.descriptor, self._label, row_base, row_word)
        exprs = []
        for name, spec in self.descriptor.columns.items():
            t = types[name]
            if spec.is_numeric:
                exprs.append(f"{double_expr(name, t)} AS {quote_ident(name)}")
            elif spec.type == "binary":
                exprs.append(f"{binary_expr(spec, t)} AS {quote_ident(name)}")
            elif spec.type == "categorical":
                exprs.append(f"{level_expr(spec, t)} AS {quote_ident(name)}")
            else:
                exprs.append(f"{str_expr(name, t)} AS {quote_ident(name)}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.parent / f".{cached.name}.{uuid.uuid4().hex}.tmp"
        try:
            con.execute(
                f"COPY (SELECT {', '.join(exprs)} FROM {source}) TO {sql_literal(str(tmp))} "
                f"(FORMAT parquet, ROW_GROUP_SIZE {_ROW_GROUP_SIZE})"
            )
            os.replace(tmp, cached)
        except duckdb.Error as exc:
            if self.descriptor.format == "csv":
                raise DataError(csv_read_error(self._label, self.descriptor, exc)) from None
            raise DataError(f"{self._label}: cannot convert the data to Parquet: {exc}") from None
        except OSError as exc:
            raise DataError(f"{self._label}: cannot write the CSV cache {cached}: {exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        remove_stale(cached.parent, prefix, keep=cached.name)

    def _source_types(self, con: duckdb.DuckDBPyConnection, source: str) -> dict[str, str]:
        """Column name -> SQL type of the source; missing declared columns raise."""
        what = "Parquet" if "read_parquet" in source else "CSV" if "read_csv" in source else "frame"
        try:
            rows = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        except duckdb.Error as exc:
            if what == "CSV":
                raise DataError(csv_read_error(self._label, self.descriptor, exc)) from None
            raise DataError(f"{self._label}: cannot read as {what}: {exc}") from None
        types = {str(r[0]): str(r[1]) for r in rows}
        missing = [c for c in self.descriptor.columns if c not in types]
        if missing:
            raise DataError(
                f"{self._label}: declared column(s) {missing} not found in the data; "
                f"it has columns {list(types)}"
            )
        booleans = [
            f"{c.name!r} ({c.type})"
            for c in self.descriptor.columns.values()
            if c.is_numeric and is_bool(types[c.name])
        ]
        if booleans:
            raise DataError(
                f"{self._label}: column(s) {', '.join(booleans)} declared numeric but the {what} "
                'stores them as booleans (true/false); declare them type = "binary" '
                "(levels [false, true] codes true as 1)"
            )
        return types

    def _build_view(self, source: str, types: dict[str, str], typed: bool = False) -> str:
        """SQL creating the typed, harmonised view ``data`` (exactly the declared columns).

        ``typed``: the source already has the view's types (a CSV's Parquet cache), so
        only units are converted.
        """
        exprs = []
        for name, spec in self.descriptor.columns.items():
            t = types[name]
            q = quote_ident(name)
            if spec.is_numeric:
                expr = self._conversions[name].sql(double_expr(name, t))
            elif typed:
                expr = f"CAST({q} AS INTEGER)" if spec.type == "binary" else f"CAST({q} AS VARCHAR)"
            else:
                expr = _coded_expr(spec, name, t)
            exprs.append(f"{expr} AS {quote_ident(name)}")
        return f"CREATE VIEW data AS SELECT {', '.join(exprs)} FROM {source}"


# --- descriptor writing (used by the synthetic and bundled datasets) -------------------------
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "_-" for c in key):
        return key
    return json.dumps(key)


def render_descriptor_toml(dataset: dict[str, Any], columns: dict[str, dict[str, Any]]) -> str:
    """A descriptor TOML text from ``[dataset]`` fields and per-column specs, in a fixed order.

    Deterministic output (same input, same bytes) so written cohorts are reproducible.
    """
    lines = ["[dataset]"]
    lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in dataset.items()]
    for name, spec in columns.items():
        lines += ["", f"[columns.{_toml_key(name)}]"]
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in spec.items() if v is not None]
    return "\n".join(lines) + "\n"
