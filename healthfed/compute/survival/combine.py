"""Hub side of the survival computations: pool the sites' released sums into results.

``combine_cox_*`` turn one Newton round's replies into the pooled
log-likelihood, gradient and Hessian (the estimator takes the step);
``combine_km`` builds per-site and pooled Kaplan-Meier curves on the step ends
every site kept; ``combine_cindex`` reports Harrell's C-index per site, their
mean and all within-site pairs pooled. Each works on replies alone, so
``Federation.run`` and the estimators give the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from healthfed.compute.survival.maths import breslow_from_risk_sets, km_from_counts
from healthfed.privacy.model_release import array_from_reply

__all__ = [
    "CIndexResult",
    "KaplanMeierResult",
    "combine_cindex",
    "combine_cox_risk_sets",
    "combine_cox_stratified",
    "combine_km",
    "pool_risk_sets",
]


def combine_cox_stratified(site_replies: dict[str, dict], params: dict) -> dict[str, Any]:
    """Sum of the sites' log-likelihoods, gradients and Hessians (one Newton step's input)."""
    ll = sum(float(r["scalars"]["loglik"]) for r in site_replies.values())
    g = np.sum([array_from_reply(r, "gradient") for r in site_replies.values()], axis=0)
    h = np.sum([array_from_reply(r, "hessian") for r in site_replies.values()], axis=0)
    return {
        "loglik": ll,
        "gradient": g.tolist(),
        "hessian": h.tolist(),
        "sites": sorted(site_replies),
    }


def pool_risk_sets(site_replies: dict[str, dict], p: int) -> dict[str, np.ndarray]:
    """Hub side: add the sites' per-step sums (shorter releases are padded with empty risk sets)."""
    k = max(len(r["counts"]["events"]) for r in site_replies.values())
    iu = np.triu_indices(p)
    out = {
        "d": np.zeros(k),
        "s0": np.zeros(k),
        "s1": np.zeros((k, p)),
        "s2": np.zeros((k, p, p)),
        "event_x_sum": np.zeros(p),
    }
    for r in site_replies.values():
        d = np.asarray(r["counts"]["events"], dtype=float)
        kk = d.size
        out["d"][:kk] += d
        out["s0"][:kk] += array_from_reply(r, "s0").reshape(kk)
        out["s1"][:kk] += array_from_reply(r, "s1").reshape(kk, p)
        tri = array_from_reply(r, "s2").reshape(kk, -1)
        full = np.zeros((kk, p, p))
        full[:, iu[0], iu[1]] = tri
        full[:, iu[1], iu[0]] = tri
        out["s2"][:kk] += full
        out["event_x_sum"] += array_from_reply(r, "event_x_sum")
    return out


def combine_cox_risk_sets(site_replies: dict[str, dict], params: dict) -> dict[str, Any]:
    """Pooled Breslow log-likelihood, gradient and Hessian at ``coef`` from the sites' sums."""
    beta = np.asarray(params.get("coef"), dtype=float)
    pooled = pool_risk_sets(site_replies, beta.size)
    ll, g, h = breslow_from_risk_sets(
        beta, pooled["d"], pooled["event_x_sum"], pooled["s0"], pooled["s1"], pooled["s2"]
    )
    return {
        "loglik": ll,
        "gradient": g.tolist(),
        "hessian": h.tolist(),
        "sites": sorted(site_replies),
    }


@dataclass
class KaplanMeierResult:
    """Per-site and pooled Kaplan-Meier curves.

    Attributes
    ----------
    frame
        One row per released step: ``group`` (site name or ``"pooled"``),
        ``time`` (step end), ``at_risk``, ``events``, ``censored``, ``survival``,
        ``std_err`` (Greenwood), ``ci_lower``, ``ci_upper``.
    sites
        Sites whose counts entered the curves.
    refused, missing_sites
        Sites that declined (with reason) or did not answer (set by :func:`kaplan_meier`).
    """

    frame: pd.DataFrame
    sites: list[str]
    refused: dict[str, str] = field(default_factory=dict)
    missing_sites: list[str] = field(default_factory=list)

    def curve(self, group: str = "pooled") -> pd.DataFrame:
        """The rows of one curve, indexed by time."""
        return self.frame[self.frame["group"] == group].set_index("time")


def _km_rows(
    group: str, time: np.ndarray, n: np.ndarray, d: np.ndarray, c: np.ndarray, alpha: float
) -> pd.DataFrame:
    s, se, lo, hi = km_from_counts(n, d, alpha)
    frame = pd.DataFrame(
        {
            "group": group,
            "time": time,
            "at_risk": n.astype(int),
            "events": d.astype(int),
            "censored": c.astype(int),
            "survival": s,
            "std_err": se,
            "ci_lower": lo,
            "ci_upper": hi,
        }
    )
    # Steps where nothing happened carry no information (the curve is flat there).
    return frame[(frame["events"] + frame["censored"]) > 0].reset_index(drop=True)


