"""The trust report's statistics on released aggregates: meta-analysis, ROC and reliability.

Everything here works on what the sites released (per-site metrics with their
CIs, merged score histograms, Brier moments), never on rows: DerSimonian-Laird
random-effects pooling across sites, ROC and reliability curves from the
pooled score histograms, and Wilson/normal CIs for a site's metrics.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from healthfed.trust.fairness import GroupStats, wilson

__all__ = ["RELIABILITY_BINS", "Z95", "meta_analysis", "reliability", "roc_points", "site_metrics"]

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
RELIABILITY_BINS = 10


def meta_analysis(estimates: list[float], ses: list[float], logit: bool = True) -> dict[str, float]:
    """DerSimonian-Laird random-effects pooling (on the logit scale for proportions/AUROC).

    Returns the pooled estimate with 95% CI, the 95% prediction interval for a
    new site, Cochran's Q and its p-value, I² and tau².
    """
    # SciPy is heavy; imported when a report is built (keeps `import healthfed` fast).
    from scipy.stats import chi2, t

    est = np.asarray(estimates, dtype=float)
    se = np.asarray(ses, dtype=float)
    ok = np.isfinite(est) & np.isfinite(se) & (se > 0) & (est > 0) & (est < 1)
    est, se = est[ok], se[ok]
    k = len(est)
    nan = float("nan")
    if k < 2:
        return {"k": k, "estimate": nan, "i2": nan, "tau2": nan, "q": nan, "q_p": nan}
    if logit:
        y = np.log(est / (1 - est))
        v = (se / (est * (1 - est))) ** 2
    else:
        y, v = est, se**2
    w = 1 / v
    ybar = float(np.sum(w * y) / np.sum(w))
    q = float(np.sum(w * (y - ybar) ** 2))
    c = float(np.sum(w) - np.sum(w**2) / np.sum(w))
    tau2 = max(0.0, (q - (k - 1)) / c) if c > 0 else 0.0
    ws = 1 / (v + tau2)
    mu = float(np.sum(ws * y) / np.sum(ws))
    se_mu = math.sqrt(1 / np.sum(ws))
    i2 = max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0
    tq = float(t.ppf(0.975, k - 2)) if k > 2 else nan
    pi_half = tq * math.sqrt(tau2 + se_mu**2) if k > 2 else nan
    back = (lambda z: 1 / (1 + math.exp(-z))) if logit else (lambda z: z)
    return {
        "k": k,
        "estimate": back(mu),
        "ci_low": back(mu - Z95 * se_mu),
        "ci_high": back(mu + Z95 * se_mu),
        "pi_low": back(mu - pi_half) if k > 2 else nan,
        "pi_high": back(mu + pi_half) if k > 2 else nan,
        "q": q,
        "q_p": float(chi2.sf(q, k - 1)),
        "i2": i2,
        "tau2": tau2,
    }


def roc_points(pos: np.ndarray, neg: np.ndarray) -> dict[str, list[float]]:
    """ROC curve from score counts on the fine grid (thresholds from high to low)."""
    P, N = pos.sum(), neg.sum()
    tpr = np.concatenate([[0.0], np.cumsum(pos[::-1]) / P]) if P else np.zeros(1)
    fpr = np.concatenate([[0.0], np.cumsum(neg[::-1]) / N]) if N else np.zeros(1)
    keep = np.concatenate([[True], (np.diff(tpr) != 0) | (np.diff(fpr) != 0)])
    return {"fpr": np.round(fpr[keep], 4).tolist(), "tpr": np.round(tpr[keep], 4).tolist()}


def reliability(pos: np.ndarray, neg: np.ndarray, n_bins: int = RELIABILITY_BINS) -> list[dict]:
    """Observed event rate vs mean predicted risk in equal-width risk bins."""
    fine = len(pos)
    centres = (np.arange(fine) + 0.5) / fine
    out = []
    for b in range(n_bins):
        sel = (centres >= b / n_bins) & (centres < (b + 1) / n_bins)
        n = float(pos[sel].sum() + neg[sel].sum())
        if n < 0.5:
            continue
        mean_p = float(np.sum(centres[sel] * (pos[sel] + neg[sel])) / n)
        obs = float(pos[sel].sum() / n)
        lo, hi = wilson(pos[sel].sum(), n)
        out.append(
            {
                "bin_low": b / n_bins,
                "bin_high": (b + 1) / n_bins,
                "n": round(n, 1),
                "mean_predicted": mean_p,
                "observed": obs,
                "observed_ci_low": lo,
                "observed_ci_high": hi,
            }
        )
    return out


def site_metrics(ev: dict[str, float], gs: GroupStats | None) -> dict[str, Any]:
    """One site's (or the pooled) evaluation metrics with Wilson CIs and the Brier normal CI.

    ``ev`` is the row of :func:`~healthfed.compute.evaluation.evaluate_classifier`'s
    metrics, ``gs`` the site's released ``"all"`` group (its Brier moments); NaN
    becomes None.
    """
    m = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in ev.items()}
    n, P = ev.get("n") or 0.0, ev.get("n_pos") or 0.0
    N = n - P
    for name, k, d in (
        ("accuracy", (ev.get("accuracy") or float("nan")) * n, n),
        ("sensitivity", (ev.get("sensitivity") or float("nan")) * P, P),
        ("specificity", (ev.get("specificity") or float("nan")) * N, N),
    ):
        lo, hi = wilson(round(k), d) if k == k else (float("nan"), float("nan"))
        m[f"{name}_ci_low"], m[f"{name}_ci_high"] = lo, hi
    if gs is not None and gs.sq is not None and gs.sq[0] > 1:
        sn, mean, m2 = gs.sq
        se = math.sqrt(m2 / (sn - 1) / sn)
        m["brier_ci_low"], m["brier_ci_high"] = max(0.0, mean - Z95 * se), mean + Z95 * se
    else:
        m["brier_ci_low"] = m["brier_ci_high"] = None
    return m
