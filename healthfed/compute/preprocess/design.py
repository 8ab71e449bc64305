"""Federated preprocessing: one shared, JSON design-matrix spec built from pooled moments.

Every site must turn its rows into *the same* design matrix, otherwise a
federated model is fitted on different features at different sites. The spec
below fixes everything that would otherwise be decided from local data, and it
is computed from pooled aggregates in **one round** (``preprocess_moments``):

* **Numeric and integer columns** are standardised with the *pooled* mean and
  SD (over the rows used for fitting, Chan et al.'s parallel formula, so they
  equal the statistics of the concatenated rows). Binary columns stay 0/1 so
  their coefficient is the usual "present vs absent" contrast.
* **Categorical columns** are one-hot encoded dropping the first level. The
  levels are the descriptor's *declared* levels (public metadata, never read
  off the data); every site reports its declared list and the hub refuses
  when sites disagree, so a level that happens to be absent at one site still
  gets its column there.
* **Missing values** (``missing="indicator"``, the default): a numeric/binary
  value is imputed by the pooled mean (0 after standardising) and a
  categorical value by the reference level (all dummies 0); a 0/1
  ``<column>_missing`` indicator is added for every column that has a missing
  value at any contributing site. With the indicator in the model, imputing
  any other constant gives the same fitted values (the indicator's coefficient
  absorbs the difference), so the pooled mean is a convention, not an
  assumption. ``missing="drop"`` fits on complete cases instead. Rows with a
  missing outcome are always left out.

What a site releases for the spec: row count, per column the number of missing
values (a count: 0 or at least ``min_cell_count``, else the site declines and
names the column), the sum and the centred sum of squares of observed values
(only when at least ``min_subset`` values were observed), and its declared
level lists. The request may carry the number of model parameters so the
parameter-to-rows rule is applied up front: a site too small for the model
declines at this round, before it has shaped the standardisation.

The spec (a plain JSON object, sent with every training request)::

    {"kind": "healthfed.preprocess", "version": 1, "missing": "indicator",
     "standardize": true, "n_rows": 1000,
     "columns": [
       {"name": "age", "type": "numeric", "mean": 61.2, "center": 61.2, "scale": 14.8,
        "indicator": false},
       {"name": "diabetes", "type": "binary", "levels": ["0", "1"], "mean": 0.21,
        "center": 0.0, "scale": 1.0, "indicator": true},
       {"name": "sex", "type": "categorical", "levels": ["female", "male"],
        "indicator": false}]}

Design columns, in spec order: a numeric/binary column gives
``(coalesce(x, mean) - center) / scale`` then ``<x>_missing`` if flagged; a
categorical column gives ``<x>_<level>`` for ``levels[1:]`` then
``<x>_missing`` if flagged. No intercept column (models add their own).

Node side, one DuckDB scan per (dataset content, columns, target, row filter)
fills a raw column store kept in the node process: the ``preprocess_moments``
round computes its statistics from it (in numpy, so a repeated round releases
bit-identical moments), and :func:`cached_design` assembles the fit's design
matrix from it (float64, column-major, read-only, cached per spec), so an
iterative fit costs one scan per site and then one pass over the matrix per
round. The node's request connection is lazy (``healthfed.node.runtime``): a
round answered from the cache never opens DuckDB. This module also provides the preprocessing API
``healthfed.compute.fedavg`` and ``evaluation`` use for non-minimal specs:
``n_features``, ``validate_spec``, ``design_matrix``, ``transform_frame``.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from healthfed.data.sql import holdout_sql, quote_ident, sql_literal, validate_holdout
from healthfed.errors import DataError, PolicyDenied, ThresholdViolation
from healthfed.privacy.model_release import ModelStatistics, array_from_reply

__all__ = [
    "PREPROCESS_MOMENTS",
    "SPEC_KIND",
    "FederatedPreprocessor",
    "build_spec",
    "cached_design",
    "clear_design_cache",
    "design_matrix",
    "feature_names",
    "n_features",
    "transform_frame",
    "validate_spec",
]

SPEC_KIND = "healthfed.preprocess"
SPEC_VERSION = 1
PREPROCESS_MOMENTS = "preprocess_moments"
MISSING_MODES = ("indicator", "drop")
MAX_COLUMNS = 500
_TYPE_CODES = {"numeric": 0.0, "integer": 0.0, "binary": 1.0, "categorical": 2.0}
_CODE_TYPES = {0: "numeric", 1: "binary", 2: "categorical"}


# =====================================================================================
# small helpers
# =====================================================================================
def _num(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PolicyDenied(f"parameter 'preprocess': {what} must be a finite number, got {value!r}")
    return float(value)


# =====================================================================================
# the spec
# =====================================================================================
def _check_structure(spec: Any) -> dict[str, Any]:
    """Structural check of a spec (hub or node side); returns a normalised copy."""
    if not isinstance(spec, dict) or spec.get("kind") != SPEC_KIND:
        raise PolicyDenied(
            f"parameter 'preprocess' must be a healthfed preprocessing spec (kind {SPEC_KIND!r})"
        )
    if spec.get("version") != SPEC_VERSION:
        raise PolicyDenied(
            f"parameter 'preprocess': version {spec.get('version')!r} is not supported "
            f"(this node understands version {SPEC_VERSION})"
        )
    missing = spec.get("missing", "indicator")
    if missing not in MISSING_MODES:
        raise PolicyDenied(f"parameter 'preprocess.missing' must be one of {list(MISSING_MODES)}")
    cols = spec.get("columns")
    if not isinstance(cols, list) or not cols or len(cols) > MAX_COLUMNS:
        raise PolicyDenied(
            f"parameter 'preprocess.columns' must be a list of 1..{MAX_COLUMNS} column entries"
        )
    out_cols: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, c in enumerate(cols):
        where = f"preprocess.columns[{i}]"
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"]:
            raise PolicyDenied(f"parameter '{where}' needs a column 'name'")
        name = c["name"]
        if name in seen:
            raise PolicyDenied(f"parameter '{where}': column {name!r} is listed twice")
        seen.add(name)
        ctype = c.get("type")
        indicator = bool(c.get("indicator", False))
        if ctype in ("numeric", "binary"):
            entry: dict[str, Any] = {
                "name": name,
                "type": ctype,
                "mean": _num(c.get("mean", 0.0), f"'{where}.mean' ({name!r})"),
                "center": _num(c.get("center", 0.0), f"'{where}.center' ({name!r})"),
                "scale": _num(c.get("scale", 1.0), f"'{where}.scale' ({name!r})"),
                "indicator": indicator,
            }
            if entry["scale"] <= 0:
                raise PolicyDenied(f"parameter '{where}.scale' ({name!r}) must be > 0")
            if ctype == "binary":
                levels = c.get("levels", ["0", "1"])
                if not isinstance(levels, list) or len(levels) != 2:
                    raise PolicyDenied(f"parameter '{where}.levels' ({name!r}) must list 2 levels")
                entry["levels"] = [str(v) for v in levels]
        elif ctype == "categorical":
            levels = c.get("levels")
            if (
                not isinstance(levels, list)
                or len(levels) < 1
                or len({str(v) for v in levels}) != len(levels)
            ):
                raise PolicyDenied(
                    f"parameter '{where}.levels' ({name!r}) must be a list of distinct levels"
                )
            entry = {
                "name": name,
                "type": "categorical",
                "levels": [str(v) for v in levels],
                "indicator": indicator,
            }
        else:
            raise PolicyDenied(
                f"parameter '{where}.type' ({name!r}) must be 'numeric', 'binary' or "
                f"'categorical', got {ctype!r}"
            )
        if missing == "drop" and indicator:
            raise PolicyDenied(
                f"parameter '{where}.indicator' ({name!r}): no missing indicators with "
                "missing='drop'"
            )
        out_cols.append(entry)
    out = {
        "kind": SPEC_KIND,
        "version": SPEC_VERSION,
        "missing": missing,
        "standardize": bool(spec.get("standardize", True)),
        "columns": out_cols,
    }
    if "n_rows" in spec:
        out["n_rows"] = int(spec["n_rows"])
    return out


def validate_spec(spec: Any, descriptor: Any, policy: Any = None) -> dict[str, Any]:
    """Node side: check a spec against this site's descriptor (and policy).

    Types must match the declared ones and a categorical column's levels must
    equal the *declared* levels exactly (same order: the first is the reference).

    Raises
    ------
    PolicyDenied
        The spec is malformed or a column has more levels than ``max_levels``.
    DataError
        A column is unknown here, has another type, or declares other levels.
    """
    out = _check_structure(spec)
    max_levels = getattr(policy, "max_levels", None)
    for c in out["columns"]:
        col = descriptor.column(c["name"])
        if col.type == "id":
            raise PolicyDenied(
                f"parameter 'preprocess': {c['name']!r} is the patient id column, never a feature"
            )
        expected = {"numeric": ("numeric", "integer"), "binary": ("binary",)}.get(
            c["type"], ("categorical",)
        )
        if col.type not in expected:
            raise DataError(
                f"parameter 'preprocess': column {c['name']!r} is {col.type} at this site, "
                f"the spec treats it as {c['type']}"
            )
        if c["type"] in ("categorical", "binary"):
            declared = list(col.levels or ())
            if declared != c["levels"]:
                raise DataError(
                    f"parameter 'preprocess': column {c['name']!r} declares levels {declared} "
                    f"at this site, the spec uses {c['levels']}"
                )
            if max_levels is not None and len(declared) > max_levels:
                raise PolicyDenied(
                    f"parameter 'preprocess': column {c['name']!r} has {len(declared)} levels, "
                    f"more than this site's max_levels = {max_levels}"
                )
    return out


def feature_names(spec: dict[str, Any]) -> list[str]:
    """Names of the design-matrix columns the spec produces, in order (no intercept)."""
    names: list[str] = []
    for c in _check_structure(spec)["columns"]:
        if c["type"] == "categorical":
            names += [f"{c['name']}_{lev}" for lev in c["levels"][1:]]
        else:
            names.append(c["name"])
        if c["indicator"]:
            names.append(f"{c['name']}_missing")
    return names


def n_features(spec: dict[str, Any]) -> int:
    """Number of design-matrix columns (no intercept column)."""
    return len(feature_names(spec))


# =====================================================================================
# node side: the design matrix
# =====================================================================================
def _column_sql(c: dict[str, Any]) -> list[str]:
    """SQL of a column's design columns; numeric values stay raw (NULL as NaN).

    Standardisation and mean imputation are applied in numpy by
    :func:`_standardise`, so a node can keep the raw matrix across specs that
    differ only in their pooled means/SDs (those vary in the last bits between
    runs of the same parallel aggregation).
    """
    q = quote_ident(c["name"])
    out: list[str] = []
    if c["type"] == "categorical":
        for lev in c["levels"][1:]:
            out.append(f"CASE WHEN {q} = {sql_literal(lev)} THEN 1.0 ELSE 0.0 END")
    else:
        out.append(f"COALESCE(CAST({q} AS DOUBLE), 'NaN'::DOUBLE)")
    if c["indicator"]:
        out.append(f"CASE WHEN {q} IS NULL THEN 1.0 ELSE 0.0 END")
    return out


def _standardise(R: np.ndarray, spec: dict[str, Any], offset: int) -> np.ndarray:
    """The design matrix from the raw one: ``(coalesce(x, mean) - center) / scale``."""
    X = np.array(R, dtype=np.float64, order="C", copy=True)
    j = offset
    for c in spec["columns"]:
        if c["type"] == "categorical":
            j += len(c["levels"]) - 1
        else:
            col = X[:, j]
            np.copyto(col, c["mean"], where=np.isnan(col))
            col -= c["center"]
            col /= c["scale"]
            j += 1
        if c["indicator"]:
            j += 1
    return X


def _binary_positive(spec: Any, target: str, positive: str | None) -> int:
    """The 0/1 code of a binary target's positive level (a level name or "0"/"1")."""
    pos = "1" if positive is None else str(positive)
    levels = list(spec.levels or ("0", "1"))
    if pos in levels and pos not in ("0", "1"):
        pos = str(levels.index(pos))
    if pos not in ("0", "1"):
        raise DataError(f"parameter 'positive': binary target {target!r} has levels {levels}")
    return int(pos)


