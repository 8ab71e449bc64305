"""The SQL a node builds for a request, in one place: quoting, the cohort filter, the holdout split.

Requests are data, never code: a request names variables and levels, and the
node turns them into SQL here, with identifiers quoted and literals escaped (or
bound as DuckDB parameters where the caller can). No SQL text ever comes from a
request. Everything below validates first (naming the parameter) and only then
builds a predicate from the validated, normalised value.

* **Cohort filter** (``where``): ``{variable: level}`` for a categorical or binary
  variable, ``{variable: [low, high]}`` (closed) for a numeric one.
* **Holdout split** (``holdout``): ``{"fraction", "seed", "part"}``, a deterministic
  per-patient split from a hash of the patient id and the seed, so training and
  evaluation requests on the same site see complementary rows without the hub ever
  knowing which rows are which.
"""

from __future__ import annotations

import math
from typing import Any

from healthfed.errors import DataError, PolicyDenied
from healthfed.policy import SitePolicy

__all__ = [
    "MAX_WHERE",
    "holdout_sql",
    "quote_ident",
    "sql_literal",
    "validate_holdout",
    "validate_where",
    "where_sql",
]

MAX_WHERE = 4


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (a column name from a descriptor)."""
    return '"' + str(name).replace('"', '""') + '"'


def sql_literal(value: Any) -> str:
    """Quote an SQL string literal (a level name from a descriptor or a validated request)."""
    return "'" + str(value).replace("'", "''") + "'"


# --- cohort filter ---------------------------------------------------------------------------
def validate_where(
    where: Any, descriptor: Any, policy: SitePolicy, arg: str = "where"
) -> dict[str, Any]:
    """Check a ``where`` filter: ``{var: level}`` (categorical/binary) or ``{var: [lo, hi]}``.

    Returns the normalised filter (sorted keys; levels as strings; ranges as floats).
    """
    if where is None:
        return {}
    if not isinstance(where, dict):
        raise PolicyDenied(f"parameter {arg!r} must be an object {{variable: level or [lo, hi]}}")
    if len(where) > MAX_WHERE:
        raise PolicyDenied(f"parameter {arg!r}: at most {MAX_WHERE} conditions")
    out: dict[str, Any] = {}
    for var in sorted(where):
        spec = descriptor.columns.get(var) if isinstance(var, str) else None
        if spec is None:
            raise DataError(f"parameter {arg!r}: dataset has no variable {var!r}")
        if spec.type == "id":
            raise PolicyDenied(f"parameter {arg!r}: the patient id column cannot be filtered on")
        if spec.is_categorical:
            out[var] = _valid_level(where[var], var, spec, policy, arg)
        elif spec.is_numeric:
            out[var] = _valid_range(where[var], var, arg)
        else:  # pragma: no cover - every type is categorical, numeric or id
            raise PolicyDenied(f"parameter {arg!r}: cannot filter on {var!r}")
    return out


def _valid_level(cond: Any, var: str, spec: Any, policy: SitePolicy, arg: str) -> str:
    if isinstance(cond, bool) or not isinstance(cond, str | int):
        raise PolicyDenied(f"parameter {arg!r}: {var!r} needs a level (string)")
    level = str(cond)
    levels = spec.levels if spec.type != "binary" else ("0", "1")
    if levels is not None and level not in levels:
        raise DataError(f"parameter {arg!r}: {level!r} is not a level of {var!r}")
    if spec.levels is not None and len(spec.levels) > policy.max_levels:
        raise PolicyDenied(
            f"parameter {arg!r}: {var!r} has more than max_levels = {policy.max_levels}"
        )
    return level


def _valid_range(cond: Any, var: str, arg: str) -> list[float]:
    if (
        not isinstance(cond, list | tuple)
        or len(cond) != 2
        or not all(
            isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c)
            for c in cond
        )
        or float(cond[0]) > float(cond[1])
    ):
        raise PolicyDenied(f"parameter {arg!r}: {var!r} needs a range [low, high]")
    return [float(cond[0]), float(cond[1])]


def where_sql(where: dict[str, Any], descriptor: Any) -> str:
    """SQL predicate of a validated ``where`` filter (``TRUE`` when empty)."""
    parts = []
    for var, cond in sorted(where.items()):
        spec = descriptor.column(var)
        if isinstance(cond, list):
            parts.append(f"CAST({quote_ident(var)} AS DOUBLE) BETWEEN {cond[0]!r} AND {cond[1]!r}")
        elif spec.type == "binary":
            parts.append(
                f"CAST(CAST({quote_ident(var)} AS INTEGER) AS VARCHAR) = {sql_literal(cond)}"
            )
        else:
            parts.append(f"CAST({quote_ident(var)} AS VARCHAR) = {sql_literal(cond)}")
    return " AND ".join(parts) if parts else "TRUE"


# --- holdout split ---------------------------------------------------------------------------
def validate_holdout(holdout: Any) -> dict[str, Any] | None:
    """Check the ``holdout`` parameter: ``{"fraction": f, "seed": s, "part": "train"|"test"}``."""
    if holdout is None:
        return None
    if not isinstance(holdout, dict):
        raise PolicyDenied("parameter 'holdout' must be an object {fraction, seed, part}")
    try:
        frac = float(holdout["fraction"])
    except (KeyError, TypeError, ValueError):
        raise PolicyDenied("parameter 'holdout.fraction' must be a number in (0, 1)") from None
    if not 0 < frac < 1:
        raise PolicyDenied("parameter 'holdout.fraction' must be in (0, 1)")
    part = holdout.get("part", "train")
    if part not in ("train", "test"):
        raise PolicyDenied("parameter 'holdout.part' must be 'train' or 'test'")
    seed = holdout.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise PolicyDenied("parameter 'holdout.seed' must be an integer")
    return {"fraction": frac, "seed": seed, "part": part}


def holdout_sql(descriptor: Any, holdout: dict[str, Any] | None) -> str:
    """SQL predicate keeping one part of a validated per-patient split, or ``TRUE``."""
    if not holdout:
        return "TRUE"
    frac = float(holdout["fraction"])
    seed = int(holdout.get("seed", 0))
    idc = quote_ident(descriptor.id_column)
    u = f"(hash(CAST({idc} AS VARCHAR) || ':{seed}') % 1000000) / 1000000.0"
    return f"{u} < {frac!r}" if holdout.get("part", "train") == "test" else f"{u} >= {frac!r}"
