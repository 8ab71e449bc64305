"""Hub side of ``preprocess_moments``: the spec from the sites' pooled moments.

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
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from healthfed.compute.preprocess.spec import SPEC_KIND, SPEC_VERSION
from healthfed.errors import DataError
from healthfed.privacy.model_release import array_from_reply

__all__ = ["CODE_TYPES", "TYPE_CODES", "build_spec", "combine_moments"]

# How a ``preprocess_moments`` reply codes each column's kind (its "types" array).
TYPE_CODES = {"numeric": 0.0, "integer": 0.0, "binary": 1.0, "categorical": 2.0}
CODE_TYPES = {0: "numeric", 1: "binary", 2: "categorical"}


def _levels_from_reply(reply: dict[str, Any], col: str) -> list[str]:
    raw = array_from_reply(reply, f"levels.{col}").astype(np.uint8).tobytes()
    return [str(v) for v in json.loads(raw.decode())]


def _agreed_levels(site_replies: dict[str, dict[str, Any]], name: str) -> list[str]:
    """The declared levels of ``name``, which every site must declare alike."""
    lv = {s: _levels_from_reply(site_replies[s], name) for s in sorted(site_replies)}
    if len({json.dumps(v) for v in lv.values()}) != 1:
        detail = "; ".join(f"{s}: {v}" for s, v in lv.items())
        raise DataError(
            f"column {name!r}: the sites declare different levels ({detail}); "
            "harmonise the descriptors first"
        )
    return next(iter(lv.values()))


def _pooled_mean_sd(
    n_obs: Sequence[float], sums: Sequence[float], m2s: Sequence[float]
) -> tuple[float, float]:
    """Chan et al.: pooled mean and SD (ddof=1) from per-site counts, sums, centred SS."""
    n_tot, mean, m2 = 0.0, 0.0, 0.0
    for nb, sb, m2b in zip(n_obs, sums, m2s, strict=True):
        if nb <= 0:
            continue
        mb = sb / nb
        delta = mb - mean
        tot = n_tot + nb
        m2 = m2 + m2b + delta * delta * n_tot * nb / tot
        mean = mean + delta * nb / tot
        n_tot = tot
    sd = math.sqrt(m2 / (n_tot - 1)) if n_tot > 1 else 0.0
    return float(mean), sd


def _column_type(types: dict[str, np.ndarray], i: int, name: str) -> str:
    codes = {s: int(t[i]) for s, t in types.items()}
    if len(set(codes.values())) != 1:
        detail = ", ".join(f"{s}: {CODE_TYPES[c]}" for s, c in codes.items())
        raise DataError(f"column {name!r} has different types at the sites ({detail})")
    return CODE_TYPES[next(iter(codes.values()))]


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
    types = {s: array_from_reply(site_replies[s], "types").astype(int) for s in sites}
    n_rows = {s: int(site_replies[s]["n_rows"]) for s in sites}
    miss = {s: np.asarray(site_replies[s]["counts"]["n_missing"], dtype=float) for s in sites}
    sums = {s: array_from_reply(site_replies[s], "sum") for s in sites}
    m2s = {s: array_from_reply(site_replies[s], "m2") for s in sites}
    out_cols: list[dict[str, Any]] = []
    for i, name in enumerate(columns):
        ctype = _column_type(types, i, name)
        n_miss = sum(miss[s][i] for s in sites)
        indicator = bool(missing == "indicator" and n_miss > 0)
        levels = _agreed_levels(site_replies, name) if ctype != "numeric" else []
        if ctype == "categorical":
            out_cols.append(
                {"name": name, "type": "categorical", "levels": levels, "indicator": indicator}
            )
            continue
        mean, sd = _pooled_mean_sd(
            [n_rows[s] - miss[s][i] for s in sites],
            [sums[s][i] for s in sites],
            [m2s[s][i] for s in sites],
        )
        entry: dict[str, Any] = {"name": name, "type": ctype, "mean": mean}
        if ctype == "numeric" and standardize:
            entry.update(center=mean, scale=float(sd) if sd > 0 else 1.0)
        else:
            entry.update(center=0.0, scale=1.0)
        if ctype == "binary":
            entry["levels"] = levels
        entry["indicator"] = indicator
        out_cols.append(entry)
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