def target_sql(descriptor: Any, target: str, positive: str | None, family: str) -> str:
    """SQL expression of the outcome: 0/1 for ``binomial``, the value otherwise.

    Raises
    ------
    DataError
        The target's type does not suit the family, or ``positive`` is not one of its levels.
    """
    spec = descriptor.column(target)
    q = quote_ident(target)
    if spec.type == "id":
        raise PolicyDenied(f"parameter 'target': {target!r} is the patient id column")
    if family == "binomial":
        if spec.type == "binary":
            return (
                f"CASE WHEN {q} = {_binary_positive(spec, target, positive)} THEN 1.0 ELSE 0.0 END"
            )
        if spec.type == "categorical":
            if positive is None:
                raise DataError(
                    f"parameter 'positive': name the positive level of categorical target "
                    f"{target!r}"
                )
            if spec.levels is not None and str(positive) not in spec.levels:
                raise DataError(
                    f"parameter 'positive': {positive!r} is not a level of {target!r} "
                    f"(levels {list(spec.levels)})"
                )
            return f"CASE WHEN {q} = {sql_literal(str(positive))} THEN 1.0 ELSE 0.0 END"
        return f"CAST({q} AS DOUBLE)"  # numeric 0/1: checked after reading
    if spec.type == "categorical":
        raise DataError(
            f"parameter 'target': {target!r} is categorical; family {family!r} needs a "
            "numeric outcome"
        )
    return f"CAST({q} AS DOUBLE)"


