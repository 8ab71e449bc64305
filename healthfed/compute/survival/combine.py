"""Hub side of the survival computations: pool the sites' released sums into results.

``combine_cox_*`` turn one Newton round's replies into the pooled
log-likelihood, gradient and Hessian (the estimator takes the step);
``combine_km`` builds per-site Kaplan-Meier curves and the pooled one from
pooled counts on the common public grid; ``combine_cindex`` reports Harrell's C-index per site, their
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
    "pool_km_steps",
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
    truncated
        Sites whose curve stops before their last patient left (too few still at risk
        to release more): ``{site: {"after": last released edge, "censored": patients
        the pooled curve censors there}}``; also in ``frame.attrs["truncated"]``.
    """

    frame: pd.DataFrame
    sites: list[str]
    refused: dict[str, str] = field(default_factory=dict)
    missing_sites: list[str] = field(default_factory=list)
    truncated: dict[str, dict[str, Any]] = field(default_factory=dict)

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


def _site_steps(reply: dict[str, Any]) -> dict[str, Any]:
    k = len(reply["counts"]["at_risk"])
    return {
        "time": array_from_reply(reply, "time").reshape(k),
        "n": np.asarray(reply["counts"]["at_risk"], dtype=float),
        "d": np.asarray(reply["counts"]["events"], dtype=float),
        "c": np.asarray(reply["counts"]["censored"], dtype=float),
        "remaining": int(reply["counts"]["remaining"][0]),
    }


def pool_km_steps(
    sites: dict[str, dict[str, Any]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pooled ``(time, at_risk, events, censored)`` on the union of the sites' edges.

    A site's exits in a merged step ``(e_{j-1}, e_j]`` count at its edge ``e_j`` (its
    times moved up to its next kept edge); it is at risk with its step's number
    until then; its ``remaining`` patients (not released after its last edge) are
    censored at that edge. Every pooled count is a sum of released site counts (each
    0 or >= ``min_cell_count``), so the pooled curve reveals nothing the replies do
    not, and it has a step wherever any site released an event.
    """
    edges = np.unique(np.concatenate([i["time"] for i in sites.values()] or [np.empty(0)]))
    n_p, d_p, c_p = (np.zeros(edges.size) for _ in range(3))
    for i in sites.values():
        if not i["time"].size:
            continue
        pos = np.searchsorted(i["time"], edges, side="left")  # the site step holding each edge
        inside = pos < i["time"].size
        n_p[inside] += i["n"][pos[inside]]
        at_edge = np.searchsorted(edges, i["time"])
        d_p[at_edge] += i["d"]
        c_p[at_edge] += i["c"]
        c_p[at_edge[-1]] += i["remaining"]
    return edges, n_p, d_p, c_p


def combine_km(site_replies: dict[str, dict], params: dict) -> KaplanMeierResult:
    """Per-site curves, and the pooled curve from pooled counts on the common public grid.

    The pooled curve (:func:`pool_km_steps`) equals the pooled Kaplan-Meier of the
    times coarsened to the grid wherever every site kept every step (always with
    thresholds 1); otherwise a site's events count at its own next kept edge and its
    unreleased tail is censored at its last edge, listed in ``truncated``.
    """
    alpha = float(params.get("alpha", 0.05))
    frames = []
    sites = {s: _site_steps(site_replies[s]) for s in sorted(site_replies)}
    for s, info in sites.items():
        frames.append(_km_rows(s, info["time"], info["n"], info["d"], info["c"], alpha))
    truncated = {
        s: {
            "after": float(i["time"][-1]) if i["time"].size else 0.0,
            "censored": int(i["remaining"]),
        }
        for s, i in sites.items()
        if i["remaining"] > 0
    }
    edges, n_p, d_p, c_p = pool_km_steps(sites)
    keep = n_p > 0
    if keep.any():
        frames.insert(0, _km_rows("pooled", edges[keep], n_p[keep], d_p[keep], c_p[keep], alpha))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    frame.attrs["truncated"] = truncated
    return KaplanMeierResult(frame=frame, sites=sorted(site_replies), truncated=truncated)


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
