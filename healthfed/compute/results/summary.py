"""Hub-side results of ``table1`` and ``describe``: pooled and per-site summaries.

Pooled as :mod:`healthfed.compute.results.pooling` says (a pooled cell is ``None``
as soon as one contributing site withheld it); a site that withheld its patient
count (too few patients) is left out of the pooled values instead of turning every
one into ``None``, and ``left_out`` (and the text footer) says so. Every result has
``sites`` (contributing sites), ``suppressed_cells`` (the sites' total) and
``withheld`` (the same, by rule: primary, zero cell, complementary, statistics),
``to_frame()``, ``to_dict()`` (JSON-able, suppressed values ``None``) and
``to_text()``. The federation sets ``missing_sites``, ``refusals``, ``engine``
and ``elapsed_s`` after combining.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from healthfed.compute.quantiles import pooled_quantiles
from healthfed.compute.results.pooling import (
    ALL,
    MISSING,
    OVERALL,
    POOLED,
    SUPP,
    TOTAL,
    Cells,
    disclosed_cells,
    html_table,
    perturbation_of,
    perturbed_cells,
    pool_counts,
    pool_moments,
    reply_sites,
)

__all__ = ["DescribeResult", "SummaryResult", "Table1Result", "combine_summary"]


def _pname(p: float) -> str:
    return f"p{100 * p:g}"


def _records_numeric(
    rec: list[dict[str, Any]],
    site: str,
    v: str,
    col: str,
    n: int | None,
    missing: int | None,
    parts: list[dict[str, Any]] | None,
    probs: list[float],
) -> list[str]:
    """Append ``v``'s rows; return the quantiles whose bracket is not guaranteed (``p75``)."""

    def add(row: str, value: Any) -> None:
        rec.append({"site": site, "variable": v, "row": row, "group": col, "value": value})

    add("n", n)
    add("missing", missing)
    m = pool_moments(parts) if parts else None
    add("mean", None if m is None else m["mean"])
    add("sd", None if m is None else m["sd"])
    if m is not None and "min" in m:
        add("min", m["min"])
        add("max", m["max"])
    qs = None
    if m is not None and m["hists"] is not None and probs:
        qs = pooled_quantiles([(h["edges"], h["counts"]) for h in m["hists"]], probs)
    for i, p in enumerate(probs):
        q = qs[i] if qs else None
        add(_pname(p), None if q is None else q.estimate)
        add(_pname(p) + "_lo", None if q is None else q.lo)
        add(_pname(p) + "_hi", None if q is None else q.hi)
    return [_pname(q.p) for q in qs or [] if not q.guaranteed]