def _check_outcome(y: np.ndarray, target: str, family: str) -> None:
    if family == "binomial" and not np.all((y == 0.0) | (y == 1.0)):
        raise DataError(f"parameter 'target': {target!r} must be 0/1 for family 'binomial'")
    if family == "poisson" and (np.any(y < 0) or not np.all(np.isfinite(y))):
        raise DataError(
            f"parameter 'target': {target!r} must be non-negative counts for family 'poisson'"
        )
    if not np.all(np.isfinite(y)):
        raise DataError(f"parameter 'target': {target!r} has non-finite values")


def _row_filter(spec: dict[str, Any], target: str | None, where: str) -> str:
    conds = [f"({where or 'TRUE'})"]
    if target is not None:
        conds.append(f"{quote_ident(target)} IS NOT NULL")
    if spec["missing"] == "drop":
        conds += [f"{quote_ident(c['name'])} IS NOT NULL" for c in spec["columns"]]
    return " AND ".join(conds)


def _raw_design(
    con: Any,
    descriptor: Any,
    spec: dict[str, Any],
    target: str | None,
    positive: str | None,
    where: str,
    family: str,
    intercept: bool,
) -> tuple[np.ndarray, np.ndarray]:
    exprs: list[str] = []
    for c in spec["columns"]:
        exprs += _column_sql(c)
    sel = [f"{e} AS f{i}" for i, e in enumerate(exprs)]
    if target is not None:
        sel.append(f"{target_sql(descriptor, target, positive, family)} AS __y")
    sql = f"SELECT {', '.join(sel)} FROM data WHERE {_row_filter(spec, target, where)}"
    res = con.execute(sql).fetchnumpy()
    n = len(res["f0"])
    off = 1 if intercept else 0
    R = np.empty((n, len(exprs) + off), dtype=np.float64)
    if intercept:
        R[:, 0] = 1.0
    for i in range(len(exprs)):
        R[:, off + i] = np.asarray(res[f"f{i}"], dtype=np.float64)
    if target is None:
        return R, np.empty(0)
    y = np.asarray(res["__y"], dtype=np.float64)
    _check_outcome(y, target, family)
    return R, y


