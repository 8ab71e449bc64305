"""Node side: the raw column store and the design-matrix cache kept in the node process.

One DuckDB scan per (dataset content, columns, target, row filter) fills a raw
column store: the ``preprocess_moments`` round computes its statistics from it
(in numpy, so a repeated round releases bit-identical moments), and
:func:`cached_design` assembles the fit's design matrix from it (float64,
column-major, read-only, cached per spec), so an iterative fit costs one scan
per site and then one pass over the matrix per round. The node's request
connection is lazy (``healthfed.node.connection``): a round answered from the cache
never opens DuckDB.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from healthfed.compute.preprocess.design import binary_positive, check_outcome, target_sql
from healthfed.compute.preprocess.spec import n_features, validate_spec
from healthfed.data.sql import quote_ident, sql_literal

__all__ = [
    "CACHE_MAX_BYTES",
    "CACHE_MAX_ENTRIES",
    "RawColumns",
    "cached_design",
    "clear_design_cache",
    "data_fingerprint",
    "raw_columns",
    "raw_structure",
]

_cache_lock = threading.Lock()
_cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
CACHE_MAX_ENTRIES = int(os.environ.get("HEALTHFED_DESIGN_CACHE_ENTRIES", "16"))
CACHE_MAX_BYTES = int(os.environ.get("HEALTHFED_DESIGN_CACHE_BYTES", str(4 << 30)))
_PARQUET_RE = re.compile(r"read_parquet\('((?:[^']|'')*)'\)")


def _dataset_fingerprint(con: Any, descriptor: Any, columns: Sequence[str]) -> tuple[Any, ...]:
    """Identify the data behind ``con``'s view ``data`` without reading it if possible.

    A file-backed view is identified by its SQL (which names the file) and the
    file's size and modification time; an in-memory frame has no stable
    identity, so its used columns are hashed in one DuckDB scan (much cheaper
    than building the matrix).
    """
    rows = con.execute("SELECT view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall()
    sqls = tuple(sorted((str(v), str(s)) for v, s in rows))
    text = " ".join(s for _, s in sqls)
    paths = [p.replace("''", "'") for p in _PARQUET_RE.findall(text)]
    if paths and "python_arrow_scan" not in text and "arrow_scan" not in text:
        stats = []
        for p in paths:
            try:
                st = os.stat(p)
            except OSError:
                break
            stats.append((p, st.st_size, st.st_mtime_ns))
        else:
            return ("files", descriptor.name, sqls, tuple(stats))
    cols = ", ".join(quote_ident(c) for c in columns)
    n, h = con.execute(f"SELECT count(*), sum(hash({cols})::HUGEINT) FROM data").fetchone()
    view_sql = tuple(s for v, s in sqls if v == "data")
    return ("scan", descriptor.name, view_sql, int(n), str(h))


def data_fingerprint(con: Any, descriptor: Any, columns: Sequence[str]) -> tuple[Any, ...]:
    """Cache identity of the rows behind ``con``'s view ``data``.

    A node's lazy request connection (``healthfed.node.connection``) names them
    without opening DuckDB (``data_identity()``: the dataset's view and the
    size and mtime of its file) as long as nothing could have altered the view;
    otherwise :func:`_dataset_fingerprint` asks the connection.
    """
    identity = getattr(con, "data_identity", None)
    if callable(identity):
        ident = identity()
        if ident is not None:
            return ("identity", *ident)
    used = [*columns, descriptor.id_column]
    return _dataset_fingerprint(con, descriptor, list(dict.fromkeys(c for c in used if c)))


def _entry_bytes(value: Any) -> int:
    if isinstance(value, tuple):
        return sum(_entry_bytes(v) for v in value)
    return int(getattr(value, "nbytes", 0))


def _cache_get(key: tuple[Any, ...]) -> Any:
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
        return hit


def _cache_put(key: tuple[Any, ...], value: Any) -> None:
    with _cache_lock:
        _cache[key] = value
        _cache.move_to_end(key)
        total = sum(_entry_bytes(v) for v in _cache.values())
        while len(_cache) > 1 and (len(_cache) > CACHE_MAX_ENTRIES or total > CACHE_MAX_BYTES):
            _, old = _cache.popitem(last=False)
            total -= _entry_bytes(old)


# --- the raw column store (one scan, shared by the moments round and the fit) -----------
_NULL_CODE = -1  # a categorical value that is missing
_OTHER_CODE = -2  # a value outside the declared levels (validation rules it out)


def raw_structure(descriptor: Any, kinds: Sequence[tuple[str, str]]) -> tuple[Any, ...]:
    """What fixes a raw column store: each column's name, kind and (categorical) levels."""
    return tuple(
        (name, kind, tuple(descriptor.column(name).levels or ()) if kind == "categorical" else ())
        for name, kind in kinds
    )


