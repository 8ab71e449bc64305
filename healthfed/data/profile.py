"""The data steward's profile of a dataset: what ``healthfed node check`` prints.

:func:`profile_dataset` scans the view ``data`` (declared types, canonical units)
once and reports, per column, the missing values, the values outside the declared
bounds, the count of each level, and warnings:

* **out of bounds**: values below or above the declared ``bounds``. They move means
  and SDs, while histograms and quantiles count them in the edge bins, so a check
  with values out of bounds fails (``node check --allow-out-of-bounds`` passes it).
  Counts are rounded (:func:`rounded_count`) and no value is ever shown.
* **all missing**: a column without a single value.
* **unit**: a column whose values fit another known unit of the variable (see
  :func:`healthfed.data.harmonise.alternative_units`) far better than the declared
  one. "Fit" compares the values' 1st-99th percentile range with the declared
  bounds: the declared unit is suspect when the values span less than a tenth of
  the bounds or more than 1 % of them fall outside, and another unit is proposed
  when, read in it, they would span between a tenth and all of the bounds with none
  outside -- CRP in mg/dL declared as mg/L spans a tenth of what it should.

Nothing here leaves the node: the profile is for the steward's terminal.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb

from healthfed.data.harmonise import alternative_units, canonical_unit, conversion
from healthfed.data.sql import quote_ident

if TYPE_CHECKING:
    from healthfed.data.dataset import NodeDataset

__all__ = ["ColumnProfile", "DatasetProfile", "profile_dataset", "rounded_count"]

#: Out-of-bounds counts are shown rounded to this base (and at least this when not 0).
ROUNDING = 5


def rounded_count(n: int, base: int = ROUNDING) -> int:
    """``n`` rounded to the nearest multiple of ``base``; any ``n > 0`` shows as at least ``base``."""
    if n <= 0:
        return 0
    return max(base, int(base * math.floor(n / base + 0.5)))


@dataclass(frozen=True)
class ColumnProfile:
    """One column as the steward's check sees it (counts exact, out of bounds rounded)."""

    name: str
    type: str
    unit: str | None
    missing: int
    bounds: tuple[float, float] | None = None
    below: int = 0  # rounded
    above: int = 0  # rounded
    levels: dict[str, int] | None = None  # declared (or observed) level -> count
    warnings: tuple[str, ...] = ()

    @property
    def out_of_bounds(self) -> bool:
        return bool(self.below or self.above)