def design_matrix(
    con: Any,
    descriptor: Any,
    spec: dict[str, Any],
    target: str | None = None,
    positive: str | None = None,
    where: str = "TRUE",
    family: str = "binomial",
    intercept: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Node side: build ``X`` (float64, C order) and ``y`` from the view ``data``.

    One DuckDB query reads the raw columns, dummies and indicators; the pooled
    standardisation and mean imputation are applied in numpy.

    Parameters
    ----------
    con
        A connection with the view ``data``.
    descriptor
        The dataset's descriptor (column types, declared levels).
    spec
        The preprocessing spec; validated against ``descriptor`` here.
    target, positive, family
        The outcome and its coding (see :func:`target_sql`). Rows with a missing
        outcome are left out. Without ``target`` ``y`` is empty.
    where
        Extra SQL row filter (e.g. a hold-out split); trusted, built by healthfed.
    intercept
        Prepend a column of ones.
    """
    spec = validate_spec(spec, descriptor)
    R, y = _raw_design(con, descriptor, spec, target, positive, where, family, intercept)
    return _standardise(R, spec, 1 if intercept else 0), y


# --- the per-process cache ------------------------------------------------------------
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

    A node's lazy request connection (``healthfed.node.runtime``) names them
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


def _raw_structure(descriptor: Any, kinds: Sequence[tuple[str, str]]) -> tuple[Any, ...]:
    """What fixes a raw column store: each column's name, kind and (categorical) levels."""
    return tuple(
        (name, kind, tuple(descriptor.column(name).levels or ()) if kind == "categorical" else ())
        for name, kind in kinds
    )


class _RawColumns:
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
) -> _RawColumns:
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
    return _RawColumns(cols, y, n)


def _raw_columns(
    con: Any,
    descriptor: Any,
    structure: tuple[Any, ...],
    missing: str,
    target: str | None,
    where: str,
) -> tuple[tuple[Any, ...], _RawColumns]:
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
    raw: _RawColumns, descriptor: Any, target: str, positive: str | None, family: str
) -> np.ndarray:
    """``y`` as :func:`target_sql` codes it, from the raw outcome column."""
    target_sql(descriptor, target, positive, family)  # the same checks and errors
    assert raw.y is not None
    spec = descriptor.column(target)
    y = raw.y
    if family == "binomial" and spec.type == "binary":
        y = (y == float(_binary_positive(spec, target, positive))).astype(np.float64)
    elif family == "binomial" and spec.type == "categorical":
        y = (y == str(positive)).astype(np.float64)
    else:
        y = np.array(y, dtype=np.float64)
    _check_outcome(y, target, family)
    return y