class RawColumns:
    """A site's raw feature columns and outcome over the rows a fit uses (read-only arrays).

    Numeric and binary columns are float64 with NaN where missing; a
    categorical column is its int32 code in the declared levels (``-1``
    missing). Every design of the same columns — whatever its pooled means/SDs,
    missing indicators, outcome coding — is assembled from it in numpy, and the
    ``preprocess_moments`` statistics are computed from it, so the moments round
    and the fit share one DuckDB scan and repeated moments rounds give bit-identical
    specs.
    """

    def __init__(self, cols: dict[str, np.ndarray], y: np.ndarray | None, n: int) -> None:
        self.cols = cols
        self.y = y
        self.n = n
        for a in [*cols.values(), *([] if y is None else [y])]:
            a.flags.writeable = False

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.cols.values()) + (0 if self.y is None else self.y.nbytes)

    def missing(self, name: str) -> np.ndarray:
        a = self.cols[name]
        return a == _NULL_CODE if a.dtype.kind == "i" else np.isnan(a)


def _fetch_raw(
    con: Any,
    descriptor: Any,
    structure: tuple[Any, ...],
    missing: str,
    target: str | None,
    where: str,
) -> RawColumns:
    """One DuckDB scan: the raw columns and outcome of the rows a fit uses."""
    sel: list[str] = []
    for i, (name, kind, levels) in enumerate(structure):
        q = quote_ident(name)
        if kind == "categorical":
            cases = " ".join(f"WHEN {sql_literal(lev)} THEN {k}" for k, lev in enumerate(levels))
            sel.append(
                f"CAST(CASE {q} {cases} ELSE (CASE WHEN {q} IS NULL THEN {_NULL_CODE} "
                f"ELSE {_OTHER_CODE} END) END AS INTEGER) AS f{i}"
            )
        else:
            sel.append(f"COALESCE(CAST({q} AS DOUBLE), 'NaN'::DOUBLE) AS f{i}")
    conds = [f"({where or 'TRUE'})"]
    if target is not None:
        q = quote_ident(target)
        sel.append(
            f"{q} AS __y"
            if descriptor.column(target).type == "categorical"
            else f"CAST({q} AS DOUBLE) AS __y"
        )
        conds.append(f"{q} IS NOT NULL")
    if missing == "drop":
        conds += [f"{quote_ident(name)} IS NOT NULL" for name, _, _ in structure]
    sql = f"SELECT {', '.join(sel)} FROM data WHERE {' AND '.join(conds)}"
    res = con.execute(sql).fetchnumpy()
    cols = {}
    for i, (name, kind, _) in enumerate(structure):
        a = np.ma.getdata(res[f"f{i}"])
        cols[name] = np.ascontiguousarray(
            a, dtype=np.int32 if kind == "categorical" else np.float64
        )
    y = None
    if target is not None:
        y = np.ma.getdata(res["__y"])
        if y.dtype.kind != "O":
            y = np.ascontiguousarray(y, dtype=np.float64)
    n = len(cols[structure[0][0]]) if structure else (0 if y is None else len(y))
    return RawColumns(cols, y, n)