@dataclass
class SummaryResult:
    """Pooled and per-site summaries of a ``table1`` or ``describe`` request.

    Attributes
    ----------
    records
        Long format: dicts ``site`` ("pooled" or a site name), ``variable``,
        ``row`` (``n``, ``missing``, ``mean``, ``sd``, ``p50``, ``p50_lo``,
        ``p50_hi``, a level, ``<level> %``...), ``group`` (``overall`` or a level
        of ``by``), ``value`` (``None`` = suppressed or undefined).
    """

    computation: str
    variables: list[str]
    kinds: dict[str, str]
    by: str | None
    groups: list[str]
    sites: list[str]
    quantiles: list[float]
    suppressed_cells: int
    records: list[dict[str, Any]]
    missing_sites: list[str] = field(default_factory=list)
    refusals: dict[str, str] = field(default_factory=dict)
    engine: str | None = None
    elapsed_s: float = 0.0
    perturbed_cells: int = 0
    perturbation: dict[str, Any] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    withheld: dict[str, int] = field(default_factory=dict)
    #: Quantile brackets that reach a declared bound ("age p75", "age p75 [death_28d=1]",
    #: "age p75 at hospital_2"): they hold only if no value lay outside the bounds.
    unguaranteed: list[str] = field(default_factory=list)
    #: public descriptor metadata per variable (and ``by``): label, unit, levels
    labels: dict[str, Any] = field(default_factory=dict)
    #: each site's withheld values by rule (what its reply says)
    site_withheld: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        """``overall`` then the groups of ``by``; the ``(missing)`` group only if non-empty."""
        return [OVERALL, *self.groups]

    @property
    def n_total(self) -> int | None:
        """Pooled number of patients (``None`` if a site withheld its total)."""
        return self.value("N", "patients", OVERALL)

    def value(self, variable: str, row: str, group: str = OVERALL, site: str = POOLED) -> Any:
        """One value of the long records (``None`` when suppressed or absent)."""
        for r in self.records:
            if (r["site"], r["variable"], r["row"], r["group"]) == (site, variable, row, group):
                return r["value"]
        return None

    def _long(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(
            self.records, columns=["site", "variable", "row", "group", "value"]
        )

    def _wide(self, site: str = POOLED) -> pd.DataFrame:
        df = self._long()
        df = df[(df["site"] == site) & df["group"].isin(self.columns)]
        order = list(dict.fromkeys(zip(df["variable"], df["row"], strict=True)))
        wide = df.pivot_table(
            index=["variable", "row"],
            columns="group",
            values="value",
            aggfunc="first",
            dropna=False,
        )
        wide = wide.reindex(index=pd.MultiIndex.from_tuples(order, names=["variable", "row"]))
        wide = wide.reindex(columns=self.columns).astype(float)
        wide.columns.name = None
        return wide

    def to_frame(self, per_site: bool = False) -> pd.DataFrame:
        """Pooled wide frame (rows variable/row, columns overall + groups), or long per site."""
        if per_site:
            return self._long()
        return self._wide()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: metadata, pooled rows and per-site rows; suppressed values are None."""

        def rows(site: str) -> list[dict[str, Any]]:
            out: dict[tuple[str, str], dict[str, Any]] = {}
            for r in self.records:
                if r["site"] == site and r["group"] in self.columns:
                    out.setdefault(
                        (r["variable"], r["row"]),
                        {"variable": r["variable"], "row": r["row"], "values": {}},
                    )["values"][r["group"]] = r["value"]
            return list(out.values())

        return {
            "computation": self.computation,
            "variables": self.variables,
            "by": self.by,
            "columns": self.columns,
            "sites": self.sites,
            "missing_sites": list(self.missing_sites),
            "quantiles": self.quantiles,
            "n_total": self.n_total,
            "suppressed_cells": self.suppressed_cells,
            "left_out": dict(self.left_out),
            "withheld": dict(self.withheld),
            "withheld_by_site": self.withheld_by_site(),
            "withheld_cells": self.withheld_cells(),
            "labels": dict(self.labels),
            "perturbed_cells": self.perturbed_cells,
            "perturbation": dict(self.perturbation),
            "unguaranteed_brackets": list(self.unguaranteed),
            "pooled": rows(POOLED),
            "per_site": {s: rows(s) for s in self.sites},
        }

    # --- readable output --------------------------------------------------------------
    def label(self, variable: str) -> str:
        """The descriptor's description of ``variable`` (else its name)."""
        return str((self.labels.get(variable) or {}).get("label") or variable)

    def unit(self, variable: str) -> str | None:
        """The unit the released values of ``variable`` are in (``None``: none declared)."""
        return (self.labels.get(variable) or {}).get("unit")

    def level_label(self, variable: str | None, level: str) -> str:
        """A level as the descriptor names it (a binary's ``0``/``1`` by its declared levels)."""
        if variable is None:
            return level
        levels = (self.labels.get(variable) or {}).get("levels")
        binary = self.kinds.get(variable, "binary") == "binary"
        if binary and level in ("0", "1"):
            if levels and len(levels) == 2 and list(levels) != ["0", "1"]:
                return str(levels[int(level)])
            return f"{'yes' if level == '1' else 'no'} ({level})"
        return level

    def group_header(self, group: str) -> str:
        """Column header of a group: ``overall`` or ``<by> = <level>``."""
        if group == OVERALL or self.by is None:
            return group
        if group == MISSING:
            return f"{self.by} missing"
        return f"{self.by} = {self.level_label(self.by, group)}"

    def withheld_by_site(self) -> dict[str, str]:
        """Why each site withheld values, in words (from the rules its reply counts)."""
        out: dict[str, str] = {}
        for site, counts in self.site_withheld.items():
            parts = [f"{n} {WITHHELD_WHY.get(k, k)}" for k, n in counts.items() if n]
            if parts:
                out[site] = "; ".join(parts)
        for site, why in self.left_out.items():
            out[site] = why
        return out

    def withheld_cells(self) -> list[dict[str, Any]]:
        """Every pooled value that is withheld: where, which site(s) withheld it, why.

        A pooled value is withheld as soon as one contributing site withheld its
        part; ``sites`` names them, ``why`` gives each one's rules (the site does
        not say which rule withheld which cell: that would tell more about it).
        """
        pooled: dict[tuple[str, str, str], Any] = {}
        by_site: dict[tuple[str, str, str], list[str]] = {}
        for r in self.records:
            key = (r["variable"], r["row"], r["group"])
            if r["site"] == POOLED:
                pooled[key] = r["value"]
            elif r["value"] is None and r["site"] not in self.left_out:
                by_site.setdefault(key, []).append(r["site"])
        why = self.withheld_by_site()
        out = []
        for key, value in pooled.items():
            if value is not None or key[2] not in self.columns or key[1].endswith(" %"):
                continue
            count_row = "n" if self.kinds.get(key[0]) in ("numeric", "integer") else key[1]
            sites = [
                s
                for s in by_site.get(key, [])
                if self.value(key[0], count_row, key[2], site=s) != 0
            ]
            if not sites:
                continue
            out.append(
                {
                    "variable": key[0],
                    "row": key[1],
                    "group": key[2],
                    "sites": sites,
                    "why": {s: why.get(s, "statistics of too few patients") for s in sites},
                }
            )
        return out

    def _fmt(self, x: Any, digits: int = 1) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return SUPP
        if isinstance(x, int) or float(x).is_integer() and digits == 0:
            return f"{int(x)}"
        return f"{x:.{digits}f}"

    def _footer(self) -> str:
        lines = [
            f"Sites contributed: {', '.join(self.sites)}",
            f"Cells suppressed by the sites' policies: {self.suppressed_cells} "
            f"('{SUPP}' = withheld, never 0)",
        ]
        why = {k: v for k, v in self.withheld.items() if v}
        if why:
            lines.append(
                "Withheld, by rule: "
                + ", ".join(f"{v} {WITHHELD_WHY.get(k, k)}" for k, v in why.items())
            )
        by_site = {s: w for s, w in self.withheld_by_site().items() if s not in self.left_out}
        if by_site:
            lines.append("Withheld by site: " + "; ".join(f"{s}: {w}" for s, w in by_site.items()))
        if self.left_out:
            lines.append(
                "Left out of the pooled values (pooled over the other sites): "
                + "; ".join(f"{s} ({why})" for s, why in self.left_out.items())
            )
        if self.perturbed_cells:
            lines.append(
                f"Cells perturbed by the sites (cell key method, unbiased, bounded noise): "
                f"{self.perturbed_cells}"
            )
        if self.missing_sites:
            lines.append(f"No answer: {', '.join(self.missing_sites)}")
        if self.quantiles:
            pooled = [u for u in self.unguaranteed if " at " not in u]
            if not pooled:
                lines.append(
                    "Quantiles are estimated from merged-bin histograms; brackets [_lo, _hi] "
                    "in to_frame() are guaranteed to contain the pooled sample quantile."
                )
            else:
                shown = ", ".join(pooled[:8]) + (
                    f" and {len(pooled) - 8} more" if len(pooled) > 8 else ""
                )
                lines.append(
                    "Quantiles are estimated from merged-bin histograms; brackets [_lo, _hi] "
                    "in to_frame() are guaranteed to contain the pooled sample quantile, except "
                    f"{shown}: their brackets reach a declared bound, so they hold only if no "
                    "value lies outside the bounds (each site's `healthfed node check` reports such values)."
                )
        return "\n".join(lines)

    def to_text(self) -> str:  # pragma: no cover - overridden
        return self._wide().to_string()


class Table1Result(SummaryResult):
    """A federated Table 1.

    ``to_frame()``: rows ``(variable, row)`` -- ``("N", "patients")``, per numeric
    variable ``n``, ``missing``, ``mean``, ``sd``, ``p25``/``p50``/``p75`` with
    ``_lo``/``_hi`` brackets, per categorical variable each level's count and
    ``"<level> %"`` (percent of the column's patients; binary variables show
    level ``1`` only) and ``(missing)`` -- columns ``overall`` and each group.
    ``to_frame(per_site=True)`` is the long format with a ``site`` column.
    ``to_text()`` is the conventional formatted table.
    """

    def _formatted(self) -> pd.DataFrame:
        w = self._wide()
        out: dict[str, dict[str, str]] = {}
        first: dict[str, str] = {}  # each variable's first row (where its SMD goes)

        def get(v: str, r: str, c: str) -> Any:
            try:
                x = w.loc[(v, r), c]
            except KeyError:
                return None
            return None if pd.isna(x) else x

        def put(v: str, key: str, c: str, text: str) -> None:
            first.setdefault(v, key)
            out.setdefault(key, {})[c] = text

        for c in self.columns:
            out.setdefault("N", {})[c] = self._fmt(get("N", "patients", c), 0)
        probs = self.quantiles
        for v in self.variables:
            if self.kinds.get(v) in ("numeric", "integer"):
                name = f"{v} ({self.unit(v)})" if self.unit(v) else v
                for c in self.columns:
                    m, s = get(v, "mean", c), get(v, "sd", c)
                    put(
                        v,
                        f"{name}, mean (SD)",
                        c,
                        SUPP if m is None else f"{m:.1f} ({self._fmt(s)})",
                    )
                    if 0.5 in probs:
                        med = get(v, "p50", c)
                        lo = get(v, "p25", c) if 0.25 in probs else None
                        hi = get(v, "p75", c) if 0.75 in probs else None
                        label = (
                            f"{name}, median [IQR]"
                            if 0.25 in probs and 0.75 in probs
                            else f"{name}, median"
                        )
                        text = SUPP if med is None else f"{med:.1f}"
                        if med is not None and 0.25 in probs and 0.75 in probs:
                            text += f" [{self._fmt(lo)}, {self._fmt(hi)}]"
                        put(v, label, c, text)
                    put(v, f"{name}, missing", c, self._fmt(get(v, "missing", c), 0))
            else:
                levels = [r for (vv, r) in w.index if vv == v and not r.endswith(" %")]
                for lv in levels:
                    shown = lv if lv == MISSING else self.level_label(v, lv)
                    for c in self.columns:
                        n, pct = get(v, lv, c), get(v, f"{lv} %", c)
                        text = SUPP if n is None else f"{int(n)}"
                        if n is not None and pct is not None:
                            text += f" ({pct:.1f}%)"
                        put(v, f"{v} = {shown}, n (%)", c, text)
        frame = pd.DataFrame.from_dict(out, orient="index")[self.columns]
        frame.columns = [self.group_header(c) for c in self.columns]
        if self.two_groups() is not None:
            smd = {key: self.smd(v) for v, key in first.items()}
            frame["SMD"] = ["" if smd.get(k) is None else f"{smd[k]:.2f}" for k in frame.index]
        return frame

    # --- the readable table: labels, units, rounding, SMD, why cells are withheld -------
    def two_groups(self) -> list[str] | None:
        """The two groups an SMD compares (``by`` with exactly two non-missing levels)."""
        groups = [g for g in self.groups if g != MISSING]
        return groups if self.by is not None and len(groups) == 2 else None

    def smd(self, variable: str) -> float | None:
        """Standardised mean difference of ``variable`` between the two groups of ``by``.

        Numeric: ``(m1 - m0) / sqrt((s1^2 + s0^2) / 2)``; binary: the same on the
        proportions; categorical: Yang & Dalton's multivariate SMD over the levels
        (first level the reference). ``None`` without exactly two groups or when a
        value it needs is withheld. Computed from the released pooled values only.
        """
        pair = self.two_groups()
        if pair is None:
            return None
        g0, g1 = pair
        if self.kinds.get(variable) in ("numeric", "integer"):
            m0, m1 = self.value(variable, "mean", g0), self.value(variable, "mean", g1)
            s0, s1 = self.value(variable, "sd", g0), self.value(variable, "sd", g1)
            if None in (m0, m1, s0, s1):
                return None
            pooled = math.sqrt((s0**2 + s1**2) / 2.0)
            return None if pooled == 0 else (m1 - m0) / pooled
        return _categorical_smd(self, variable, g0, g1)

    def to_table(self) -> pd.DataFrame:
        """Table 1 for people: one row per statistic, labels and units from the descriptors.

        Columns ``variable``, ``label``, ``unit``, ``statistic``, then ``overall`` and
        one column per group of ``by`` (headed ``<by> = <level>``), ``smd`` (two
        groups only, on each variable's first row) and ``note`` (which site withheld
        a value and why). Counts are integers; percentages have one decimal; means,
        SDs and quantiles three significant digits of the variable's SD. A withheld
        value is empty (never 0).
        """
        rows: list[dict[str, Any]] = []
        cols = self.columns
        heads = [self.group_header(c) for c in cols]
        pair = self.two_groups()
        withheld: dict[tuple[str, str], list[str]] = {}
        for cell in self.withheld_cells():
            withheld.setdefault((cell["variable"], cell["row"]), []).append(
                f"{self.group_header(cell['group'])}: withheld by {', '.join(cell['sites'])}"
            )

        def add(var: str, stat: str, row: str, conv: Any, first: bool) -> None:
            rec: dict[str, Any] = {
                "variable": var,
                "label": "patients" if var == "N" else self.label(var),
                "unit": None if var == "N" else self.unit(var),
                "statistic": stat,
            }
            for c, h in zip(cols, heads, strict=True):
                v = self.value(var, row, c)
                rec[h] = None if v is None else conv(v)
            if pair is not None:
                d = self.smd(var) if first and var != "N" else None
                rec["smd"] = None if d is None else round(d, 3)
            notes = withheld.get((var, row), [])
            rec["note"] = "; ".join(notes) or None
            rows.append(rec)

        add("N", "n", "patients", int, True)
        for v in self.variables:
            if self.kinds.get(v) in ("numeric", "integer"):
                digits = _decimals(self.value(v, "sd"))

                def num(x: float, d: int = digits) -> float | int:
                    return round(float(x), d) if d else int(round(float(x)))

                add(v, "n", "n", int, True)
                add(v, "missing", "missing", int, False)
                add(v, "mean", "mean", num, False)
                add(v, "SD", "sd", num, False)
                for p in self.quantiles:
                    name = _pname(p)
                    add(v, name, name, num, False)
                    add(v, f"{name} bracket low", f"{name}_lo", num, False)
                    add(v, f"{name} bracket high", f"{name}_hi", num, False)
            else:
                levels = [
                    r["row"]
                    for r in self.records
                    if r["site"] == POOLED and r["variable"] == v and r["group"] == OVERALL
                    and not r["row"].endswith(" %")
                ]  # fmt: skip
                for i, lv in enumerate(levels):
                    name = "missing" if lv == MISSING else self.level_label(v, lv)
                    add(v, f"n: {name}", lv, int, i == 0)
                    add(v, f"%: {name}", f"{lv} %", lambda x: round(float(x), 1), False)
        return pd.DataFrame(rows, dtype=object)  # ints stay ints, withheld stays None

    def to_csv(self) -> str:
        """:meth:`to_table` as CSV (integers as integers, withheld values empty)."""
        return self.to_table().to_csv(index=False)

    def _repr_html_(self) -> str:
        return html_table(self.to_text_table(), self._footer())

    def to_text_table(self) -> pd.DataFrame:
        """The conventional formatted Table 1 (strings), as :meth:`to_text` prints it."""
        return self._formatted()

    def _footer(self) -> str:
        text = super()._footer()
        pair = self.two_groups()
        if pair is not None:
            text += (
                f"\nSMD: standardised mean difference, {self.group_header(pair[1])} vs "
                f"{self.group_header(pair[0])} (numeric and binary: difference over the pooled SD; "
                "categorical: Yang & Dalton over its levels); |SMD| > 0.1 is a common flag of "
                "imbalance."
            )
        return text

    def to_text(self) -> str:
        return self._formatted().to_string() + "\n\n" + self._footer()


class DescribeResult(SummaryResult):
    """Numeric summaries. ``to_frame()``: rows ``(variable, group)``, columns
    ``n, missing, mean, sd, [min, max], p25, p25_lo, p25_hi, ...``."""

    def to_frame(self, per_site: bool = False) -> pd.DataFrame:
        if per_site:
            return self._long()
        df = self._long()
        df = df[(df["site"] == POOLED) & (df["variable"] != "N") & df["group"].isin(self.columns)]
        stats = list(dict.fromkeys(df["row"]))
        wide = df.pivot_table(
            index=["variable", "group"],
            columns="row",
            values="value",
            aggfunc="first",
            dropna=False,
        )
        idx = pd.MultiIndex.from_tuples(
            [(v, g) for v in self.variables for g in self.columns], names=["variable", "group"]
        )
        wide = wide.reindex(index=idx, columns=stats).astype(float)
        wide.columns.name = None
        return wide

    def to_text(self) -> str:
        return (
            self.to_frame().to_string(float_format=lambda x: f"{x:.2f}") + "\n\n" + self._footer()
        )

    def _repr_html_(self) -> str:
        return html_table(self.to_frame().round(3), self._footer())


def combine_summary(
    replies: dict[str, dict[str, Any]], params: dict[str, Any], cls: type[SummaryResult]
) -> SummaryResult:
    """Pool ``table1``/``describe`` replies into ``cls`` (see the module docstring)."""
    sites = reply_sites(replies)
    first = replies[sites[0]]
    meta = first.get("meta", {})
    variables = list(params.get("variables") or meta.get("variables") or [])
    if isinstance(variables, str):
        variables = [variables]
    kinds = dict(meta.get("kinds", {}))
    probs = [float(p) for p in params.get("quantiles", [0.25, 0.5, 0.75]) or []]
    views = {s: {k: disclosed_cells(t) for k, t in replies[s]["tables"].items()} for s in sites}
    groups = _groups(replies, sites)
    left_out = _declining(views, sites)
    pooled_sites = [s for s in sites if s not in left_out] or sites
    if pooled_sites == sites:
        left_out = {}
    pooled_views = {
        k: pool_counts([views[s].get(k, {}) for s in pooled_sites]) for k in views[sites[0]]
    }
    cols = [OVERALL, *groups]
    rec: list[dict[str, Any]] = []
    unguaranteed: list[str] = []
    for site in [POOLED, *sites]:
        site_views = pooled_views if site == POOLED else views[site]
        contributing = pooled_sites if site == POOLED else [site]
        N = site_views["N"]
        for c in cols:
            row = {"site": site, "variable": "N", "row": "patients", "group": c}
            rec.append({**row, "value": N.get(("N", c), 0)})
        for v in variables:
            t = site_views.get(f"var:{v}", {})
            if kinds.get(v) in ("numeric", "integer"):
                for c in cols:
                    parts = _numeric_parts(replies, views, contributing, v, c)
                    n, missing = t.get(("n", c), 0), t.get(("missing", c), 0)
                    for q in _records_numeric(rec, site, v, c, n, missing, parts, probs):
                        where = "" if c == OVERALL else f" [{meta.get('by')}={c}]"
                        at = "" if site == POOLED else f" at {site}"
                        unguaranteed.append(f"{v} {q}{where}{at}")
            else:
                _records_categorical(rec, site, v, cols, t, binary=kinds.get(v) == "binary")
    if MISSING in groups and pooled_views["N"].get(("N", MISSING), 0) == 0:
        groups.remove(MISSING)
    return cls(
        computation=str(first.get("computation", "")),
        variables=variables,
        kinds=kinds,
        by=meta.get("by"),
        groups=groups,
        sites=sites,
        quantiles=probs,
        suppressed_cells=int(sum(int(replies[s].get("suppressed_cells", 0)) for s in sites)),
        records=rec,
        perturbed_cells=perturbed_cells(replies, sites),
        perturbation=perturbation_of(replies, sites),
        left_out=left_out,
        withheld=_withheld(replies, sites),
        unguaranteed=unguaranteed,
        labels=dict(meta.get("columns") or {}),
        site_withheld={s: dict(replies[s].get("withheld") or {}) for s in sites},
    )


#: What each ``withheld`` reason of a site's reply means, for the text footer.
WITHHELD_WHY = {
    "primary": "counts of 1 to min_cell_count - 1 patients",
    "zero_cell": "zeros on a line of so few patients",
    "complementary": "counts withheld so the others cannot be derived",
    "statistics": "statistics of too few patients",
}


def _withheld(replies: dict[str, dict[str, Any]], sites: list[str]) -> dict[str, int]:
    """The sites' ``withheld`` counts (values withheld, by rule), summed."""
    out: dict[str, int] = {}
    for s in sites:
        for k, v in (replies[s].get("withheld") or {}).items():
            out[k] = out.get(k, 0) + int(v)
    return out


def _declining(views: dict[str, dict[str, Cells]], sites: list[str]) -> dict[str, str]:
    """Sites that withheld their patient count: left out of the pooled values, with why.

    Such a site (fewer than ``min_cell_count`` patients, say) withholds every cell, and
    pooling it would make every pooled value ``None``. Leaving it out is safe: the
    pooled values are then sums of the other sites' released values only.
    """
    return {
        s: "withheld its patient count: too few patients for its policy"
        for s in sites
        if views[s]["N"].get(("N", OVERALL), 0) is None
    }


def _groups(replies: dict[str, dict[str, Any]], sites: list[str]) -> list[str]:
    """The levels of ``by`` any site released, in first-seen order, ``(missing)`` last."""
    groups: list[str] = []
    for s in sites:
        for c in replies[s]["tables"]["N"]["cols"]:
            if c not in groups and c != ALL:
                groups.append(c)
    if MISSING in groups:
        groups.remove(MISSING)
        groups.append(MISSING)
    return groups


def _numeric_parts(
    replies: dict[str, dict[str, Any]],
    views: dict[str, dict[str, Cells]],
    contributing: list[str],
    v: str,
    c: str,
) -> list[dict[str, Any]] | None:
    """The contributing sites' released moments of ``v`` in group ``c``; None if one withheld."""
    parts: list[dict[str, Any]] = []
    for s in contributing:
        n_s = views[s].get(f"var:{v}", {}).get(("n", c), 0)
        if n_s == 0:
            continue
        cell = _numeric_cell(replies[s], v, c)
        if n_s is None or cell is None:
            return None
        parts.append(cell)
    return parts


def _records_categorical(
    rec: list[dict[str, Any]], site: str, v: str, cols: list[str], t: Cells, binary: bool
) -> None:
    """Each level's count and percent of the column's patients (binary: level ``1`` only)."""
    levels = list(dict.fromkeys(r for (r, _) in t if r not in (TOTAL, MISSING)))
    if binary:
        levels = [lv for lv in levels if lv == "1"]
    for lv in [*levels, MISSING]:
        for c in cols:
            n = t.get((lv, c), 0)
            tot = t.get((TOTAL, c), 0)
            pct = None if n is None or not tot else 100.0 * n / tot
            rec.append({"site": site, "variable": v, "row": lv, "group": c, "value": n})
            rec.append({"site": site, "variable": v, "row": f"{lv} %", "group": c, "value": pct})


def _numeric_cell(reply: dict[str, Any], v: str, col: str) -> dict[str, Any] | None:
    block = reply.get("numeric", {}).get(v)
    if block is None:
        return None
    t = reply["tables"][block["table"]]
    if t["cols"] == [ALL]:
        return block["cells"][0] if col == OVERALL else None
    if col == OVERALL:
        cell = block["overall"]
        if cell is None or "hist" in cell or block.get("grid") is None:
            return cell
        # no overall histogram: the released groups' histograms partition the overall
        n_row = t["counts"][t["rows"].index(block["row"])]
        groups = [g for g, n in zip(block["cells"], n_row, strict=True) if n != 0]
        if all(g is not None and "hist" in g for g in groups):
            return {**cell, "hists": [g["hist"] for g in groups]}
        return cell
    if col not in t["cols"]:
        return None
    return block["cells"][t["cols"].index(col)]


def _decimals(sd: Any) -> int:
    """Decimals giving three significant digits of the SD (1 to 4; 2 without an SD)."""
    if sd is None or not isinstance(sd, int | float) or not math.isfinite(sd) or sd <= 0:
        return 2
    return int(min(4, max(0, 2 - math.floor(math.log10(sd)))))


def _categorical_smd(res: SummaryResult, v: str, g0: str, g1: str) -> float | None:
    """Yang & Dalton's SMD of a categorical/binary variable (reference: first level)."""
    import numpy as np

    levels = [
        r["row"]
        for r in res.records
        if r["site"] == POOLED and r["variable"] == v and r["group"] == OVERALL
        and not r["row"].endswith(" %") and r["row"] != MISSING
    ]  # fmt: skip
    props = []
    for g in (g0, g1):
        counts = [res.value(v, lv, g) for lv in levels]
        if any(c is None for c in counts):
            return None
        if res.kinds.get(v) == "binary":  # level "1" only; its share of the observed values
            pct, missing = res.value(v, f"{levels[0]} %", g), res.value(v, MISSING, g)
            if not levels or pct is None or missing is None:
                return None
            n1 = float(counts[0])  # type: ignore[arg-type]
            if n1 == 0:
                props.append(np.zeros(1))
                continue
            observed = n1 * 100.0 / pct - missing  # the column's patients minus the missing
            if observed <= 0:
                return None
            props.append(np.array([n1 / observed]))
            continue
        total = float(sum(counts))
        if total <= 0:
            return None
        props.append(np.array(counts[1:], dtype=float) / total)
    p0, p1 = props
    if p0.size == 0:
        return None
    d = p1 - p0

    def cov(p: Any) -> Any:
        return np.diag(p) - np.outer(p, p)

    S = (cov(p0) + cov(p1)) / 2.0
    val = float(d @ np.linalg.pinv(S) @ d)
    smd = math.sqrt(max(val, 0.0))
    return smd if p0.size > 1 else math.copysign(smd, float(d[0]))