def _assemble(raw: _RawColumns, spec: dict[str, Any], intercept: bool) -> np.ndarray:
    """The design matrix (column-major float64) of ``spec`` from the raw columns.

    The same arithmetic as :func:`_standardise`: ``(coalesce(x, mean) - center) / scale``.
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
    structure = _raw_structure(descriptor, [(c["name"], c["type"]) for c in spec["columns"]])
    raw_key, raw = _raw_columns(con, descriptor, structure, spec["missing"], target, where)
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


# =====================================================================================
# hub side: the same matrix from a pandas frame
# =====================================================================================
def _as_level_strings(values: Any) -> np.ndarray:
    """Values as level strings the way the node's view reads them (1.0 -> '1'); None = missing."""
    import pandas as pd

    s = pd.Series(values)
    out = np.empty(len(s), dtype=object)
    for i, v in enumerate(s.tolist()):
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            out[i] = None
        elif isinstance(v, bool):
            out[i] = str(int(v))
        elif isinstance(v, float) and v == math.trunc(v) and abs(v) < 1e15:
            out[i] = str(int(v))
        else:
            out[i] = str(v)
    return out


def transform_frame(frame: Any, spec: dict[str, Any]) -> np.ndarray:
    """Hub side: the design matrix (no intercept) of a pandas frame of raw columns.

    The frame's numeric columns must be in the canonical units of the
    descriptors. Missing values are imputed exactly as at the nodes. With
    ``missing="drop"`` a missing value is still imputed (prediction needs a
    row per input row); the spec then has no indicator for it.

    Raises
    ------
    DataError
        A column is absent, not numeric, or holds an undeclared level.
    """
    import pandas as pd

    spec = _check_structure(spec)
    if not isinstance(frame, pd.DataFrame):
        frame = pd.DataFrame(frame)
    absent = [c["name"] for c in spec["columns"] if c["name"] not in frame.columns]
    if absent:
        raise DataError(f"argument 'X': the frame lacks column(s) {absent}")
    n = len(frame)
    cols: list[np.ndarray] = []
    for c in spec["columns"]:
        raw = frame[c["name"]]
        if c["type"] == "categorical":
            s = _as_level_strings(raw)
            isna = np.array([v is None for v in s], dtype=bool)
            bad = sorted({v for v in s if v is not None and v not in c["levels"]})
            if bad:
                raise DataError(
                    f"argument 'X': column {c['name']!r} holds undeclared level(s) {bad[:5]}; "
                    f"declared levels: {c['levels']}"
                )
            for lev in c["levels"][1:]:
                cols.append(np.array([v == lev for v in s], dtype=np.float64))
        else:
            if c["type"] == "binary" and not pd.api.types.is_numeric_dtype(raw):
                s = _as_level_strings(raw)
                lv = {c["levels"][0]: 0.0, c["levels"][1]: 1.0, "0": 0.0, "1": 1.0}
                bad = sorted({v for v in s if v is not None and v not in lv})
                if bad:
                    raise DataError(
                        f"argument 'X': binary column {c['name']!r} holds {bad[:5]}; "
                        f"levels: {c['levels']}"
                    )
                x = np.array([np.nan if v is None else lv[v] for v in s], dtype=np.float64)
            else:
                try:
                    x = (
                        pd.to_numeric(raw, errors="raise")
                        .astype("float64")
                        .to_numpy(dtype=np.float64, na_value=np.nan)
                    )
                except (TypeError, ValueError):
                    raise DataError(f"argument 'X': column {c['name']!r} must be numeric") from None
            isna = np.isnan(x)
            x = np.where(isna, c["mean"], x)
            cols.append((x - c["center"]) / c["scale"])
        if c["indicator"]:
            cols.append(isna.astype(np.float64))
    if not cols:
        return np.empty((n, 0))
    return np.column_stack(cols).astype(np.float64, copy=False)