@dataclass(frozen=True)
class DatasetProfile:
    """A dataset's check: rows, per-column profiles, and whether it passes."""

    name: str
    file: str
    n_rows: int
    columns: dict[str, ColumnProfile]
    errors: list[str] = field(default_factory=list)

    @property
    def out_of_bounds(self) -> list[str]:
        return [c.name for c in self.columns.values() if c.out_of_bounds]

    @property
    def warnings(self) -> list[str]:
        return [w for c in self.columns.values() for w in c.warnings]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (the counts under ``below``/``above`` are rounded)."""
        return {
            "name": self.name,
            "file": self.file,
            "rows": self.n_rows,
            "errors": list(self.errors),
            "out_of_bounds": self.out_of_bounds,
            "warnings": self.warnings,
            "rounding": f"out-of-bounds counts rounded to a multiple of {ROUNDING}",
            "columns": {
                name: {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(c).items()}
                for name, c in self.columns.items()
            },
        }


def _fmt(x: float) -> str:
    return f"{int(x)}" if float(x).is_integer() else f"{x:g}"


def profile_dataset(ds: NodeDataset) -> DatasetProfile:
    """Profile a dataset that passed validation (:meth:`NodeDataset.validate`)."""
    d = ds.descriptor
    from healthfed.data.dataset import leased_connection  # dataset imports this module

    with leased_connection(ds) as con:
        return _profile(con, ds, d)


def _profile(con: duckdb.DuckDBPyConnection, ds: NodeDataset, d: Any) -> DatasetProfile:
    aggs = ["count(*)"]
    slots: dict[str, dict[str, int]] = {}

    def slot(col: str, what: str, sql: str) -> None:
        slots.setdefault(col, {})[what] = len(aggs)
        aggs.append(sql)

    alternatives: dict[str, list[tuple[str, Any]]] = {}
    for name, spec in d.columns.items():
        q = quote_ident(name)
        slot(name, "count", f"count({q})")
        if spec.is_numeric and spec.bounds is not None:
            low, high = spec.bounds
            slot(name, "below", f"count(*) FILTER (WHERE {q} < {low!r})")
            slot(name, "above", f"count(*) FILTER (WHERE {q} > {high!r})")
            alts = alternative_units(name, spec.unit)
            if alts:
                alternatives[name] = alts
                slot(name, "p01", f"quantile_cont({q}, 0.01)")
                slot(name, "p99", f"quantile_cont({q}, 0.99)")
                declared = conversion(name, spec.unit)
                # the file's value, then read in the other unit
                raw = f"({q} / {declared.factor!r} - {declared.offset!r})"
                for i, (_, conv) in enumerate(alts):
                    alt = f"(({raw} + {conv.offset!r}) * {conv.factor!r})"
                    slot(
                        name,
                        f"alt{i}",
                        f"count(*) FILTER (WHERE {alt} < {low!r} OR {alt} > {high!r})",
                    )
    row = con.execute(f"SELECT {', '.join(aggs)} FROM data").fetchone()
    assert row is not None
    n = int(row[0])
    columns: dict[str, ColumnProfile] = {}
    for name, spec in d.columns.items():
        s = slots[name]
        count = int(row[s["count"]])
        warnings: list[str] = []
        if count == 0 and spec.type != "id":
            warnings.append(f"column {name!r}: every value is missing")
        below = above = 0
        if "below" in s:
            below, above = int(row[s["below"]]), int(row[s["above"]])
        if name in alternatives and count:
            w = _unit_warning(name, spec, count, below + above, row, s, alternatives[name])
            if w:
                warnings.append(w)
        levels = None
        if spec.is_categorical:
            levels = _levels(con, name, spec)
        columns[name] = ColumnProfile(
            name=name,
            type=spec.type,
            unit=canonical_unit(name) if spec.unit and canonical_unit(name) else spec.unit,
            missing=n - count,
            bounds=spec.bounds,
            below=rounded_count(below),
            above=rounded_count(above),
            levels=levels,
            warnings=tuple(warnings),
        )
    label = "<frame>" if ds.in_memory else str(d.path)
    return DatasetProfile(name=d.name, file=label, n_rows=n, columns=columns)


def _levels(con: duckdb.DuckDBPyConnection, name: str, spec: Any) -> dict[str, int]:
    q = quote_ident(name)
    rows = con.execute(
        f"SELECT CAST({q} AS VARCHAR), count(*) FROM data WHERE {q} IS NOT NULL GROUP BY 1"
    ).fetchall()
    counts = {str(k): int(v) for k, v in rows}
    if spec.type == "binary":
        labels = spec.levels or ("0", "1")
        return {labels[i]: counts.get(str(i), 0) for i in (0, 1)}
    if spec.levels:
        return {lev: counts.get(lev, 0) for lev in spec.levels}
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def _unit_warning(
    name: str,
    spec: Any,
    count: int,
    outside: int,
    row: tuple[Any, ...],
    s: dict[str, int],
    alts: list[tuple[str, Any]],
) -> str | None:
    """The warning that another unit fits ``name``'s values far better, or None."""
    low, high = spec.bounds
    p01, p99 = float(row[s["p01"]]), float(row[s["p99"]])
    width = high - low
    span = (p99 - p01) / width
    if span >= 0.1 and outside <= 0.01 * count:
        return None  # the declared unit fits
    declared = conversion(name, spec.unit)
    best: tuple[float, str, float] | None = None
    for i, (unit, conv) in enumerate(alts):
        if int(row[s[f"alt{i}"]]):
            continue  # read in this unit, some values fall outside the bounds
        ratio = conv.factor / declared.factor  # affine maps keep the ordering; spans scale
        alt_span = span * ratio
        if not 0.1 <= alt_span <= 1.0:
            continue
        score = abs(math.log10(alt_span / 0.5))
        if best is None or score < best[0]:
            best = (score, unit, alt_span)
    if best is None:
        return None
    declared_unit = spec.unit or canonical_unit(name)
    why = (
        f"{rounded_count(outside)} (rounded) fall outside the declared bounds"
        if outside > 0.01 * count
        else f"the values span {100 * span:.0f}% of the declared bounds"
    )
    return (
        f"column {name!r}: its values fit unit {best[1]!r} better than the declared "
        f"{declared_unit!r}: {why} [{_fmt(low)}, {_fmt(high)}]; read as {best[1]!r} they "
        f"would span {100 * best[2]:.0f}% with none outside. Check the descriptor's 'unit'"
    )