def combine_km(site_replies: dict[str, dict], params: dict) -> KaplanMeierResult:
    """Per-site curves, and the pooled curve on the step ends every site kept."""
    alpha = float(params.get("alpha", 0.05))
    frames = []
    sites: dict[str, dict[str, Any]] = {}
    for s in sorted(site_replies):
        r = site_replies[s]
        k = len(r["counts"]["at_risk"])
        info: dict[str, Any] = {
            "time": array_from_reply(r, "time").reshape(k),
            "n": np.asarray(r["counts"]["at_risk"], dtype=float),
            "d": np.asarray(r["counts"]["events"], dtype=float),
            "c": np.asarray(r["counts"]["censored"], dtype=float),
            "remaining": int(r["counts"]["remaining"][0]),
        }
        sites[s] = info
        frames.append(_km_rows(s, info["time"], info["n"], info["d"], info["c"], alpha))
    # Pooled: keep edges that every site kept (a finished site, remaining == 0, contributes
    # nothing after its last step), up to where the first unfinished site stops.
    ends = [
        i["time"][-1] if i["time"].size else -np.inf for i in sites.values() if i["remaining"] > 0
    ]
    stop = (
        min(ends)
        if ends
        else max((i["time"][-1] for i in sites.values() if i["time"].size), default=-np.inf)
    )
    common = None
    for i in sites.values():
        kept = set(i["time"][i["time"] <= stop].tolist())
        last = i["time"][-1] if i["time"].size else -np.inf
        if i["remaining"] == 0:
            other = set().union(*(set(j["time"].tolist()) for j in sites.values()))
            kept |= {t for t in other if last < t <= stop}
        common = kept if common is None else common & kept
    edges = np.array(sorted(common or []), dtype=float)
    if edges.size:
        n_p = np.zeros(edges.size)
        d_p = np.zeros(edges.size)
        c_p = np.zeros(edges.size)
        for i in sites.values():
            j = np.searchsorted(edges, i["time"], side="left")  # merged step of each site step
            inside = j < edges.size
            np.add.at(d_p, j[inside], i["d"][inside])
            np.add.at(c_p, j[inside], i["c"][inside])
            first = np.full(edges.size, -1)
            for pos in range(i["time"].size - 1, -1, -1):
                if inside[pos]:
                    first[j[pos]] = pos
            n_p += np.where(first >= 0, i["n"][np.maximum(first, 0)], 0.0)
        keep = n_p > 0
        frames.insert(0, _km_rows("pooled", edges[keep], n_p[keep], d_p[keep], c_p[keep], alpha))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return KaplanMeierResult(frame=frame, sites=sorted(site_replies))


@dataclass
class CIndexResult:
    """Harrell's C-index per site, their mean (FLamby's metric) and all within-site pairs pooled.

    Attributes
    ----------
    by_site
        Frame indexed by site: ``n_rows``, ``comparable``, ``concordant``,
        ``discordant``, ``tied_risk``, ``cindex`` (NaN without comparable pairs).
    mean_over_sites
        Plain mean of the per-site C-indices (sites with no comparable pair left out).
    pooled
        ``(concordant + tied/2) / comparable`` over all sites' pairs (pairs never span sites).
    """

    by_site: pd.DataFrame
    mean_over_sites: float
    pooled: float
    refused: dict[str, str] = field(default_factory=dict)
    missing_sites: list[str] = field(default_factory=list)

    @property
    def sites(self) -> list[str]:
        return list(self.by_site.index)


def combine_cindex(site_replies: dict[str, dict], params: dict) -> CIndexResult:
    """Per-site pair counts and C-index, their mean over sites and all pairs pooled."""
    rows = {}
    for s in sorted(site_replies):
        sc = site_replies[s]["scalars"]
        conc, disc, tied = (int(round(sc[k])) for k in ("concordant", "discordant", "tied_risk"))
        comp = conc + disc + tied
        rows[s] = {
            "n_rows": int(site_replies[s]["n_rows"]),
            "comparable": comp,
            "concordant": conc,
            "discordant": disc,
            "tied_risk": tied,
            "cindex": (conc + 0.5 * tied) / comp if comp else float("nan"),
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "site"
    comp = int(frame["comparable"].sum()) if len(frame) else 0
    pooled = (
        (frame["concordant"].sum() + 0.5 * frame["tied_risk"].sum()) / comp if comp else math.nan
    )
    valid = frame["cindex"].dropna() if len(frame) else pd.Series(dtype=float)
    mean = float(valid.mean()) if len(valid) else math.nan
    return CIndexResult(by_site=frame, mean_over_sites=mean, pooled=float(pooled))