def raw_columns(
    con: Any,
    descriptor: Any,
    structure: tuple[Any, ...],
    missing: str,
    target: str | None,
    where: str,
) -> tuple[tuple[Any, ...], RawColumns]:
    """(cache key, raw column store) for these rows and columns (one scan if not cached)."""
    names = [name for name, _, _ in structure]
    key = (
        "raw",
        data_fingerprint(con, descriptor, names + ([target] if target else [])),
        structure,
        missing,
        target,
        where,
    )
    raw = _cache_get(key)
    if raw is None:
        raw = _fetch_raw(con, descriptor, structure, missing, target, where)
        _cache_put(key, raw)
    return key, raw


def _outcome(
    raw: RawColumns, descriptor: Any, target: str, positive: str | None, family: str
) -> np.ndarray:
    """``y`` as :func:`target_sql` codes it, from the raw outcome column."""
    target_sql(descriptor, target, positive, family)  # the same checks and errors
    assert raw.y is not None
    spec = descriptor.column(target)
    y = raw.y
    if family == "binomial" and spec.type == "binary":
        y = (y == float(binary_positive(spec, target, positive))).astype(np.float64)
    elif family == "binomial" and spec.type == "categorical":
        y = (y == str(positive)).astype(np.float64)
    else:
        y = np.array(y, dtype=np.float64)
    check_outcome(y, target, family)
    return y


def _assemble(raw: RawColumns, spec: dict[str, Any], intercept: bool) -> np.ndarray:
    """The design matrix (column-major float64) of ``spec`` from the raw columns.

    The same arithmetic as ``design._standardise``: ``(coalesce(x, mean) - center) / scale``.
    """
    p = n_features(spec) + (1 if intercept else 0)
    X = np.empty((raw.n, p), dtype=np.float64, order="F")
    j = 0
    if intercept:
        X[:, 0] = 1.0
        j = 1
    for c in spec["columns"]:
        r = raw.cols[c["name"]]
        if c["type"] == "categorical":
            for k in range(1, len(c["levels"])):
                np.equal(r, k, out=X[:, j], casting="unsafe")
                j += 1
        else:
            col = X[:, j]
            np.copyto(col, r)
            np.copyto(col, c["mean"], where=np.isnan(r))
            col -= c["center"]
            col /= c["scale"]
            j += 1
        if c["indicator"]:
            X[:, j] = raw.missing(c["name"])
            j += 1
    return X


def cached_design(
    con: Any,
    descriptor: Any,
    spec: dict[str, Any],
    target: str,
    positive: str | None,
    where: str,
    family: str,
) -> tuple[np.ndarray, np.ndarray]:
    """``design_matrix(..., intercept=True)``, cached in this process (``X`` column-major).

    Two levels: the raw columns (one DuckDB scan, usually already made by the
    ``preprocess_moments`` round of the same fit) keyed by the dataset's identity
    (see :func:`data_fingerprint`), the columns and their kinds, the outcome and
    the row filter; and the design matrix keyed additionally by the full spec
    and the outcome coding. A changed file or another site's data never hits
    another entry; a new fit on the same data assembles its matrix from the raw
    columns in numpy. Arrays are read-only. At most ``CACHE_MAX_ENTRIES``
    entries and ``CACHE_MAX_BYTES``.
    """
    spec = validate_spec(spec, descriptor)
    structure = raw_structure(descriptor, [(c["name"], c["type"]) for c in spec["columns"]])
    raw_key, raw = raw_columns(con, descriptor, structure, spec["missing"], target, where)
    key = ("design", raw_key, json.dumps(spec, sort_keys=True), positive, family)
    hit = _cache_get(key)
    if hit is not None:
        return hit
    y = _outcome(raw, descriptor, target, positive, family)
    X = _assemble(raw, spec, intercept=True)
    X.flags.writeable = False
    y.flags.writeable = False
    _cache_put(key, (X, y))
    return X, y


def clear_design_cache() -> None:
    """Forget every cached design matrix in this process."""
    with _cache_lock:
        _cache.clear()