# =====================================================================================
# the registered computation: preprocess_moments
# =====================================================================================
def validate_moments(params: dict[str, Any], descriptor: Any, policy: Any) -> dict[str, Any]:
    """Check a ``preprocess_moments`` request; every error names the parameter.

    Parameters (JSON): ``columns`` (feature names), ``categorical`` (names to
    one-hot; categorical-typed columns are one-hot anyway), ``target``,
    ``missing``, ``n_params`` (int, or ``"design"``: 1 + this site's design
    columns without indicators), ``holdout``.
    """
    if not isinstance(params, dict):
        raise PolicyDenied("preprocess_moments: params must be an object")
    allowed = {"columns", "categorical", "target", "missing", "n_params", "holdout", "positive"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise PolicyDenied(f"preprocess_moments: unknown parameter(s) {unknown}")
    cols = params.get("columns")
    if (
        not isinstance(cols, list)
        or not cols
        or len(cols) > MAX_COLUMNS
        or not all(isinstance(c, str) and c for c in cols)
    ):
        raise PolicyDenied(f"parameter 'columns' must be a list of 1..{MAX_COLUMNS} column names")
    if len(set(cols)) != len(cols):
        raise PolicyDenied("parameter 'columns' lists a column twice")
    cat = params.get("categorical") or []
    if not isinstance(cat, list) or not all(isinstance(c, str) for c in cat):
        raise PolicyDenied("parameter 'categorical' must be a list of column names")
    extra = sorted(set(cat) - set(cols))
    if extra:
        raise PolicyDenied(f"parameter 'categorical': {extra} not in 'columns'")
    target = params.get("target")
    if target is not None:
        if not isinstance(target, str):
            raise PolicyDenied("parameter 'target' must be a column name")
        descriptor.column(target)
        if target in cols:
            raise PolicyDenied(f"parameter 'columns': the target {target!r} cannot be a feature")
    kinds: dict[str, str] = {}
    for c in cols:
        spec = descriptor.column(c)
        if spec.type == "id":
            raise PolicyDenied(f"parameter 'columns': {c!r} is the patient id column")
        if spec.type == "categorical":
            if spec.levels is None:
                raise DataError(
                    f"parameter 'columns': categorical column {c!r} declares no levels; "
                    "one-hot encoding needs the declared levels"
                )
            if len(spec.levels) > policy.max_levels:
                raise PolicyDenied(
                    f"parameter 'columns': {c!r} has {len(spec.levels)} levels, more than this "
                    f"site's max_levels = {policy.max_levels}"
                )
            kinds[c] = "categorical"
        elif c in cat and spec.type != "binary":  # a binary column one-hot is itself
            raise DataError(
                f"parameter 'categorical': {c!r} is {spec.type} at this site, not categorical"
            )
        else:
            kinds[c] = "binary" if spec.type == "binary" else "numeric"
    missing = params.get("missing", "indicator")
    if missing not in MISSING_MODES:
        raise PolicyDenied(f"parameter 'missing' must be one of {list(MISSING_MODES)}")
    n_params = params.get("n_params", 0)
    if n_params == "design":
        n_params = 1 + sum(
            len(descriptor.column(c).levels) - 1 if k == "categorical" else 1
            for c, k in kinds.items()
        )
    if isinstance(n_params, bool) or not isinstance(n_params, int) or n_params < 0:
        raise PolicyDenied("parameter 'n_params' must be a non-negative integer or 'design'")
    return {
        "columns": list(cols),
        "kinds": kinds,
        "target": target,
        "missing": missing,
        "n_params": n_params,
        "holdout": validate_holdout(params.get("holdout")),
    }


def run_moments(con: Any, descriptor: Any, params: dict[str, Any], policy: Any) -> ModelStatistics:
    """Node side: row count, missing counts, sums and centred sums of squares, declared levels.

    One DuckDB scan, into the node's raw column store (:func:`cached_design`
    assembles the fit's design matrix from it, so the fit's rounds do not scan
    again); the statistics are computed from it in numpy (deterministic: a
    repeated round gives bit-identical moments). Means/SDs of a column observed in fewer than
    ``min_subset`` rows are not released (the site declines, naming the column).
    """
    cols, kinds = params["columns"], params["kinds"]
    structure = _raw_structure(descriptor, [(c, kinds[c]) for c in cols])
    _, raw = _raw_columns(
        con,
        descriptor,
        structure,
        params["missing"],
        params["target"],
        holdout_sql(descriptor, params["holdout"]),
    )
    n = raw.n
    k = len(cols)
    sums, m2, n_missing, types = np.zeros(k), np.zeros(k), [], np.zeros(k)
    arrays: dict[str, np.ndarray] = {}
    for i, c in enumerate(cols):
        missing = raw.missing(c)
        miss = int(np.count_nonzero(missing))
        n_obs = n - miss
        if 0 < miss < policy.min_cell_count:
            raise ThresholdViolation(
                f"column {c!r} has fewer than {policy.min_cell_count} missing values at this "
                "site; that count is not released (drop the column or use missing='drop')"
            )
        n_missing.append(miss)
        types[i] = _TYPE_CODES[kinds[c]]
        if kinds[c] == "categorical":
            levels = list(descriptor.column(c).levels)
            arrays[f"levels.{c}"] = np.frombuffer(json.dumps(levels).encode(), dtype=np.uint8)
            continue
        if 0 < n_obs < policy.min_subset:
            raise ThresholdViolation(
                f"column {c!r} is observed in fewer than {policy.min_subset} rows at this site; "
                "its mean is not released"
            )
        if n_obs:
            x = raw.cols[c] if not miss else raw.cols[c][~missing]
            sums[i] = float(np.sum(x))
            if n_obs > 1:
                d = x - sums[i] / n_obs
                m2[i] = float(d @ d)
        if kinds[c] == "binary":
            levels = list(descriptor.column(c).levels or ("0", "1"))
            arrays[f"levels.{c}"] = np.frombuffer(json.dumps(levels).encode(), dtype=np.uint8)
    arrays.update({"sum": sums, "m2": m2, "types": types})
    return ModelStatistics(
        arrays=arrays, n_rows=n, n_params=int(params["n_params"]), counts={"n_missing": n_missing}
    )


def _levels_from_reply(reply: dict[str, Any], col: str) -> list[str]:
    raw = array_from_reply(reply, f"levels.{col}").astype(np.uint8).tobytes()
    return [str(v) for v in json.loads(raw.decode())]


def build_spec(
    site_replies: dict[str, dict[str, Any]],
    columns: Sequence[str],
    missing: str = "indicator",
    standardize: bool = True,
) -> dict[str, Any]:
    """Hub side: the preprocessing spec from the sites' ``preprocess_moments`` replies.

    Pooled mean and SD (ddof=1) of every numeric column over observed values by
    Chan et al.'s parallel formula; indicators for columns missing anywhere;
    declared levels checked to agree across sites.

    Raises
    ------
    DataError
        Sites disagree on a column's type or declared levels (message names the sites).
    """
    if not site_replies:
        raise DataError("no site contributed to the preprocessing moments")
    sites = sorted(site_replies)
    k = len(columns)
    types = {s: array_from_reply(site_replies[s], "types").astype(int) for s in sites}
    n_rows = {s: int(site_replies[s]["n_rows"]) for s in sites}
    miss = {s: np.asarray(site_replies[s]["counts"]["n_missing"], dtype=float) for s in sites}
    sums = {s: array_from_reply(site_replies[s], "sum") for s in sites}
    m2s = {s: array_from_reply(site_replies[s], "m2") for s in sites}
    out_cols: list[dict[str, Any]] = []
    for i, name in enumerate(columns):
        codes = {s: int(types[s][i]) for s in sites}
        if len(set(codes.values())) != 1:
            detail = ", ".join(f"{s}: {_CODE_TYPES[c]}" for s, c in codes.items())
            raise DataError(f"column {name!r} has different types at the sites ({detail})")
        ctype = _CODE_TYPES[codes[sites[0]]]
        n_miss = sum(miss[s][i] for s in sites)
        indicator = bool(missing == "indicator" and n_miss > 0)
        if ctype in ("categorical", "binary"):
            lv = {s: _levels_from_reply(site_replies[s], name) for s in sites}
            if len({json.dumps(v) for v in lv.values()}) != 1:
                detail = "; ".join(f"{s}: {v}" for s, v in lv.items())
                raise DataError(
                    f"column {name!r}: the sites declare different levels ({detail}); "
                    "harmonise the descriptors first"
                )
            levels = lv[sites[0]]
        if ctype == "categorical":
            out_cols.append(
                {"name": name, "type": "categorical", "levels": levels, "indicator": indicator}
            )
            continue
        # Chan et al.: pooled count, mean and centred sum of squares over observed values.
        n_tot, mean, m2 = 0.0, 0.0, 0.0
        for s in sites:
            nb = n_rows[s] - miss[s][i]
            if nb <= 0:
                continue
            mb = sums[s][i] / nb
            delta = mb - mean
            tot = n_tot + nb
            m2 = m2 + m2s[s][i] + delta * delta * n_tot * nb / tot
            mean = mean + delta * nb / tot
            n_tot = tot
        sd = math.sqrt(m2 / (n_tot - 1)) if n_tot > 1 else 0.0
        entry: dict[str, Any] = {"name": name, "type": ctype, "mean": float(mean)}
        if ctype == "numeric" and standardize:
            entry.update(center=float(mean), scale=float(sd) if sd > 0 else 1.0)
        else:
            entry.update(center=0.0, scale=1.0)
        if ctype == "binary":
            entry["levels"] = levels
        entry["indicator"] = indicator
        out_cols.append(entry)
    assert len(out_cols) == k
    return {
        "kind": SPEC_KIND,
        "version": SPEC_VERSION,
        "missing": missing,
        "standardize": bool(standardize),
        "n_rows": int(sum(n_rows.values())),
        "columns": out_cols,
    }


def combine_moments(site_replies: dict[str, dict[str, Any]], params: dict[str, Any]) -> dict:
    """``Federation.run`` combine: the spec (standardised) from one round of moments."""
    return build_spec(site_replies, params["columns"], params.get("missing", "indicator"))


def _register() -> None:
    from healthfed.compute.registry import Computation, register

    register(
        Computation(
            name=PREPROCESS_MOMENTS,
            description="Row count, missing counts, sums and centred sums of squares of "
            "features, declared levels: the shared preprocessing spec in one round.",
            validate=validate_moments,
            run=run_moments,
            combine=combine_moments,
        )
    )


_register()


# =====================================================================================
# hub side: the estimator-style object
# =====================================================================================
class FederatedPreprocessor:
    """The shared preprocessing of a federated model, fitted in one round.

    Parameters
    ----------
    columns
        Feature columns, in design order.
    categorical
        Columns to one-hot (categorical-typed columns are one-hot whether listed
        or not; listing a non-categorical column is refused by the sites).
    missing
        ``"indicator"`` (pooled-mean imputation plus ``<col>_missing``) or
        ``"drop"`` (complete cases).
    standardize
        Z-score numeric/integer columns with the pooled mean and SD.

    Attributes
    ----------
    spec_ : dict
        The JSON spec every site applies.
    feature_names_ : list of str
        Design-matrix column names.
    sites_ : list of str
        Sites whose moments shaped the spec; ``refused_`` maps the others to their reason.
    """

    def __init__(
        self,
        columns: Sequence[str],
        categorical: Sequence[str] | None = None,
        missing: str = "indicator",
        standardize: bool = True,
    ) -> None:
        self.columns = columns
        self.categorical = categorical
        self.missing = missing
        self.standardize = standardize

    def fit(
        self,
        federation: Any,
        dataset: str,
        target: str | None = None,
        *,
        n_params: int | str = 0,
        holdout: dict[str, Any] | None = None,
    ) -> FederatedPreprocessor:
        """One ``preprocess_moments`` round; builds ``spec_``.

        Parameters
        ----------
        federation
            A ``Federation``.
        dataset, target
            Dataset name; rows with a missing ``target`` are left out, as in training.
        n_params
            Parameters of the model the spec is for (or ``"design"``: the
            intercept plus each site's design columns), so sites too small for
            the model decline now rather than after shaping the spec.
        holdout
            FedAvg-style ``{"fraction", "seed", "part"}`` row split.
        """
        if self.missing not in MISSING_MODES:
            raise PolicyDenied(f"argument 'missing' must be one of {list(MISSING_MODES)}")
        params: dict[str, Any] = {
            "columns": list(self.columns),
            "categorical": list(self.categorical or []),
            "missing": self.missing,
            "n_params": n_params,
        }
        if target is not None:
            params["target"] = target
        if holdout is not None:
            params["holdout"] = holdout
        out = federation.round(PREPROCESS_MOMENTS, dataset, params)
        min_sites = int(getattr(federation, "min_sites", 2))
        if len(out.replies) < min_sites:
            raise ThresholdViolation(
                f"preprocess_moments on {dataset!r}: {len(out.replies)} site(s) contributed "
                f"({', '.join(sorted(out.replies)) or 'none'}), at least {min_sites} needed; "
                f"refused: {out.refused}; missing: {out.missing}; errors: {out.errors}"
            )
        self.spec_ = build_spec(out.replies, list(self.columns), self.missing, self.standardize)
        self.feature_names_ = feature_names(self.spec_)
        self.sites_ = sorted(out.replies)
        self.refused_ = dict(out.refused)
        self.missing_sites_ = list(out.missing)
        return self

    def transform(self, frame: Any) -> np.ndarray:
        """The design matrix (no intercept) of a pandas frame, as the sites build it."""
        if not hasattr(self, "spec_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("FederatedPreprocessor is not fitted; call fit() first")
        return transform_frame(frame, self.spec_)

    def to_spec(self) -> dict[str, Any]:
        """The JSON spec (a copy)."""
        return json.loads(json.dumps(self.spec_))
